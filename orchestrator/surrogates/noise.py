"""Run-to-run noise from replicates: several runs of one mixture (other seeds, `budget.replicates`).

A model told every run as its own row infers one noise level per domain from how far the data lie off a
smooth function, which confounds noise with roughness the kernel cannot follow. Replicates measure the
noise directly: the per-domain sample variance of the runs of each replicated mixture, pooled over the
replicated mixtures (sum of squared deviations / sum of (runs - 1)), is the run-to-run noise variance
of one run. A surrogate that takes observation noise (`FixedNoise`) is then fitted to one row per
mixture, the mean of its runs, with noise variance pooled / runs: for a GP with homoscedastic noise
these are sufficient statistics of the replicate rows, with one row per mixture instead of several
(no near-singular duplicate rows in its covariance or in an acquisition's baseline).

Only distinct runs count: a repeat (a proposal within `budget.weight_precision` of a trial run before,
docs/spec.md) is told the same losses again, and counting it would shrink the variance towards 0.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

# Weights are journaled to 6 decimals: rows with the same rounded weights are runs of one mixture.
DECIMALS = 6
# Floor of the pooled variance (nats^2): replicates that agree to the last digit (a trainer whose seed
# changes nothing) would otherwise ask the GP to interpolate exactly.
MIN_NOISE_VAR = 1e-10


@dataclass(frozen=True)
class Replicated:
    """One row per mixture: X (n, k), the mean losses Y (n, m), runs per row (n,), the pooled per-domain
    noise variance of one run (m,), and `Yvar` (n, m), the noise variance of each row's mean."""

    X: np.ndarray
    Y: np.ndarray
    runs: np.ndarray
    noise_var: np.ndarray

    @property
    def Yvar(self) -> np.ndarray:
        return np.outer(1.0 / self.runs, self.noise_var)


def pool_replicates(X: np.ndarray, Y: np.ndarray) -> Replicated | None:
    """The rows of X (n, k), Y (n, m) grouped by mixture (first-seen order), or None when no mixture has
    two distinct runs (then nothing measures the noise and the rows stay as they are)."""
    X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    groups: dict[bytes, list[int]] = {}
    for i, x in enumerate(np.round(X, DECIMALS)):
        rows = groups.setdefault(x.tobytes(), [])
        if not any(np.array_equal(Y[i], Y[j]) for j in rows):  # a repeat: the same run told again
            rows.append(i)
    if all(len(rows) < 2 for rows in groups.values()):
        return None
    squares, dof = np.zeros(Y.shape[1]), 0
    for rows in groups.values():
        if len(rows) > 1:
            squares += ((Y[rows] - Y[rows].mean(axis=0)) ** 2).sum(axis=0)
            dof += len(rows) - 1
    order = list(groups.values())
    return Replicated(X=np.array([X[rows[0]] for rows in order]), Y=np.array([Y[rows].mean(axis=0) for rows in order]),
                      runs=np.array([len(rows) for rows in order], dtype=float),
                      noise_var=np.maximum(squares / dof, MIN_NOISE_VAR))


class FixedNoise(abc.ABC):
    """A surrogate that can take each row's observation noise variance instead of inferring the noise."""

    @abc.abstractmethod
    def fit(self, X: np.ndarray, Y: np.ndarray, Yvar: np.ndarray | None = None):
        """Fit to X (n, k), Y (n, m); Yvar (n, m) the noise variance of each observation (nats^2), None:
        inferred."""
