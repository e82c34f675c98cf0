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
