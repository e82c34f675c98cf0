"""BiMix (Ge et al., 2405.14908): L_i(w_i, s) = A_i / w_i^alpha_i * (B_i / s^beta_i + C_i).

Each evaluated domain's loss depends on its own training weight w_i (and the training step s). A runs
table holds each run's final loss, all at the same s, so the step factor is a constant folded into
A_i and the law becomes log L_i = a_i - alpha_i log(w_i + eps): an ordinary least-squares line per
domain. That needs every evaluated domain to be a training domain (`pairs` maps each loss column to
its weight column). eps keeps w_i = 0 finite (RegMix-style tables zero small weights).

Few parameters (2 per domain) make it the regressor of choice at tiny swarms; it cannot represent
transfer between domains, so it ranks poorly once cross-domain effects dominate (docs/strategies.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from orchestrator.surrogates.base import Surrogate, check_xy


class BiMixSurrogate(Surrogate):
    """Power law of each domain's own weight; std from the residuals in log space."""

    name = "bimix"
    calibrated = False

    def __init__(self, pairs: Sequence[int], eps: float = 1e-3) -> None:
        self.pairs, self.eps = list(pairs), eps
        self.coef: np.ndarray | None = None  # (m, 2): log A_i, alpha_i
        self.sigma_log: np.ndarray | None = None  # (m,) residual sd of log loss

    @staticmethod
    def min_runs(k: int) -> int:
        return 3

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "BiMixSurrogate":
        X, Y = check_xy(X, Y)
        if len(self.pairs) != Y.shape[1]:
            raise ValueError(f"bimix needs one training domain per loss column: {len(self.pairs)} pairs, {Y.shape[1]} losses")
        coef, sig = [], []
        for j, i in enumerate(self.pairs):
            A = np.column_stack([np.ones(len(X)), -np.log(X[:, i] + self.eps)])
            sol, *_ = np.linalg.lstsq(A, np.log(Y[:, j]), rcond=None)
            resid = A @ sol - np.log(Y[:, j])
            coef.append(sol)
            sig.append(np.sqrt((resid**2).sum() / max(len(X) - 2, 1)))
        self.coef, self.sigma_log = np.array(coef), np.array(sig)
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.coef is None or self.sigma_log is None:
            raise RuntimeError("fit the surrogate before predict")
        X = np.atleast_2d(np.asarray(X, dtype=float))
        logw = np.log(X[:, self.pairs] + self.eps)  # (n, m)
        mean = np.exp(self.coef[:, 0] - self.coef[:, 1] * logw)
        return mean, mean * self.sigma_log  # delta method: sd(L) ~ L * sd(log L)
