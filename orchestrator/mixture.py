"""A mixture: domain weights on the probability simplex."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

# Weights are stored rounded so that a mixture read back from JSON hashes to the same trial id.
_DECIMALS = 6


@dataclass(frozen=True)
class Mixture:
    """Frozen domain -> weight map; weights are >= 0 and sum to 1 (renormalised on construction)."""

    domains: tuple[str, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.domains) != len(self.weights) or not self.domains:
            raise ValueError("a mixture needs one weight per domain")
        w = np.asarray(self.weights, dtype=float)
        if not np.all(np.isfinite(w)) or np.any(w < -1e-9) or w.sum() <= 0:
            raise ValueError(f"mixture weights must be finite, >= 0 and not all zero: {self.weights}")
        w = np.clip(w, 0.0, None)
        # Renormalise only when off the simplex: rebuilding a mixture from its own weights must give
        # the same weights (and so the same trial id), which re-dividing rounded weights would not.
        if abs(w.sum() - 1.0) > 1e-4:
            w = w / w.sum()
        w = np.round(w, _DECIMALS)
        object.__setattr__(self, "weights", tuple(float(x) for x in w))

    @classmethod
    def from_dict(cls, weights: Mapping[str, float], domains: Iterable[str] | None = None) -> "Mixture":
        order = tuple(domains) if domains is not None else tuple(weights)
        missing = set(order) - set(weights)
        if missing:
            raise ValueError(f"mixture has no weight for {sorted(missing)}")
        return cls(order, tuple(float(weights[d]) for d in order))

    @classmethod
    def from_array(cls, domains: Iterable[str], w: np.ndarray) -> "Mixture":
        return cls(tuple(domains), tuple(float(x) for x in w))

    @classmethod
    def uniform(cls, domains: Iterable[str]) -> "Mixture":
        d = tuple(domains)
        return cls(d, tuple(1.0 / len(d) for _ in d))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.domains, self.weights))

    def as_array(self) -> np.ndarray:
        return np.asarray(self.weights, dtype=float)

    def key(self) -> str:
        """Stable text form, for hashing."""
        return json.dumps(self.as_dict(), sort_keys=True)

    def __str__(self) -> str:
        return " ".join(f"{d}={w:.3f}" for d, w in zip(self.domains, self.weights))


def cube_to_simplex(u: np.ndarray) -> np.ndarray:
    """Map u in [0,1]^(k-1) onto the k-simplex, uniform cube -> uniform (Dirichlet(1)) simplex.

    Stick-breaking with Beta(1, k-1-i) inverse CDFs. Optimisers then work on a box, which BoTorch's
    L-BFGS-B handles far faster than a linear sum constraint (SLSQP): 1.5-2.6 s instead of 8 s per
    proposal on 2 cores (docs/decisions.md).
    """
    u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
    k = u.shape[-1] + 1
    out = np.empty(u.shape[:-1] + (k,))
    rest = np.ones(u.shape[:-1])
    for i in range(k - 1):
        x = 1.0 - (1.0 - u[..., i]) ** (1.0 / (k - 1 - i))
        out[..., i] = rest * x
        rest = rest * (1.0 - x)
    out[..., k - 1] = rest
    return out


def simplex_to_cube(w: np.ndarray) -> np.ndarray:
    """Inverse of cube_to_simplex (for telling a strategy about mixtures it did not propose)."""
    w = np.asarray(w, dtype=float)
    k = w.shape[-1]
    u = np.empty(w.shape[:-1] + (k - 1,))
    rest = np.ones(w.shape[:-1])
    for i in range(k - 1):
        x = np.where(rest > 1e-12, w[..., i] / np.maximum(rest, 1e-12), 0.0)
        x = np.clip(x, 0.0, 1.0)
        u[..., i] = 1.0 - (1.0 - x) ** (k - 1 - i)
        rest = rest * (1.0 - x)
    return u


# ------------------------------------------------------------------------------------------- caps


def token_caps(train_tokens: Mapping[str, int], tokens_per_trial: int, max_epochs: float) -> dict[str, float]:
    """Upper weight per domain: a trial may read a domain at most `max_epochs` times over, so
    cap_d = min(1, max_epochs * train_tokens_d / tokens_per_trial). ValueError (one line, naming the
    domains and the fix) when the caps leave no mixture, i.e. they sum below 1."""
    caps = {d: min(1.0, max_epochs * n / tokens_per_trial) for d, n in train_tokens.items()}
    if sum(caps.values()) < 1.0 - 1e-9:
        small = ", ".join(f"{d} ({train_tokens[d]:,} tokens, cap {c:.3f})" for d, c in caps.items() if c < 1.0)
        raise ValueError(f"the domains hold too few training tokens for one trial within data.max_epochs={max_epochs:g}: "
                         f"{small}; caps sum to {sum(caps.values()):.3f} < 1: lower proxy.tokens_per_trial or raise data.max_epochs")
    return caps


def within_caps(mixture: Mixture, caps: Mapping[str, float]) -> Mixture:
    """The mixture itself when no weight is above its cap, else its Euclidean projection onto
    {w on the simplex, w_d <= cap_d} (for strategies that cannot take bounds themselves)."""
    upper = np.array([caps.get(d, 1.0) for d in mixture.domains])
    w = mixture.as_array()
    if np.all(w <= upper + 1e-6):
        return mixture
    from orchestrator.optimize import Bounds, project

    return Mixture.from_array(mixture.domains, project(w, Bounds(np.zeros(len(w)), upper))[0])
