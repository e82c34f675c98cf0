"""Objective: per-domain validation losses (nats/token) -> one number to minimise.

The objective never changes what is stored: trials keep every domain's loss, so a sweep can be
re-read under another objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np

if TYPE_CHECKING:  # spec validates strategies, which use objectives: import for typing only
    from orchestrator.spec import ObjectiveSpec


@dataclass(frozen=True)
class Objective:
    """A linear combination of per-domain losses (mean, weighted and target are all of this form)."""

    coefficients: dict[str, float]
    description: str

    @classmethod
    def from_spec(cls, spec: ObjectiveSpec, domains: tuple[str, ...]) -> "Objective":
        if spec.kind == "mean":
            return cls({d: 1.0 / len(domains) for d in domains}, "mean of per-domain losses")
        if spec.kind == "target":
            return cls({spec.domain: 1.0}, f"loss on {spec.domain}")
        total = sum(spec.weights.values())
        coef = {d: w / total for d, w in spec.weights.items() if w > 0}
        return cls(coef, "weighted " + ", ".join(f"{d}={w:.2f}" for d, w in coef.items()))

    def __call__(self, losses: Mapping[str, float]) -> float:
        """Objective value of per-domain losses; raises KeyError if a needed domain is missing."""
        return float(sum(c * losses[d] for d, c in self.coefficients.items()))

    def std(self, stds: Mapping[str, float]) -> float:
        """Standard deviation of the objective, treating domain errors as independent."""
        return float(np.sqrt(sum((c * stds.get(d, 0.0)) ** 2 for d, c in self.coefficients.items())))
