"""Synthetic mixture problems with a known optimum, for the strategy benchmarks.

- `quadratic`: workers.backends.synthetic_losses (each domain gains from its own data; the mean of
  the losses is 4 |w - w*|^2 above its minimum, w* proportional to 1..k).
- `transfer`: a harder, law-shaped problem of our own. Per domain i,
      L_i(w) = c_i + b_i (sum_j T_ij w_j + eps)^(-alpha_i),
  a power law in the "effective data" a domain sees, where T (T_ii = 1, sparse off-diagonal
  transfer in [0, 0.4]) lets some domains help others, as code helps math. The mean of the L_i is
  convex in w, so its minimum on the simplex (found by SLSQP) is the global optimum. Constants are
  drawn per instance from a seeded Generator; losses are 2-5 nats like small proxies.

Noise: each observed loss gets N(0, noise^2) added (default 0.01 nats, within the run-to-run sd
below 0.02 that the BO-for-mixtures study reports for 25M proxies).

Run as a script it prints, per problem and size, the optimum's mean loss, the regret of the uniform
mixture, and the least regret among random mixtures (never below 0 when the optimum is the global one):

    .venv/bin/python benchmarks/strategies_problems.py [--domains 5,17] [--seeds 3] [--samples 20000]
    .venv/bin/python benchmarks/strategies_problems.py --smoke     # seconds: 3 domains, 1 seed
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass(frozen=True)
class Problem:
    """Per-domain losses (k,) of a mixture (k,), and the optimum of their mean."""

    name: str
    k: int
    losses: Callable[[np.ndarray], np.ndarray]
    optimum: np.ndarray
    best: float  # mean loss at the optimum, nats/token

    def regret(self, w: np.ndarray) -> float:
        """Mean loss at w minus the optimum's, nats/token (>= 0)."""
        return float(self.losses(w).mean() - self.best)


def quadratic(k: int) -> Problem:
    from workers.backends import default_optimum, synthetic_losses

    names = [f"d{i}" for i in range(k)]
    opt = default_optimum(names)
    w_star = np.array([opt[d] for d in names])

    def losses(w: np.ndarray) -> np.ndarray:
        return np.array(list(synthetic_losses(dict(zip(names, w)), opt).values()))

    return Problem("quadratic", k, losses, w_star, float(losses(w_star).mean()))


def transfer(k: int, seed: int = 0) -> Problem:
    rng = np.random.default_rng([k, seed, 2024])
    c, b, alpha = rng.uniform(1.5, 3.5, k), rng.uniform(0.2, 0.6, k), rng.uniform(0.2, 0.5, k)
    T = np.where(rng.random((k, k)) < 0.3, rng.uniform(0.0, 0.4, (k, k)), 0.0)
    np.fill_diagonal(T, 1.0)
    eps = 0.02

    def losses(w: np.ndarray) -> np.ndarray:
        return c + b * (T @ np.asarray(w) + eps) ** (-alpha)

    best_w, best = np.full(k, 1.0 / k), np.inf
    for w0 in [np.full(k, 1.0 / k), *rng.dirichlet(np.ones(k), 4)]:
        res = minimize(lambda w: losses(w).mean(), w0, method="SLSQP", bounds=[(0, 1)] * k,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}], options={"ftol": 1e-12, "maxiter": 500})
        w = np.clip(res.x, 0, None) / np.clip(res.x, 0, None).sum()
        if losses(w).mean() < best:
            best_w, best = w, float(losses(w).mean())
    return Problem("transfer", k, losses, best_w, best)


PROBLEMS = {"quadratic": lambda k, seed: quadratic(k), "transfer": transfer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", default="quadratic,transfer")
    ap.add_argument("--domains", default="5,17", help="numbers of domains, comma-separated")
    ap.add_argument("--seeds", type=int, default=3, help="instances per problem and size (transfer draws new constants)")
    ap.add_argument("--samples", type=int, default=20_000, help="random mixtures (flat Dirichlet) compared with the optimum")
    ap.add_argument("--smoke", action="store_true", help="seconds: 3 domains, 1 seed, 1,000 samples")
    args = ap.parse_args()
    if args.smoke:
        args.domains, args.seeds, args.samples = "3", 1, 1000
    print("| problem | domains | seed | optimum's mean loss | regret of uniform | least regret of random mixtures |")
    print("|---|---|---|---|---|---|")
    for name in args.problems.split(","):
        for k in map(int, args.domains.split(",")):
            for seed in range(args.seeds):
                problem = PROBLEMS[name](k, seed)
                rng = np.random.default_rng(seed)
                sampled = min(problem.regret(w) for w in rng.dirichlet(np.ones(k), args.samples))
                print(f"| {name} | {k} | {seed} | {problem.best:.4f} | {problem.regret(np.full(k, 1.0 / k)):.4f} | {sampled:.4f} |")


if __name__ == "__main__":
    main()
