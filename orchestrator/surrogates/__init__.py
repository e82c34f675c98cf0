"""Surrogates: models of each evaluated domain's loss as a function of the mixture (see base.py)."""

from orchestrator.surrogates.base import Surrogate

__all__ = ["Surrogate"]
