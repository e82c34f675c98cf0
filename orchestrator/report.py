"""The sweep's report, computed from its directory alone (docs/report.md).

`write_report` writes report/recommendation.json, one PNG per figure, ladder.json when a scale ladder
ran, and report.html: a self-contained page (PNGs embedded as data URIs, no script, no network) with
the sections best-vs-trials, heatmap, recommendation, target, loo, ladder and warnings. Predictions at
mixtures no trial ran (baselines) and the leave-one-out check come from the sweep's strategy, rebuilt
by re-telling the journal (resume.retell), where it models the losses (the surrogate strategies;
bayesopt through Ax's GP); for every other strategy, and for bayesopt's leave-one-out, from a GP
surrogate fitted for the report to the completed trials (`ReportGP`), which the page says.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.journal import load
from orchestrator.mixture import Mixture
from orchestrator.spec import load_frozen_spec
from orchestrator.state import SweepState
from orchestrator.strategies.base import IN_SAMPLE, MODEL
from orchestrator.sweepdir import JOURNAL, REPORT, write_json_atomic
from orchestrator.trial import TrialStatus

# A recommendation farther than this from every completed trial (total variation distance: the share
# of weight that must move) rests on the surrogate's extrapolation alone, and is flagged.
FAR_FROM_OBSERVED_TV = 0.25
# Leave-one-out refits at most this many trials (evenly spaced in order), to bound the report's time.
LOO_MAX_TRIALS = 40
# L-BFGS steps of the report's own GP: the gp strategy's default (leave-one-out refits it up to 40 times).
REPORT_GP_MAXITER = 50


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def objective_plot(state: SweepState, path: Path, baselines: list[dict[str, Any]] | None = None) -> None:
    """Objective of each completed trial in the order proposed, with the best-so-far line and a
    horizontal line per baseline (observed where a trial ran it, else predicted: dashed)."""
    plt = _pyplot()

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
    for row, color in zip(baselines or [], ("#55a868", "#8172b3", "#937860", "#64b5cd")):
        value, how = (row["observed_objective"], "observed") if row.get("observed_objective") is not None else (row.get("objective"), "predicted")
        if value is not None and math.isfinite(value):
            ax.axhline(value, color=color, lw=1.5, ls="-" if how == "observed" else "--", label=f"{row['name']} ({how})")
    ax.set_xlabel("trial (order proposed)")
    ax.set_ylabel(f"objective: {state.objective_description}" if state.objective_description else "objective")
    ax.set_title(f"{state.name}: {len(xs)} completed, {len(failed)} failed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def heatmap_plot(state: SweepState, path: Path) -> None:
    """Per-domain validation loss of every completed trial (rows, in order proposed) by domain (columns)."""
    plt = _pyplot()
    done = [t for t in state.in_order() if t.status == TrialStatus.COMPLETED and t.losses]
    domains = [d for d in done[0].losses if all(d in t.losses for t in done)] if done else list(state.domains)
    Z = np.array([[t.losses[d] for d in domains] for t in done]) if done else np.zeros((1, max(len(domains), 1)))
    fig, ax = plt.subplots(figsize=(1.2 * len(domains) + 3, 0.22 * len(Z) + 2), dpi=110)
    im = ax.imshow(Z, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(domains)), domains, rotation=30, ha="right")
    labels = [f"{i}. {t.id}" for i, t in enumerate(done, 1)]
    ax.set_yticks(range(len(labels)), labels, fontsize=7 if len(labels) > 20 else 9)
    if len(labels) > 60:  # too many to read: every tenth
        ax.set_yticks(range(0, len(labels), 10), labels[::10])
    fig.colorbar(im, ax=ax, label="validation loss (nats/token)")
    ax.set_title(f"per-domain losses of {len(done)} completed trials")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def loo_plot(loo: dict[str, Any], path: Path) -> None:
    """Leave-one-out predicted vs observed loss, one panel per domain, with +-1 std bars and y = x."""
    plt = _pyplot()
    domains = list(loo["domains"])
    cols = min(len(domains), 4)
    rows = math.ceil(len(domains) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), dpi=110, squeeze=False)
    for ax, d in zip(axes.flat, domains):
        obs, pred, std = (np.array(loo[k][d]) for k in ("observed", "predicted", "std"))
        ax.errorbar(obs, pred, yerr=std, fmt="o", ms=4, color="#4c72b0", ecolor="#a0b4d8", lw=1)
        lo, hi = float(min(obs.min(), pred.min())), float(max(obs.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="#888", lw=1)
        ax.set_title(f"{d}: Spearman {loo['spearman'][d]:.2f}" if loo["spearman"][d] is not None else d, fontsize=10)
        ax.set_xlabel("observed (nats/token)", fontsize=8)
        ax.set_ylabel("predicted", fontsize=8)
    for ax in list(axes.flat)[len(domains):]:
        ax.axis("off")
    fig.suptitle(f"{loo['surrogate']}: leave-one-out over {loo['n']} trials")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def ladder_plot(summary: dict[str, Any], path: Path) -> None:
    """Per rung: each re-trained mixture's objective at the sweep's scale (x) and the larger one (y)."""
    from orchestrator.ladder import rung_verdict

    plt = _pyplot()
    rungs = summary["rungs"]
    fig, axes = plt.subplots(1, len(rungs), figsize=(5 * len(rungs), 4), dpi=110, squeeze=False)
    for ax, rung in zip(axes.flat, rungs):
        paired = [r for r in rung["rows"] if r["objective"] is not None and r["base_objective"] is not None]
        for r in paired:
            winner = r["role"] in (rung["winner"], rung["winner_base"])
            ax.scatter(r["base_objective"], r["objective"], s=40, color="#dd8452" if winner else "#4c72b0")
            ax.annotate(r["role"], (r["base_objective"], r["objective"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
        rho, held = rung_verdict(rung)
        ax.set_title(f"{summary['base_preset']} -> {rung['preset']}: Spearman {rho}\nwinner held: {held}", fontsize=9)
        ax.set_xlabel(f"objective at {summary['base_preset']}")
        ax.set_ylabel(f"objective at {rung['preset']}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def rebuild_strategy(spec, state: SweepState, events: list[dict[str, Any]]) -> tuple[Any, str | None]:
    """The sweep's strategy, if it models the losses (base.Predictive), re-told every outcome; or (None, why not)."""
    from orchestrator.objective import Objective
    from orchestrator.resume import retell
    from orchestrator.strategies import STRATEGIES, build_strategy
    from orchestrator.strategies.base import Predictive
    from orchestrator.strategies.model_based import ModelStrategy

    if spec is None:
        return None, "the sweep's spec.yaml cannot be read: observed values only"
    if not issubclass(STRATEGIES[spec.strategy.kind], Predictive):
        return None, f"strategy {spec.strategy.kind} has no model of its own"
    strategy = build_strategy(spec.strategy.kind, spec.strategy.options, spec.domain_names,
                              Objective.from_spec(spec.objective, spec.domain_names), spec.seed)
    strategy.domain_tokens = state.domain_tokens
    from orchestrator.fidelity import fidelity_plan

    strategy.fidelities = fidelity_plan(spec)  # mfgp reads each run's fidelity (None: not a multi-fidelity sweep)
    retell(strategy, events, state)
    if isinstance(strategy, ModelStrategy) and len(strategy.observations) < max(strategy.min_runs(), 1):
        return None, f"{spec.strategy.kind} needs {strategy.min_runs()} completed trials to model"
    try:
        strategy.predict_losses(np.full((1, len(spec.domain_names)), 1.0 / len(spec.domain_names)))
    except ValueError as err:  # e.g. bayesopt before Ax's GP takes over
        return None, str(err).splitlines()[0]
    return strategy, None


