"""Strategy registry: `kind` in the spec -> Strategy class."""

from orchestrator.strategies.base import Recommendation, Strategy
from orchestrator.strategies.baselines import Sobol, Uniform
from orchestrator.strategies.bayesopt import BayesOpt
from orchestrator.strategies.doremi import DoReMi
from orchestrator.strategies.experts import MDE, MixMin
from orchestrator.strategies.fixed import Fixed, TokenPrior
from orchestrator.strategies.gp import GP
from orchestrator.strategies.laws import BiMix, MixingLaw
from orchestrator.strategies.regmix import RegMix

STRATEGIES: dict[str, type[Strategy]] = {
    cls.kind: cls for cls in (BayesOpt, GP, RegMix, MixingLaw, BiMix, MDE, MixMin, DoReMi, Sobol, Uniform, Fixed, TokenPrior)
}


def build_strategy(kind: str, options: dict, domains: tuple[str, ...], objective, seed: int) -> Strategy:
    cls = STRATEGIES[kind]
    return cls(cls.Config(**options), domains, objective, seed)


__all__ = ["STRATEGIES", "Recommendation", "Strategy", "build_strategy"]
