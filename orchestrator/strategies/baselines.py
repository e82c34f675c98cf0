"""Baselines every sweep should be compared with: uniform and quasi-random (Sobol) mixtures."""

from __future__ import annotations

from pydantic import Field

from orchestrator.mixture import Mixture
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
    """Scrambled Sobol points mapped onto the simplex (BoTorch's sample_simplex, qmc=True)."""

    kind = "sobol"
    Config = SobolConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked = 0

    def ask(self, n: int, pending: list[Mixture]) -> list[Mixture]:
        from botorch.utils.sampling import sample_simplex

        # Regenerating the prefix keeps the sequence independent of how asks are batched.
        pts = sample_simplex(len(self.domains), self.asked + n, qmc=True, seed=self.seed).double().numpy()
        new = pts[self.asked :]
        self.asked += n
        floor = self.config.min_weight
        return [Mixture.from_array(self.domains, floor + (1 - floor * len(self.domains)) * w) for w in new]
