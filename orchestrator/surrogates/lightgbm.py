"""Gradient-boosted trees per domain (LightGBM), the regressor of RegMix (Liu et al., 2407.01492).

RegMix fits one LightGBM per target on the raw weights, learning rate 0.01 and 1000 trees; that is the
default here. Trees give no predictive distribution, so the std returned is the spread of an ensemble of
`members` models bagged on different row subsamples (0 with one member): a rough uncertainty, enough
to tell where runs are thin.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.surrogates.base import Surrogate, check_xy


class LightGBMSurrogate(Surrogate):
    """One LGBMRegressor per evaluated domain; deterministic given `seed`."""

    name = "lightgbm"
    calibrated = False

    def __init__(self, n_estimators: int = 1000, learning_rate: float = 0.01, members: int = 1, seed: int = 0) -> None:
        self.n_estimators, self.learning_rate, self.members, self.seed = n_estimators, learning_rate, members, seed
        self.models: list[list[Any]] = []  # [member][domain]

    @staticmethod
    def min_runs(k: int) -> int:
        return 8

    def _regressor(self, member: int):
        import lightgbm

        bagging = {"subsample": 0.8, "subsample_freq": 1} if self.members > 1 else {}
        # min_child_samples 5 (LightGBM's default is 20): with tens of runs the default forbids most splits.
        return lightgbm.LGBMRegressor(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate, min_child_samples=5,
            random_state=self.seed + member, deterministic=True, force_row_wise=True, n_jobs=1, verbose=-1, **bagging)

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "LightGBMSurrogate":
        X, Y = check_xy(X, Y)
        self.models = [[self._regressor(b).fit(X, Y[:, j]) for j in range(Y.shape[1])] for b in range(self.members)]
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.models:
            raise RuntimeError("fit the surrogate before predict")
        X = np.atleast_2d(np.asarray(X, dtype=float))
        P = np.stack([np.column_stack([m.predict(X) for m in member]) for member in self.models])  # (members, n, m)
        return P.mean(axis=0), P.std(axis=0)
