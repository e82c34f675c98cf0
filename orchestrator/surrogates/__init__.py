"""Surrogates: models of each evaluated domain's loss as a function of the mixture (see base.py)."""

from orchestrator.surrogates.base import Surrogate, compose

__all__ = ["Surrogate", "compose"]
