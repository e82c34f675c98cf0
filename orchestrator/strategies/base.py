"""The Strategy interface: what mixture to try next.

A strategy is told outcomes and asked for proposals; it never sees Ray, and given its seed and the
order of events it is deterministic. The controller alone owns parallelism, retries and the budget.

The contract is typed (orchestrator/strategies/contract.py), never probed:
- `requirements` (class attribute): what it needs from the sweep (token counts, expert log-probabilities,
  the proxy trainer, a reference run) and whether it works offline from a runs table;
- `ask(n, pending) -> list[Proposal]`: up to n mixtures, each with the trainer options its trial needs;
- `tell(Outcome)`: a completed trial, its losses and the artifacts it wrote, in one call;
- `tell_failed(mixture, reason, retryable)`: a trial that ended without losses;
- `recommend() -> Recommendation`; `state_dict()` / `load_state_dict()` in JSON only.
Subclasses implement `next_proposals`; `ask` keeps every proposal inside the data caps and counts them
(`asked`). The default `state_dict` is the history of outcomes and failures in the order told plus
`asked`, and `load_state_dict` rebuilds any strategy by re-telling that history.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar

import numpy as np

from orchestrator.mixture import Mixture, within_caps
from orchestrator.objective import CONSTRAINT_PENALTY, Objective
from orchestrator.optimize import Bounds
from orchestrator.strategies.configs import StrategyConfig
from orchestrator.strategies.contract import Failure, FidelityPlan, Outcome, Proposal, Requirements


# Recommendation.source: where the mixture comes from.
MODEL = "model"  # the model's optimum, a mixture no run may have trained on
IN_SAMPLE = "in-sample"  # an observed run, chosen because the model predicts it best (in-sample best point)
OBSERVED = "observed"  # the best observed run by its observed losses (no model involved)
# Standard deviations of the predicted objective by which a model's optimum must be predicted better than
# the best observed run to be recommended (base.best_predicted; docs/benchmarks.md, "recommendation rule").
RECOMMEND_MARGIN = 0.5

# predict(W (n, k)) -> per-domain mean and std (n, m), nats/token, and the m loss domains.
Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, tuple[str, ...]]]


@dataclass(frozen=True)
class Recommendation:
    """The mixture to use, with predicted per-domain losses (nats/token) and their std."""

    mixture: Mixture
    predicted: dict[str, float]
    predicted_std: dict[str, float]
    objective: float
    objective_std: float
    # MODEL (the model's optimum), IN_SAMPLE (an observed run the model predicts best; `predicted` is the
    # model's prediction there) or OBSERVED (the best completed trial by its observed losses).
    source: str
    trials_used: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "mixture": self.mixture.as_dict(),
            "predicted_losses": self.predicted,
            "predicted_std": self.predicted_std,
            "objective": self.objective,
            "objective_std": self.objective_std,
            "source": self.source,
            "trials_used": self.trials_used,
            "notes": self.notes,
        }


def capped_bounds(domains: tuple[str, ...], bounds: Bounds, caps: dict[str, float]) -> Bounds:
    """`bounds` with each upper bound lowered to the data's cap; ValueError, one line naming the domain,
    the fields and the fix, when the caps leave no mixture inside the floor and bounds (the spec's own
    floor and bounds were checked at validation: spec.mixture_space_problem)."""
    lower = dict(zip(domains, bounds.lower))
    upper = {d: min(hi, caps.get(d, 1.0)) for d, hi in zip(domains, bounds.upper)}
    fix = "raise data.max_epochs, lower proxy.tokens_per_trial, or lower strategy.options min_weight/bounds"
    for d in domains:
        if lower[d] > upper[d] + 1e-9:
            raise ValueError(f"domain {d!r}: its data cap {upper[d]:.3f} (data.max_epochs) is below its floor {lower[d]:.3f} "
                             f"(strategy.options min_weight/bounds); {fix}")
    if sum(upper.values()) < 1 - 1e-9:
        raise ValueError(f"the data caps and strategy.options bounds leave upper bounds summing to {sum(upper.values()):.3f} < 1; {fix}")
    return Bounds.of(domains, 0.0, {d: (lower[d], upper[d]) for d in domains})


class Strategy(abc.ABC):
    """Base class: keeps the outcomes and failures; subclasses decide what to propose next."""

    Config: ClassVar[type[StrategyConfig]] = StrategyConfig
    kind: ClassVar[str]
    requirements: ClassVar[Requirements] = Requirements()

    def __init__(self, config: StrategyConfig, domains: tuple[str, ...], objective: Objective, seed: int) -> None:
        # `objective`: the objective as given; `tell` replaces it with one that knows the reference run.
        self.config, self.domains, self.objective, self.seed = config, domains, objective, seed
        # Tokens available per domain, set by the controller once the data is prepared (None for
        # trainers that read no data). Priors (token_prior, RegMix) and per-domain caps use it.
        self.domain_tokens: dict[str, int] | None = None
        # Upper weight per domain from the data (orchestrator.mixture.token_caps); None: no caps.
        self.caps: dict[str, float] | None = None
        # Where its proposals lie: the simplex, narrowed by strategies with a floor or bounds and by the caps.
        self.bounds = Bounds.of(domains)
        # Proposals `ask` has returned so far (sequence strategies continue from it); part of state_dict,
        # and set from the journal's count on resume (resume.retell).
        self.asked = 0
        # Multi-fidelity sweeps: the fidelities and their costs (set once by the controller), and the cost
        # budget left before each ask (None: no cost budget). Only `multi_fidelity` strategies read them.
        self.fidelities: FidelityPlan | None = None
        self.cost_left: float | None = None
        self.observations: list[Outcome] = []
        self.failures: list[Failure] = []
        self._history: list[Outcome | Failure] = []  # both, in the order told (state_dict)

    def set_caps(self, caps: dict[str, float]) -> None:
        """Upper weights per domain (from the tokens each domain holds); set once by the controller.
        `bounds` (the strategy's floor and bounds) become their intersection with the caps; ValueError,
        one line naming the fix, when nothing is left."""
        self.caps = {d: float(caps[d]) for d in self.domains if d in caps}
        self.bounds = capped_bounds(self.domains, self.bounds, self.caps)

    def set_replicates(self, seeds: int, top_k: int | None, budget: int, sweep: Callable[[], Any]) -> None:
        """`budget.replicates` (set once by the controller): `seeds` runs per mixture, or per top_k best
        mixture, within `budget` (budget.trials); `sweep()` gives the sweep's state as journaled, from
        which `ask` derives the replicates owed (orchestrator/strategies/replicates.py). SpecError, one
        line naming the fields, when top_k's replicates leave the strategy fewer than top_k trials."""
        from orchestrator.strategies.replicates import ReplicatePlan

        plan = ReplicatePlan(seeds, top_k, budget, sweep)
        self.replicates = plan if plan.active else None

    replicates = None  # a ReplicatePlan once set_replicates gave seeds > 1

    # -- the contract --------------------------------------------------------------------------------
    def ask(self, n: int, pending: list[Mixture]) -> list[Proposal]:
        """Up to n new proposals, different from `pending` (the mixtures running). Empty: nothing to add
        now; when nothing is pending either, the strategy has nothing left to try. Every proposal lies
        inside the data caps, whoever asks (controller, Tune searcher, recommend). Under
        `budget.replicates`, the replicates owed come first and the strategy's own proposals fill the rest."""
        out = self.next_proposals(n, pending) if self.replicates is None or n < 1 else self._ask_replicated(n, pending)
        if self.caps:
            out = [Proposal(within_caps(p.mixture, self.caps), p.options) for p in out]
        self.asked += len(out)
        return out

    def _ask_replicated(self, n: int, pending: list[Mixture]) -> list[Proposal]:
        """`ask` under budget.replicates (n >= 1): the replicates owed, then new mixtures from
        `next_proposals` as the budget leaves room for all their runs (replicates.py)."""
        plan = self.replicates
        state = plan.sweep()
        if plan.top_k is None:
            out = plan.owed(state, self.domains)
            room = plan.room(state, len(out))
            out = out[:n]
            return out + self._own_proposals(min(n - len(out), room), pending, state.replicates)
        room = plan.room(state, 0)
        out = self._own_proposals(min(n, room), pending, state.replicates)
        if not out and (not pending or state.replicates):  # the strategy's own trials are done: the top k's replicates
            out = plan.owed(state, self.domains)[:n]
        return out

    def _own_proposals(self, n: int, pending: list[Mixture], replicates: int) -> list[Proposal]:
        """`next_proposals(n)` with `asked` counting only the strategy's own proposals (not the
        `replicates` the sweep added), so its sequence (design points, Sobol index) has no gaps."""
        if n < 1:
            return []
        total = self.asked
        self.asked = total - replicates
        try:
            return self.next_proposals(n, pending)
        finally:
            self.asked = total

    @abc.abstractmethod
    def next_proposals(self, n: int, pending: list[Mixture]) -> list[Proposal]:
        """What `ask` returns, before the caps: up to n proposals (n may be 0, when the caller only
        reports what is pending). `self.asked` counts the proposals of earlier asks."""

    def tell(self, outcome: Outcome) -> None:
        """A trial completed with these per-domain losses (nats/token) and artifacts."""
        # The objective never changes: the first run at the reference mixture gives a new one that
        # measures against it (`excess`, `max_excess`), which this strategy holds from now on.
        self.objective = self.objective.with_run(outcome.mixture.as_dict(), outcome.losses)
        self.observations.append(outcome)
        self._history.append(outcome)

    def tell_failed(self, mixture: Mixture, reason: str, retryable: bool = False) -> None:
        """A trial ended for good without losses (`retryable`: the machine failed, not the mixture)."""
        failure = Failure(mixture, reason, retryable)
        self.failures.append(failure)
        self._history.append(failure)

    def recommend(self) -> Recommendation:
        """Default: the best observed mixture, with its observed losses; under constraints the best
        of the runs that satisfy them (the least violating one, said in `notes`, when none does)."""
        if not self.observations:
            raise ValueError("no completed trial yet: nothing to recommend")
        notes = self.objective.notes()
        violation = [self.objective.violated_by(o.losses) for o in self.observations]
        feasible = [o for o, v in zip(self.observations, violation) if v <= 0]
        if feasible:
            best = min(feasible, key=lambda o: self.objective(o.losses))
        else:
            best = self.observations[min(range(len(violation)), key=violation.__getitem__)]
            notes.append(f"no observed run satisfies the constraints; least violating run shown (by {max(min(violation), 0):.4f} nats)")
        return Recommendation(
            mixture=best.mixture,
            predicted=dict(best.losses),
            predicted_std=dict(best.loss_stderr),
            objective=self.objective(best.losses),
            objective_std=self.objective.std(best.loss_stderr, best.losses),
            source=OBSERVED,
            trials_used=len(self.observations),
            notes=notes,
        )

    def penalty(self, losses: np.ndarray, loss_domains: tuple[str, ...]) -> np.ndarray:
        """CONSTRAINT_PENALTY per nat by which loss rows (n, m) break the objective's constraints, (n,)."""
        if not self.objective.constrained:
            return np.zeros(len(losses))
        return self.objective.penalised(losses, loss_domains) - self.objective.values(losses, loss_domains)

    def observed_score(self, outcome: Outcome) -> float:
        """A run's observed objective plus CONSTRAINT_PENALTY per nat by which it breaks the constraints."""
        return self.objective(outcome.losses) + CONSTRAINT_PENALTY * max(self.objective.violated_by(outcome.losses), 0.0)

    def candidate_runs(self) -> list[Outcome]:
        """The observed runs a model may recommend: all of them; under constraints those whose observed
        losses satisfy them (all when none does: the penalised prediction then decides)."""
        feasible = [o for o in self.observations if self.objective.violated_by(o.losses) <= 0]
        return feasible if self.objective.constrained and feasible else list(self.observations)

    def best_predicted(self, optimum: np.ndarray | None, predict: Predictor, notes: list[str],
                       optimum_name: str = "the model's optimum", std_floor: float = 0.0,
                       rank_runs_observed: bool = False) -> Recommendation:
        """The in-sample best-point rule: of the model's `optimum` (k,) and the observed runs
        (`candidate_runs`), the mixture with the lowest predicted objective (mean; plus the constraint
        penalty on the predicted losses), so a recommendation is never predicted worse than a run
        already seen. Why: a surrogate's optimum (searched with a risk margin, or averaged as RegMix
        does) can be predicted worse than its own fit at an observed run. `optimum` None: the observed
        runs only (Ax's best point is itself an observed arm). Source MODEL or IN_SAMPLE, said in notes.
        `std_floor`: the least std the optimum's prediction is given in the margin (a model's
        cross-validated error, where its own std is not a posterior). `rank_runs_observed`: the run the
        optimum is weighed against (and recommended if it loses) is the best observed one, not the one
        the model predicts best: for a model without a posterior, whose prediction at a run it was fitted
        to is no better than the run's own observation."""
        runs = self.candidate_runs()
        W = np.array([o.mixture.as_array() for o in runs]).reshape(len(runs), len(self.domains))
        if optimum is None and not runs:
            raise ValueError("no completed trial yet: nothing to recommend")
        if optimum is not None:
            W = np.vstack([np.asarray(optimum, dtype=float)[None, :], W])
        mean, std, loss_domains = predict(W)
        value, value_std = self.objective.compose(mean, std, loss_domains)
        score = value + self.penalty(mean, loss_domains)
        first = 1 if optimum is not None else 0  # rows from `first` on are observed runs
        if rank_runs_observed and runs:
            # A law or tree ensemble shrinks nothing towards a posterior: ranking runs by its fit picked,
            # for `bimix` on the bench's mean, runs 0.006-0.012 nats worse than the best observed one.
            best_run = first + int(np.argmin([self.observed_score(o) for o in runs]))
        else:
            best_run = first + int(np.argmin(score[first:])) if runs else 0
        # The optimum must beat the best run by RECOMMEND_MARGIN of its own std, not by a hair: a parametric
        # law extrapolated to a vertex (mixing_law on the bench: 100% of one domain, predicted 0.025 better
        # than the best run with a std of 0.081, truly 0.8 nats worse) is better only within its doubt.
        margin = RECOMMEND_MARGIN * max(value_std[0], std_floor) if runs else 0.0
        pick = 0 if optimum is not None and score[0] + margin <= score[best_run] else best_run
        if pick == 0 and optimum is not None:
            mixture, source = Mixture.from_array(self.domains, W[0]), MODEL
            why = (f"model: {optimum_name} is predicted at {score[0]:.4f} ± {value_std[0]:.4f}, the best observed run at {score[best_run]:.4f}"
                   if runs else f"model: {optimum_name}, predicted at {score[0]:.4f} (no observed run to compare)")
        else:
            run = runs[pick - first]
            mixture, source = run.mixture, IN_SAMPLE
            versus = f", {optimum_name} at {score[0]:.4f} ± {value_std[0]:.4f}" if optimum is not None else ""
            which = "the best observed run, predicted" if rank_runs_observed else "an observed run is predicted best,"
            why = (f"in-sample: {which} at {score[pick]:.4f}{versus}; observed there: "
                   + ", ".join(f"{d}={v:.4f}" for d, v in run.losses.items()))
        return Recommendation(
            mixture=mixture,
            predicted=dict(zip(loss_domains, map(float, mean[pick]))),
            predicted_std=dict(zip(loss_domains, map(float, std[pick]))),
            objective=float(value[pick]), objective_std=float(value_std[pick]), source=source,
            trials_used=len(self.observations), notes=[*notes, why])

    def checked(self, rec: Recommendation) -> Recommendation:
        """A model's recommendation under the objective's constraints: kept when its predicted losses
        (mean + 1 std, where the model gives a std) satisfy them and some observed run does too;
        otherwise the best feasible observed run, with the reason in `notes`."""
        notes = rec.notes + [n for n in self.objective.notes() if n not in rec.notes]
        if not self.objective.constrained or rec.source not in (MODEL, IN_SAMPLE):
            return replace(rec, notes=notes)
        upper = {d: v + rec.predicted_std.get(d, 0.0) for d, v in rec.predicted.items()}
        predicted = self.objective.violated_by(upper)
        observed = Strategy.recommend(self) if self.observations else None  # the best observed, not the model's
        if predicted > 0 and observed is not None:
            why = f"the model's mixture is predicted to violate the constraints by {predicted:.4f} nats; best feasible observed run instead"
            return replace(observed, notes=[*rec.notes, why, *observed.notes])
        if observed is not None and observed.notes and observed.notes[-1].startswith("no observed run"):
            notes.append("no observed run satisfies the constraints; the model's mixture is predicted to, unverified")
        return replace(rec, notes=notes)

    def state_dict(self) -> dict[str, Any]:
        """JSON state: the outcomes (with their artifacts) and failures in the order told, and `asked`.
        Subclasses add what re-telling cannot rebuild."""
        return {
            "kind": self.kind,
            "asked": self.asked,
            "events": [{"tell": e.to_json()} if isinstance(e, Outcome) else {"fail": e.to_json()} for e in self._history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Re-tell the history in order, then restore `asked` (a fresh strategy of the same kind,
        options, domains, objective and seed)."""
        for e in state["events"]:
            if "tell" in e:
                self.tell(Outcome.from_json(e["tell"], self.domains))
            else:
                f = Failure.from_json(e["fail"], self.domains)
                self.tell_failed(f.mixture, f.reason, f.retryable)
        self.asked = int(state.get("asked", 0))


class Predictive(Strategy):
    """A strategy with a model of the per-domain losses at any mixture (surrogates, Ax's GP): it can
    score candidates (`mixsweep recommend --predict`) and predict a report's baselines."""

    @abc.abstractmethod
    def min_runs(self) -> int:
        """Finished runs the model needs before it predicts."""

    @abc.abstractmethod
    def predict_losses(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """Predicted per-domain loss mean and std (n, m), nats/token, at mixtures W (n, k), with the m
        domains. ValueError (one line) when the model cannot be fitted yet."""
