"""Controller latency: time for a strategy to propose the next mixtures from finished runs.

The controller calls `ask` synchronously, so this is time the GPUs may sit idle. For each case a fresh
strategy is told `runs` finished results (the `transfer` problem of strategies_problems.py with noise
0.01), then timed on `ask(4, [])` (the fit of the surrogate included: nothing was fitted before), and
on a following `ask(1, pending=3)` after one more result (the steady state of a sweep at concurrency
4). Reported: wall seconds (median of --repeats fresh strategies) and the process CPU seconds, with the
load average, since the machine may be shared. Ax's default generation (`bayesopt`, Ax Client, method
`fast`) is timed the same way in the same run, as the named baseline. Goal: `gp` proposes 4 from 64
runs of 17 domains in <= 2 s on 2 cores.

Usage: .venv/bin/python benchmarks/strategies_latency.py [--cases 64x17,20x5] [--strategies gp,bayesopt,...]
       [--repeats 3]
       .venv/bin/python benchmarks/strategies_latency.py --smoke   # seconds: 8 runs of 3 domains, gp/bayesopt/sobol
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strategies_problems import transfer  # noqa: E402

from orchestrator.mixture import Mixture  # noqa: E402
from orchestrator.objective import Objective  # noqa: E402
from orchestrator.strategies import build_strategy  # noqa: E402
from orchestrator.strategies.contract import Outcome  # noqa: E402

OPTIONS = {"regmix": {"prior": "uniform"}}


def told_strategy(kind: str, runs: int, k: int, seed: int):
    """A fresh strategy told `runs` noisy results of the transfer problem; returns it and a result maker."""
    problem = transfer(k, seed)
    domains = tuple(f"d{i}" for i in range(k))
    strategy = build_strategy(kind, OPTIONS.get(kind, {}), domains, Objective({d: 1 / k for d in domains}, "mean"), seed)
    rng = np.random.default_rng(seed)

    def result(m: Mixture) -> dict[str, float]:
        return dict(zip(domains, map(float, problem.losses(m.as_array()) + rng.normal(0, 0.01, k))))

    for w in rng.dirichlet(np.ones(k), size=runs):
        m = Mixture.from_array(domains, w)
        strategy.tell(Outcome(m, result(m)))  # told results count as the initial design: the next ask is the model's
    return strategy, result


def timed(fn) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def measure(kind: str, runs: int, k: int, repeats: int) -> dict[str, float]:
    """Median wall / CPU seconds of ask(4) from scratch and of a steady-state ask(1) with 3 pending."""
    first, steady = [], []
    for seed in range(repeats):
        strategy, result = told_strategy(kind, runs, k, seed)
        wall, cpu, proposals = timed(lambda: strategy.ask(4, []))
        batch = [p.mixture for p in proposals]
        assert len(batch) == 4, f"{kind} proposed {len(batch)} of 4"
        first.append((wall, cpu))
        strategy.tell(Outcome(batch[0], result(batch[0])))
        wall, cpu, _ = timed(lambda: strategy.ask(1, batch[1:]))
        steady.append((wall, cpu))
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    return {"ask4_wall": med(first, 0), "ask4_cpu": med(first, 1), "ask1_wall": med(steady, 0), "ask1_cpu": med(steady, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="64x17,20x5", help="RUNSxDOMAINS, comma-separated")
    ap.add_argument("--strategies", default="gp,bayesopt,regmix,mixing_law,bimix,sobol")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="seconds: case 8x3, strategies gp,bayesopt,sobol, 1 repeat")
    args = ap.parse_args()
    if args.smoke:
        args.cases, args.strategies, args.repeats = "8x3", "gp,bayesopt,sobol", 1
    warnings.filterwarnings("ignore")
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    for case in args.cases.split(","):
        runs, k = map(int, case.split("x"))
        rows = {kind: measure(kind, runs, k, args.repeats) for kind in args.strategies.split(",")}
        base = rows.get("bayesopt", {}).get("ask4_wall")
        print(f"\n{runs} finished runs, {k} domains (median of {args.repeats}); load average now {os.getloadavg()[0]:.2f}")
        print("| strategy | ask(4) wall s | ask(4) CPU s | vs Ax | ask(1), 3 pending, wall s | CPU s |\n|---|---|---|---|---|---|")
        for kind, r in rows.items():
            ratio = f"{r['ask4_wall'] / base:.3f}x" if base else "-"
            print(f"| {kind} | {r['ask4_wall']:.2f} | {r['ask4_cpu']:.2f} | {ratio} | {r['ask1_wall']:.2f} | {r['ask1_cpu']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
