"""Minimise a function of the mixture on the simplex with per-domain bounds (shared by strategies).

The feasible set is {w : lower <= w <= upper, sum(w) = 1}. Every strategy that turns a surrogate into
a proposal comes here: candidates are drawn over the whole feasible set (scrambled Sobol points from
BoTorch's `sample_simplex`) and around the best known mixtures, the best are kept, and smooth
objectives are polished by SciPy's SLSQP under the bounds and the sum constraint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from scipy.optimize import minimize

# Width of the local Dirichlet clouds around incumbents: concentration per unit weight. 200 keeps
# a weight of 0.2 within about +-0.03 (one sd), a step size that still moves a 17-domain mixture.
LOCAL_CONCENTRATION = 200.0


@dataclass(frozen=True)
class Bounds:
    """Per-domain lower and upper weights, each (k,); feasible iff sum(lower) <= 1 <= sum(upper)."""

    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def of(cls, domains: tuple[str, ...], min_weight: float = 0.0,
           per_domain: Mapping[str, tuple[float, float]] | None = None) -> "Bounds":
        """Bounds from a floor on every weight and optional {domain: (lower, upper)}; ValueError naming
        the fix when a domain is unknown or the set is empty."""
        lower, upper = np.full(len(domains), float(min_weight)), np.ones(len(domains))
        for d, (lo, hi) in (per_domain or {}).items():
            if d not in domains:
                raise ValueError(f"bounds name unknown domain {d!r}; use one of {list(domains)}")
            i = domains.index(d)
            lower[i], upper[i] = max(lower[i], float(lo)), float(hi)
        if np.any(lower > upper):
            d = domains[int(np.argmax(lower > upper))]
            raise ValueError(f"domain {d!r}: lower bound above upper bound; lower min_weight or raise its upper bound")
        if lower.sum() > 1 + 1e-9 or upper.sum() < 1 - 1e-9:
            raise ValueError(f"no mixture fits the bounds (lower sum {lower.sum():.3f}, upper sum {upper.sum():.3f}); "
                             "the lower bounds must sum to <= 1 and the upper bounds to >= 1")
        return cls(lower, upper)

    def contains(self, W: np.ndarray, tol: float = 1e-6) -> np.ndarray:
        """(n,) bool: rows of W (n, k) inside the bounds and on the simplex."""
        W = np.atleast_2d(W)
        return (np.all(W >= self.lower - tol, axis=1) & np.all(W <= self.upper + tol, axis=1)
                & (np.abs(W.sum(axis=1) - 1) < tol * len(self.lower)))


def project(V: np.ndarray, bounds: Bounds, iters: int = 60) -> np.ndarray:
    """Euclidean projection of rows of V (n, k) onto the bounded simplex.

    The projection is clip(v - tau, lower, upper) with the scalar tau that makes the row sum to 1,
    found by bisection (the sum is monotone in tau). SciPy has no capped-simplex projection, hence
    these few lines; 60 halvings take tau to machine precision.
    """
    V = np.atleast_2d(np.asarray(V, dtype=float))
    lo_tau = (V - bounds.upper).min(axis=1) - 1.0  # every weight at its upper bound: sum >= 1
    hi_tau = (V - bounds.lower).max(axis=1) + 1.0  # every weight at its lower bound: sum <= 1
    for _ in range(iters):
        mid = 0.5 * (lo_tau + hi_tau)
        total = np.clip(V - mid[:, None], bounds.lower, bounds.upper).sum(axis=1)
        lo_tau, hi_tau = np.where(total > 1, mid, lo_tau), np.where(total > 1, hi_tau, mid)
    W = np.clip(V - 0.5 * (lo_tau + hi_tau)[:, None], bounds.lower, bounds.upper)
    return W / W.sum(axis=1, keepdims=True)


def sobol_simplex(n: int, k: int, seed: int) -> np.ndarray:
    """n scrambled-Sobol points uniform on the k-simplex, (n, k) (BoTorch's sample_simplex)."""
    from botorch.utils.sampling import sample_simplex

    return sample_simplex(k, n, qmc=True, seed=seed).double().numpy()


def candidates(bounds: Bounds, rng: np.random.Generator, n_global: int,
               centres: np.ndarray | None = None, n_local: int = 0) -> np.ndarray:
    """Feasible candidate mixtures (n, k): Sobol points over the whole set, plus Dirichlet clouds of
    n_local points around each row of `centres` (c, k) for local refinement."""
    k = len(bounds.lower)
    parts = [sobol_simplex(n_global, k, seed=int(rng.integers(2**31)))] if n_global else []
    if centres is not None and n_local:
        for c in np.atleast_2d(centres):
            parts.append(rng.dirichlet(LOCAL_CONCENTRATION * np.maximum(c, 1e-3) + 0.05, size=n_local))
    return project(np.vstack(parts), bounds)


def minimize_on_simplex(fun: Callable[[np.ndarray], np.ndarray], bounds: Bounds, rng: np.random.Generator,
                        n_candidates: int = 4096, centres: np.ndarray | None = None, n_local: int = 256,
                        polish: int = 3, maxiter: int = 100) -> tuple[np.ndarray, float]:
    """Minimise fun over the bounded simplex; returns (w (k,), fun(w)).

    fun maps (n, k) mixtures to (n,) values (vectorised). The best `polish` candidates are refined
    with SLSQP (finite-difference gradients; set polish=0 for piecewise-constant fun such as trees).
    """
    C = candidates(bounds, rng, n_candidates, centres, n_local)
    values = fun(C)
    order = np.argsort(values, kind="stable")
    best_w, best_v = C[order[0]], float(values[order[0]])
    for i in order[:polish]:
        w, v = _polish(fun, C[i], bounds, maxiter)
        if v < best_v - 1e-12:
            best_w, best_v = w, v
    return best_w, best_v


def _polish(fun: Callable[[np.ndarray], np.ndarray], w0: np.ndarray, bounds: Bounds, maxiter: int) -> tuple[np.ndarray, float]:
    """SLSQP from w0 under the bounds and sum(w) = 1; the result is projected back (SLSQP may end
    a hair outside)."""
    res = minimize(lambda w: batched_gradient(fun, w, bounds.upper), w0, method="SLSQP", jac=True,
                   bounds=list(zip(bounds.lower, bounds.upper)),
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
                   options={"maxiter": maxiter, "ftol": 1e-10})
    w = project(res.x, bounds)[0]
    return w, float(fun(w[None, :])[0])


# SciPy's forward-difference step for SLSQP (sqrt of float64's machine epsilon).
FD_STEP = float(np.sqrt(np.finfo(float).eps))


def batched_gradient(fun: Callable[[np.ndarray], np.ndarray], w: np.ndarray, upper: np.ndarray) -> tuple[float, np.ndarray]:
    """fun(w) and its forward-difference gradient (k,) from one call of `fun` on k + 1 points.

    Why not SciPy's own finite differences: they call `fun` once per coordinate, and a model's
    prediction costs mostly per call (Ax's `Client.predict` builds its inputs for every call: 17
    domains made bayesopt's optimum search take 26-58 s, docs/benchmarks.md). The steps are SciPy's
    (FD_STEP, away from an upper bound where a forward step would leave it)."""
    w = np.asarray(w, dtype=float)
    h = FD_STEP * np.where(w + FD_STEP > upper, -1.0, 1.0)
    values = fun(np.vstack([w[None, :], w[None, :] + np.diag(h)]))
    return float(values[0]), (values[1:] - values[0]) / h
