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
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from orchestrator.mixture import Mixture, within_caps
from orchestrator.objective import Objective


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
    source: str  # "model" (a surrogate's prediction) or "observed" (the best completed trial)
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

    def __init__(self, config: StrategyConfig, domains: tuple[str, ...], objective: Objective, seed: int) -> None:
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
        self.objective.observe(mixture.as_dict(), losses)  # learns the reference run's losses
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
            source="observed",
            trials_used=len(self.observations),
            notes=notes,
        )

    def checked(self, rec: Recommendation) -> Recommendation:
        """A model's recommendation under the objective's constraints: kept when its predicted losses
        (mean + 1 std, where the model gives a std) satisfy them and some observed run does too;
        otherwise the best feasible observed run, with the reason in `notes`."""
        notes = rec.notes + [n for n in self.objective.notes() if n not in rec.notes]
        if not self.objective.constrained or rec.source != "model":
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
