"""What `mixsweep report` costs: the surrogate-backed report against the observed-only one.

Builds finished sweep directories of N trials without Ray (a journal written event by event as the
controller writes it, and the frozen spec.yaml), with analytic per-domain losses from the synthetic
trainer (`workers.backends.synthetic_losses`, 4 domains, Sobol mixtures plus noise). Each N is written
twice, differing only in `strategy.kind`:

  sobol   the baseline: a strategy without a surrogate. Since the report predicts baselines for every
          strategy, it fits a GP of its own here (report.ReportGP) for the predictions and the
          leave-one-out; only sweeps with fewer than 3 completed trials are drawn from observed
          values alone
  gp      the report rebuilds the GP strategy by re-telling the journal, predicts the baselines, and
          refits the GP once per left-out trial (at most report.LOO_MAX_TRIALS of them)

and times `write_report` on each (best of --repeats), printing seconds and the ratio gp / sobol.

Usage: .venv/bin/python benchmarks/report_cost.py [--trials 8 20 40 80] [--repeats 2]
       .venv/bin/python benchmarks/report_cost.py --smoke   # seconds: 6 trials, 1 repeat
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.journal import Journal  # noqa: E402
from orchestrator.optimize import sobol_simplex  # noqa: E402
from orchestrator.report import LOO_MAX_TRIALS, write_report  # noqa: E402
from orchestrator.spec import parse_spec  # noqa: E402
from workers.backends import synthetic_losses  # noqa: E402

DOMAINS = ("books", "code", "math", "legal")
OPTIMUM = dict(zip(DOMAINS, (0.4, 0.3, 0.2, 0.1)))


def build_sweep(d: Path, n: int, strategy: str, seed: int = 0) -> None:
    """A finished sweep of n trials in directory d, recommending its best observed trial."""
    spec = parse_spec({"name": f"bench-{strategy}-{n}", "domains": {x: {} for x in DOMAINS},
                       "trainer": {"kind": "synthetic", "optimum": OPTIMUM}, "strategy": {"kind": strategy},
                       "budget": {"trials": n, "concurrency": 4}, "seed": seed})
    d.mkdir(parents=True)
    (d / "spec.yaml").write_text(yaml.safe_dump({"spec_digest": spec.digest(), **spec.model_dump(mode="json")}, sort_keys=False))
    rng = np.random.default_rng(seed)
    W = np.vstack([np.full((1, len(DOMAINS)), 1 / len(DOMAINS)), sobol_simplex(n - 1, len(DOMAINS), seed=seed)])
    best = None
    with Journal(d / "journal.jsonl") as j:
        j.append("sweep_started", name=spec.name, domains=list(DOMAINS), budget=n, concurrency=4,
                 objective="mean of per-domain losses", spec_digest=spec.digest(), strategy=strategy)
        for i, w in enumerate(W):
            mixture = dict(zip(DOMAINS, map(float, np.round(w, 6))))
            losses = {k: v + float(rng.normal(0, 0.01)) for k, v in synthetic_losses(mixture, OPTIMUM).items()}
            objective = float(np.mean(list(losses.values())))
            tid = f"t{i:012x}"
            j.append("trial_proposed", trial=tid, mixture=mixture)
            j.append("trial_started", trial=tid, attempt=1)
            j.append("trial_completed", trial=tid, losses=losses, loss_stderr={k: 0.01 for k in DOMAINS}, objective=objective)
            if best is None or objective < best[2]:
                best = (mixture, losses, objective)
        j.append("recommended", mixture=best[0], predicted_losses=best[1], predicted_std={}, objective=best[2],
                 objective_std=0.0, source="observed", trials_used=n, notes=[])
        j.append("sweep_finished", completed=n, reused=0)


def time_report(d: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        write_report(d)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, nargs="+", default=[8, 20, 40, 80])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="seconds: one sweep size of 6 trials, 1 repeat")
    args = ap.parse_args()
    if args.smoke:
        args.trials, args.repeats = [6], 1
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"
        build_sweep(warm, min(8, *args.trials), "gp")
        write_report(warm)  # imports (torch, BoTorch, matplotlib) are not the report's cost
        print(f"write_report wall time, best of {args.repeats} (LOO refits at most {LOO_MAX_TRIALS} trials)")
        print(f"{'trials':>7} {'sobol (observed only) s':>24} {'gp (surrogate + LOO) s':>23} {'ratio gp/sobol':>15}")
        for n in args.trials:
            dirs = {}
            for kind in ("sobol", "gp"):
                dirs[kind] = Path(tmp) / f"{kind}-{n}"
                build_sweep(dirs[kind], n, kind)
            base, gp = time_report(dirs["sobol"], args.repeats), time_report(dirs["gp"], args.repeats)
            print(f"{n:>7} {base:>24.2f} {gp:>23.2f} {gp / base:>15.1f}")


if __name__ == "__main__":
    main()
