"""The runs table: one row per finished run, the exchange format of `recommend`, seeding and export.

Columns (DESIGN.md section 5): `weight.<domain>` for the mixture (each row sums to 1) and
`loss.<domain>` for the validation loss on each evaluated domain, in nats/token. Other columns are
kept and ignored. CSV (`.csv`, `.csv.gz`) or Parquet (`.parquet`, `.pq`).

Every problem a user can make is a `RunsTableError` whose message is one line naming the problem and
the fix. Rows with a NaN or infinite loss (diverged runs) are dropped with a `RunsTableWarning` that
counts them: they carry no loss value a regression could use.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from orchestrator.mixture import Mixture

WEIGHT, LOSS = "weight.", "loss."
# A row's weights may miss 1 by this much and are then renormalised. Published tables round weights
# to 3 decimals: 17 domains x 0.0005 is 0.0085, inside 0.01; anything further off is a real mistake.
SUM_TOLERANCE = 0.01


class RunsTableError(ValueError):
    """A runs-table problem, as one line: what is wrong and how to fix it."""


class RunsTableWarning(UserWarning):
    """Something was dropped from a runs table (it is still usable)."""


@dataclass(frozen=True)
class RunsTable:
    """Validated runs: weights (n, k) on the simplex and finite losses (n, m) in nats/token."""

    domains: tuple[str, ...]  # training domains, the mixture's axes (k)
    loss_domains: tuple[str, ...]  # evaluated domains (m); may differ from `domains`
    weights: np.ndarray  # (n, k), rows sum to 1
    losses: np.ndarray  # (n, m), finite
    extra: pd.DataFrame  # the other columns, same row order

    def __len__(self) -> int:
        return len(self.weights)

    def mixtures(self) -> list[Mixture]:
        return [Mixture.from_array(self.domains, w) for w in self.weights]

    def loss_dicts(self) -> list[dict[str, float]]:
        return [dict(zip(self.loss_domains, map(float, row))) for row in self.losses]


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame; one-line RunsTableError if it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise RunsTableError(f"runs table {str(p)!r} not found; pass the path to a CSV or Parquet file")
    suffix = "".join(p.suffixes[-2:]) if p.suffix == ".gz" else p.suffix
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(p)
        if suffix in (".csv", ".csv.gz"):
            return pd.read_csv(p)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as err:
        raise RunsTableError(f"runs table {p}: cannot be read ({type(err).__name__}); check it is valid {suffix[1:]}") from None
    raise RunsTableError(f"runs table {p}: unknown format {suffix or '(no extension)'!r}; use .csv or .parquet")


def weights_from_frame(frame: pd.DataFrame, source: str, tolerance: float = SUM_TOLERANCE) -> tuple[tuple[str, ...], np.ndarray]:
    """The `weight.<domain>` columns as (domains, (n, k) array on the simplex); rows are renormalised
    when they miss 1 by at most `tolerance`."""
    cols = [c for c in frame.columns if isinstance(c, str) and c.startswith(WEIGHT)]
    if len(cols) < 2:
        raise RunsTableError(f"{source}: needs at least 2 `weight.<domain>` columns, found {len(cols)}; "
                             "name each mixture weight column weight.<domain>")
    weights = _numeric(frame, cols, source)
    bad_value = np.argwhere(~np.isfinite(weights) | (weights < 0))
    if len(bad_value):
        r, c = bad_value[0]
        raise RunsTableError(f"{source}: row {r + 1} has {cols[c]} = {weights[r, c]}; weights must be finite and >= 0")
    sums = weights.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > tolerance)
    if len(off):
        raise RunsTableError(f"{source}: weights of row {off[0] + 1} sum to {sums[off[0]]:.4f} ({len(off)} rows off); "
                             f"each row must sum to 1 within {tolerance}; renormalise the weights")
    return tuple(c[len(WEIGHT):] for c in cols), weights / sums[:, None]


def validate_runs(frame: pd.DataFrame, source: str = "runs table", tolerance: float = SUM_TOLERANCE) -> RunsTable:
    """Check a runs DataFrame and return the validated table (see the module docstring)."""
    domains, weights = weights_from_frame(frame, source, tolerance)
    loss_cols = [c for c in frame.columns if isinstance(c, str) and c.startswith(LOSS)]
    if not loss_cols:
        raise RunsTableError(f"{source}: no `loss.<domain>` columns; add each run's validation loss (nats/token) "
                             "as loss.<domain>")
    losses = _numeric(frame, loss_cols, source)
    finite = np.isfinite(losses).all(axis=1)
    dropped = int((~finite).sum())
    if dropped:
        warnings.warn(f"{source}: dropped {dropped} of {len(frame)} runs with NaN or infinite losses",
                      RunsTableWarning, stacklevel=2)
    if not finite.any():
        raise RunsTableError(f"{source}: no run has finite losses in every loss column; fix or remove the bad runs")
    extra = frame.drop(columns=[WEIGHT + d for d in domains] + loss_cols)[finite].reset_index(drop=True)
    return RunsTable(domains, tuple(c[len(LOSS):] for c in loss_cols), weights[finite], losses[finite], extra)


def read_runs(path: str | Path, tolerance: float = SUM_TOLERANCE) -> RunsTable:
    """Read and validate a runs table file (CSV or Parquet)."""
    return validate_runs(read_frame(path), source=f"runs table {Path(path).name}", tolerance=tolerance)


def require_runs(table: RunsTable, needed: int, who: str) -> None:
    """One-line error when a table has fewer runs than `who` (a strategy) needs."""
    if len(table) < needed:
        raise RunsTableError(f"the runs table has {len(table)} usable runs; {who} needs at least {needed}; "
                             "add runs or choose a strategy that needs fewer (e.g. --strategy mixing_law)")


def runs_frame(mixtures: Sequence[Mixture], losses: Iterable[dict[str, float]] | None = None) -> pd.DataFrame:
    """Mixtures (and optionally their per-domain losses, nats/token) as a runs-table DataFrame."""
    rows = []
    loss_rows = list(losses) if losses is not None else [{}] * len(mixtures)
    for m, lo in zip(mixtures, loss_rows, strict=True):
        rows.append({**{WEIGHT + d: w for d, w in m.as_dict().items()}, **{LOSS + d: v for d, v in lo.items()}})
    return pd.DataFrame(rows)


def write_frame(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a DataFrame as Parquet (`.parquet`/`.pq`) or CSV (anything else), via a temp file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    if p.suffix in (".parquet", ".pq"):
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(p)
    return p


def _numeric(frame: pd.DataFrame, cols: list[str], source: str) -> np.ndarray:
    """Columns as a float array; names the first column holding text."""
    for c in cols:
        if not pd.api.types.is_numeric_dtype(frame[c]):
            converted = pd.to_numeric(frame[c], errors="coerce")
            bad = frame[c][converted.isna() & frame[c].notna()]
            if len(bad):
                raise RunsTableError(f"{source}: column {c} holds non-numeric value {str(bad.iloc[0])!r} "
                                     f"(row {bad.index[0] + 1}); write numbers only")
    return frame[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
