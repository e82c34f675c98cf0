"""Regret of strategies on a replayed runs table, against Sobol (random search) in the same run.

    .venv/bin/python benchmarks/replay_bench.py --runs ../shared/data/regmix_1m_train.csv \
        --strategies gp,bayesopt,sobol --objectives mean,loss.pile_cc --concurrency 4 --seeds 5
    .venv/bin/python benchmarks/replay_bench.py --smoke    # seconds: a tiny generated table

For each objective it runs `mixsweep bench`'s public `run_bench` (real sweeps on the replay trainer)
and prints per strategy the regret of the recommendation and of the best observed run (mean ± sd over
seeds), each as a ratio to Sobol's, the seeds where the recommendation was within 0.005 of the best
observed run, and the controller's time per ask. Figures: docs/benchmarks.md, "Replay bench".
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.bench import run_bench, summary_rows  # noqa: E402


def tiny_table(path: Path) -> None:
    """A 3-domain table with a known smooth truth and noise 0.02, for --smoke."""
    import pandas as pd

    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(3), 40)
    L = np.stack([3.0 - 0.8 * np.sqrt(W[:, 0]) + 0.2 * W[:, 2], 2.5 - 0.6 * np.sqrt(W[:, 1])], axis=1)
    L += rng.normal(0.0, 0.02, L.shape)
    pd.DataFrame({"weight.a": W[:, 0], "weight.b": W[:, 1], "weight.c": W[:, 2],
                  "loss.x": L[:, 0], "loss.y": L[:, 1]}).to_csv(path, index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, help="Runs table to replay.")
    ap.add_argument("--strategies", default="gp,bayesopt,sobol")
    ap.add_argument("--objectives", default="mean,loss.pile_cc")
    ap.add_argument("--budget", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/replay_bench"))
    ap.add_argument("--smoke", action="store_true", help="A tiny generated table, 2 strategies, 4 trials, 1 seed.")
    args = ap.parse_args()
    import ray

    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory()
        args.runs, args.out = Path(tmp.name) / "runs.csv", Path(tmp.name) / "bench"
        tiny_table(args.runs)
        args.strategies, args.objectives, args.budget, args.concurrency, args.seeds = "gp,sobol", "loss.x", 4, 2, 1
    if args.runs is None:
        ap.error("--runs TABLE is required (or --smoke)")
    ray.init(address="local", num_cpus=2 if args.smoke else None, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    cache = str(args.out / "cache") if args.smoke else "~/.cache/mixsweep"
    for objective in args.objectives.split(","):
        t0 = time.perf_counter()
        prob, scores = run_bench(args.runs, args.strategies.split(","), objective, args.budget, args.concurrency,
                                 args.seeds, args.out / objective, cache_dir=cache, parallel=args.parallel,
                                 log=lambda m: None)
        rows = summary_rows(scores)
        print(f"\n{prob.objective.description}: {args.budget} trials, concurrency {args.concurrency}, {args.seeds} seeds, "
              f"{time.perf_counter() - t0:.0f} s (simulator optimum {prob.best:.4f})")
        base = next((r for r in rows if r["strategy"] == "sobol"), None)
        for r in rows:
            ratio = (f"  {r['regret_recommended'] / base['regret_recommended']:.2f}x Sobol (best observed "
                     f"{r['regret_best_observed'] / base['regret_best_observed']:.2f}x)") if base else ""
            print(f"  {r['strategy']:<11} recommended {r['regret_recommended']:.4f} ± {r['regret_recommended_sd']:.4f}  "
                  f"best observed {r['regret_best_observed']:.4f} ± {r['regret_best_observed_sd']:.4f}{ratio}  "
                  f"rec<=obs+0.005 {r['rec_within_observed']}/{r['seeds']}  ask {r['ask_s']:.2f} s (max {r['ask_max_s']:.2f})")
    ray.shutdown()
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
