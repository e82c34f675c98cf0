"""What the orchestrator and a trial's worker say to each other, in plain JSON.

The orchestrator sends one `TrialRequest` per attempt (and the data description the trainer reads);
the worker streams back a `Placement` first, then any number of `Progress`, then one `TrialResult`.
Every message is a frozen dataclass with `to_json()`; `message_from_json` decodes what came back.
Nothing here knows the sweep spec: a request carries the trainer's section of it as a plain dict.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

# Seed offset per replicate: far from the small seeds specs use, so that replicate r of a sweep with
# seed s is not the first run of a sweep with seed s + r.
REPLICATE_SEED_STRIDE = 1_000_003


def config_hash(*parts: object) -> str:
    """Short content hash of JSON-serialisable parts (trial ids, cache keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TrialRequest:
    """What one attempt of one trial needs, whichever trainer runs it.

    `trainer` is the spec's trainer section as plain JSON (`{"kind": ..., ...}`, pydantic's
    `model_dump(mode="json")`); the trainer registry (workers/trainers.py) picks the backend by its kind.
    """

    trial: str  # the trial id (content hash), e.g. for run names and the noise of simulated trainers
    mixture: dict[str, float]  # domain -> weight, summing to 1
    seed: int  # the sweep's seed; `trainer_seed` adds the replicate offset
    trainer: dict[str, Any]
    trial_dir: str | None = None  # a path or URI every node reaches: checkpoints, logs, written artifacts
    options: dict[str, Any] = field(default_factory=dict)  # per-trial options the strategy asked for (part of the id)
    vocab_size: int = 0  # the tokenizer's vocabulary (trainers that read token shards)
    cpus: float = 1.0  # CPUs Ray gave the trial (the proxy sizes torch's thread pool by it)
    train_config: dict[str, Any] | None = None  # the proxy model's training settings (workers.train.TrainConfig)
    preset: str | None = None  # the model size the trial stands for (simulated trainers scale their losses by it)
    device: str | None = None  # force a torch device; default: the GPU Ray assigned, else the CPU

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", dict(self.options or {}))

    @property
    def kind(self) -> str:
        return str(self.trainer["kind"])

    @property
    def replicate(self) -> int:
        """The replicate the strategy asked for on purpose (trial option `replicate`: 1, 2, ...; 0 otherwise)."""
        return int(self.options.get("replicate", 0))

    @property
    def seed_offset(self) -> int:
        """Added to every seed of a replicate, so that it is a second sample (other initialisation,
        batches and noise) rather than a copy of the first run."""
        return REPLICATE_SEED_STRIDE * self.replicate

    @property
    def trainer_seed(self) -> int:
        return self.seed + self.seed_offset

    def for_trial(self, trial: str, mixture: Mapping[str, float], trial_dir: str | None = None,
                  options: Mapping[str, Any] | None = None) -> "TrialRequest":
        """This request (a template shared by a sweep's trials) for one trial."""
        return replace(self, trial=trial, mixture=dict(mixture), trial_dir=trial_dir, options=dict(options or {}))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "TrialRequest":
        """Decode `to_json()`; a TypeError names a field this version does not know."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise TypeError(f"trial request: unknown field(s) {unknown}; the worker runs another mixsweep version than the head")
        return cls(**obj)


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

    def to_json(self) -> dict[str, Any]:
        return {"kind": "placed", **asdict(self)}


def message_from_json(obj: Mapping[str, Any]) -> Progress | TrialResult | Placement:
    """Decode what a trial actor streamed back."""
    body = {k: v for k, v in obj.items() if k != "kind"}
    kinds = {"progress": Progress, "result": TrialResult, "placed": Placement}
    return kinds[obj.get("kind", "result")](**body)