class ReportGP:
    """A GP surrogate (orchestrator.surrogates.gp) fitted for the report to the sweep's completed trials.

    It predicts for sweeps whose strategy has no model of its own (sobol, uniform, fixed, token_prior,
    doremi; mde and mixmin, whose ensembles need the experts' log-probabilities) and runs bayesopt's
    leave-one-out (Ax's GP is not refitted once per trial). Same interface as a ModelStrategy for
    `mixture_rows` and `leave_one_out`: objective, training_data, min_runs, make_surrogate, predict_losses.
    """

    def __init__(self, X: np.ndarray, Y: np.ndarray, loss_domains: tuple[str, ...], objective) -> None:
        self.X, self.Y, self.loss_domains, self.objective = X, Y, loss_domains, objective
        self._fitted = None

    @classmethod
    def of_sweep(cls, spec, state: SweepState) -> "ReportGP | None":
        """Fitted to the sweep's completed trials at their mixtures (not ladder runs, not DoReMi's
        proxy run); None with fewer than the GP's minimum."""
        from orchestrator.objective import Objective
        from orchestrator.surrogates.gp import GPSurrogate

        domains = spec.domain_names
        done = [t for t in state.in_order() if t.status == TrialStatus.COMPLETED and t.losses
                and t.measures_mixture and t.id not in state.ladder]
        if len(done) < GPSurrogate.min_runs(len(domains)):
            return None
        # The sweep's objective as the state scored its trials (with the reference run's losses once known).
        objective = state.objective if state.objective is not None else Objective.from_spec(spec.objective, domains)
        loss_domains = tuple(d for d in done[0].losses if all(d in t.losses for t in done))
        X = np.array([Mixture.from_dict(t.mixture, domains).as_array() for t in done])
        Y = np.array([[t.losses[d] for d in loss_domains] for t in done])
        return cls(X, Y, loss_domains, objective)

    def training_data(self) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        return self.X, self.Y, self.loss_domains

    def min_runs(self) -> int:
        from orchestrator.surrogates.gp import GPSurrogate

        return GPSurrogate.min_runs(self.X.shape[1])

    def make_surrogate(self):
        from orchestrator.surrogates.gp import GPSurrogate

        return GPSurrogate(maxiter=REPORT_GP_MAXITER)

    def predict_losses(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        if self._fitted is None:
            self._fitted = self.make_surrogate().fit(self.X, self.Y)
        mean, std = self._fitted.predict(W)
        return mean, std, self.loss_domains


def report_models(spec, state: SweepState, events: list[dict[str, Any]]) -> tuple[Any, Any, str | None]:
    """(predictor for the mixture rows, model for the leave-one-out, what the page says about them).

    The strategy's own model where it has one; otherwise a ReportGP, said so. (None, None, why) when
    neither can be had."""
    from orchestrator.strategies.model_based import ModelStrategy

    if spec is None or not state.completed:
        return None, None, "the sweep's spec.yaml cannot be read: observed values only" if spec is None else "no completed trial"
    strategy, why_not = rebuild_strategy(spec, state, events)
    report_gp = ReportGP.of_sweep(spec, state) if not isinstance(strategy, ModelStrategy) else None
    if strategy is not None:
        return strategy, strategy if isinstance(strategy, ModelStrategy) else report_gp, None
    if report_gp is None:
        return None, None, f"{why_not}, and a GP needs 3 completed trials: observed values only"
    return report_gp, report_gp, (f"Predicted: a GP surrogate fitted for this report to the {len(report_gp.X)} completed "
                                  f"trials (mean ± 1 std, nats/token), because {why_not}.")


def _observed(state: SweepState, mixture: Mixture, base_preset: str | None) -> Any:
    """A completed trial at the sweep's scale (a sweep trial or a ladder trial at its first preset) of `mixture`."""
    for t in [*state.completed, *state.ladder.values()]:
        if t.status == TrialStatus.COMPLETED and (t.preset in (None, base_preset)) and state.at_target(t) and \
                Mixture.from_dict(t.mixture, mixture.domains).key() == mixture.key():
            return t
    return None


def mixture_rows(state: SweepState, spec, strategy, rec: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The recommendation beside uniform, token prior and any fixed mixture: weights, predicted
    per-domain losses with std (from the surrogate), and observed losses where a trial ran it."""
    from orchestrator.ladder import baseline_mixture

    domains = state.domains
    named: list[tuple[str, Mixture]] = []
    if rec is not None:
        named.append(("recommended", Mixture.from_dict(rec["mixture"], domains)))
    for name in ("uniform", "token_prior"):
        m = baseline_mixture(name, domains, state.domain_tokens)
        if m is not None:
            named.append((name, m))
    if spec is not None and spec.strategy.kind == "fixed":
        named.append(("fixed", Mixture.from_dict(spec.strategy.options["weights"], domains)))
    # Predicted rows are scored on the scale of the observed ones: the state's objective (with the
    # reference run's losses once known); the strategy's where the state has no definition.
    objective = state.objective if state.objective is not None else (strategy.objective if strategy is not None else None)
    base = spec.proxy.preset if spec is not None else None
    rows = []
    for name, m in named:
        row: dict[str, Any] = {"name": name, "mixture": m.as_dict(), "predicted": None, "std": None, "objective": None, "objective_std": None}
        if name == "recommended" and rec.get("source") in (MODEL, IN_SAMPLE):  # the strategy's own prediction
            row.update(predicted=rec["predicted_losses"], std=rec.get("predicted_std") or {},
                       objective=rec.get("objective"), objective_std=rec.get("objective_std"))
        elif strategy is not None:
            mean, std, loss_domains = strategy.predict_losses(m.as_array()[None, :])
            row["predicted"] = dict(zip(loss_domains, map(float, mean[0])))
            row["std"] = dict(zip(loss_domains, map(float, std[0])))
            row["objective"] = objective(row["predicted"])
            row["objective_std"] = objective.std(row["std"], row["predicted"])
        seen = _observed(state, m, base)
        row["observed"] = seen.losses if seen else None
        row["observed_objective"] = seen.objective if seen else None
        row["observed_trial"] = seen.id if seen else None
        rows.append(row)
    return rows


def leave_one_out(strategy) -> dict[str, Any] | None:
    """Refit the strategy's surrogate without each trial (at most LOO_MAX_TRIALS of them) and predict it."""
    from scipy.stats import spearmanr

    from orchestrator.strategies.model_based import ModelStrategy, refit_held_out
    from orchestrator.surrogates.base import single_threaded

    X, Y, loss_domains = strategy.training_data()
    held_out = strategy.held_out if isinstance(strategy, ModelStrategy) else \
        (lambda X, Y, i: refit_held_out(strategy.make_surrogate, X, Y, i))
    n = len(X)
    if n < max(strategy.min_runs(), 1) + 1:
        return None
    held = np.unique(np.linspace(0, n - 1, min(n, LOO_MAX_TRIALS)).round().astype(int))
    pred, std = np.zeros((len(held), Y.shape[1])), np.zeros((len(held), Y.shape[1]))
    with single_threaded():
        for j, i in enumerate(held):
            m, s = held_out(X, Y, i)
            pred[j], std[j] = m[0], s[0]
    obs = Y[held]
    rho = {}
    for k, d in enumerate(loss_domains):
        r = float(spearmanr(obs[:, k], pred[:, k]).statistic) if len(held) > 2 else float("nan")
        rho[d] = r if math.isfinite(r) else None
    col = lambda A: {d: A[:, k].tolist() for k, d in enumerate(loss_domains)}  # noqa: E731
    fitted_for_report = isinstance(strategy, ReportGP)
    return {"surrogate": strategy.make_surrogate().name, "fitted_for_report": fitted_for_report,
            "n": int(len(held)), "domains": list(loss_domains),
            "observed": col(obs), "predicted": col(pred), "std": col(std), "spearman": rho,
            "rmse": {d: float(np.sqrt(np.mean((obs[:, k] - pred[:, k]) ** 2))) for k, d in enumerate(loss_domains)}}


def report_warnings(state: SweepState, rec: dict[str, Any] | None) -> list[str]:
    """What a user should know before trusting the recommendation (one sentence each)."""
    out = []
    if not state.finished:
        out.append("The sweep has not finished: this report covers the trials completed so far.")
    if rec is None:
        return out + ["No trial completed: there is nothing to recommend."]
    domains = state.domains or tuple(rec["mixture"])
    w = Mixture.from_dict(rec["mixture"], domains).as_array()
    done = [t for t in state.completed]
    if done:
        dist = [0.5 * float(np.abs(w - Mixture.from_dict(t.mixture, domains).as_array()).sum()) for t in done]
        nearest = int(np.argmin(dist))
        if dist[nearest] > FAR_FROM_OBSERVED_TV:
            out.append(f"The recommendation is far from every observed run: the nearest, {done[nearest].id}, differs by "
                       f"{dist[nearest]:.2f} of the weight (total variation; flagged above {FAR_FROM_OBSERVED_TV}). "
                       "Its predicted losses are an extrapolation: train it before relying on it.")
    for d, cap in sorted((state.caps or {}).items()):  # journaled data caps, when the sweep has them
        if cap < 1.0 and rec["mixture"].get(d, 0.0) >= cap - 1e-4:
            at_target = (state.target_caps or {}).get(d, 1.0) <= cap + 1e-9
            source = "from data.max_epochs at the target run (target.tokens)" if at_target else "from data.max_epochs"
            out.append(f"The recommendation sits on the data cap of {d} (weight {rec['mixture'][d]:.3f}, cap {cap:.3f} "
                       f"{source}): the optimum may lie beyond it; more data for this domain would let the mixture move.")
    return out


def target_section(state: SweepState, rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The target run's feasibility (orchestrator/target.py): the recommendation's own `target` block
    (feasible and unconstrained optimum, written when the sweep recommended), else, for a sweep stopped
    before it recommended, the epochs the shown mixture would need at the target run. None without a target."""
    from orchestrator.target import epochs_at_target, over_cap

    if rec is None or state.target_tokens is None:
        return None
    if rec.get("target"):
        return rec["target"]
    mixture = rec["mixture"]
    return {"tokens": state.target_tokens, "available_tokens": state.available_tokens, "caps": state.caps or {},
            "target_caps": state.target_caps or {}, "max_epochs": None,
            "feasible": {"mixture": mixture, "objective": rec.get("objective"), "predicted_by": rec.get("source"),
                         "epochs": epochs_at_target(mixture, state.target_tokens, state.available_tokens or {})},
            "unconstrained": None, "over_cap": over_cap(mixture, state.target_caps or {}),
            "summary": "the sweep has not recommended yet: the unconstrained optimum is computed when it does"}


def write_report(sweep_dir: str | Path) -> dict[str, Path]:
    """Write report/recommendation.json, the figures (PNG), ladder.json and report.html; returns the paths."""
    from orchestrator.ladder import ladder_summary
    from orchestrator.report_page import render_page

    d = Path(sweep_dir)
    events, state = load(d / JOURNAL)
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
    spec = load_frozen_spec(d, missing_ok=True)  # None: the report shows what the journal alone says
    strategy, loo_model, why_not = report_models(spec, state, events)
    rows = mixture_rows(state, spec, strategy, rec)
    objective_plot(state, out / "objective.png", [r for r in rows if r["name"] != "recommended"])
    paths["objective_plot"] = out / "objective.png"
    heatmap_plot(state, out / "heatmap.png")
    paths["heatmap"] = out / "heatmap.png"
    loo = leave_one_out(loo_model) if loo_model is not None else None
    if loo is not None:
        loo_plot(loo, out / "loo.png")
        paths["loo"] = out / "loo.png"
    ladder = ladder_summary(state, spec.proxy.preset if spec is not None else "debug")
    if ladder is not None:
        write_json_atomic(out / "ladder.json", ladder)
        ladder_plot(ladder, out / "ladder.png")
        paths["ladder"], paths["ladder_plot"] = out / "ladder.json", out / "ladder.png"
    page = render_page(state, rec, rows, loo, ladder, report_warnings(state, rec), why_not, out, target_section(state, rec))
    (out / "report.html").write_text(page, encoding="utf-8")
    paths["html"] = out / "report.html"
    return paths
