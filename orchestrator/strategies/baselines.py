"""Baselines every sweep should be compared with: uniform and quasi-random (Sobol) mixtures."""

from __future__ import annotations

from pydantic import Field

from orchestrator.mixture import Mixture
from orchestrator.optimize import Bounds, project
from orchestrator.strategies.base import Strategy, StrategyConfig
from orchestrator.strategies.fixed import OnceStrategy


class Uniform(OnceStrategy):
    """Proposes the uniform mixture once (stratified sampling, a strong baseline per Aioli); recommends
    that run."""

    kind = "uniform"

    def mixture(self) -> Mixture:
        return Mixture.uniform(self.domains)


class SobolConfig(StrategyConfig):
    min_weight: float = Field(0.0, ge=0.0, lt=0.5, description="Floor on every weight (then renormalised).")


class Sobol(Strategy):
    """Scrambled Sobol points mapped onto the simplex (BoTorch's sample_simplex, qmc=True), then affinely
    onto {w >= min_weight} and, under data caps, projected into the capped set: every weight stays at or
    above the floor (the spec refuses floors no mixture can meet)."""

    kind = "sobol"
    Config = SobolConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked = 0
        self.bounds = Bounds.of(self.domains, self.config.min_weight)

    def set_caps(self, caps: dict[str, float]) -> None:
        """Intersect the floor with the data's caps, so the base class's cap projection (floor 0) is never needed."""
        from orchestrator.strategies.model_based import capped_bounds

        super().set_caps(caps)
        self.bounds = capped_bounds(self.domains, self.bounds, self.caps, self.config.min_weight)

    def ask(self, n: int, pending: list[Mixture]) -> list[Mixture]:
        from botorch.utils.sampling import sample_simplex

        # Regenerating the prefix keeps the sequence independent of how asks are batched.
        pts = sample_simplex(len(self.domains), self.asked + n, qmc=True, seed=self.seed).double().numpy()
        new = pts[self.asked :]
        self.asked += n
        floor = self.config.min_weight
        W = floor + (1 - floor * len(self.domains)) * new  # on the simplex, every weight >= floor
        if self.caps:
            W = project(W, self.bounds)
        return [Mixture.from_array(self.domains, w) for w in W]
