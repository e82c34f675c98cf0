"""Strategy registry: `kind` in the spec -> Strategy class (this imports every strategy, torch included;
the spec's validation reads orchestrator.strategies.configs instead)."""

from __future__ import annotations

from orchestrator.objective import Objective
from orchestrator.strategies.base import Strategy
from orchestrator.strategies.baselines import Sobol, Uniform
from orchestrator.strategies.bayesopt import BayesOpt
from orchestrator.strategies.doremi import DoReMi
from orchestrator.strategies.experts import MDE, MixMin
from orchestrator.strategies.fixed import Fixed, TokenPrior
from orchestrator.strategies.gp import GP
from orchestrator.strategies.laws import BiMix, MixingLaw
from orchestrator.strategies.multifidelity import MultiFidelityGP
from orchestrator.strategies.regmix import RegMix

STRATEGIES: dict[str, type[Strategy]] = {
    cls.kind: cls for cls in (BayesOpt, GP, MultiFidelityGP, RegMix, MixingLaw, BiMix, MDE, MixMin, DoReMi, Sobol, Uniform, Fixed, TokenPrior)
}


def build_strategy(kind: str, options: dict, domains: tuple[str, ...], objective: Objective, seed: int) -> Strategy:
    """A fresh strategy of `kind` with `options` (its Config's fields), over the training `domains`."""
    cls = STRATEGIES[kind]
    return cls(cls.Config(**options), domains, objective, seed)
