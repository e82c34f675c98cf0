"""Strategies: what mixture to try next (base.py: the interface; contract.py: the types it exchanges;
configs.py: every strategy's options, importable without torch).

`STRATEGIES` (kind -> class) and `build_strategy` are loaded on first use, because they import every
strategy (torch, BoTorch, lightgbm); `orchestrator.strategies.configs` alone imports pydantic only.
"""

from typing import Any

__all__ = ["STRATEGIES", "Recommendation", "Strategy", "build_strategy"]


def __getattr__(name: str) -> Any:
    if name in ("STRATEGIES", "build_strategy"):
        from orchestrator.strategies import registry

        return getattr(registry, name)
    if name in ("Recommendation", "Strategy"):
        from orchestrator.strategies import base

        return getattr(base, name)
    raise AttributeError(f"module 'orchestrator.strategies' has no attribute {name!r}")
