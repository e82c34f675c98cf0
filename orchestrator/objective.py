"""Objective: per-domain validation losses (nats/token) -> one number to minimise, plus constraints.

The objective never changes what is stored: trials keep every domain's loss, so a sweep can be
re-read under another objective.

Kinds: `mean`, `weighted` and `target` are linear in the losses (`coefficients`); `worst` is the
largest loss over the objective's domains, or with `excess` the largest loss *above the reference
run's loss* on that domain (DoReMi's excess loss, Xie et al. 2305.10429). Minimising the mean can buy a
lower average by giving up a domain; `worst` and the constraints make that visible and controllable.

Constraints, checked on losses (observed or predicted):
- `max_excess`: no domain's loss more than x above its loss in the reference run;
- `max_loss`: per-domain caps on the loss, nats/token.

The reference run is the first completed run at the reference mixture (uniform by default). An
Objective never changes: the reference run's losses are an input, `with_reference(losses)` (or `with_run(mixture,
losses)`, which recognises the reference run) returns a new Objective. Strategies hold their current
objective and replace it in `tell`; SweepState scores every trial with the one it holds, so a sweep has
one scale. Until the reference run has completed, `excess` falls back to the plain worst loss and
`max_excess` is not checked (`reference_known` says which; recommendations note it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:  # spec validates strategies, which use objectives: import for typing only
    from orchestrator.spec import ObjectiveSpec

# Monte Carlo draws used to compose a nonlinear objective's mean and std from per-domain posteriors.
# The draws are fixed (common random numbers), so the composed prediction is a deterministic, smooth
# function of the mixture that SLSQP can polish; 256 draws give the mean to about 0.06 std.
MC_DRAWS = 256
# Temperature (nats) of the log-sum-exp whose gradient MixMin uses for `worst`: a smooth max that
# differs from the true max by at most TAU * log(m).
SMOOTH_MAX_TAU = 0.01
# Reference runs are recognised by their mixture, to this tolerance per weight.
REFERENCE_TOL = 1e-6
# Strategies that cannot optimise under a constraint add this many objective units per nat of
# violation: a 0.001-nat violation then costs more than any plausible difference in the objective
# between feasible mixtures near the boundary (losses differ by hundredths of a nat there).
CONSTRAINT_PENALTY = 100.0
# The penalty starts this far (nats) inside a limit, so that a penalised optimum, which sits on the
# boundary, ends inside it rather than a rounding error outside.
CONSTRAINT_MARGIN = 1e-3


class FrozenDict(dict):
    """A dict that refuses every change: the mappings inside an Objective (a dict, so JSON, pickling and
    `dict(...)` copies work as before). TypeError naming the way to get a changed objective."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("an Objective never changes; build a new one (Objective.with_reference, dataclasses.replace)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple:  # pickle and copy rebuild it whole (item by item would call __setitem__)
        return (FrozenDict, (dict(self),))


