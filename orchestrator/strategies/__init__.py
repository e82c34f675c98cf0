"""Strategy registry: `kind` in the spec -> Strategy class."""

from orchestrator.strategies.base import Recommendation, Strategy
from orchestrator.strategies.baselines import Sobol, Uniform
from orchestrator.strategies.bayesopt import BayesOpt

STRATEGIES: dict[str, type[Strategy]] = {cls.kind: cls for cls in (BayesOpt, Sobol, Uniform)}


def build_strategy(kind: str, options: dict, domains: tuple[str, ...], objective, seed: int) -> Strategy:
    cls = STRATEGIES[kind]
    return cls(cls.Config(**options), domains, objective, seed)


__all__ = ["STRATEGIES", "Recommendation", "Strategy", "build_strategy"]
