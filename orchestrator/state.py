"""SweepState: a pure fold over journal events. `status`, `report` and resume read only this."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from orchestrator.trial import TrialStatus


@dataclass
class TrialRecord:
    id: str
    mixture: dict[str, float]
    status: TrialStatus = TrialStatus.PROPOSED
    attempts: int = 0
    proposed_seq: int = 0
    progress_events: int = 0
    last_progress: dict[str, Any] | None = None
    losses: dict[str, float] | None = None
    loss_stderr: dict[str, float] | None = None
    objective: float | None = None
    reason: str | None = None
    wall_s: float | None = None
    proposal_s: float | None = None
    placement: dict[str, Any] | None = None  # node, pid and GPUs of the latest attempt
    failed_attempts: list[str] = field(default_factory=list)  # why earlier attempts ended (died, hung)
    options: dict[str, Any] | None = None  # trainer options the strategy asked for (part of the id); None: not recorded
    preset: str | None = None  # ladder trials: the model preset it trained at (None: the sweep's own trials)
    role: str | None = None  # ladder trials: top1..topK, uniform or token_prior

    @property
    def replicate(self) -> int:
        """0 for a mixture's first run; r for the r-th replicate a strategy asked for on purpose
        (trial option `replicate`, which also changes the trainer's seed)."""
        return int((self.options or {}).get("replicate", 0))

    @property
    def measures_mixture(self) -> bool:
        """False for a run whose losses are not those of a model trained on its mixture: DoReMi's
        proxy run (online mixing) starts at the reference mixture and reweights as it trains, so it
        is never the best run, a runs-table row or a ladder rung."""
        return not (self.options and "online" in self.options)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "attempts": self.attempts,
            "mixture": self.mixture,
            "losses": self.losses,
            "loss_stderr": self.loss_stderr,
            "objective": self.objective,
            "progress_events": self.progress_events,
            "reason": self.reason,
            "wall_s": self.wall_s,
            "placement": self.placement,
            "failed_attempts": self.failed_attempts,
            **({"options": self.options} if self.options else {}),
            # online mixing (DoReMi's proxy run): the domain weights at the latest evaluation
            **({"online_weights": self.last_progress["weights"]} if (self.last_progress or {}).get("weights") else {}),
        }


