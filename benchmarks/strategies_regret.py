"""Sample efficiency: simple regret versus trials for every strategy, next to Sobol and uniform.

A sweep is simulated in-process like the controller runs it: `concurrency` trials in flight, the
oldest finishes next and is told, then the strategy is asked to refill (with the others pending).
Simple regret after t trials = min over the first t finished trials of (true mean loss - optimum),
noise-free, nats/token. Problems: benchmarks/strategies_problems.py (`quadratic`, `transfer`).
Prints mean regret (and its standard error over seeds) at several trial counts, and the ratio to
Sobol's at the last one; the goal for the default strategy is a ratio <= 0.5 at 32 trials.

Usage: .venv/bin/python benchmarks/strategies_regret.py [--domains 5,17] [--problems quadratic,transfer]
       [--seeds 10] [--budget 32] [--concurrency 4] [--strategies gp,regmix,...] [--noise 0.01]
       .venv/bin/python benchmarks/strategies_regret.py --smoke   # seconds: 3 domains, 1 seed, 6 trials
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strategies_problems import PROBLEMS, Problem  # noqa: E402

from orchestrator.objective import Objective  # noqa: E402
from orchestrator.strategies import build_strategy  # noqa: E402
from orchestrator.strategies.contract import Outcome  # noqa: E402

DEFAULT = "gp,mixing_law,bimix,regmix,bayesopt,sobol,uniform"
# RegMix's swarm centres on token shares; a synthetic problem has no data, so its prior is uniform.
OPTIONS = {"regmix": {"prior": "uniform"}}


def run_sweep(kind: str, problem: Problem, seed: int, budget: int, concurrency: int, noise: float) -> tuple[np.ndarray, float]:
    """Regret of each finished trial in order (budget,) (NaN-padded if the strategy stopped early),
    and the longest single ask in seconds."""
    domains = tuple(f"d{i}" for i in range(problem.k))
    objective = Objective({d: 1.0 / problem.k for d in domains}, "mean")
    strategy = build_strategy(kind, OPTIONS.get(kind, {}), domains, objective, seed)
    rng = np.random.default_rng([seed, 99])
    pending, regrets, slowest = [], [], 0.0
    while len(regrets) < budget:
        t0 = time.perf_counter()
        pending += [p.mixture for p in strategy.ask(min(concurrency - len(pending), budget - len(regrets) - len(pending)), pending)]
        slowest = max(slowest, time.perf_counter() - t0)
        if not pending:
            break
        mixture = pending.pop(0)
        w = mixture.as_array()
        regrets.append(problem.regret(w))
        observed = problem.losses(w) + rng.normal(0.0, noise, problem.k)
        strategy.tell(Outcome(mixture, dict(zip(domains, map(float, observed)))))
    out = np.full(budget, np.nan)
    out[: len(regrets)] = regrets
    return out, slowest


def simple_regret(regrets: np.ndarray) -> np.ndarray:
    """Running minimum, carrying the last value past an early stop: (budget,)."""
    filled = np.where(np.isnan(regrets), np.inf, regrets)
    return np.minimum.accumulate(filled)


def table(problem_name: str, k: int, results: dict[str, np.ndarray], times: dict[str, float], checkpoints: list[int]) -> str:
    """results: kind -> (seeds, budget) simple regret. Markdown table with ratios to Sobol."""
    last = checkpoints[-1]
    sobol = results["sobol"][:, last - 1].mean() if "sobol" in results else np.nan
    head = ["strategy"] + [f"regret@{c}" for c in checkpoints] + [f"ratio to sobol @{last}", "slowest ask (s)"]
    lines = [f"\n{problem_name}, {k} domains ({len(next(iter(results.values())))} seeds; mean ± s.e., nats)",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, r in results.items():
        cells = [f"{r[:, c - 1].mean():.4f} ± {r[:, c - 1].std(ddof=1) / np.sqrt(len(r)) if len(r) > 1 else 0:.4f}" for c in checkpoints]
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {r[:, last - 1].mean() / sobol:.2f} | {times[kind]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", default="5,17")
    ap.add_argument("--problems", default="quadratic,transfer")
    ap.add_argument("--strategies", default=DEFAULT)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--budget", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--noise", type=float, default=0.01, help="sd of each observed loss, nats")
    ap.add_argument("--smoke", action="store_true", help="seconds: 3 domains, gp/sobol/uniform, 1 seed, 6 trials, concurrency 2")
    args = ap.parse_args()
    if args.smoke:
        args.domains, args.strategies, args.seeds, args.budget, args.concurrency = "3", "gp,sobol,uniform", 1, 6, 2
    warnings.filterwarnings("ignore")
    checkpoints = sorted({c for c in (8, 16, args.budget) if c <= args.budget})
    for name in args.problems.split(","):
        for k in map(int, args.domains.split(",")):
            results, times = {}, {}
            for kind in args.strategies.split(","):
                t0 = time.perf_counter()
                runs = [run_sweep(kind, PROBLEMS[name](k, s), s, args.budget, args.concurrency, args.noise) for s in range(args.seeds)]
                results[kind] = np.array([simple_regret(r) for r, _ in runs])
                times[kind] = max(t for _, t in runs)
                print(f"  {name} k={k} {kind}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            print(table(name, k, results, times, checkpoints), flush=True)


if __name__ == "__main__":
    main()
