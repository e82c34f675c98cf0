"""The Strategy interface: what mixture to try next.

A strategy is told results and asked for proposals; it never sees Ray, and given its seed and the
order of events it is deterministic. The controller alone owns parallelism, retries and the budget.
`state_dict()` is plain JSON; the default keeps the observation history, and `load_state_dict`
rebuilds any strategy by re-telling it in order.
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from orchestrator.mixture import Mixture, within_caps
from orchestrator.objective import Objective


# Recommendation.source: where the mixture comes from.
MODEL = "model"  # the model's optimum, a mixture no run may have trained on
IN_SAMPLE = "in-sample"  # an observed run, chosen because the model predicts it best (in-sample best point)
OBSERVED = "observed"  # the best observed run by its observed losses (no model involved)

# predict(W (n, k)) -> per-domain mean and std (n, m), nats/token, and the m loss domains.
Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, tuple[str, ...]]]


class StrategyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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


@dataclass(frozen=True)
class Observation:
    mixture: Mixture
    losses: dict[str, float]
    loss_stderr: dict[str, float]


class Strategy(abc.ABC):
    """Base class: keeps the observations; subclasses decide what to ask next."""

    Config: ClassVar[type[StrategyConfig]] = StrategyConfig
    kind: ClassVar[str]
    # Why the strategy works only inside a sweep (what it needs that a runs table cannot hold), or None
    # when it can be fitted to a runs table (`mixsweep recommend`).
    needs_sweep: ClassVar[str | None] = None
    # True when it needs the tokens per domain (`domain_tokens`), which only a sweep's prepared data gives.
    needs_domain_tokens: ClassVar[bool] = False

    def __init__(self, config: StrategyConfig, domains: tuple[str, ...], objective: Objective, seed: int) -> None:
        # `objective`: the objective as given; `tell` replaces it with one that knows the reference run.
        self.config, self.domains, self.objective, self.seed = config, domains, objective, seed
        # Tokens available per domain, set by the controller once the data is prepared (None for
        # trainers that read no data). Priors (token_prior, RegMix) and per-domain caps use it.
        self.domain_tokens: dict[str, int] | None = None
        # Upper weight per domain from the data (orchestrator.mixture.token_caps); None: no caps.
        self.caps: dict[str, float] | None = None
        self.observations: list[Observation] = []
        self.failures: list[tuple[Mixture, str]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every strategy's `ask` is wrapped so that no proposal exceeds a cap, whoever calls it
        # (controller, Tune searcher, recommend). Strategies with bounds (ModelStrategy, BayesOpt)
        # already stay inside them in `set_caps`; for the rest the wrapper projects onto the caps.
        super().__init_subclass__(**kwargs)
        if "ask" in cls.__dict__ and not getattr(cls.__dict__["ask"], "_capped", False):
            inner = cls.__dict__["ask"]

            @functools.wraps(inner)
            def ask(self, n: int, pending: list[Mixture]) -> list[Mixture]:
                out = inner(self, n, pending)
                return [within_caps(m, self.caps) for m in out] if self.caps else out

            ask._capped = True
            cls.ask = ask

    def set_caps(self, caps: dict[str, float]) -> None:
        """Upper weights per domain (from the tokens each domain holds); set once by the controller.
        Subclasses that search inside bounds intersect their bounds here; ValueError when impossible."""
        self.caps = {d: float(caps[d]) for d in self.domains if d in caps}

    @abc.abstractmethod
    def ask(self, n: int, pending: list[Mixture]) -> list[Mixture]:
        """Up to n new mixtures, different from `pending` (those running). Empty: nothing to add now;
        when nothing is pending either, the strategy has nothing left to try."""

    def trial_options(self, mixture: Mixture) -> dict[str, Any]:
        """Trainer options for a mixture just returned by `ask` (e.g. {"token_logprobs": True} for MDE's
        experts, {"save_final_weights": True} or {"online": {...}} for DoReMi). They are part of the
        trial's id and journaled with its proposal; only the proxy trainer acts on them. Default: none."""
        return {}

    def tell(self, mixture: Mixture, losses: dict[str, float], loss_stderr: dict[str, float] | None = None) -> None:
        """A trial finished with these per-domain losses (nats/token)."""
        # The objective never changes: the first run at the reference mixture gives a new one that
        # measures against it (`excess`, `max_excess`), which this strategy holds from now on.
        self.objective = self.objective.with_run(mixture.as_dict(), losses)
        self.observations.append(Observation(mixture, dict(losses), dict(loss_stderr or {})))

    def tell_failed(self, mixture: Mixture, reason: str) -> None:
        """A trial failed for good; its mixture gives no loss."""
        self.failures.append((mixture, reason))

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

    def candidate_runs(self) -> list[Observation]:
        """The observed runs a model may recommend: all of them; under constraints those whose observed
        losses satisfy them (all when none does: the penalised prediction then decides)."""
        feasible = [o for o in self.observations if self.objective.violated_by(o.losses) <= 0]
        return feasible if self.objective.constrained and feasible else list(self.observations)

    def best_predicted(self, optimum: np.ndarray | None, predict: Predictor, notes: list[str],
                       optimum_name: str = "the model's optimum") -> Recommendation:
        """The in-sample best-point rule: of the model's `optimum` (k,) and the observed runs
        (`candidate_runs`), the mixture with the lowest predicted objective (mean; plus the constraint
        penalty on the predicted losses), so a recommendation is never predicted worse than a run
        already seen. Why: a surrogate's optimum (searched with a risk margin, or averaged as RegMix
        does) can be predicted worse than its own fit at an observed run. `optimum` None: the observed
        runs only (Ax's best point is itself an observed arm). Source MODEL or IN_SAMPLE, said in notes."""
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
        best_run = first + int(np.argmin(score[first:])) if runs else 0
        pick = 0 if optimum is not None and score[0] <= score[best_run] else best_run  # ties keep the optimum
        if pick == 0 and optimum is not None:
            mixture, source = Mixture.from_array(self.domains, W[0]), MODEL
            why = (f"model: {optimum_name} is predicted at {score[0]:.4f}, the best observed run at {score[best_run]:.4f}"
                   if runs else f"model: {optimum_name}, predicted at {score[0]:.4f} (no observed run to compare)")
        else:
            run = runs[pick - first]
            mixture, source = run.mixture, IN_SAMPLE
            versus = f", {optimum_name} at {score[0]:.4f}" if optimum is not None else ""
            why = (f"in-sample: an observed run is predicted best, at {score[pick]:.4f}{versus}; observed there: "
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
            return Recommendation(**{**rec.__dict__, "notes": notes})
        upper = {d: v + rec.predicted_std.get(d, 0.0) for d, v in rec.predicted.items()}
        predicted = self.objective.violated_by(upper)
        observed = Strategy.recommend(self) if self.observations else None  # the best observed, not the model's
        if predicted > 0 and observed is not None:
            why = f"the model's mixture is predicted to violate the constraints by {predicted:.4f} nats; best feasible observed run instead"
            return Recommendation(**{**observed.__dict__, "notes": [*rec.notes, why, *observed.notes]})
        if observed is not None and observed.notes and observed.notes[-1].startswith("no observed run"):
            notes.append("no observed run satisfies the constraints; the model's mixture is predicted to, unverified")
        return Recommendation(**{**rec.__dict__, "notes": notes})

    def state_dict(self) -> dict[str, Any]:
        """JSON state. The default lets any strategy be rebuilt by re-telling its history."""
        return {
            "kind": self.kind,
            "asked": getattr(self, "asked", 0),
            "events": [
                {"tell": o.mixture.as_dict(), "losses": o.losses, "loss_stderr": o.loss_stderr} for o in self.observations
            ]
            + [{"fail": m.as_dict(), "reason": r} for m, r in self.failures],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for e in state["events"]:
            if "tell" in e:
                self.tell(Mixture.from_dict(e["tell"], self.domains), e["losses"], e.get("loss_stderr"))
            else:
                self.tell_failed(Mixture.from_dict(e["fail"], self.domains), e["reason"])
        if hasattr(self, "asked"):
            self.asked = state.get("asked", 0)


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
