"""Trials and what they report.

A trial's life. Every arrow is one journal event; the controller's journal is the only writer (its
TrialRunner, orchestrator/runner.py, journals every attempt; the scale ladder submits to the same runner)::

    PROPOSED --trial_started--> RUNNING --trial_completed--> COMPLETED
     ^    |                      |   |
     |    |                      |   +-----trial_failed----> FAILED
     |    |                      |
     +----|---trial_requeued-----+      the attempt's process or node died, it hung past its deadline,
          |                             or a controller stopped while it ran (resume re-queues it)
          +------trial_failed-------> FAILED   no attempts left (`budget.max_attempts`) when it would start

    while RUNNING: trial_placed (node, pid, GPUs of this attempt) and trial_progress (step, tokens,
    losses; any number) change no status; the runner's stop rule may end the trial FAILED on one.

COMPLETED and FAILED are final. `trial_failed` ends a trial whose trainer raised, ended without a
result, returned missing or non-finite losses or diverged, and (`retryable`) one whose every attempt died
or hung. Resume journals `trial_completed` for a PROPOSED or RUNNING trial whose `result.json` is on disk
(the result was written, the crash came before its event). A FAILED sweep trial counts against the
budget and is told to the strategy, so it will not be proposed blindly again.

Ladder trials (orchestrator/ladder.py: the top mixtures re-trained at a larger preset) take the same
states and events; their `trial_proposed` names a `preset` and a `role`, and SweepState keeps them in
their own table (`SweepState.ladder`): they spend no budget, are never told to the strategy and are
never the sweep's best.

A repeat is no new trial: when the strategy proposes a mixture already proposed (within
`budget.weight_precision`, same trial options), `trial_reused` names the known trial, nothing trains,
no status changes, and the known result or failure is told to the strategy again (a trial still in
flight is told when it ends).
"""
from __future__ import annotations

import enum
from typing import Any, Mapping

from orchestrator.mixture import Mixture
# The messages a trial streams back are the workers' protocol; they are re-exported here for the
# orchestrator's modules that read them with the trial states.
from workers.protocol import Placement, Progress, TrialResult, config_hash, message_from_json

__all__ = ["TrialStatus", "trial_id", "Placement", "Progress", "TrialResult", "message_from_json"]


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
