"""`mixsweep recommend`: fit a strategy to a runs table and answer without training anything.

    mixsweep recommend --runs RUNS [--objective mean|loss.<d>|weighted:<d>=<x>,...] [--strategy NAME]
                       [--propose N] [--predict CANDIDATES] --out FILE

- no --propose/--predict: the recommended mixture with predicted per-domain losses and std (JSON);
- --propose N: the next N mixtures to run (JSON, or a runs table when FILE ends in .csv/.parquet);
- --predict CANDIDATES: CANDIDATES' rows, in their order, with `predicted` (the objective, nats/token)
  and `predicted_std` columns added (CSV, Parquet or JSON records, by FILE's extension).

Every table's runs are told to the strategy in row order, so the answer is deterministic given --seed.
Bad input raises `RunsTableError` (one line). The default strategy is `gp`: per-domain GPs composed by
the objective rank held-out runs best at 64 runs (docs/benchmarks.md, "Surrogate fidelity").
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import typer

from orchestrator.objective import Objective
from orchestrator.runs import (
    LOSS,
    RunsTable,
    RunsTableError,
    read_frame,
    read_runs,
    require_runs,
    runs_frame,
    weights_from_frame,
    write_frame,
)
from orchestrator.strategies import STRATEGIES, Strategy, build_strategy
from orchestrator.strategies.model_based import ModelStrategy

DEFAULT_STRATEGY = "gp"
# Offline nothing waits on the answer, so the GP's hyperparameters are fitted for longer than in a
# sweep (where `ask` must be fast): 200 instead of 50 L-BFGS steps, measured in docs/benchmarks.md.
OFFLINE_OPTIONS: dict[str, dict[str, Any]] = {"gp": {"fit_maxiter": 200}}


def parse_objective(text: str, loss_domains: tuple[str, ...]) -> Objective:
    """`mean` | `loss.<d>` | `weighted:<d>=<x>,...` over the table's loss domains."""
    text = text.strip()
    if text == "mean":
        return Objective({d: 1.0 / len(loss_domains) for d in loss_domains}, "mean of per-domain losses")
    if text.startswith(LOSS):
        _known(text[len(LOSS):], loss_domains)
        return Objective({text[len(LOSS):]: 1.0}, f"loss on {text[len(LOSS):]}")
    if text.startswith("weighted:"):
        weights = {}
        for part in filter(None, text[len("weighted:"):].split(",")):
            name, _, value = part.partition("=")
            try:
                number = float(value)
            except ValueError:
                raise RunsTableError(f"--objective: {part!r} is not <domain>=<number>; e.g. weighted:code=2,web=1") from None
            weights[_known(name.strip().removeprefix(LOSS), loss_domains)] = number
        total = sum(weights.values())
        if not weights or any(w < 0 or not np.isfinite(w) for w in weights.values()) or total <= 0:
            raise RunsTableError("--objective: weighted needs finite weights >= 0 with a positive sum; e.g. weighted:code=2,web=1")
        return Objective({d: w / total for d, w in weights.items() if w > 0}, "weighted " + text[len("weighted:"):])
    raise RunsTableError(f"--objective {text!r}: use mean, loss.<domain> or weighted:<domain>=<x>,...")


def _known(domain: str, loss_domains: tuple[str, ...]) -> str:
    if domain not in loss_domains:
        raise RunsTableError(f"--objective names domain {domain!r}, which has no loss column; "
                             f"use one of {', '.join(loss_domains)}")
    return domain


def fit_strategy(table: RunsTable, objective: Objective, kind: str, seed: int = 0,
                 options: dict[str, Any] | None = None) -> Strategy:
    """A strategy told every run of the table, in row order; RunsTableError if it cannot be used.
    `options` default to OFFLINE_OPTIONS for the kind."""
    if kind not in STRATEGIES:
        raise RunsTableError(f"--strategy {kind!r} is unknown; use one of {', '.join(sorted(STRATEGIES))}")
    try:
        strategy = build_strategy(kind, OFFLINE_OPTIONS.get(kind, {}) if options is None else options,
                                  table.domains, objective, seed)
    except ValueError as err:  # a strategy that needs options a table cannot give (fixed: weights)
        raise RunsTableError(f"--strategy {kind}: {str(err).splitlines()[0]}") from None
    needed = strategy.min_runs() if isinstance(strategy, ModelStrategy) else 1
    require_runs(table, needed, f"strategy {kind}")
    for mixture, losses in zip(table.mixtures(), table.loss_dicts()):
        strategy.tell(mixture, losses)
    return strategy


