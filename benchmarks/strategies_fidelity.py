"""Surrogate fidelity on real runs: how well each surrogate ranks mixtures it has not seen.

Reads a runs table (e.g. /work/shared/data/regmix_1m_train.csv: 512 RegMix 1M-parameter runs, 17
training domains, 13 evaluated; read in place, never copied). For each draw: fit on n random rows,
predict the held-out rows, Spearman rank correlation of predicted vs true objective. Objectives:
`loss.pile_cc` (RegMix's target) and the mean of all losses.

Baseline (named): LightGBM fitted on the objective directly (1000 trees, learning rate 0.01, LightGBM's
other defaults), as in the data README. Next to it: a GP on the objective directly, and our per-domain
surrogates composed by the objective, each fitted through the same path as `mixsweep recommend`
(runs told to the strategy, `predict_losses`, composed). The bar for recommend's default (`gp`):
Spearman >= 0.97 (pile_cc) and >= 0.95 (mean) at 64 runs. `gp:sweep` is the same GP fitted with the
sweep's faster default (50 instead of 200 L-BFGS steps).

Usage: .venv/bin/python benchmarks/strategies_fidelity.py --runs /work/shared/data/regmix_1m_train.csv
       [--n 64] [--draws 5] [--strategies gp,gp:sweep,regmix,mixing_law,bimix] [--seed 0]
       .venv/bin/python benchmarks/strategies_fidelity.py --smoke   # seconds: a generated 96-run table

--smoke fits on 64 of 96 generated runs (3 domains pile_cc, b, c, each evaluated; a smooth truth with
noise 0.02), one draw, strategies gp, gp:sweep and bimix.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.objective import Objective  # noqa: E402
from orchestrator.recommend import fit_strategy  # noqa: E402
from orchestrator.runs import RunsTable, read_runs  # noqa: E402


def tiny_table(path: Path) -> None:
    """--smoke: 96 runs over domains pile_cc, b, c, each evaluated: a smooth truth plus noise 0.02."""
    import pandas as pd

    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(3), 96)
    L = np.array([3.0, 2.5, 2.8]) - np.array([0.8, 0.6, 0.4]) * np.sqrt(W) + 0.1 * W[:, [1, 2, 0]]
    L += rng.normal(0.0, 0.02, L.shape)
    names = ("pile_cc", "b", "c")
    pd.DataFrame({**{f"weight.{d}": W[:, i] for i, d in enumerate(names)},
                  **{f"loss.{d}": L[:, i] for i, d in enumerate(names)}}).to_csv(path, index=False)


def subset(table: RunsTable, rows: np.ndarray) -> RunsTable:
    return RunsTable(table.domains, table.loss_domains, table.weights[rows], table.losses[rows], table.extra.iloc[rows])


def objectives(table: RunsTable) -> dict[str, np.ndarray]:
    """Objective name -> coefficient vector over the loss domains (m,)."""
    m = len(table.loss_domains)
    out = {"mean": np.full(m, 1.0 / m)}
    if "pile_cc" in table.loss_domains:
        out = {"loss.pile_cc": np.eye(m)[table.loss_domains.index("pile_cc")], **out}
    return out


def lightgbm_on_objective(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, seed: int) -> np.ndarray:
    import lightgbm

    model = lightgbm.LGBMRegressor(n_estimators=1000, learning_rate=0.01, random_state=seed, verbose=-1, n_jobs=1)
    return model.fit(X, y).predict(X_test)


def gp_on_objective(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, seed: int) -> np.ndarray:
    from orchestrator.surrogates.gp import GPSurrogate

    return GPSurrogate().fit(X, y[:, None]).predict(X_test)[0][:, 0]


def per_domain(kind: str, train: RunsTable, X_test: np.ndarray, seed: int) -> np.ndarray:
    """Per-domain predicted losses (n_test, m) from a strategy fitted like `recommend` fits it
    (`kind:sweep` fits with the strategy's sweep defaults instead of recommend's offline options)."""
    mean_objective = Objective({d: 1.0 / len(train.loss_domains) for d in train.loss_domains}, "mean")
    kind, _, mode = kind.partition(":")
    strategy = fit_strategy(train, mean_objective, kind, seed, options={} if mode == "sweep" else None)
    mean, _, loss_domains = strategy.predict_losses(X_test)
    assert loss_domains == train.loss_domains
    return mean


def rank(pred: np.ndarray, truth: np.ndarray) -> float:
    """Spearman correlation; a constant prediction (LightGBM's defaults below ~40 runs) counts as 0."""
    rho = spearmanr(pred, truth).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def run(table: RunsTable, n: int, draws: int, kinds: list[str], seed: int) -> dict[tuple[str, str], list[float]]:
    """(objective, method) -> Spearman per draw; also prints fit times to stderr."""
    rng = np.random.default_rng(seed)
    scores: dict[tuple[str, str], list[float]] = {}
    for draw in range(draws):
        rows = rng.permutation(len(table))
        train, test = subset(table, rows[:n]), subset(table, rows[n:])
        for name, coef in objectives(table).items():
            y, truth = train.losses @ coef, test.losses @ coef
            for label, fn in (("LightGBM on objective (baseline)", lightgbm_on_objective), ("GP on objective", gp_on_objective)):
                scores.setdefault((name, label), []).append(rank(fn(train.weights, y, test.weights, seed + draw), truth))
        for kind in kinds:
            t0 = time.perf_counter()
            pred = per_domain(kind, train, test.weights, seed + draw)
            print(f"  draw {draw} {kind}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            for name, coef in objectives(table).items():
                scores.setdefault((name, f"{kind} (per domain, composed)"), []).append(rank(pred @ coef, test.losses @ coef))
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", help="runs table (CSV/Parquet), read in place (required unless --smoke)")
    ap.add_argument("--n", default="64", help="training runs per draw (comma-separated for several)")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--strategies", default="gp,gp:sweep,regmix,mixing_law,bimix",
                    help="kinds fitted as recommend fits them; KIND:sweep = with the sweep's defaults")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="seconds: a generated 96-run table, n 64, 1 draw, gp,gp:sweep,bimix")
    args = ap.parse_args()
    if args.runs is None and not args.smoke:
        ap.error("--runs TABLE is required (or --smoke)")
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.runs, args.n, args.draws, args.strategies = Path(tmp) / "runs.csv", "64", 1, "gp,gp:sweep,bimix"
            tiny_table(args.runs)
        table = read_runs(args.runs)
    report(table, args)


def report(table: RunsTable, args: argparse.Namespace) -> None:
    """Spearman of every method, per training-set size, as a markdown table."""
    print(f"{args.runs}: {len(table)} runs, {len(table.domains)} training domains, {len(table.loss_domains)} losses")
    for n in map(int, args.n.split(",")):
        scores = run(table, n, args.draws, args.strategies.split(","), args.seed)
        print(f"\nfit on {n} random runs, Spearman on the other {len(table) - n} (mean ± sd over {args.draws} draws)")
        print("| objective | method | Spearman | rank error (1-ρ) vs baseline |\n|---|---|---|---|")
        for name in objectives(table):
            base = 1 - np.mean(scores[(name, "LightGBM on objective (baseline)")])
            for (obj, label), v in scores.items():
                if obj == name:
                    print(f"| {obj} | {label} | {np.mean(v):.3f} ± {np.std(v):.3f} | {(1 - np.mean(v)) / base:.2f}x |")


if __name__ == "__main__":
    main()
