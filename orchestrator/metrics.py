"""Sweep metrics for the Ray dashboard (Prometheus through Ray's metrics agent).

Names are prefixed `mixsweep_`; Ray exports them as `ray_mixsweep_*`. docs/monitoring.md shows them.
Updated from journal records, so they say exactly what the journal says.
"""

from __future__ import annotations

from ray.util import metrics

from orchestrator.state import SweepState
from orchestrator.trial import TrialStatus


class SweepMetrics:
    def __init__(self, sweep: str) -> None:
        tags = ("sweep",)
        self._tags = {"sweep": sweep}
        self.running = metrics.Gauge("mixsweep_trials_running", "Trials in flight", tag_keys=tags)
        self.finished = metrics.Gauge("mixsweep_trials_completed", "Trials completed", tag_keys=tags)
        self.failed = metrics.Gauge("mixsweep_trials_failed", "Trials failed for good", tag_keys=tags)
        self.best = metrics.Gauge("mixsweep_best_objective", "Best objective so far (lower is better)", tag_keys=tags)
        self.loss = metrics.Gauge("mixsweep_trial_loss", "Latest validation loss of a running trial (nats/token)",
                                  tag_keys=("sweep", "trial", "domain"))
        self.tokens_per_s = metrics.Gauge("mixsweep_trial_tokens_per_second", "Training tokens per second of a running trial",
                                          tag_keys=("sweep", "trial"))
        self.weight = metrics.Gauge("mixsweep_trial_domain_weight", "Current domain weight of an online-mixing trial (DoReMi's proxy)",
                                    tag_keys=("sweep", "trial", "domain"))

    def update(self, record: dict, state: SweepState) -> None:
        """Refresh the gauges a journal record can change."""
        event = record["event"]
        if event == "trial_progress":
            for domain, loss in record["losses"].items():
                self.loss.set(loss, {**self._tags, "trial": record["trial"], "domain": domain})
            for domain, weight in (record.get("weights") or {}).items():
                self.weight.set(weight, {**self._tags, "trial": record["trial"], "domain": domain})
            if record.get("elapsed_s"):
                self.tokens_per_s.set(record["tokens"] / record["elapsed_s"], {**self._tags, "trial": record["trial"]})
        if event in ("sweep_started", "sweep_resumed", "trial_started", "trial_completed", "trial_failed", "trial_requeued"):
            self.running.set(len(state.by_status(TrialStatus.RUNNING)), self._tags)
            self.finished.set(len(state.completed), self._tags)
            self.failed.set(len(state.by_status(TrialStatus.FAILED)), self._tags)
            best = state.best()
            if best is not None:
                self.best.set(best.objective, self._tags)
