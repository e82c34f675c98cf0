"""Trials and what they report.

A trial's life (the controller is the only writer; every arrow is one journal event)::

    PROPOSED --trial_started--> RUNNING --trial_completed--> COMPLETED
                                   |  ^
                                   |  +-- trial_progress (any number, while it trains)
                                   +----trial_failed--> FAILED

COMPLETED and FAILED are final. A FAILED trial still counts against the budget and is told to the
strategy, so it will not be proposed blindly again.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from orchestrator.mixture import Mixture, config_hash


class TrialStatus(str, enum.Enum):
    PROPOSED = "proposed"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (TrialStatus.COMPLETED, TrialStatus.FAILED)


def trial_id(mixture: Mixture, proxy: Mapping[str, Any], seed: int) -> str:
    """Content address of a trial: the same mixture, proxy config and seed is the same trial."""
    return "t" + config_hash(mixture.as_dict(), dict(proxy), seed)


@dataclass(frozen=True)
class Progress:
    """One evaluation during training. Losses in nats/token on each domain's held-out tokens, with their
    standard errors; `tokens_per_s` is the training speed so far (0 where the trainer does not say)."""

    step: int
    tokens: int
    losses: dict[str, float]
    elapsed_s: float = 0.0
    loss_stderr: dict[str, float] = field(default_factory=dict)
    tokens_per_s: float = 0.0
    weights: dict[str, float] | None = None  # online mixing (DoReMi): the domain weights at this step

    def to_json(self) -> dict[str, Any]:
        return {"kind": "progress", **asdict(self)}


@dataclass(frozen=True)
class TrialResult:
    """Final per-domain validation losses (nats/token) and their standard errors."""

    losses: dict[str, float]
    loss_stderr: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    steps: int = 0
    wall_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "result", **asdict(self)}

    def is_finite(self) -> bool:
        return bool(self.losses) and all(math.isfinite(v) for v in self.losses.values())


@dataclass(frozen=True)
class Placement:
    """Where an attempt runs: the first message every trial actor streams."""

    node_id: str
    pid: int
    gpus: list


def message_from_json(obj: Mapping[str, Any]) -> Progress | TrialResult | Placement:
    """Decode what a trial actor streamed back."""
    body = {k: v for k, v in obj.items() if k != "kind"}
    kinds = {"progress": Progress, "result": TrialResult, "placed": Placement}
    return kinds[obj.get("kind", "result")](**body)
