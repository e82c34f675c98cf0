"""Scale ladder: does the mixture that won on the small proxy still win on a larger one?

A mixture optimal for a small proxy need not be optimal at production scale. After the sweep (at the
ladder's first preset, the sweep's own `proxy.preset`), the `top_k` best completed mixtures and the
baselines (uniform, token prior) are re-trained at each larger preset; `ladder_summary` then gives,
per rung, the Spearman rank correlation of the objective between the two scales and whether the
small-scale winner is still the winner, each with its significance from a bootstrap over the mixtures
and their replicates (a 90% interval for rho, the probability that the winner held). Ladder trials
are trained once per mixture and rung (`budget.replicates` does not apply to them: the larger runs are
the expensive ones); a mixture's replicates at the sweep's scale enter the bootstrap.

Ladder trials are ordinary journaled trials (`trial_proposed` carries `preset` and `role`), so they
survive a crash and are never trained twice; their id is the content hash of (mixture, trainer, seed,
preset) with the preset appended (`t<hash>-1m`). They run through the sweep's own TrialRunner, so they
get every guarantee a sweep trial gets (stop rule, retries, deadlines, trial files). They spend no budget and are not told to the
strategy: a loss measured on another model size is not an observation of the same function. When
asked (`ladder.scale_model`, `mixsweep ladder --scale-model`), a GP with model size as an input
(orchestrator/scale_model.py) is fitted on the sweep's and the ladder's runs after each rung, and its
recommendation at that rung's size is journaled (`scale_recommended`) beside the sweep's own. A baseline that the sweep did
not train itself is also trained at the first preset, so that both scales have its objective.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from orchestrator.mixture import Mixture
from orchestrator.optimize import Bounds
from orchestrator.trial import TrialStatus, trial_id

if TYPE_CHECKING:
    from orchestrator.jobs import JobFactory
    from orchestrator.runner import TrialRunner
    from orchestrator.state import SweepState
    from orchestrator.strategies.base import Strategy


class LadderError(ValueError):
    """A ladder request that cannot run (unknown or smaller preset, unfinished sweep); one line."""


def ladder_mixtures(state: SweepState, domains: tuple[str, ...], top_k: int, baselines: list[str],
                    domain_tokens: dict[str, int] | None) -> list[tuple[str, Mixture]]:
    """(role, mixture) to re-train: the `top_k` best completed sweep trials by objective (top1 first),
    then the baselines. A mixture that is both (uniform among the best) is listed once, roles joined."""
    done = sorted((t for t in state.completed if t.objective is not None and math.isfinite(t.objective) and t.measures_mixture),
                  key=lambda t: (t.objective, t.proposed_seq))
    out = [(f"top{i}", Mixture.from_dict(t.mixture, domains)) for i, t in enumerate(done[:top_k], 1)]
    for name in baselines:
        m = baseline_mixture(name, domains, domain_tokens)
        if m is not None:
            out.append((name, m))
    merged: dict[str, tuple[str, Mixture]] = {}
    for role, m in out:
        merged[m.key()] = (f"{merged[m.key()][0]}/{role}", m) if m.key() in merged else (role, m)
    return list(merged.values())


def baseline_mixture(name: str, domains: tuple[str, ...], domain_tokens: dict[str, int] | None) -> Mixture | None:
    """The uniform or token-prior mixture (None for token_prior when the token counts are unknown)."""
    if name == "uniform":
        return Mixture.uniform(domains)
    if name == "token_prior" and domain_tokens and sum(domain_tokens.values()) > 0:
        from orchestrator.strategies.fixed import TokenPrior

        prior = TokenPrior(TokenPrior.Config(), domains, None, 0)  # the strategy's own definition of the prior
        prior.domain_tokens = domain_tokens
        return prior.mixture()
    return None


class LadderStage:
    """Submits the ladder's trials to the sweep's runner (orchestrator/runner.py), so that they get every
    guarantee a sweep trial gets: stop rule, retries with back-off, deadlines, trial files, reuse by id.

    `record(event, **fields)` journals (the controller's); `beat()` keeps the sweep's lock alive."""

    def __init__(self, spec, state: SweepState, jobs: JobFactory, runner: TrialRunner, record: Callable[..., dict],
                 beat: Callable[[], None], log: Callable[[str], None] = print, strategy: Strategy | None = None,
                 scale_model: bool = False) -> None:
        self.spec, self.state, self.jobs, self.runner = spec, state, jobs, runner
        self.record, self.beat, self.log, self.strategy = record, beat, log, strategy
        self.domains = spec.domain_names
        self.scale_model = scale_model  # `mixsweep ladder --scale-model` (the spec's ladder.scale_model otherwise)
        self.domain_tokens = (strategy.domain_tokens if strategy is not None else None) or state.domain_tokens

    def run(self, presets: list[str], top_k: int, baselines: list[str]) -> dict[str, Any] | None:
        """Train every rung's missing trials (presets[0] = the sweep's scale); return the summary."""
        base = presets[0]
        if self.domain_tokens is None and "token_prior" in baselines:
            self.domain_tokens = self.jobs.prepare(base).domain_tokens  # None unless the trainer reads token shards
        entries = ladder_mixtures(self.state, self.domains, top_k, baselines, self.domain_tokens)
        if not entries:
            self.log("ladder: no completed trial to re-train")
            return None
        observed = {Mixture.from_dict(t.mixture, self.domains).key() for t in self.state.completed}
        for preset in presets:
            todo = []
            for role, m in entries:
                if preset == base and m.key() in observed:
                    continue  # the sweep trained it at this scale already
                tid = ladder_trial_id(m, self.jobs.key, self.spec.seed, preset)
                known = self.state.ladder.get(tid)
                if known is not None and known.status.is_final:
                    continue  # trained before (a resumed sweep, a repeated `mixsweep ladder`)
                if known is None:
                    self.record("trial_proposed", trial=tid, mixture=m.as_dict(), preset=preset, role=role)
                todo.append(tid)
            if todo:
                self.log(f"ladder: {len(todo)} trial(s) at preset {preset}")
                self._train(preset, todo)
            if getattr(self.spec.ladder, "scale_model", False) or self.scale_model:
                self._recommend_at_scale(base, preset)
        return ladder_summary(self.state, base)

    def _train(self, preset: str, tids: list[str]) -> None:
        """Submit the rung's trials and run them until each completed or failed for good. What the runner
        hands back is not told to a strategy: a loss at another model size is another function."""
        for tid in tids:
            t = self.state.ladder[tid]
            job = self.jobs.job(tid, t.mixture, None, preset=preset, result_fields={"preset": preset})
            if t.status == TrialStatus.RUNNING:  # left running by a stopped controller
                self.runner.recover(job, "the controller stopped while it ran")
            else:
                self.runner.submit(job)
        while self.runner.busy():
            self.beat()
            self.runner.poll(timeout_s=1.0)

    def _recommend_at_scale(self, base: str, preset: str) -> None:
        """Journal the scale-aware model's recommendation at `preset` (or why there is none)."""
        if preset == base:
            return
        strategy = self.strategy
        # The strategy's space (its floor and bounds, already inside the data caps: Strategy.set_caps); without
        # a strategy, the simplex inside the journaled caps.
        bounds = strategy.bounds if strategy is not None else \
            Bounds.of(self.domains, 0.0, {d: (0.0, c) for d, c in (self.state.caps or {}).items()})
        objective = self.state.objective if self.state.objective is not None else strategy.objective
        try:
            rec = scale_recommendation(self.state, self.domains, base, preset, objective, bounds, self.spec.seed)
        except ValueError as err:
            self.log(f"ladder: no scale-aware recommendation at {preset}: {err}")
            self.record("scale_recommended", preset=preset, mixture=None, note=str(err))
            return
        self.record("scale_recommended", **rec)
        self.log(f"ladder: scale-aware recommendation at {preset}: {Mixture.from_dict(rec['mixture'], self.domains)} "
                 f"(predicted objective {rec['objective']:.4f} ± {rec['objective_std']:.4f})")


