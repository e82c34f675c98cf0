"""The Surrogate interface: a model of every evaluated domain's loss as a function of the mixture.

Shapes: X is (n, k) mixtures on the simplex (k training domains); Y is (n, m) validation losses in
nats/token (m evaluated domains, which need not be the training domains). `predict` returns the
mean and standard deviation of each domain's loss, both (n, m). An Objective then composes the
domains (DESIGN.md section 3): modelling each domain and composing learns more from the same runs than
regressing the composed number (docs/strategies.md has the measured difference).
"""

from __future__ import annotations

import abc
import contextlib
from typing import Iterator

import numpy as np


class Surrogate(abc.ABC):
    """Fit per-domain losses; predict their mean and std at new mixtures."""

    #: A short name for reports and errors.
    name: str = "surrogate"
    #: Whether `predict`'s std is a posterior (a GP's), which shrinks at the runs and grows away from
    #: them. False for fitted laws and tree ensembles, whose std says little about where they are
    #: wrong: a strategy then checks the model by cross-validation before trusting its optimum
    #: (strategies.model_based.ModelStrategy.cross_validated).
    calibrated: bool = True

    @abc.abstractmethod
    def fit(self, X: np.ndarray, Y: np.ndarray) -> "Surrogate":
        """Fit to X (n, k) mixtures and Y (n, m) losses (nats/token). Returns self."""

    @abc.abstractmethod
    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of each domain's loss at X (n, k): two (n, m) arrays, nats/token."""

    @staticmethod
    def min_runs(k: int) -> int:
        """Fewest runs a fit is meaningful with, for k training domains."""
        return 2


def check_xy(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and finiteness of training data; returns float64 copies."""
    X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise ValueError(f"need X (n, k) and Y (n, m) with the same n, got {X.shape} and {Y.shape}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):
        raise ValueError("surrogates need finite mixtures and losses; drop runs with NaN/inf losses first")
    return X, Y


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run BLAS (numpy, scipy) and torch on one thread inside the block (restored after).

    Why: surrogate matrices are tiny (runs x domains), so threads only add synchronisation, and on a
    busy 2-core head node spinning worker threads turned a 1 s fit into tens of seconds of wall time
    (measured: a 17-domain GP fit 11.8 s threaded vs 1.3 s single-threaded with other processes
    running; mixing-law asks of up to 70 s).
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)