@dataclass
class SweepState:
    """Everything known about a sweep, rebuilt from its journal alone."""

    name: str = ""
    domains: tuple[str, ...] = ()
    budget: int = 0
    concurrency: int = 0
    objective: str = ""
    spec_digest: str = ""
    finished: bool = False
    resumes: int = 0
    interruptions: int = 0  # `sweep_interrupted` events: SIGINT/SIGTERM stopped the controller
    reused: int = 0  # repeated proposals answered from an earlier trial (or one in flight) instead of training
    # Of those, the ones that spent a unit of budget: journals written before `budget.weight_precision`,
    # whose `trial_reused` events name no `matched`. Repeats journaled since spend none.
    reused_budget: int = 0
    recommendation: dict[str, Any] | None = None
    trials: dict[str, TrialRecord] = field(default_factory=dict)
    domain_tokens: dict[str, int] | None = None  # training tokens per domain (proxy trainer)
    caps: dict[str, float] | None = None  # upper weight per domain from data.max_epochs
    # Scale-ladder re-trainings (orchestrator/ladder.py): kept apart from `trials`, so they spend no
    # budget, are never told to the strategy, and never count as the sweep's best.
    ladder: dict[str, TrialRecord] = field(default_factory=dict)
    # preset -> the scale-aware model's recommendation at that size (`scale_recommended`; mixture None
    # with a note when it could not be fitted)
    scale_recommendations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def apply(self, e: dict[str, Any]) -> None:
        """Fold one journal event into the state."""
        kind = e["event"]
        if kind in ("sweep_started", "sweep_resumed"):
            self.resumes += kind == "sweep_resumed"
            self.name = e.get("name", self.name)
            self.domains = tuple(e.get("domains", self.domains))
            self.budget = e.get("budget", self.budget)
            self.concurrency = e.get("concurrency", self.concurrency)
            self.objective = e.get("objective", self.objective)
            self.spec_digest = e.get("spec_digest", self.spec_digest)
            self.domain_tokens = e.get("domain_tokens", self.domain_tokens)
            self.caps = e.get("caps", self.caps)
            self.finished = False
        elif kind == "trial_proposed" and e.get("preset"):
            self.ladder[e["trial"]] = TrialRecord(e["trial"], e["mixture"], proposed_seq=e["seq"], preset=e["preset"], role=e.get("role"))
        elif kind == "trial_proposed":
            self.trials[e["trial"]] = TrialRecord(e["trial"], e["mixture"], proposed_seq=e["seq"], proposal_s=e.get("proposal_s"),
                                                  options=e.get("options"))
        elif kind == "trial_started":
            t = self.trial(e["trial"])
            t.status, t.attempts = TrialStatus.RUNNING, e.get("attempt", t.attempts + 1)
        elif kind == "trial_placed":
            self.trial(e["trial"]).placement = {k: e.get(k) for k in ("node_id", "pid", "gpus")}
        elif kind == "trial_requeued":
            t = self.trial(e["trial"])
            t.status = TrialStatus.PROPOSED
            t.failed_attempts.append(e.get("reason", ""))
        elif kind == "trial_progress":
            t = self.trial(e["trial"])
            t.progress_events += 1
            t.last_progress = {k: e[k] for k in ("step", "tokens", "losses", "weights") if k in e}
        elif kind == "trial_completed":
            t = self.trial(e["trial"])
            t.status, t.losses, t.loss_stderr = TrialStatus.COMPLETED, e["losses"], e.get("loss_stderr")
            t.objective, t.wall_s = e.get("objective"), e.get("wall_s")
        elif kind == "trial_failed":
            t = self.trial(e["trial"])
            t.status, t.reason = TrialStatus.FAILED, e.get("reason")
        elif kind == "trial_reused":
            self.reused += 1
            self.reused_budget += "matched" not in e
        elif kind == "scale_recommended":
            self.scale_recommendations[e["preset"]] = {k: v for k, v in e.items() if k not in ("seq", "time", "event")}
        elif kind == "recommended":
            self.recommendation = {k: v for k, v in e.items() if k not in ("seq", "time", "event")}
        elif kind == "sweep_finished":
            self.finished = True
        elif kind == "sweep_interrupted":  # the trials it names stay RUNNING: resume re-queues them
            self.interruptions += 1

    def trial(self, tid: str) -> TrialRecord:
        """A sweep or ladder trial by id."""
        return self.trials[tid] if tid in self.trials else self.ladder[tid]

    def in_order(self) -> list[TrialRecord]:
        return sorted(self.trials.values(), key=lambda t: t.proposed_seq)

    def by_status(self, status: TrialStatus) -> list[TrialRecord]:
        return [t for t in self.trials.values() if t.status == status]

    @property
    def completed(self) -> list[TrialRecord]:
        return self.by_status(TrialStatus.COMPLETED)

    @property
    def replicates(self) -> int:
        """Trials that re-run a mixture on purpose (the strategy asked for a replicate); they spend budget."""
        return sum(1 for t in self.trials.values() if t.replicate > 0)

    def best(self) -> TrialRecord | None:
        done = [t for t in self.completed if t.objective is not None and math.isfinite(t.objective) and t.measures_mixture]
        return min(done, key=lambda t: t.objective) if done else None

    def summary(self) -> dict[str, Any]:
        """The object `mixsweep status --json` prints."""
        best = self.best()
        return {
            "name": self.name,
            "domains": list(self.domains),
            "objective": self.objective,
            "budget": self.budget,
            "concurrency": self.concurrency,
            "finished": self.finished,
            "proposed": len(self.trials),
            "completed": len(self.completed),
            "failed": len(self.by_status(TrialStatus.FAILED)),
            "running": len(self.by_status(TrialStatus.RUNNING)),
            "reused": self.reused,
            "reused_budget": self.reused_budget,
            "replicates": self.replicates,
            "best": {"id": best.id, "objective": best.objective, "mixture": best.mixture} if best else None,
            "recommendation": self.recommendation,
            "resumes": self.resumes,
            "trials": [t.to_json() for t in self.in_order()],
            "ladder": [{**t.to_json(), "preset": t.preset, "role": t.role}
                       for t in sorted(self.ladder.values(), key=lambda t: t.proposed_seq)],
        }
