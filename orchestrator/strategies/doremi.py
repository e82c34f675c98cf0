"""DoReMi: domain reweighting with minimax optimisation (Xie et al. 2023, arXiv 2305.10429).

Three trials, one after the other:

1. reference: an ordinary trial at the reference mixture (uniform, or the natural token mix) that also
   saves its final weights in its trial directory (trainer option `save_final_weights`);
2. proxy: a trial at the reference mixture whose domain weights follow DoReMi's Group DRO rule while it
   trains (workers/online.py): exponentiated per-domain excess loss over the reference model, clipped at
   0, smoothed with uniform. It returns the weights averaged over training (`info["online"]`);
3. the averaged weights, proposed as an ordinary trial, so they are measured like any other mixture.

The recommendation is that measured run. Each stage's trainer options come with its proposal (a
`Proposal`'s options, part of the trial's id), so the proxy run is never mistaken for the reference run
at the same mixture. What the trials return arrives in the same `tell` as their losses (the outcome's
artifacts), and the stage of every run is read from them: no call has to come before another, and
re-telling the journal on resume rebuilds the same state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.mixture import Mixture
from orchestrator.strategies.base import Recommendation, Strategy
from orchestrator.strategies.configs import DoReMiConfig
from orchestrator.strategies.contract import Outcome, Proposal, Requirements


class DoReMi(Strategy):
    kind = "doremi"
    Config = DoReMiConfig
    requirements = Requirements(
        proxy_trainer="trains a proxy against a reference model's per-token losses",
        sweep_only="learns its weights while training a proxy against a reference model, which a runs table cannot replay")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reference_weights: str | None = None  # where the reference trial saved its final weights
        self.online: dict[str, Any] | None = None  # the proxy trial's summary: averaged and last weights
        self.stopped: str | None = None  # a stage failed for good: nothing more to propose
        self.roles: list[str] = []  # per observation: "reference", "proxy" or "ordinary" (from its artifacts)

    # -------------------------------------------------------------------------------- stages

    def reference_mixture(self) -> Mixture:
        if self.config.reference == "uniform":
            return Mixture.uniform(self.domains)
        if self.domain_tokens is None:
            raise ValueError("`strategy.options.reference`: token_prior needs the tokens per domain, which only the "
                             "proxy trainer reads; use reference: uniform")
        shares = np.array([max(self.domain_tokens.get(d, 0), 0) for d in self.domains], dtype=float)
        return Mixture.from_array(self.domains, shares / shares.sum())

    def proposal(self) -> Mixture | None:
        """The averaged DoReMi weights, once the proxy trial has returned them."""
        return Mixture.from_dict(self.online["average"], self.domains) if self.online else None

    def measured(self):
        """The ordinary trial at the averaged weights (stage 3), once it has completed: the first ordinary
        run told after the proxy run (its mixture may be the average projected onto the data caps)."""
        if "proxy" not in self.roles:
            return None
        after = self.roles.index("proxy") + 1
        return next((o for o, role in zip(self.observations[after:], self.roles[after:]) if role == "ordinary"), None)

    def next_proposals(self, n: int, pending: list[Mixture]) -> list[Proposal]:
        if n < 1 or pending or self.stopped:  # each stage needs the one before it to have finished
            return []
        ref = self.reference_mixture()
        if self.reference_weights is None:
            return [Proposal(ref, {"save_final_weights": True})]
        if self.online is None:
            return [Proposal(ref, {"online": {"kind": "doremi", "reference": self.reference_weights,
                                              "eta": self.config.eta, "smoothing": self.config.smoothing,
                                              "resample": self.config.resample}})]
        if self.measured() is None:
            return [Proposal(self.proposal())]
        return []

    # --------------------------------------------------------------------------------- tells

    def tell(self, outcome: Outcome) -> None:
        """A completed trial; its artifacts say its stage: the reference trial's saved weights, or the
        proxy trial's weights (any other run is an ordinary one)."""
        super().tell(outcome)
        role = "ordinary"
        if outcome.artifacts.final_weights:
            self.reference_weights, role = str(outcome.artifacts.final_weights), "reference"
        if outcome.artifacts.online:
            self.online, role = dict(outcome.artifacts.online), "proxy"
        self.roles.append(role)

    def tell_failed(self, mixture: Mixture, reason: str, retryable: bool = False) -> None:
        super().tell_failed(mixture, reason, retryable)
        stage = "reference" if self.reference_weights is None else "proxy" if self.online is None else "final"
        again = "; its process died or hung: resume with a larger budget.max_attempts" if retryable else ""
        self.stopped = f"the DoReMi {stage} trial failed ({reason}{again})"

    # ----------------------------------------------------------------------------- answer

    def recommend(self) -> Recommendation:
        """The measured run at the averaged weights; before it exists, the best ordinary run, with a note."""
        target, run = self.proposal(), self.measured()
        notes = []
        if self.online:
            notes.append(f"DoReMi weights averaged over {self.online.get('steps', 0)} proxy steps "
                         f"(eta {self.config.eta}, smoothing {self.config.smoothing}): {target}")
        if run is not None:
            return Recommendation(mixture=run.mixture, predicted=dict(run.losses), predicted_std=dict(run.loss_stderr),
                                  objective=self.objective(run.losses), objective_std=self.objective.std(run.loss_stderr),
                                  source="observed", trials_used=len(self.observations),
                                  notes=notes + ["measured by an ordinary trial" + ("" if run.mixture == target else " at the data caps")])
        ordinary = [o for o, role in zip(self.observations, self.roles) if role != "proxy"]
        if not ordinary:
            raise ValueError("no completed trial yet: nothing to recommend")
        best = min(ordinary, key=lambda o: self.objective(o.losses))
        why = self.stopped or ("the sweep's budget ended first (DoReMi needs 3 trials)" if self.reference_weights else
                               "DoReMi learns its weights in a sweep (reference, proxy, then the average), not from a runs table")
        return Recommendation(mixture=best.mixture, predicted=dict(best.losses), predicted_std=dict(best.loss_stderr),
                              objective=self.objective(best.losses), objective_std=self.objective.std(best.loss_stderr),
                              source="observed", trials_used=len(self.observations),
                              notes=notes + [f"the averaged weights were not measured: {why}; this is the best ordinary run"])

    # ------------------------------------------------------------------------------ state
    # The default state_dict (outcomes with their artifacts, in order) rebuilds everything by re-telling.