def scale_recommendation(state: SweepState, domains: tuple[str, ...], base: str, preset: str, objective,
                         bounds: Bounds, seed: int) -> dict[str, Any]:
    """The mixture to use at `preset`, from a GP with model size as an input (orchestrator/scale_model.py)
    fitted on every completed sweep trial (at `base`) and ladder trial (at its preset): the minimiser of
    the predicted objective + 1 std at that size inside `bounds`, as a model strategy recommends
    (orchestrator/strategies/model_based.py), with predicted per-domain losses and std. ValueError
    when there are too few runs to fit."""
    import numpy as np

    from orchestrator.optimize import minimize_on_simplex
    from orchestrator.scale_model import ScaleAwareGP
    from orchestrator.strategies.model_based import RECOMMEND_RISK
    from workers.presets import PRESETS

    runs = [(t, base) for t in state.completed if t.measures_mixture]
    runs += [(t, t.preset) for t in state.ladder.values() if t.status == TrialStatus.COMPLETED]
    runs = [(t, p) for t, p in runs if t.losses and all(math.isfinite(v) for v in t.losses.values())]
    if not runs:
        raise ValueError("no completed trial to fit")
    loss_domains = tuple(d for d in runs[0][0].losses if all(d in t.losses for t, _ in runs))
    W = np.array([Mixture.from_dict(t.mixture, domains).as_array() for t, _ in runs])
    P = np.array([PRESETS[p].non_embedding_params() for _, p in runs], dtype=float)
    Y = np.array([[t.losses[d] for d in loss_domains] for t, _ in runs])
    model = ScaleAwareGP().fit(W, P, Y)
    size = PRESETS[preset].non_embedding_params()

    def upper(X: np.ndarray) -> np.ndarray:
        mean, std = model.predict(X, size)
        value, value_std = objective.compose(mean, std, loss_domains)
        penalty = objective.penalised(mean, loss_domains) - objective.values(mean, loss_domains) if objective.constrained else 0.0
        return value + RECOMMEND_RISK * value_std + penalty

    at_preset = [Mixture.from_dict(t.mixture, domains).as_array() for t, p in runs if p == preset]
    centres = np.array(at_preset) if at_preset else None
    w, _ = minimize_on_simplex(upper, bounds, np.random.default_rng([seed, len(runs), 11]), centres=centres)
    mean, std = model.predict(w[None], size)
    value, value_std = objective.compose(mean, std, loss_domains)
    return {"preset": preset, "mixture": Mixture.from_array(domains, w).as_dict(),
            "predicted_losses": dict(zip(loss_domains, map(float, mean[0]))),
            "predicted_std": dict(zip(loss_domains, map(float, std[0]))),
            "objective": float(value[0]), "objective_std": float(value_std[0]),
            "runs": {"sweep": sum(p == base for _, p in runs), "ladder": sum(p != base for _, p in runs)}}


