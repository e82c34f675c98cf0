"""Cost of robust objectives in `gp`: `ask` and `recommend` under mean, worst-excess and a constraint.

A 3-domain problem where the mean-optimal mixture starves domain a (losses c_d - g_d log(w_d + 0.05),
g = (0.02, 0.5, 0.5)): a fresh `gp` strategy is told `--runs` runs (the reference first, then Sobol
mixtures), then timed on `ask(4)` (fit included) and `recommend()`. The baseline is the plain mean
objective in the same process. For the constrained objective (max_excess 0.01 over the uniform run) the
recommendation's SLSQP polish is timed at the shipped setting (POLISH_ITERS_CONSTRAINED iterations)
and at the unconstrained one (100 iterations), with the true objective and violation of each pick, so
the shorter polish is shown to cost nothing in quality. Wall seconds (median of --repeats), with the
load average: the machine may be shared.

Usage: .venv/bin/python benchmarks/objective_constrained.py [--runs 12] [--repeats 3]
       .venv/bin/python benchmarks/objective_constrained.py --smoke   # seconds: 6 runs, 1 repeat, shipped polish
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.objective import Objective  # noqa: E402
from orchestrator.optimize import sobol_simplex  # noqa: E402
from orchestrator.strategies import build_strategy  # noqa: E402
from orchestrator.strategies.contract import Outcome  # noqa: E402
from orchestrator.strategies import model_based  # noqa: E402

DOMAINS = ("a", "b", "c")
GAIN, BASE = np.array([0.02, 0.5, 0.5]), np.array([2.0, 2.1, 2.2])
OPTIONS = {"fit_maxiter": 50}


def losses(w: np.ndarray) -> dict[str, float]:
    return dict(zip(DOMAINS, (BASE - GAIN * np.log(np.asarray(w) + 0.05)).tolist()))


def objectives() -> dict[str, Objective]:
    mean = {d: 1 / 3 for d in DOMAINS}
    return {"mean": Objective(mean, "mean"),
            "worst_excess": Objective({d: 1.0 for d in DOMAINS}, "worst excess", kind="worst", excess=True),
            "mean_max_excess_0.01": Objective(mean, "mean s.t.", max_excess=0.01)}


def one(name: str, runs: int, seed: int, polish_iters: int) -> dict[str, float]:
    shipped = model_based.POLISH_ITERS_CONSTRAINED
    model_based.POLISH_ITERS_CONSTRAINED = polish_iters  # the module's public setting, restored below
    try:
        return timed_case(objectives()[name], runs, seed)
    finally:
        model_based.POLISH_ITERS_CONSTRAINED = shipped


def timed_case(obj: Objective, runs: int, seed: int) -> dict[str, float]:
    """A fresh gp told `runs` runs (the reference first): ask(4) and recommend() timed, the pick's truth."""
    s = build_strategy("gp", OPTIONS, DOMAINS, obj, seed)
    pts = np.vstack([np.full((1, 3), 1 / 3), sobol_simplex(runs - 1, 3, seed=seed)])
    for w in pts:
        s.tell(Outcome(build_mixture(w), losses(w)))
    t0 = time.perf_counter()
    s.ask(4, [])
    t_ask = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = s.recommend()
    t_rec = time.perf_counter() - t0
    truth = losses(rec.mixture.as_array())
    scored = s.objective  # the objective measured against the reference run the strategy was told first
    return {"ask_s": t_ask, "recommend_s": t_rec, "true_objective": scored(truth), "true_violation": scored.violated_by(truth),
            "source_model": float(rec.source == "model")}


def build_mixture(w: np.ndarray):
    from orchestrator.mixture import Mixture

    return Mixture.from_array(DOMAINS, w)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="seconds: 6 runs, 1 repeat, the shipped polish only")
    args = ap.parse_args()
    if args.smoke:
        args.runs, args.repeats = 6, 1
    warnings.filterwarnings("ignore")
    shipped = model_based.POLISH_ITERS_CONSTRAINED
    cases = [("mean", shipped), ("worst_excess", shipped), ("mean_max_excess_0.01", shipped), ("mean_max_excess_0.01", 100)]
    if args.smoke:  # the 100-iteration polish is the same path at 7x the cost
        cases = cases[:3]
    print(f"gp on 3 domains, {args.runs} runs, median of {args.repeats}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'objective':24s} {'polish':>6s} {'ask s':>7s} {'recommend s':>12s} {'true objective':>15s} {'violation':>10s} {'model':>6s}")
    base = None
    for name, iters in cases:
        rows = [one(name, args.runs, seed, iters) for seed in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        worst_violation = max(r["true_violation"] for r in rows)
        polish = iters if name.startswith("mean_max") else "-"
        print(f"{name:24s} {polish!s:>6s} {med['ask_s']:7.2f} {med['recommend_s']:12.2f} {med['true_objective']:15.4f} "
              f"{worst_violation:10.4f} {med['source_model']:6.0f}")
        base = base or med
    print(f"baseline (mean): ask {base['ask_s']:.2f} s, recommend {base['recommend_s']:.2f} s")


if __name__ == "__main__":
    main()
