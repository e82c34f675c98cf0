"""Scale transfer on real runs: does fitting runs of two sizes together rank the larger size better?

Reads two runs tables of the same domains at two model sizes (default: RegMix's 512 runs at 1M and 256
at 60M parameters under /work/shared/data, read in place, never copied) and gives their rows
`scale.params` (1e6 and 6e7) in memory. For each of `--draws` random draws: `--n-small` runs at the
small size and `--n-large` at the large one are drawn; the other large-size runs are held out. Arms,
each fitted as `mixsweep recommend` fits a table (orchestrator.recommend.fit_strategy, per-domain
losses composed by the objective):

- (a) the small runs alone (one scale: the `gp` strategy, as today);
- (b) the large runs alone (one scale);
- (c0) both, over mixture and scale with a constant mean (orchestrator/scale_model.py's first version);
- (c) both, with a least-squares trend in log size under the GP (recommend's default for such tables).

Reported: the Spearman rank correlation of the predicted objective against the true one on the held-out
large runs, for `loss.pile_cc` (RegMix's target) and the mean of all losses (mean ± sd over draws); the
ratio of (c) to the better of (a) and (b); the share of held-out objectives within (c)'s predicted
± 2 std at the large size (calibration; std without run-to-run noise, as recommend reports it); and the
mean predicted std at 10x the large size over that at the large size (extrapolation must widen it).

Usage: .venv/bin/python benchmarks/scale_transfer.py [--small regmix_1m_train.csv] [--large regmix_60m.csv]
       [--draws 10] [--n-small 64] [--n-large 16] [--seed 0]
       .venv/bin/python benchmarks/scale_transfer.py --smoke   # seconds: generated tables, 2 draws

--smoke: two generated tables (domains pile_cc, b, c; 48 runs at 1e6 and 40 at 6e7; the level falls
and the optimum moves with size; noise 0.01), 24 + 8 runs per draw, 2 draws, GPs fitted with 50
L-BFGS steps (the sweep's default) instead of recommend's 200.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.objective import Objective  # noqa: E402
from orchestrator.recommend import fit_strategy  # noqa: E402
from orchestrator.runs import RunsTable, read_runs  # noqa: E402

DATA = Path("/work/shared/data")
SMALL, LARGE = 1e6, 6e7
ARMS = {"a": "(a) small runs alone", "b": "(b) large runs alone", "c0": "(c0) both, constant mean (first version)",
        "c": "(c) both, trend in log size (recommend's default)"}


def tiny_tables(small: Path, large: Path) -> None:
    """--smoke: domains pile_cc, b, c; 48 runs at 1e6 and 40 at 6e7 (level -0.4 nats per decade, the
    optimum moving from pile_cc towards c with size), noise 0.01."""
    rng = np.random.default_rng(0)
    for path, n, t in ((small, 48, 0.0), (large, 40, 1.0)):
        W = rng.dirichlet(np.ones(3), n)
        opt = (1 - t) * np.array([0.6, 0.3, 0.1]) + t * np.array([0.2, 0.3, 0.5])
        L = 3.0 - 0.7 * t + np.array([1.0, 0.6, 0.8]) * ((W - opt) ** 2).sum(axis=1, keepdims=True) + rng.normal(0, 0.01, (n, 3))
        names = ("pile_cc", "b", "c")
        pd.DataFrame({**{f"weight.{d}": W[:, i] for i, d in enumerate(names)},
                      **{f"loss.{d}": L[:, i] for i, d in enumerate(names)}}).to_csv(path, index=False)


def at_size(table: RunsTable, params: float) -> RunsTable:
    """The table with every run's `scale.params` set to `params`."""
    return dataclasses.replace(table, params=np.full(len(table), params))


def joined(a: RunsTable, b: RunsTable) -> RunsTable:
    """Two tables of the same domains, one after the other (b's columns in a's order)."""
    if set(a.domains) != set(b.domains) or set(a.loss_domains) != set(b.loss_domains):
        raise SystemExit("the two runs tables must have the same weight and loss columns")
    wi, li = [b.domains.index(d) for d in a.domains], [b.loss_domains.index(d) for d in a.loss_domains]
    return RunsTable(a.domains, a.loss_domains, np.vstack([a.weights, b.weights[:, wi]]), np.vstack([a.losses, b.losses[:, li]]),
                     pd.concat([a.extra, b.extra], ignore_index=True), np.concatenate([a.params, b.params]))


def objectives(table: RunsTable) -> dict[str, np.ndarray]:
    """Objective name -> coefficients over the loss domains (m,)."""
    m = len(table.loss_domains)
    return {"loss.pile_cc": np.eye(m)[table.loss_domains.index("pile_cc")], "mean": np.full(m, 1.0 / m)}


def predict(train: RunsTable, W: np.ndarray, seed: int, options: dict, at: float | None = None):
    """Per-domain predicted mean and std (n, m) at mixtures W, fitted as `recommend` fits `train`
    (`options` over recommend's)."""
    mean_objective = Objective({d: 1.0 / len(train.loss_domains) for d in train.loss_domains}, "mean")
    strategy = fit_strategy(train, mean_objective, "gp", seed, options or None, at_params=at)
    mean, std, loss_domains = strategy.predict_losses(W)
    assert loss_domains == train.loss_domains
    return mean, std


