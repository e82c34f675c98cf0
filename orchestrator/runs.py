"""The runs table: one row per finished run, the exchange format of `recommend`, seeding and export.

Columns (DESIGN.md section 5): `weight.<domain>` for the mixture (each row sums to 1) and
`loss.<domain>` for the validation loss on each evaluated domain, in nats/token. Optional: the run's
scale, `scale.params` (non-embedding parameters) and `scale.tokens` (training tokens), on every row or
on none, so that one table can hold runs of several model sizes (`mixsweep recommend --at-params`).
Other columns are kept and ignored. CSV (`.csv`, `.csv.gz`) or Parquet (`.parquet`, `.pq`).

Every problem a user can make is a `RunsTableError` whose message is one line naming the problem and
the fix. Rows with a NaN or infinite loss (diverged runs) are dropped with a `RunsTableWarning` that
counts them: they carry no loss value a regression could use.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from orchestrator.mixture import Mixture

WEIGHT, LOSS, SCALE = "weight.", "loss.", "scale."
PARAMS, TOKENS = "scale.params", "scale.tokens"  # the scale columns: counts, finite and in [1, MAX_COUNT]
# Above this a parameter or token count is a typo or a placeholder (10^18: a million times today's largest runs).
MAX_COUNT = 1e18
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
    params: np.ndarray | None = None  # (n,) non-embedding parameters per run (`scale.params`); None: not given
    tokens: np.ndarray | None = None  # (n,) training tokens per run (`scale.tokens`); None: not given

    def __len__(self) -> int:
        return len(self.weights)

    def subset(self, rows: np.ndarray | Sequence[int]) -> "RunsTable":
        """The runs at `rows` (indices), scale columns included."""
        rows = np.asarray(rows, dtype=int)
        pick = (lambda a: None if a is None else a[rows])
        return RunsTable(self.domains, self.loss_domains, self.weights[rows], self.losses[rows],
                         self.extra.iloc[rows].reset_index(drop=True), pick(self.params), pick(self.tokens))

    def scales(self) -> np.ndarray:
        """The distinct scales of the table's runs, (s, c) over the c scale columns it has (params, then
        tokens); a table without them has one scale, (1, 0)."""
        cols = [a for a in (self.params, self.tokens) if a is not None]
        if not cols:
            return np.empty((min(len(self), 1), 0))
        return np.unique(np.column_stack(cols), axis=0)

    @property
    def multi_scale(self) -> bool:
        """Whether the runs are of more than one scale (model size or training tokens)."""
        return len(self.scales()) > 1

    def mixtures(self) -> list[Mixture]:
        return [Mixture.from_array(self.domains, w) for w in self.weights]

    def loss_dicts(self) -> list[dict[str, float]]:
        return [dict(zip(self.loss_domains, map(float, row))) for row in self.losses]


# A loss above this many nats/token is no measurement (ln of a 10^9-token vocabulary is 21): a run
# that diverged, or a placeholder such as 1e308, which would overflow every mean it entered.
MAX_PLAUSIBLE_LOSS = 1e4
_READ_ERRORS = (ValueError, OSError, EOFError, UnicodeDecodeError, zlib.error, pd.errors.ParserError)


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame; one-line RunsTableError if it cannot be read, is
    empty, or names a column twice."""
    p = Path(path)
    if not p.is_file():
        raise RunsTableError(f"runs table {str(p)!r} not found; pass the path to a CSV or Parquet file")
    suffix = "".join(p.suffixes[-2:]) if p.suffix == ".gz" else p.suffix
    if suffix not in (".parquet", ".pq", ".csv", ".csv.gz"):
        raise RunsTableError(f"runs table {p}: unknown format {suffix or '(no extension)'!r}; use .csv or .parquet")
    try:
        _refuse_duplicates(_raw_header(p, suffix), p)
        return pd.read_parquet(p) if suffix in (".parquet", ".pq") else pd.read_csv(p)
    except RunsTableError:
        raise
    except pd.errors.EmptyDataError:
        raise RunsTableError(f"runs table {p}: the file is empty; write a header row (weight.<domain>, loss.<domain>) "
                             "and one row per run") from None
    except _READ_ERRORS as err:
        raise RunsTableError(f"runs table {p}: cannot be read ({type(err).__name__}); check it is valid {suffix[1:]}") from None


def _raw_header(p: Path, suffix: str) -> list[str]:
    """The column names as written. pandas renames a repeated CSV column (`loss.code` -> `loss.code.1`),
    which would turn a duplicate into a phantom domain, so they are read before pandas sees them."""
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(p).names)
    first = pd.read_csv(p, header=None, nrows=1, dtype=str, keep_default_na=False)
    return [str(c) for c in first.iloc[0]] if len(first) else []


def _refuse_duplicates(header: list[str], p: Path) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise RunsTableError(f"runs table {p}: column {name!r} appears twice; keep one (a repeated column would "
                                 "count as another domain or hide a value)")
        seen.add(name)


