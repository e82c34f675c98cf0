"""The types a strategy and its caller exchange (DESIGN.md section 7: contracts are types, not probes).

- `Requirements`: what a strategy needs from the sweep, declared on its class; the controller refuses a
  trainer that cannot give it, and `mixsweep recommend` a strategy that cannot work from a runs table.
- `Proposal`: a mixture to train and the per-trial trainer options it needs (part of the trial's id).
- `Outcome`: a finished trial: mixture, per-domain losses and their standard errors (nats/token), and
  `Artifacts`, what the trial wrote for the strategy (expert log-probabilities, DoReMi's weights).
- `Failure`: a trial that ended without losses, why, and whether the cause was the machine rather
  than the mixture (`retryable`).

Every type is plain data with a JSON form, so a strategy's history (`Strategy.state_dict`) and the
journal hold the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from orchestrator.mixture import Mixture


@dataclass(frozen=True)
class Requirements:
    """What a strategy needs besides results. Every field's default is "nothing"."""

    # Needs the training tokens per domain (`Strategy.domain_tokens`), which only a trainer that reads
    # the prepared data (the proxy trainer) gives.
    domain_tokens: bool = False
    # Needs per-token log-probabilities of domain experts on every validation set (`Artifacts.token_logprobs`).
    expert_logprobs: bool = False
    # Why it needs the built-in proxy trainer, in words (None: any trainer). The controller's refusal
    # for another trainer says "<kind> <this>".
    proxy_trainer: str | None = None
    # Proposes a run at the objective's reference mixture first whenever the objective needs one
    # (`excess`, `max_excess`). Without it such objectives wait for a run that lands there by chance.
    reference_run: bool = False
    # Why it works only inside a sweep, in words (None: it can be fitted to a runs table offline).
    sweep_only: str | None = None
    # Chooses the fidelity of each trial (`Proposal.options["fidelity"]`), so it needs a spec with
    # `fidelities:`; a strategy without it trains every trial of a multi-fidelity sweep at the target.
    multi_fidelity: bool = False

    @property
    def offline(self) -> bool:
        """Whether `mixsweep recommend` can fit it to a runs table."""
        return self.sweep_only is None and not self.domain_tokens


@dataclass(frozen=True)
class Fidelity:
    """One fidelity of a multi-fidelity sweep: what a trial there costs (the spec's unit) and its scale."""

    name: str
    cost: float
    params: float  # non-embedding parameters of the model trained there
    tokens: float  # training tokens per trial


@dataclass(frozen=True)
class FidelityPlan:
    """What a multi-fidelity strategy is told by the controller: the fidelities, the one whose runs count
    (`target`), the scale its recommendation is for (`at_params`: the production run's when the spec
    names it, else the target fidelity's), and the cost budget (None: only `budget.trials`)."""

    levels: tuple[Fidelity, ...]
    target: str
    at_params: float
    budget_cost: float | None = None

    def level(self, name: str | None) -> Fidelity:
        """The named fidelity (None: the target, which is what a run without a fidelity trained at)."""
        name = self.target if name is None else name
        return next(f for f in self.levels if f.name == name)

    def to_json(self) -> dict[str, Any]:
        return {"levels": [f.__dict__ for f in self.levels], "target": self.target, "at_params": self.at_params,
                "budget_cost": self.budget_cost}


@dataclass(frozen=True)
class Proposal:
    """A mixture to train, with the trainer options this trial needs: {"token_logprobs": True} for an
    expert, {"save_final_weights": True} or {"online": {...}} for DoReMi's reference and proxy runs,
    {"replicate": r} for a deliberate re-run, {"fidelity": name} for a trial of a multi-fidelity sweep.
    Options are part of the trial's id and are journaled with its proposal; only the proxy trainer acts
    on them (the fidelity is the controller's: it picks the preset, tokens or table). Empty for an
    ordinary trial."""

    mixture: Mixture
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"mixture": self.mixture.as_dict(), "options": dict(self.options)}


@dataclass(frozen=True)
class Artifacts:
    """What a trial wrote or learnt for its strategy besides losses (journaled with its completion)."""

    token_logprobs: str | None = None  # location of the expert's per-token log-probabilities (storage.read_arrays)
    final_weights: str | None = None  # where the trial saved its final model weights (DoReMi's reference model)
    online: Mapping[str, Any] | None = None  # online mixing's summary: the averaged and last weights, steps

    KEYS = ("token_logprobs", "final_weights", "online")

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "Artifacts":
        """From a journal's (or a trial result's info) mapping; keys other than KEYS are ignored."""
        data = data or {}
        return cls(**{k: data[k] for k in cls.KEYS if data.get(k) is not None})

    def to_json(self) -> dict[str, Any]:
        """Only the artifacts present (empty for an ordinary trial)."""
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k in self.KEYS if (v := getattr(self, k)) is not None}


@dataclass(frozen=True)
class Outcome:
    """A completed trial: its mixture, per-domain validation losses and their standard errors
    (nats/token; stderr may be empty), what it wrote for the strategy, and the fidelity it trained at
    (None: the sweep's own proxy; a multi-fidelity sweep names one of `fidelities`)."""

    mixture: Mixture
    losses: Mapping[str, float]
    loss_stderr: Mapping[str, float] | None = field(default_factory=dict)
    artifacts: Artifacts = Artifacts()
    fidelity: str | None = None

    def __post_init__(self) -> None:  # own copies, as floats: a caller's dict changing later changes nothing here
        object.__setattr__(self, "losses", {str(d): float(v) for d, v in self.losses.items()})
        object.__setattr__(self, "loss_stderr", {str(d): float(v) for d, v in (self.loss_stderr or {}).items()})

    def to_json(self) -> dict[str, Any]:
        return {"mixture": self.mixture.as_dict(), "losses": dict(self.losses), "loss_stderr": dict(self.loss_stderr),
                **({"artifacts": self.artifacts.to_json()} if self.artifacts.to_json() else {}),
                **({"fidelity": self.fidelity} if self.fidelity is not None else {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], domains: tuple[str, ...]) -> "Outcome":
        return cls(Mixture.from_dict(data["mixture"], domains), {d: float(v) for d, v in data["losses"].items()},
                   {d: float(v) for d, v in (data.get("loss_stderr") or {}).items()}, Artifacts.from_json(data.get("artifacts")),
                   data.get("fidelity"))


@dataclass(frozen=True)
class Failure:
    """A trial that ended without losses. `retryable`: the machine failed (the process died or hung
    through every attempt), so the mixture itself may train fine; False: the trainer raised or the
    losses diverged at this mixture."""

    mixture: Mixture
    reason: str
    retryable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"mixture": self.mixture.as_dict(), "reason": self.reason, "retryable": self.retryable}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], domains: tuple[str, ...]) -> "Failure":
        return cls(Mixture.from_dict(data["mixture"], domains), str(data["reason"]), bool(data.get("retryable", False)))