@dataclass(frozen=True)
class Objective:
    """Per-domain losses -> one number (linear or worst), with optional constraints. Immutable.

    `coefficients` names the domains the objective reads (for `worst` every coefficient is 1 and only
    the keys matter). `reference` holds the reference run's losses (nats/token) once known; an
    objective with them is a new Objective (`with_reference`, `with_run`), never this one changed.
    """

    coefficients: Mapping[str, float]
    description: str
    kind: str = "linear"  # "linear" | "worst"
    excess: bool = False  # worst: of loss minus the reference run's loss
    reference_mixture: Mapping[str, float] | None = None  # None: uniform over the training domains
    max_excess: float | None = None
    max_loss: Mapping[str, float] = field(default_factory=dict)
    reference: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("coefficients", "max_loss", "reference", "reference_mixture"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, FrozenDict):
                object.__setattr__(self, name, FrozenDict({str(k): float(v) for k, v in value.items()}))

    @classmethod
    def from_spec(cls, spec: ObjectiveSpec, domains: tuple[str, ...]) -> "Objective":
        cons = spec.constraints
        extra = {"reference_mixture": dict(spec.reference) if spec.reference else None,
                 "max_excess": cons.max_excess if cons else None, "max_loss": dict(cons.max_loss or {}) if cons else {}}
        read = tuple(spec.domains or domains)  # mean and worst may name the evaluated domains they read
        if spec.kind == "mean":
            return cls({d: 1.0 / len(read) for d in read}, "mean of per-domain losses" + _cons_text(extra), **extra)
        if spec.kind == "target":
            return cls({spec.domain: 1.0}, f"loss on {spec.domain}" + _cons_text(extra), **extra)
        if spec.kind == "worst":
            what = "worst excess loss over the reference run" if spec.excess else "worst per-domain loss"
            return cls({d: 1.0 for d in read}, what + _cons_text(extra), kind="worst", excess=spec.excess, **extra)
        total = sum(spec.weights.values())
        coef = {d: w / total for d, w in spec.weights.items() if w > 0}
        return cls(coef, "weighted " + ", ".join(f"{d}={w:.2f}" for d, w in coef.items()) + _cons_text(extra), **extra)

    @classmethod
    def from_frozen_spec(cls, raw: Mapping[str, Any]) -> "Objective":
        """From a frozen spec as read from spec.yaml (a mapping): its `objective` over its `domains`.
        Only those two parts are validated, so a spec whose other parts no longer validate (a runs
        table moved away) still gives its objective; pydantic's ValidationError when they are invalid."""
        from orchestrator.spec import ObjectiveSpec

        return cls.from_spec(ObjectiveSpec.model_validate(raw.get("objective") or {}), tuple(raw["domains"]))

    # -- what the objective needs ------------------------------------------------------------------
    @property
    def linear(self) -> bool:
        return self.kind == "linear"

    @property
    def needs_reference(self) -> bool:
        return self.excess or self.max_excess is not None

    @property
    def constrained(self) -> bool:
        return self.max_excess is not None or bool(self.max_loss)

    @property
    def reference_known(self) -> bool:
        return all(d in self.reference for d in self.coefficients)

    def reference_point(self, domains: tuple[str, ...]) -> np.ndarray:
        """The reference mixture as weights over `domains` (k,)."""
        if self.reference_mixture is None:
            return np.full(len(domains), 1.0 / len(domains))
        w = np.array([float(self.reference_mixture.get(d, 0.0)) for d in domains])
        return w / w.sum()

    def is_reference(self, mixture: Mapping[str, float]) -> bool:
        """Whether `mixture` (domain -> weight over the training domains) is the reference mixture,
        to REFERENCE_TOL per weight."""
        domains = tuple(mixture)
        w = np.array([mixture[d] for d in domains], dtype=float)
        return bool(np.max(np.abs(w - self.reference_point(domains))) <= REFERENCE_TOL)

    def with_reference(self, losses: Mapping[str, float]) -> "Objective":
        """This objective measured against a reference run with these per-domain losses (nats/token):
        a new Objective; this one is unchanged."""
        return replace(self, reference=FrozenDict({str(d): float(v) for d, v in losses.items()}))

    def with_run(self, mixture: Mapping[str, float], losses: Mapping[str, float]) -> "Objective":
        """The objective after a completed run: `with_reference(losses)` when the objective needs a
        reference, knows none yet and `mixture` is the reference mixture (so the first run there
        counts); otherwise this very objective."""
        if not self.needs_reference or self.reference_known or not self.is_reference(mixture):
            return self
        return self.with_reference(losses)

    # -- values ------------------------------------------------------------------------------------
    def __call__(self, losses: Mapping[str, float]) -> float:
        """Objective value of per-domain losses; raises KeyError if a needed domain is missing."""
        domains = tuple(self.coefficients)
        return float(self.values(np.array([[losses[d] for d in domains]]), domains)[0])

    def values(self, L: np.ndarray, loss_domains: tuple[str, ...]) -> np.ndarray:
        """Objective of loss rows L (..., m) over `loss_domains`: (...,)."""
        idx = [loss_domains.index(d) for d in self.coefficients]
        sub = np.asarray(L, dtype=float)[..., idx]
        if self.linear:
            return sub @ np.array(list(self.coefficients.values()))
        if self.excess and self.reference_known:
            sub = sub - np.array([self.reference[d] for d in self.coefficients])
        return sub.max(axis=-1)

    def std(self, stds: Mapping[str, float], losses: Mapping[str, float] | None = None) -> float:
        """Standard deviation of the objective, treating domain errors as independent. For `worst`:
        the std of the worst domain's loss (of the largest std when `losses` is not given)."""
        if self.linear:
            return float(np.sqrt(sum((c * stds.get(d, 0.0)) ** 2 for d, c in self.coefficients.items())))
        if losses is None:
            return float(max((stds.get(d, 0.0) for d in self.coefficients), default=0.0))
        shift = self.reference if self.excess and self.reference_known else {}
        worst = max(self.coefficients, key=lambda d: losses[d] - shift.get(d, 0.0))
        return float(stds.get(worst, 0.0))

    def compose(self, mean: np.ndarray, std: np.ndarray, loss_domains: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Objective mean and std (n,) from per-domain predicted mean and std (n, m).

        Linear: exact (independent domain errors, variances add with squared coefficients). Worst:
        Monte Carlo over independent normal per-domain losses with fixed draws (E[max] is above the
        max of the means when domains are uncertain, which is the point of a robust objective).
        """
        mean, std = np.atleast_2d(mean), np.atleast_2d(std)
        if self.linear:
            idx = [loss_domains.index(d) for d in self.coefficients]
            c = np.array(list(self.coefficients.values()))
            return mean[:, idx] @ c, np.sqrt((std[:, idx] ** 2) @ c**2)
        if not np.any(std > 0):
            return self.values(mean, loss_domains), np.zeros(len(mean))
        z = np.random.default_rng(0).standard_normal((MC_DRAWS, 1, mean.shape[1]))
        draws = self.values(mean[None] + std[None] * z, loss_domains)  # (draws, n)
        return draws.mean(axis=0), draws.std(axis=0)

    # -- constraints -------------------------------------------------------------------------------
    def limits(self, loss_domains: tuple[str, ...]) -> np.ndarray:
        """Upper limit on each domain's loss (m,) under the constraints (inf where none applies)."""
        lim = np.full(len(loss_domains), np.inf)
        for i, d in enumerate(loss_domains):
            if d in self.max_loss:
                lim[i] = self.max_loss[d]
            if self.max_excess is not None and d in self.coefficients and d in self.reference:
                lim[i] = min(lim[i], self.reference[d] + self.max_excess)
        return lim

    def violation(self, L: np.ndarray, loss_domains: tuple[str, ...]) -> np.ndarray:
        """Largest amount (nats) by which loss rows L (..., m) exceed a limit: (...,); <= 0 is feasible
        (0 everywhere when the objective has no checkable constraint)."""
        lim = self.limits(loss_domains)
        L = np.asarray(L, dtype=float)
        if not np.isfinite(lim).any():
            return np.zeros(L.shape[:-1])
        return np.max(np.where(np.isfinite(lim), L - lim, -np.inf), axis=-1)

    def violated_by(self, losses: Mapping[str, float]) -> float:
        """Violation (nats, <= 0 feasible) of one run's losses; domains it lacks are not checked."""
        domains = tuple(losses)
        return float(self.violation(np.array([losses[d] for d in domains]), domains))

    def penalised(self, L: np.ndarray, loss_domains: tuple[str, ...]) -> np.ndarray:
        """Objective plus CONSTRAINT_PENALTY per nat of constraint violation, of loss rows L (..., m)."""
        excess = np.maximum(self.violation(L, loss_domains) + CONSTRAINT_MARGIN, 0.0) if self.constrained else 0.0
        return self.values(L, loss_domains) + CONSTRAINT_PENALTY * excess

    def gradient(self, L: np.ndarray, loss_domains: tuple[str, ...]) -> np.ndarray:
        """d penalised objective / d loss at one loss vector L (m,): the coefficients, or for `worst` the
        gradient of a log-sum-exp smooth max (temperature SMOOTH_MAX_TAU), plus the penalty's gradient
        under constraints; MixMin's mirror descent needs it."""
        g = np.zeros(len(loss_domains))
        idx = [loss_domains.index(d) for d in self.coefficients]
        L = np.asarray(L, dtype=float)
        if self.linear:
            g[idx] = list(self.coefficients.values())
        else:
            sub = L[idx] - (np.array([self.reference[d] for d in self.coefficients]) if self.excess and self.reference_known else 0.0)
            e = np.exp((sub - sub.max()) / SMOOTH_MAX_TAU)
            g[idx] = e / e.sum()
        if self.constrained:  # the penalty of `penalised`: its most violated limit
            over = L - self.limits(loss_domains) + CONSTRAINT_MARGIN
            if np.max(over) > 0:
                g[int(np.argmax(over))] += CONSTRAINT_PENALTY
        return g

    def notes(self) -> list[str]:
        """What a recommendation should say about a reference that has not been observed."""
        if self.needs_reference and not self.reference_known:
            return ["the reference run (at the reference mixture) has not completed: "
                    + ("`excess` fell back to the plain worst loss" if self.excess else "")
                    + ("; " if self.excess and self.max_excess is not None else "")
                    + ("`max_excess` was not checked" if self.max_excess is not None else "")]
        return []


def _cons_text(extra: dict) -> str:
    parts = []
    if extra["max_excess"] is not None:
        parts.append(f"each domain <= reference + {extra['max_excess']:g}")
    parts += [f"{d} <= {v:g}" for d, v in extra["max_loss"].items()]
    return f" s.t. {', '.join(parts)}" if parts else ""
