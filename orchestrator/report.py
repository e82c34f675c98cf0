"""The sweep's report, computed from its directory alone: recommendation.json and plots."""

from __future__ import annotations

import math
from pathlib import Path

from orchestrator.journal import replay
from orchestrator.state import SweepState
from orchestrator.sweepdir import JOURNAL, REPORT, write_json_atomic
from orchestrator.trial import TrialStatus


def objective_plot(state: SweepState, path: Path) -> None:
    """Objective of each completed trial in the order proposed, with the best-so-far line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = sorted(state.trials.values(), key=lambda t: t.proposed_seq)
    xs, ys, best, failed = [], [], [], []
    for i, t in enumerate(trials, 1):
        if t.status == TrialStatus.COMPLETED and t.objective is not None and math.isfinite(t.objective):
            xs.append(i)
            ys.append(t.objective)
            best.append(min(ys))
        elif t.status == TrialStatus.FAILED:
            failed.append(i)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.scatter(xs, ys, s=22, label="trial", color="#4c72b0")
    ax.step(xs, best, where="post", color="#dd8452", lw=2, label="best so far")
    for f in failed:
        ax.axvline(f, color="#c44e52", alpha=0.3, lw=1)
    ax.set_xlabel("trial (order proposed)")
    ax.set_ylabel(f"objective: {state.objective}" if state.objective else "objective")
    ax.set_title(f"{state.name}: {len(xs)} completed, {len(failed)} failed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(sweep_dir: str | Path) -> dict[str, Path]:
    """Write report/recommendation.json and report/objective.png; returns the paths written."""
    d = Path(sweep_dir)
    state = replay(d / JOURNAL)
    out = d / REPORT
    out.mkdir(exist_ok=True)
    rec = state.recommendation
    if rec is None and (best := state.best()) is not None:
        # The sweep was stopped before it recommended: fall back to the best observed trial.
        rec = {"mixture": best.mixture, "predicted_losses": best.losses, "predicted_std": best.loss_stderr or {},
               "objective": best.objective, "source": "observed", "trials_used": len(state.completed),
               "notes": ["sweep not finished: best observed trial"]}
    paths = {}
    if rec is not None:
        write_json_atomic(out / "recommendation.json", rec)
        paths["recommendation"] = out / "recommendation.json"
    objective_plot(state, out / "objective.png")
    paths["objective_plot"] = out / "objective.png"
    return paths
