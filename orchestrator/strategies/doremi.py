"""DoReMi: domain reweighting with minimax optimisation (Xie et al. 2023, arXiv 2305.10429).

Three trials, one after the other:

1. reference: an ordinary trial at the reference mixture (uniform, or the natural token mix) that also
   saves its final weights in its trial directory (trainer option `save_final_weights`);
2. proxy: a trial at the reference mixture whose domain weights follow DoReMi's Group DRO rule while it
   trains (workers/online.py): exponentiated per-domain excess loss over the reference model, clipped at
   0, smoothed with uniform. It returns the weights averaged over training (`info["online"]`);
3. the averaged weights, proposed as an ordinary trial, so they are measured like any other mixture.

The recommendation is that measured run. The per-trial trainer options (`trial_options`) are part of
each trial's id, so the proxy run is never mistaken for the reference run at the same mixture; what the
trials return reaches the strategy through `tell_artifacts` (again, in journal order, on resume).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from orchestrator.mixture import Mixture
from orchestrator.strategies.base import Recommendation, Strategy, StrategyConfig


class DoReMiConfig(StrategyConfig):
    reference: Literal["uniform", "token_prior"] = Field(
        "uniform", description="Reference mixture: uniform, or each domain's share of the training tokens.")
    eta: float = Field(1.0, gt=0, description="Step size of the exponentiated-gradient update, per nat of excess loss (paper: 1).")
    smoothing: float = Field(1e-3, ge=0, le=1, description="Share c of uniform mixed into the weights after every step (paper: 1e-3).")
    resample: bool = Field(False, description="Draw the proxy's batches at the current weights instead of reweighting its loss (the paper reweights).")


class DoReMi(Strategy):
    kind = "doremi"
    Config = DoReMiConfig
    # Why it needs the built-in trainer (the controller refuses other trainers with this reason).
    needs_proxy_trainer = "trains a proxy against a reference model's per-token losses"
    needs_sweep = "learns its weights while training a proxy against a reference model, which a runs table cannot replay"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reference_weights: str | None = None  # where the reference trial saved its final weights
        self.online: dict[str, Any] | None = None  # the proxy trial's summary: averaged and last weights
        self.stopped: str | None = None  # a stage failed for good: nothing more to propose
        self.roles: list[str] = []  # per observation: "reference", "proxy" or "ordinary"
        self._role_of_next_tell = "ordinary"
        self._options: dict[str, Any] = {}  # trainer options of the latest ask

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

    def ask(self, n: int, pending: list[Mixture]) -> list[Mixture]:
        if n < 1 or pending or self.stopped:  # each stage needs the one before it to have finished
            return []
        ref = self.reference_mixture()
        if self.reference_weights is None:
            return self._propose(ref, {"save_final_weights": True})
        if self.online is None:
            return self._propose(ref, {"online": {"kind": "doremi", "reference": self.reference_weights,
                                                  "eta": self.config.eta, "smoothing": self.config.smoothing,
                                                  "resample": self.config.resample}})
        if self.measured() is None:
            return self._propose(self.proposal(), {})
        return []

    def _propose(self, mixture: Mixture, options: dict[str, Any]) -> list[Mixture]:
        self._options = options
        return [mixture]

    def trial_options(self, mixture: Mixture) -> dict[str, Any]:
        """Trainer options of the mixture the latest `ask` proposed (the controller asks right after it).
        Not looked up by mixture: the base class may have projected the proposal onto the data caps."""
        return dict(self._options)

    # --------------------------------------------------------------------------------- tells

    def tell_artifacts(self, mixture: Mixture, artifacts: dict[str, Any]) -> None:
        """What a trial returned besides its losses (told just before its `tell`): the reference
        trial's saved weights, or the proxy trial's weights."""
        if "final_weights" in artifacts:
            self.reference_weights = str(artifacts["final_weights"])
            self._role_of_next_tell = "reference"
        if "online" in artifacts:
            self.online = dict(artifacts["online"])
            self._role_of_next_tell = "proxy"

    def tell(self, mixture: Mixture, losses: dict[str, float], loss_stderr: dict[str, float] | None = None) -> None:
        super().tell(mixture, losses, loss_stderr)
        self.roles.append(self._role_of_next_tell)
        self._role_of_next_tell = "ordinary"

    def tell_failed(self, mixture: Mixture, reason: str) -> None:
        super().tell_failed(mixture, reason)
        stage = "reference" if self.reference_weights is None else "proxy" if self.online is None else "final"
        self.stopped = f"the DoReMi {stage} trial failed ({reason})"

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

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "doremi": {"reference_weights": self.reference_weights, "online": self.online,
                                                    "stopped": self.stopped, "roles": list(self.roles),
                                                    "options": dict(self._options)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)  # re-tells the observations (roles are restored below)
        d = state["doremi"]
        self.reference_weights, self.online, self.stopped = d["reference_weights"], d["online"], d["stopped"]
        self.roles, self._options = list(d["roles"]), dict(d["options"])
