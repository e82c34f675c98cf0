"""SweepState: a pure fold over journal events. `status`, `report` and resume read only this.

The journal stores facts (mixtures, losses, ids); the objective of a trial is derived here, from its
losses and the sweep's Objective (the frozen spec's definition, `SweepState(objective)`), measured
against the reference run once that has completed (the first completed sweep trial at the reference
mixture that trained on it). When the reference run completes, every trial already scored is scored
again, so every reader (status, report, the best trial, the ladder's top-k, exports, the bench) sees
one scale. An `objective` field in a journal (sweeps journaled one) is ignored; only a state built
without a definition (no frozen spec to read it from) shows it, as journaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from orchestrator.objective import Objective
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
    # The objective of `losses` under the sweep's objective (SweepState keeps it current; module docstring).
    objective: float | None = None
    completed_seq: int | None = None  # seq of its `trial_completed`: the order trials finished in
    reason: str | None = None
    retryable: bool = False  # failed because the machine did (died, hung through every attempt), not the mixture
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
    def fidelity(self) -> str | None:
        """The fidelity it trained at in a multi-fidelity sweep (trial option `fidelity`); None otherwise."""
        return (self.options or {}).get("fidelity")

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
            **({"retryable": True} if self.retryable else {}),
            **({"options": self.options} if self.options else {}),
            # online mixing (DoReMi's proxy run): the domain weights at the latest evaluation
            **({"online_weights": self.last_progress["weights"]} if (self.last_progress or {}).get("weights") else {}),
        }


@dataclass
class SweepState:
    """Everything known about a sweep, rebuilt from its journal alone.

    `objective`: the sweep's Objective (journal.load reads it from the frozen spec); once the reference
    run has completed, the same objective with its losses as the reference (`reference_trial` names it).
    None: no definition, trial objectives are the journaled numbers (module docstring).
    """

    objective: Objective | None = None
    name: str = ""
    domains: tuple[str, ...] = ()
    budget: int = 0
    concurrency: int = 0
    objective_text: str = ""  # the objective's description as journaled by `sweep_started`
    reference_trial: str | None = None  # the trial whose losses are the objective's reference
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
    caps: dict[str, float] | None = None  # upper weight per domain from data.max_epochs (and the target run's, with one)
    # The production run (`target.tokens`, orchestrator/target.py): its tokens, the tokens available per
    # domain, and the caps they give alone (`caps` is their minimum with the proxy's); None without one.
    target_tokens: float | None = None
    available_tokens: dict[str, float] | None = None
    target_caps: dict[str, float] | None = None
    # Scale-ladder re-trainings (orchestrator/ladder.py): kept apart from `trials`, so they spend no
    # budget, are never told to the strategy, and never count as the sweep's best.
    ladder: dict[str, TrialRecord] = field(default_factory=dict)
    # preset -> the scale-aware model's recommendation at that size (`scale_recommended`; mixture None
    # with a note when it could not be fitted)
    scale_recommendations: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Multi-fidelity sweeps (`sweep_started`): name -> {cost, params, tokens}, the fidelity whose runs are
    # the sweep's best (others are evidence for the model, never the best run), and the cost budget.
    fidelities: dict[str, dict[str, float]] = field(default_factory=dict)
    target_fidelity: str | None = None
    budget_cost: float | None = None

    def apply(self, e: dict[str, Any]) -> None:
        """Fold one journal event into the state."""
        kind = e["event"]
        if kind in ("sweep_started", "sweep_resumed"):
            self.resumes += kind == "sweep_resumed"
            self.name = e.get("name", self.name)
            self.domains = tuple(e.get("domains", self.domains))
            self.budget = e.get("budget", self.budget)
            self.concurrency = e.get("concurrency", self.concurrency)
            self.objective_text = e.get("objective", self.objective_text)
            self.spec_digest = e.get("spec_digest", self.spec_digest)
            self.domain_tokens = e.get("domain_tokens", self.domain_tokens)
            self.caps = e.get("caps", self.caps)
            self.target_tokens = e.get("target_tokens", self.target_tokens)
            self.available_tokens = e.get("available_tokens", self.available_tokens)
            self.target_caps = e.get("target_caps", self.target_caps)
            self.fidelities = e.get("fidelities", self.fidelities) or {}
            self.target_fidelity = e.get("target_fidelity", self.target_fidelity)
            self.budget_cost = e.get("budget_cost", self.budget_cost)
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
            t.wall_s, t.completed_seq = e.get("wall_s"), e.get("seq")
            t.objective = e.get("objective")  # as journaled: replaced by `_score` whenever there is a definition
            self._scored(t)
        elif kind == "trial_failed":
            t = self.trial(e["trial"])
            t.status, t.reason, t.retryable = TrialStatus.FAILED, e.get("reason"), bool(e.get("retryable", False))
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

    def _scored(self, t: TrialRecord) -> None:
        """Score a trial that just completed; when it is the reference run, rescore every completed trial."""
        if self.objective is None:
            return
        if t.id in self.trials and t.measures_mixture:  # ladder runs and DoReMi's proxy run never are the reference
            learnt = self.objective.with_run(t.mixture, t.losses)
            if learnt is not self.objective:
                self.objective, self.reference_trial = learnt, t.id
                for other in [*self.trials.values(), *self.ladder.values()]:
                    if other.losses is not None and other.status == TrialStatus.COMPLETED:
                        other.objective = self.score(other.losses)
                return
        t.objective = self.score(t.losses)

    def score(self, losses: dict[str, float]) -> float | None:
        """The objective of per-domain losses under the sweep's objective as known now (None without a
        definition, or when the losses lack a domain it reads)."""
        if self.objective is None:
            return None
        try:
            return self.objective(losses)
        except KeyError:
            return None

    @property
    def objective_description(self) -> str:
        """What the objective is, in words (the definition's, else the journaled text)."""
        return self.objective.description if self.objective is not None else self.objective_text

    def objective_notes(self) -> list[str]:
        """What a reader should know about the scale of the trials' objectives (one sentence each)."""
        if self.objective is None or not self.objective.needs_reference:
            return []
        if self.reference_trial is not None:
            return [f"objectives are measured against the reference run {self.reference_trial}"]
        return [n.replace("has not completed: ", "has not completed, so ") for n in self.objective.notes()]

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

    def at_target(self, t: TrialRecord) -> bool:
        """Whether a trial's losses are of the sweep's own function: always, except the runs of a
        multi-fidelity sweep at a fidelity other than the target (a loss of another model size)."""
        return self.target_fidelity is None or t.fidelity == self.target_fidelity

    def best(self) -> TrialRecord | None:
        done = [t for t in self.completed if t.objective is not None and math.isfinite(t.objective) and t.measures_mixture
                and self.at_target(t)]
        return min(done, key=lambda t: t.objective) if done else None

    def cost_line(self) -> str:
        """`, cost 460/640 (1m 40, 60m 7)` for a multi-fidelity sweep (trials per fidelity), else ''."""
        if not self.fidelities:
            return ""
        budget = f"/{self.budget_cost:g}" if self.budget_cost is not None else ""
        counts = ", ".join(f"{f} {n}" for f, n in self.trials_by_fidelity().items())
        return f", cost {self.cost_spent:g}{budget} ({counts})"

    def trials_by_fidelity(self) -> dict[str, int]:
        """Trials proposed per fidelity of a multi-fidelity sweep (failed ones too: they spent its cost)."""
        return {f: sum(t.fidelity == f for t in self.trials.values()) for f in self.fidelities}

    def trial_cost(self, t: TrialRecord) -> float:
        """What a trial spends of `budget.cost` (its fidelity's cost; 0 outside multi-fidelity sweeps)."""
        return float(self.fidelities.get(t.fidelity, {}).get("cost", 0.0)) if t.fidelity is not None else 0.0

    @property
    def cost_spent(self) -> float:
        """Cost of every trial proposed (failed ones too, as for `budget.trials`), in the fidelities' unit."""
        return sum(self.trial_cost(t) for t in self.trials.values())

    def summary(self) -> dict[str, Any]:
        """The object `mixsweep status --json` prints."""
        best = self.best()
        return {
            "name": self.name,
            "domains": list(self.domains),
            "objective": self.objective_description,
            **({"reference_trial": self.reference_trial} if self.objective is not None and self.objective.needs_reference else {}),
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
            **({"fidelities": self.fidelities, "target_fidelity": self.target_fidelity, "budget_cost": self.budget_cost,
                "cost_spent": self.cost_spent,
                "trials_by_fidelity": self.trials_by_fidelity()}
               if self.fidelities else {}),
            "best": {"id": best.id, "objective": best.objective, "mixture": best.mixture} if best else None,
            "recommendation": self.recommendation,
            "resumes": self.resumes,
            "trials": [t.to_json() for t in self.in_order()],
            "ladder": [{**t.to_json(), "preset": t.preset, "role": t.role}
                       for t in sorted(self.ladder.values(), key=lambda t: t.proposed_seq)],
        }