def weights_from_frame(frame: pd.DataFrame, source: str, tolerance: float = SUM_TOLERANCE) -> tuple[tuple[str, ...], np.ndarray]:
    """The `weight.<domain>` columns as (domains, (n, k) array on the simplex); rows are renormalised
    when they miss 1 by at most `tolerance`."""
    cols = [c for c in frame.columns if isinstance(c, str) and c.startswith(WEIGHT)]
    _check_names(cols, source)
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
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):
        raise RunsTableError(f"{source}: column {str(repeated[0])!r} appears twice; keep one")
    domains, weights = weights_from_frame(frame, source, tolerance)
    loss_cols = [c for c in frame.columns if isinstance(c, str) and c.startswith(LOSS)]
    _check_names(loss_cols, source)
    if not loss_cols:
        raise RunsTableError(f"{source}: no `loss.<domain>` columns; add each run's validation loss (nats/token) "
                             "as loss.<domain>")
    if not len(frame):
        raise RunsTableError(f"{source}: has a header but no runs; add one row per finished run")
    losses = _numeric(frame, loss_cols, source)
    negative = np.argwhere(np.isfinite(losses) & (losses < 0))  # -inf is a diverged run: dropped below
    if len(negative):
        r, c = negative[0]
        raise RunsTableError(f"{source}: row {r + 1} has {loss_cols[c]} = {losses[r, c]}; a loss (nats/token) is >= 0: "
                             "write the validation loss, not a log-likelihood or a score")
    # Diverged runs (NaN, infinite, or implausibly large losses) carry no value a regression could use.
    finite = (np.isfinite(losses) & (losses <= MAX_PLAUSIBLE_LOSS)).all(axis=1)
    dropped = int((~finite).sum())
    if dropped:
        warnings.warn(f"{source}: dropped {dropped} of {len(frame)} runs with NaN, infinite or implausible "
                      f"(> {MAX_PLAUSIBLE_LOSS:g} nats/token) losses", RunsTableWarning, stacklevel=2)
    if not finite.any():
        raise RunsTableError(f"{source}: no run has finite, plausible losses in every loss column; fix or remove the bad runs")
    scale = scale_from_frame(frame, source)
    extra = frame.drop(columns=[WEIGHT + d for d in domains] + loss_cols + [c for c in (PARAMS, TOKENS) if c in frame])
    return RunsTable(domains, tuple(c[len(LOSS):] for c in loss_cols), weights[finite], losses[finite],
                     extra[finite].reset_index(drop=True),
                     *(None if scale[c] is None else scale[c][finite] for c in (PARAMS, TOKENS)))


def scale_from_frame(frame: pd.DataFrame, source: str) -> dict[str, np.ndarray | None]:
    """`scale.params` and `scale.tokens` as (n,) arrays (None where the column is absent or empty):
    counts, finite and in [1, MAX_COUNT], on every row of the table or on none. Any other `scale.`
    column is refused (a misspelt scale would otherwise be kept and ignored)."""
    unknown = [c for c in frame.columns if isinstance(c, str) and c.startswith(SCALE) and c not in (PARAMS, TOKENS)]
    if unknown:
        raise RunsTableError(f"{source}: column {unknown[0]!r} is no scale column; use {PARAMS} (non-embedding "
                             f"parameters) or {TOKENS} (training tokens), or rename it")
    out: dict[str, np.ndarray | None] = {}
    for col in (PARAMS, TOKENS):
        values = _numeric(frame, [col], source)[:, 0] if col in frame else None
        if values is None or np.isnan(values).all():  # absent, or a header over empty cells
            out[col] = None
            continue
        blank = np.flatnonzero(np.isnan(values))
        if len(blank):
            raise RunsTableError(f"{source}: row {blank[0] + 1} has no {col} ({len(blank)} rows empty); give it on "
                                 "every row or drop the column")
        bad = np.flatnonzero(~np.isfinite(values) | (values < 1) | (values > MAX_COUNT))
        if len(bad):
            raise RunsTableError(f"{source}: row {bad[0] + 1} has {col} = {values[bad[0]]}; a count must be finite and "
                                 f"between 1 and {MAX_COUNT:g}; write the plain count (6e7 for 60M)")
        out[col] = values
    return out


def read_runs(path: str | Path, tolerance: float = SUM_TOLERANCE) -> RunsTable:
    """Read and validate a runs table file (CSV or Parquet)."""
    return validate_runs(read_frame(path), source=f"runs table {Path(path).name}", tolerance=tolerance)


def require_runs(table: RunsTable, needed: int, who: str) -> None:
    """One-line error when a table has fewer distinct mixtures than `who` (a strategy) needs: copies of
    one run (same weights to 6 decimals, as a journal stores them) say nothing new about the surface."""
    distinct = len(np.unique(np.round(table.weights, 6), axis=0)) if len(table) else 0
    if distinct < needed:
        copies = f" but only {distinct} distinct mixture(s)" if distinct < len(table) else ""
        raise RunsTableError(f"the runs table has {len(table)} usable runs{copies}; {who} needs at least {needed} distinct; "
                             "add runs at other mixtures or choose a strategy that needs fewer (e.g. --strategy mixing_law)")


def runs_frame(mixtures: Sequence[Mixture], losses: Iterable[dict[str, float]] | None = None,
               params: Sequence[float] | None = None, tokens: Sequence[float] | None = None) -> pd.DataFrame:
    """Mixtures (and optionally their per-domain losses, nats/token, and each run's non-embedding
    parameters and training tokens: the scale columns) as a runs-table DataFrame."""
    rows = []
    loss_rows = list(losses) if losses is not None else [{}] * len(mixtures)
    for m, lo in zip(mixtures, loss_rows, strict=True):
        rows.append({**{WEIGHT + d: w for d, w in m.as_dict().items()}, **{LOSS + d: v for d, v in lo.items()}})
    frame = pd.DataFrame(rows)
    for col, values in ((PARAMS, params), (TOKENS, tokens)):
        if values is not None:
            frame[col] = np.asarray(values, dtype=float) if len(mixtures) else []
    return frame


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


def _check_names(cols: list[str], source: str) -> None:
    """Domain names from column names: not empty, no spaces or control characters at their ends or
    inside (a name with a newline breaks every file and parameter it later names)."""
    for c in cols:
        name = c.split(".", 1)[1]
        if not name or not name.isprintable() or name != name.strip():
            raise RunsTableError(f"{source}: column {c!r} names no usable domain; write weight.<domain> / loss.<domain> "
                                 "with a printable name without surrounding spaces")


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
