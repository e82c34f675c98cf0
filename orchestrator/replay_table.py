"""The head side of the replay trainer: read a runs table, check it against the sweep, and fit (or find)
its simulator (workers/replay.py).

The fit is cached under `data.cache_dir/replay/` by the table's content, the domain order and the
simulator's version, so the sweeps of one `mixsweep bench` (and a resumed sweep) fit it once: 512 runs
of 17 domains take about a minute on 2 cores, a cached model loads in milliseconds.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np

from orchestrator.runs import RunsTable, RunsTableError, read_runs
from workers.replay import MODEL_VERSION, ReplayModel, fit_replay, table_digest


def ordered_table(path: str | Path, domains: tuple[str, ...]) -> RunsTable:
    """The table with its weight columns in the sweep's domain order; RunsTableError (one line) when
    its training domains are not exactly the sweep's."""
    table = read_runs(Path(path).expanduser())
    if set(table.domains) != set(domains):
        missing, extra = sorted(set(domains) - set(table.domains)), sorted(set(table.domains) - set(domains))
        raise RunsTableError(f"trainer.runs {path}: its weight columns must be the spec's domains"
                             f"{'; missing ' + str(missing) if missing else ''}{'; not in the spec ' + str(extra) if extra else ''}")
    order = [table.domains.index(d) for d in domains]
    return RunsTable(tuple(domains), table.loss_domains, table.weights[:, order], table.losses, table.extra)


def replay_model(path: str | Path, domains: tuple[str, ...], cache_dir: str | Path,
                 log: Callable[[str], None] = print) -> ReplayModel:
    """The fitted simulator of the table at `path` over `domains` (from the cache when fitted before)."""
    key = hashlib.sha256(f"{table_digest(path)}:{','.join(domains)}:v{MODEL_VERSION}".encode()).hexdigest()[:16]
    cached = Path(cache_dir).expanduser() / "replay" / f"{key}.npz"
    if cached.is_file():
        try:
            model = ReplayModel.load(cached)
            if model.domains == tuple(domains):
                return model
        except (OSError, ValueError, KeyError):  # a torn or foreign file: fit again and replace it
            pass
    table = ordered_table(path, domains)
    if len(table) < 2 * len(domains):
        raise RunsTableError(f"trainer.runs {path}: {len(table)} runs cannot model {len(domains)} domains; "
                             f"give at least {2 * len(domains)} runs")
    log(f"fitting the replay simulator to {len(table)} runs of {Path(path).name} (once; cached in {cached.parent})")
    model = fit_replay(table.weights, table.losses, table.domains, table.loss_domains)
    if not np.isfinite(model.truth(table.weights[:1])).all():
        raise RunsTableError(f"trainer.runs {path}: the simulator could not be fitted (non-finite predictions); check the losses")
    model.save(cached)
    return model
