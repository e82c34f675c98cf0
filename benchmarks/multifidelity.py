"""Multi-fidelity against the target alone: the target-scale regret a cost buys, in the same run.

    .venv/bin/python benchmarks/multifidelity.py --target ../shared/data/regmix_60m.csv:60m:60 \
        --cheap ../shared/data/regmix_1m_train.csv:1m:1 --objectives loss.pile_cc,mean --seeds 5
    .venv/bin/python benchmarks/multifidelity.py --smoke    # two tiny generated tables, one seed

Baseline: `gp` with every trial at the target fidelity, `--trials` of them (cost trials x target cost),
as a sweep without fidelities would spend. Candidate: `mfgp` choosing each trial's fidelity with a cost
budget of `--share` of the baseline's. Both are real sweeps run by `mixsweep bench`'s public `run_bench`
on the replay of each fidelity's table; regret is the target table's simulator's. Prints per objective
the regret of the recommendation and of the best observed target run (mean ± sd over seeds), the cost
spent, trials per fidelity, and the ratios candidate / baseline. Figures: docs/benchmarks.md,
"Multi-fidelity". Sweeps are kept under --out and read again when finished.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.bench import BenchFidelity, run_bench, summary_rows  # noqa: E402


def fidelity(text: str) -> BenchFidelity:
    """TABLE:PRESET:COST."""
    table, preset, cost = text.rsplit(":", 2)
    return BenchFidelity(preset, Path(table).expanduser().resolve(), float(cost))


def tiny_tables(root: Path) -> tuple[BenchFidelity, BenchFidelity]:
    """Two 3-domain tables: the larger model ~1 nat lower, and its optimum shifted towards domain c."""
    import pandas as pd

    out = []
    for name, preset, cost, shift, seed in (("small", "debug", 1.0, 0.0, 0), ("large", "1m", 10.0, 1.0, 1)):
        rng = np.random.default_rng(seed)
        W = rng.dirichlet(np.ones(3), 40)
        L = np.stack([3.0 - 0.8 * np.sqrt(W[:, 0]) + (0.2 - 0.3 * shift) * W[:, 2], 2.5 - 0.6 * np.sqrt(W[:, 1])], axis=1) - shift
        L += rng.normal(0.0, 0.02, L.shape)
        path = root / f"{name}.csv"
        pd.DataFrame({"weight.a": W[:, 0], "weight.b": W[:, 1], "weight.c": W[:, 2], "loss.x": L[:, 0], "loss.y": L[:, 1]}).to_csv(path, index=False)
        out.append(BenchFidelity(preset, path, cost))
    return out[0], out[1]


def row(label: str, r: dict, trials_by: str) -> str:
    return (f"| {label} | {r['cost']:g} | {r['regret_recommended']:.4f} ± {r['regret_recommended_sd']:.4f} | "
            f"{r['regret_best_observed']:.4f} ± {r['regret_best_observed_sd']:.4f} | {trials_by} | {r['rec_within_observed']}/{r['seeds']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=fidelity, help="TABLE:PRESET:COST of the target fidelity.")
    ap.add_argument("--cheap", type=fidelity, action="append", help="TABLE:PRESET:COST of a cheaper fidelity (repeatable).")
    ap.add_argument("--objectives", default="loss.pile_cc,mean")
    ap.add_argument("--trials", type=int, default=32, help="The baseline's trials, all at the target.")
    ap.add_argument("--share", type=float, default=1 / 3, help="The candidate's cost budget, as a share of the baseline's.")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/multifidelity"))
    ap.add_argument("--smoke", action="store_true", help="Two tiny generated tables, 3 baseline trials, one seed.")
    args = ap.parse_args()
    import ray

    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory()
        small, large = tiny_tables(Path(tmp.name))
        args.target, args.cheap, args.out = large, [small], Path(tmp.name) / "bench"
        args.objectives, args.trials, args.share, args.concurrency, args.seeds = "loss.x", 3, 0.8, 2, 1
    if args.target is None or not args.cheap:
        ap.error("--target and --cheap are required (or --smoke)")
    fids = [*args.cheap, args.target]
    baseline_cost = args.trials * args.target.cost
    budget = round(args.share * baseline_cost, 6)
    ray.init(address="local", num_cpus=2 if args.smoke else None, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    cache = str(args.out / "cache") if args.smoke else "~/.cache/mixsweep"
    for objective in args.objectives.split(","):
        runs = {}
        for label, strategy, trials, cost in (("target only", "gp", args.trials, None),
                                              ("multi-fidelity", "mfgp", 100_000, budget)):
            prob, scores = run_bench(args.target.table, [strategy], objective, trials, args.concurrency, args.seeds,
                                     args.out / objective / strategy, cache_dir=cache, parallel=args.parallel,
                                     log=lambda m: None, fidelities=fids, cost=cost)
            by = " ".join(sorted({s.trials_by_fidelity for s in scores})) if args.seeds == 1 else \
                ", ".join(f"{f.preset} {np.mean([int(dict(x.split(':') for x in s.trials_by_fidelity.split())[f.preset]) for s in scores]):.0f}"
                          for f in fids)
            runs[label] = (summary_rows(scores)[0], by)
        print(f"\n{prob.objective.description} at the target ({args.target.preset}, cost {args.target.cost:g}/trial; "
              f"{', '.join(f'{f.preset} {f.cost:g}' for f in args.cheap)}), {args.seeds} seeds, concurrency {args.concurrency}:")
        print("| sweep | cost | regret (recommended) | regret (best observed target run) | trials per fidelity | rec <= obs+0.005 |")
        print("|---|---|---|---|---|---|")
        for label, (r, by) in runs.items():
            print(row(f"{label} ({'gp' if label == 'target only' else 'mfgp'})", r, by))
        base, cand = runs["target only"][0], runs["multi-fidelity"][0]
        print(f"ratio multi-fidelity / target only: cost {cand['cost'] / base['cost']:.2f}x, regret recommended "
              f"{cand['regret_recommended'] / max(base['regret_recommended'], 1e-12):.2f}x, best observed "
              f"{cand['regret_best_observed'] / max(base['regret_best_observed'], 1e-12):.2f}x")
    ray.shutdown()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
