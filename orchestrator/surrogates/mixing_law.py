"""Data Mixing Laws (Ye et al., 2403.16952): L_i(w) = c_i + k_i exp(sum_j t_ij w_j), per domain i.

On the simplex k_i folds into t (sum_j w_j = 1, so k_i exp(t_i . w) = exp((t_i + log k_i) . w)),
leaving c_i (the irreducible loss) and t_i (k) per domain. As in the paper's code, each domain is
fitted with a Huber loss by L-BFGS from many random starts, and the start that predicts held-out runs
best is kept, then refined on all runs. The std returned is each domain's residual standard error
(constant over mixtures): a parametric law has no other notion of where it is unsure.

The paper also extrapolates each run over steps and model sizes before fitting the law; a runs table
holds one loss per run, so only the mixture law is fitted here.
"""

from __future__ import annotations


import numpy as np
from scipy.optimize import minimize

from orchestrator.surrogates.base import Surrogate, check_xy


def law(params: np.ndarray, X: np.ndarray) -> np.ndarray:
    """c + exp(X @ t) for params = [c, t_1..t_k]; X (n, k) -> (n,) nats/token."""
    return params[0] + np.exp(X @ params[1:])


def jacobian(params: np.ndarray, X: np.ndarray) -> np.ndarray:
    """d law / d params at X (n, k): (n, k+1), columns [dc, dt_1..dt_k]."""
    e = np.exp(X @ params[1:])
    return np.column_stack([np.ones(len(X)), X * e[:, None]])


def huber_objective(params: np.ndarray, X: np.ndarray, y: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Mean Huber loss of the law's residuals and its gradient w.r.t. params (k+1,)."""
    e = np.exp(X @ params[1:])
    r = params[0] + e - y
    small = np.abs(r) <= delta
    loss = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    dr = np.where(small, r, delta * np.sign(r)) / len(y)
    return float(loss.mean()), np.concatenate([[dr.sum()], X.T @ (dr * e)])


class MixingLawSurrogate(Surrogate):
    """Exponential mixing law per evaluated domain (k+1 parameters each)."""

    name = "mixing_law"
    calibrated = False

    def __init__(self, starts: int = 16, huber_delta: float = 0.02, holdout: float = 0.2, seed: int = 0) -> None:
        self.starts, self.delta, self.holdout, self.seed = starts, huber_delta, holdout, seed
        self.params: np.ndarray | None = None  # (m, k+1)
        self.sigma: np.ndarray | None = None  # (m,) residual standard error, nats/token
        self.cov: np.ndarray | None = None  # (m, k+1, k+1) (J'J)^+ per domain: the parameters' covariance / s^2

    @staticmethod
    def min_runs(k: int) -> int:
        return k + 2  # k+1 parameters per domain, and one run to spare

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "MixingLawSurrogate":
        X, Y = check_xy(X, Y)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(X))
        n_hold = int(self.holdout * len(X)) if len(X) >= 10 else 0
        hold, train = order[:n_hold], order[n_hold:]
        self.params = np.array([self._fit_domain(X, Y[:, i], train, hold, rng) for i in range(Y.shape[1])])
        resid = np.column_stack([law(p, X) for p in self.params]) - Y
        dof = max(len(X) - X.shape[1] - 1, 1)
        self.sigma = np.sqrt((resid**2).sum(axis=0) / dof)
        # A pseudo-inverse: with k+1 parameters and few runs J'J can be singular (a domain no run
        # trains on leaves its t_j free); the free directions then add nothing rather than inf.
        self.cov = np.array([np.linalg.pinv(J.T @ J, rcond=1e-10) for J in (jacobian(p, X) for p in self.params)])
        return self

    def _fit_domain(self, X: np.ndarray, y: np.ndarray, train: np.ndarray, hold: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
        """Multi-start L-BFGS on `train`, the best start judged on `hold` (or train), refined on all."""
        judge = hold if len(hold) else train
        best, best_loss = None, np.inf
        for x0 in self._starts(y, X.shape[1], rng):
            p = self._lbfgs(x0, X[train], y[train], y.min())
            loss = huber_objective(p, X[judge], y[judge], self.delta)[0]
            if loss < best_loss:
                best, best_loss = p, loss
        return self._lbfgs(best, X, y, y.min())

    def _starts(self, y: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Random inits: c below the smallest loss, t around log of the reducible part."""
        out = []
        for _ in range(self.starts):
            c = rng.uniform(0.0, 0.95) * y.min()
            t = np.log(max(y.mean() - c, 1e-3)) + rng.normal(0.0, 0.5, size=k)
            out.append(np.concatenate([[c], t]))
        return out

    def _lbfgs(self, x0: np.ndarray, X: np.ndarray, y: np.ndarray, y_min: float) -> np.ndarray:
        # c stays in [0, min loss]: it is the loss no mixture can remove; t is bounded to keep exp finite.
        bounds = [(0.0, y_min)] + [(-20.0, 20.0)] * X.shape[1]
        res = minimize(huber_objective, x0, args=(X, y, self.delta), jac=True, method="L-BFGS-B",
                       bounds=bounds, options={"maxiter": 200})
        return res.x

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.params is None or self.sigma is None or self.cov is None:
            raise RuntimeError("fit the surrogate before predict")
        X = np.atleast_2d(np.asarray(X, dtype=float))
        mean = np.column_stack([law(p, X) for p in self.params])
        leverage = np.column_stack([np.einsum("ij,jk,ik->i", G, C, G)
                                    for G, C in ((jacobian(p, X), C) for p, C in zip(self.params, self.cov))])
        return mean, self.sigma * np.sqrt(1.0 + np.maximum(leverage, 0.0))
