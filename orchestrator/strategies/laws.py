"""Strategies that fit a parametric law per domain and propose its optimum: Data Mixing Laws and BiMix.

- `mixing_law` (Ye et al., 2403.16952): L_i(w) = c_i + k_i exp(t_i . w); k+1 parameters per domain,
  so it needs at least k+2 runs.
- `bimix` (Ge et al., 2405.14908): L_i = A_i / w_i^alpha_i at a fixed step count; 2 parameters per
  domain, so it works from a handful of runs, but only when every evaluated domain is also a training
  domain (its own weight is the law's input).
"""

from __future__ import annotations

from orchestrator.strategies.configs import BiMixConfig, MixingLawConfig
from orchestrator.strategies.model_based import OptimumStrategy
from orchestrator.surrogates.bimix import BiMixSurrogate
from orchestrator.surrogates.mixing_law import MixingLawSurrogate


class MixingLaw(OptimumStrategy):
    kind = "mixing_law"
    Config = MixingLawConfig

    def default_initial(self) -> int:
        return MixingLawSurrogate.min_runs(len(self.domains))

    def make_surrogate(self) -> MixingLawSurrogate:
        return MixingLawSurrogate(starts=self.config.starts, huber_delta=self.config.huber_delta, seed=self.seed)


class BiMix(OptimumStrategy):
    kind = "bimix"
    Config = BiMixConfig

    def default_initial(self) -> int:
        return max(len(self.domains) // 2, BiMixSurrogate.min_runs(len(self.domains)))

    def modelled_domains(self, reported: tuple[str, ...]) -> tuple[str, ...]:
        """Evaluated domains that are also training domains (the law's input is their own weight)."""
        unknown = sorted(d for d in self.objective.coefficients if d not in self.domains)
        if unknown:
            raise ValueError(f"bimix models each evaluated domain by its own training weight, but the objective "
                             f"needs {unknown}, which are not training domains; use strategy gp or mixing_law")
        return tuple(d for d in reported if d in self.domains)

    def make_surrogate(self) -> BiMixSurrogate:
        loss_domains = self.training_data()[2] if self.observations else ()
        return BiMixSurrogate([self.domains.index(d) for d in loss_domains], eps=self.config.eps)