def ladder_trial_id(mixture: Mixture, trial_config: dict[str, Any], seed: int, preset: str) -> str:
    """`t<hash>-<preset>`: the content address of a ladder trial, naming the preset it trains at."""
    return f"{trial_id(mixture, {**trial_config, 'ladder_preset': preset}, seed)}-{preset}"


def ladder_summary(state: SweepState, base_preset: str) -> dict[str, Any] | None:
    """Per larger preset: each mixture's objective at both scales, Spearman rank correlation, whether
    the small-scale winner (lowest objective among the re-trained mixtures) is still the lowest, and how
    sure each is (`_compare`: a bootstrap). A mixture with several runs at a scale (replicates,
    `budget.replicates`) has the mean of their objectives there, and its runs (`base_runs`, `runs`)."""
    if not state.ladder:
        return None
    domains = state.domains or tuple(next(iter(state.ladder.values())).mixture)
    key = lambda m: Mixture.from_dict(m, domains).key()  # noqa: E731
    at_base: dict[str, list[float]] = {}
    for t in [*state.completed, *(t for t in state.ladder.values() if t.preset == base_preset and t.status == TrialStatus.COMPLETED)]:
        if t.objective is not None and math.isfinite(t.objective) and t.measures_mixture:
            at_base.setdefault(key(t.mixture), []).append(t.objective)
    ladder = sorted(state.ladder.values(), key=lambda t: t.proposed_seq)
    rungs = []
    for preset in dict.fromkeys(t.preset for t in ladder if t.preset != base_preset):
        rows = []
        for t in (t for t in ladder if t.preset == preset):
            base_runs = at_base.get(key(t.mixture), [])
            runs = [t.objective] if t.objective is not None and math.isfinite(t.objective) else []
            rows.append({"role": t.role, "trial": t.id, "mixture": t.mixture, "status": t.status.value,
                         "objective": t.objective, "base_objective": sum(base_runs) / len(base_runs) if base_runs else None,
                         "base_runs": base_runs, "runs": runs})
        rungs.append({"preset": preset, "rows": rows, **_compare(rows),
                      **({"scale_recommended": state.scale_recommendations[preset]} if preset in state.scale_recommendations else {})})
    return {"base_preset": base_preset, "rungs": rungs}


# The bootstrap behind a rung's significance: resamples, the two-sided level of rho's interval, and a
# fixed seed (a report read twice says the same). 2000 resamples put the 5% and 95% quantiles within
# about 0.01 of their limit for the few mixtures a ladder holds, in ~10 ms.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_LEVEL = 0.90
BOOTSTRAP_SEED = 0