def draw(small: RunsTable, large: RunsTable, n_small: int, n_large: int, rng: np.random.Generator, seed: int,
         options: dict):
    """One draw: Spearman per (objective, arm), calibration of (c) per objective, std ratio 10x / 1x."""
    s_rows, l_rows = rng.permutation(len(small))[:n_small], rng.permutation(len(large))
    train_s, train_l, test = small.subset(s_rows), large.subset(l_rows[:n_large]), large.subset(l_rows[n_large:])
    both = joined(train_s, train_l)
    preds = {"a": predict(train_s, test.weights, seed, options), "b": predict(train_l, test.weights, seed, options),
             "c0": predict(both, test.weights, seed, {**options, "scale_mean": "constant"}, LARGE),
             "c": predict(both, test.weights, seed, options, LARGE)}
    _, std10 = predict(both, test.weights, seed, options, 10 * LARGE)
    rho, cal, widen = {}, {}, {}
    for name, c in objectives(small).items():
        truth = test.losses @ c
        for arm, (mean, _) in preds.items():
            rho[(name, arm)] = float(spearmanr(mean @ c, truth).statistic)
        for arm in ("c0", "c"):
            mean, std = preds[arm]
            cal[(name, arm)] = float(np.mean(np.abs(mean @ c - truth) <= 2 * np.sqrt(std**2 @ c**2)))
        widen[name] = float(np.sqrt(std10**2 @ c**2).mean() / np.sqrt(preds["c"][1] ** 2 @ c**2).mean())
    return rho, cal, widen


def report(small: RunsTable, large: RunsTable, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    rhos, cals, widens = [], [], []
    for d in range(args.draws):
        t0 = time.perf_counter()
        rho, cal, widen = draw(small, large, args.n_small, args.n_large, rng, args.seed + d, args.options)
        rhos.append(rho), cals.append(cal), widens.append(widen)
        print(f"  draw {d}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    names = list(objectives(small))
    held = len(large) - args.n_large
    print(f"scale transfer: fit on {args.n_small} runs at {SMALL:g} and/or {args.n_large} at {LARGE:g} parameters; "
          f"Spearman on the other {held} runs at {LARGE:g} (mean ± sd over {args.draws} draws)")
    print(f"| arm | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    mean = {k: np.mean([r[k] for r in rhos]) for k in rhos[0]}
    for arm, label in ARMS.items():
        cells = [f"{mean[(n, arm)]:.3f} ± {np.std([r[(n, arm)] for r in rhos]):.3f}" for n in names]
        print(f"| {label} | {' | '.join(cells)} |")
    for arm in ("c0", "c"):
        parts = []
        for n in names:
            single = max("ab", key=lambda x: mean[(n, x)])
            best = mean[(n, single)]
            paired = np.array([r[(n, arm)] - r[(n, single)] for r in rhos])  # same draw, same held-out runs
            verdict = "beats both" if mean[(n, arm)] > best else "does NOT beat both"
            parts.append(f"{n} {mean[(n, arm)] / best:.3f}x (rank error {(1 - mean[(n, arm)]) / (1 - best):.2f}x; "
                         f"vs ({single}) per draw {paired.mean():+.3f} ± {paired.std():.3f}, ahead in "
                         f"{int((paired > 0).sum())}/{len(paired)}), {verdict}")
        print(f"ratio ({arm}) / better of (a), (b): " + "; ".join(parts))
    for arm in ("c0", "c"):
        print(f"calibration ({arm}) at {LARGE:g}, held-out objectives within predicted ± 2 std: "
              + ", ".join(f"{n} {np.mean([c[(n, arm)] for c in cals]):.2f}" for n in names))
    print(f"extrapolation (c): mean predicted std at {10 * LARGE:g} / at {LARGE:g}: "
          + ", ".join(f"{n} {np.mean([w[n] for w in widens]):.2f}x" for n in names))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", default=str(DATA / "regmix_1m_train.csv"), help="runs table at 1e6 parameters")
    ap.add_argument("--large", default=str(DATA / "regmix_60m.csv"), help="runs table at 6e7 parameters")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--n-small", type=int, default=64)
    ap.add_argument("--n-large", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="seconds: generated tables, 24 + 8 runs, 2 draws")
    args = ap.parse_args()
    args.options = {}
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.small, args.large = Path(tmp) / "small.csv", Path(tmp) / "large.csv"
            args.draws, args.n_small, args.n_large = 2, 24, 8
            args.options = {"fit_maxiter": 50}  # the sweep's fit (recommend fits for 200 steps)
            tiny_tables(args.small, args.large)
        small, large = at_size(read_runs(args.small), SMALL), at_size(read_runs(args.large), LARGE)
    report(small, large, args)


if __name__ == "__main__":
    main()
