"""Reference mixtures every sweep should be compared with (Aioli, 2411.05735): a given mixture
(`fixed`, e.g. a published one) and the natural token mix (`token_prior`); `uniform` (baselines.py) is
one too. Each proposes its one mixture once; the recommendation is then that run's observed losses.
"""

from __future__ import annotations

import numpy as np

from orchestrator.mixture import Mixture, within_caps
from orchestrator.strategies.base import OBSERVED, Recommendation, Strategy
from orchestrator.strategies.configs import FixedConfig, TokenPriorConfig
from orchestrator.strategies.contract import Proposal, Requirements

# Weights a run may differ by and still be a run of the mixture (runs tables round their weights).
SAME_MIXTURE_ATOL = 2e-3


class OnceStrategy(Strategy):
    """Proposes `mixture()` on the first ask, nothing after."""

    def mixture(self) -> Mixture:
        raise NotImplementedError

    def next_proposals(self, n: int, pending: list[Mixture]) -> list[Proposal]:
        if self.asked or n < 1:
            return []
        return [Proposal(self.mixture())]

    def recommend(self) -> Recommendation:
        """The observed run at this strategy's mixture (or at it projected onto the data caps), not
        the best of other runs told to it (a runs table, a seeded sweep): this baseline's answer is
        its own mixture. ValueError naming the mixture when no run trained on it."""
        if not self.observations:
            raise ValueError("no completed trial yet: nothing to recommend")
        mixture = self.mixture()
        targets = [mixture.as_array()] + ([within_caps(mixture, self.caps).as_array()] if self.caps else [])
        runs = [o for o in self.observations
                if any(np.abs(o.mixture.as_array() - t).max() <= SAME_MIXTURE_ATOL for t in targets)]
        if not runs:
            raise ValueError(f"no completed run at the {self.kind} mixture ({mixture}); train it (`--propose 1` gives "
                             "it), or score it with `--predict CANDIDATES --strategy gp`")
        run = runs[-1]
        return Recommendation(
            mixture=run.mixture, predicted=dict(run.losses), predicted_std=dict(run.loss_stderr),
            objective=self.objective(run.losses), objective_std=self.objective.std(run.loss_stderr, run.losses),
            source=OBSERVED, trials_used=len(self.observations), notes=[*self.objective.notes(), f"the {self.kind} mixture's run"])


class Fixed(OnceStrategy):
    kind = "fixed"
    Config = FixedConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        weights = self.config.weights
        missing, unknown = sorted(set(self.domains) - set(weights)), sorted(set(weights) - set(self.domains))
        if missing or unknown:
            raise ValueError(f"`strategy.options.weights`: {'no weight for ' + str(missing) if missing else 'unknown domains ' + str(unknown)}; "
                             f"give exactly the domains {list(self.domains)}")

    def mixture(self) -> Mixture:
        return Mixture.from_dict(self.config.weights, self.domains)


class TokenPrior(OnceStrategy):
    kind = "token_prior"
    Config = TokenPriorConfig
    requirements = Requirements(domain_tokens=True)

    def mixture(self) -> Mixture:
        if self.domain_tokens is None:
            raise ValueError("token_prior needs the tokens per domain, which the controller sets once the data is "
                             "prepared; this trainer reads no data: use strategy `fixed` with `options.weights` instead")
        shares = np.array([max(self.domain_tokens.get(d, 0), 0) for d in self.domains], dtype=float)
        if shares.sum() <= 0:
            raise ValueError("token_prior: every domain has 0 tokens; check the data paths")
        w = (shares / shares.sum()) ** self.config.temperature
        return Mixture.from_array(self.domains, w / w.sum())