def predict_candidates(strategy: Strategy, candidates: pd.DataFrame, source: str) -> pd.DataFrame:
    """CANDIDATES' rows in their order with `predicted` and `predicted_std` (objective, nats/token)."""
    if not isinstance(strategy, ModelStrategy):
        models = ", ".join(sorted(k for k, c in STRATEGIES.items() if issubclass(c, ModelStrategy)))
        raise RunsTableError(f"--predict needs a strategy with a surrogate; strategy {strategy.kind} has none; use one of {models}")
    domains, W = weights_from_frame(candidates, source)
    if set(domains) != set(strategy.domains):
        missing, extra = sorted(set(strategy.domains) - set(domains)), sorted(set(domains) - set(strategy.domains))
        raise RunsTableError(f"{source}: weight columns must match the runs table's domains"
                             f"{'; missing ' + str(missing) if missing else ''}{'; unknown ' + str(extra) if extra else ''}")
    W = W[:, [domains.index(d) for d in strategy.domains]]
    mean, std, loss_domains = strategy.predict_losses(W)
    coef = strategy.coefficients(loss_domains)
    out = candidates.copy()
    out["predicted"] = mean @ coef
    out["predicted_std"] = np.sqrt((std**2) @ coef**2)
    return out


def recommend_command(
    runs: Path = typer.Option(..., "--runs", help="Runs table (CSV or Parquet): weight.<domain> and loss.<domain> columns."),
    out: Path = typer.Option(..., "--out", help="Output file: .json, or .csv/.parquet for --propose/--predict tables."),
    objective: str = typer.Option("mean", "--objective", help="mean | loss.<domain> | weighted:<domain>=<x>,..."),
    strategy: str = typer.Option(DEFAULT_STRATEGY, "--strategy", help="Strategy to fit: " + ", ".join(sorted(STRATEGIES))),
    propose: Optional[int] = typer.Option(None, "--propose", min=1, help="Write the next N mixtures to run."),
    predict: Optional[Path] = typer.Option(None, "--predict", help="Table of candidate mixtures (weight.* columns) to score."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the strategy (candidate sampling)."),
) -> None:
    """Fit a strategy to past runs: recommend a mixture, propose the next runs, or score candidates."""
    if propose is not None and predict is not None:
        raise RunsTableError("give one of --propose N or --predict CANDIDATES, not both")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_runs(runs)
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    fitted = fit_strategy(table, parse_objective(objective, table.loss_domains), strategy, seed)
    context = {"runs": str(runs), "runs_used": len(table), "strategy": strategy, "objective_spec": objective}
    if predict is not None:
        frame = predict_candidates(fitted, read_frame(predict), f"candidates {predict.name}")
        _write_table_or_json(frame, out, context)
        typer.echo(f"scored {len(frame)} candidates -> {out}")
    elif propose is not None:
        mixtures = fitted.ask(propose, [])
        _write_table_or_json(runs_frame(mixtures), out, context, key="proposals",
                             records=[m.as_dict() for m in mixtures])
        typer.echo(f"proposed {len(mixtures)} mixtures -> {out}")
    else:
        rec = fitted.recommend()
        _write_json(out, {**context, **rec.to_json()})
        typer.echo(f"recommended mixture ({rec.source}; predicted objective {rec.objective:.4f}) -> {out}")


def _write_table_or_json(frame: pd.DataFrame, out: Path, context: dict[str, Any], key: str = "rows",
                         records: list | None = None) -> None:
    if out.suffix in (".csv", ".parquet", ".pq"):
        write_frame(frame, out)
    else:
        _write_json(out, {**context, key: records if records is not None else json.loads(frame.to_json(orient="records"))})


def _write_json(out: Path, payload: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    tmp.replace(out)


__all__ = ["DEFAULT_STRATEGY", "fit_strategy", "parse_objective", "predict_candidates", "recommend_command"]
