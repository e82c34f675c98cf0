"""Baselines every sweep should be compared with: uniform and quasi-random (Sobol) mixtures."""

from __future__ import annotations

from orchestrator.mixture import Mixture
from orchestrator.optimize import Bounds, project
from orchestrator.strategies.base import Strategy
from orchestrator.strategies.configs import SobolConfig
from orchestrator.strategies.contract import Proposal
from orchestrator.strategies.fixed import OnceStrategy


class Uniform(OnceStrategy):
    """Proposes the uniform mixture once (stratified sampling, a strong baseline per Aioli); recommends
    that run."""

    kind = "uniform"

    def mixture(self) -> Mixture:
        return Mixture.uniform(self.domains)


class Sobol(Strategy):
    """Scrambled Sobol points mapped onto the simplex (BoTorch's sample_simplex, qmc=True), then affinely
    onto {w >= min_weight} and, under data caps, projected into the capped set: every weight stays at or
    above the floor (the spec refuses floors no mixture can meet)."""

    kind = "sobol"
    Config = SobolConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bounds = Bounds.of(self.domains, self.config.min_weight)

    def next_proposals(self, n: int, pending: list[Mixture]) -> list[Proposal]:
        from botorch.utils.sampling import sample_simplex

        if n < 1:
            return []
        # Regenerating the prefix keeps the sequence independent of how asks are batched.
        pts = sample_simplex(len(self.domains), self.asked + n, qmc=True, seed=self.seed).double().numpy()
        new = pts[self.asked :]
        floor = self.config.min_weight
        W = floor + (1 - floor * len(self.domains)) * new  # on the simplex, every weight >= floor
        if self.caps:
            W = project(W, self.bounds)
        return [Proposal(Mixture.from_array(self.domains, w)) for w in W]