def _compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman rho between the scales and the winners, over rows with an objective at both, and their
    significance: a bootstrap (`bootstrap_ladder`) gives rho's BOOTSTRAP_LEVEL interval
    (`spearman_ci`) and `winner_held_p`, the share of resamples in which the small-scale winner is
    still the winner at the larger scale."""
    from scipy.stats import spearmanr

    paired = [r for r in rows if r["objective"] is not None and r["base_objective"] is not None]
    if len(paired) < 2:
        return {"pairs": len(paired), "spearman": None, "winner_base": None, "winner": None, "winner_held": None,
                "spearman_ci": None, "winner_held_p": None, "replicated": 0}
    small, large = [r["base_objective"] for r in paired], [r["objective"] for r in paired]
    rho = float(spearmanr(small, large).statistic)
    first = min(range(len(paired)), key=lambda i: small[i])
    best = min(range(len(paired)), key=lambda i: large[i])
    runs = lambda r, k, mean: r.get(k) or [r[mean]]  # noqa: E731  (rows written before replicates have no runs)
    ci, held_p = bootstrap_ladder([runs(r, "base_runs", "base_objective") for r in paired],
                                  [runs(r, "runs", "objective") for r in paired])
    return {"pairs": len(paired), "spearman": rho if math.isfinite(rho) else None,
            "winner_base": paired[first]["role"], "winner": paired[best]["role"], "winner_held": first == best,
            "spearman_ci": ci, "winner_held_p": held_p,
            "replicated": sum(len(runs(r, "base_runs", "base_objective")) > 1 or len(runs(r, "runs", "objective")) > 1
                              for r in paired)}


def bootstrap_ladder(small_runs: list[list[float]], large_runs: list[list[float]], resamples: int = BOOTSTRAP_RESAMPLES,
                     level: float = BOOTSTRAP_LEVEL, seed: int = BOOTSTRAP_SEED) -> tuple[list[float] | None, float]:
    """rho's `level` percentile interval ([lo, hi], None when no resample has a defined rho) and the
    probability that the small-scale winner still wins, from `resamples` bootstrap resamples.

    Each resample draws the mixtures with replacement (which mixtures were re-trained is itself a
    sample), and, for a mixture with several runs at a scale, its runs with replacement, whose mean is
    its objective there (run-to-run noise). Without replicates only the first source varies: the
    interval then says how much the verdict rests on particular mixtures, not on noise. In a resample
    the winner is the drawn mixture with the lowest objective; it held when the same mixture is lowest
    at both scales."""
    import numpy as np
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    n = len(small_runs)

    def draw(runs: list[list[float]]) -> np.ndarray:
        """(resamples, n): each mixture's mean over its runs drawn with replacement."""
        out = np.empty((resamples, n))
        for i, r in enumerate(runs):
            r = np.asarray(r, dtype=float)
            out[:, i] = r[rng.integers(0, len(r), (resamples, len(r)))].mean(axis=1) if len(r) > 1 else r[0]
        return out

    small, large = draw(small_runs), draw(large_runs)
    pick = rng.integers(0, n, (resamples, n))
    s, l = np.take_along_axis(small, pick, axis=1), np.take_along_axis(large, pick, axis=1)
    rs, rl = rankdata(s, axis=1), rankdata(l, axis=1)
    rs, rl = rs - rs.mean(axis=1, keepdims=True), rl - rl.mean(axis=1, keepdims=True)
    norm = np.sqrt((rs ** 2).sum(axis=1) * (rl ** 2).sum(axis=1))
    defined = norm > 0  # a resample of one distinct mixture (or all tied) has no rank correlation
    rho = (rs * rl).sum(axis=1)[defined] / norm[defined]
    rows = np.arange(resamples)
    held = float(np.mean(pick[rows, s.argmin(axis=1)] == pick[rows, l.argmin(axis=1)]))
    if not len(rho):
        return None, held
    tail = (1 - level) / 2
    return [float(np.quantile(rho, tail)), float(np.quantile(rho, 1 - tail))], held


def rung_verdict(rung: dict[str, Any]) -> tuple[str, str]:
    """A rung's Spearman rho and its winner verdict in words, each with its significance:
    ("0.83 (90% CI 0.41 to 1.00)", "yes (p 0.87)"); "n/a" where there is nothing to say."""
    rho = "n/a" if rung.get("spearman") is None else f"{rung['spearman']:.2f}"
    if rung.get("spearman_ci"):
        lo, hi = rung["spearman_ci"]
        rho += f" ({BOOTSTRAP_LEVEL:.0%} CI {lo:.2f} to {hi:.2f})"
    held = {True: "yes", False: "no", None: "n/a"}[rung.get("winner_held")]
    if rung.get("winner_held_p") is not None:
        held += f" (p {rung['winner_held_p']:.2f})"
    return rho, held


def check_rung(base: str, preset: str) -> None:
    """LadderError unless `preset` is a known preset larger than the sweep's `base`."""
    from workers.presets import PRESETS

    if preset not in PRESETS:
        raise LadderError(f"--preset: unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    if PRESETS[preset].non_embedding_params() <= PRESETS[base].non_embedding_params():
        raise LadderError(f"--preset: {preset} is not larger than the sweep's preset {base}; pick a larger one ({', '.join(PRESETS)})")
