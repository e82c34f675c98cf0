"""Target-run feasibility: the production run's token budget caps the mixture (docs/spec.md, `target`).

A mixture is chosen on small proxies and used in a run hundreds of times larger. A domain holding
`available_d` tokens can be `w_d` of a `target.tokens` run only by repeating it
`w_d * target.tokens / available_d` times (its epochs at the target run); `data.max_epochs` bounds that
repetition there as it does at the proxy, so

    target cap_d = min(1, data.max_epochs * available_d / target.tokens).

`available_d` is `target.available_tokens[d]` where declared (data the sweep only samples), else the
prepared data's training tokens of the domain; trainers that read no data (synthetic, replay, python,
command) must declare them. The sweep's caps are the element-wise minimum of the proxy-scale caps
(orchestrator.mixture.token_caps) and these; every strategy proposes inside them (Strategy.ask).

After the sweep, `optima` puts the feasible recommendation beside the unconstrained optimum: the
minimiser of the strategy's own model over the space the proxies could train (the strategy's floor
and bounds, and the proxy-scale caps, but not the target caps: beyond the proxy caps the model has no
run at all). Both are scored by the same model's mean, so the difference is what the cap costs, by
the model's account. A strategy without a model has only its observed runs, which all lie inside
the caps (seed runs aside): its best observed run is the only "unconstrained" point, said so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from orchestrator.mixture import Mixture
from orchestrator.optimize import Bounds, minimize_on_simplex
from orchestrator.spec import SpecError, SweepSpec

# Weights within this of a cap sit on it (weights are stored to 6 decimals; optimisers stop near a bound).
ON_CAP = 1e-4
FIX = "raise data.max_epochs, declare more target.available_tokens, or lower target.tokens"


@dataclass(frozen=True)
class TargetCaps:
    """The production run's budget and the caps it puts on each domain's weight."""

    tokens: float  # target.tokens
    available: dict[str, float]  # tokens available per domain to the production run
    declared: tuple[str, ...]  # the domains whose `available` was declared (target.available_tokens)
    max_epochs: float
    caps: dict[str, float]

    def epochs(self, mixture: Mapping[str, float]) -> dict[str, float | None]:
        return epochs_at_target(mixture, self.tokens, self.available)

    def journal(self) -> dict[str, Any]:
        """The fields `sweep_started` journals (SweepState.target reads them back)."""
        return {"target_tokens": self.tokens, "available_tokens": self.available, "target_caps": self.caps}


def target_caps(spec: SweepSpec, domain_tokens: Mapping[str, int] | None, no_data: str | None = None) -> TargetCaps | None:
    """The target run's caps (None when the spec gives no `target.tokens`); SpecError, one line naming
    `target.available_tokens`, when a domain's available tokens are neither declared nor read from data
    (`no_data`: why there are no token counts, default the trainer's)."""
    t = spec.target
    if t is None or t.tokens is None:
        return None
    declared = dict(t.available_tokens or {})
    missing = [d for d in spec.domain_names if d not in declared and (domain_tokens is None or d not in domain_tokens)]
    if missing:
        why = no_data or f"the trainer {spec.trainer.kind!r} reads no data"
        raise SpecError(f"`target.available_tokens`: {why}, so the tokens available "
                        f"to the target run must be declared for {missing}; add `target: {{available_tokens: {{{missing[0]}: N, ...}}}}` "
                        "or remove target.tokens")
    available = {d: float(declared[d]) if d in declared else float(domain_tokens[d]) for d in spec.domain_names}
    max_epochs = spec.data.max_epochs
    caps = {d: min(1.0, max_epochs * n / t.tokens) for d, n in available.items()}
    return TargetCaps(t.tokens, available, tuple(d for d in spec.domain_names if d in declared), max_epochs, caps)


def combined_caps(proxy: Mapping[str, float] | None, target: TargetCaps) -> dict[str, float]:
    """The caps a sweep honours: the element-wise minimum of the proxy-scale and target caps. SpecError,
    one line naming the fields and the fix, when they leave no mixture (they sum below 1)."""
    caps = {d: min(c, (proxy or {}).get(d, 1.0)) for d, c in target.caps.items()}
    if sum(caps.values()) < 1.0 - 1e-9:
        small = ", ".join(f"{d} {target.available[d]:.3g} tokens, cap {c:.3f}" for d, c in caps.items() if c < 1.0)
        raise SpecError(f"`target.tokens`={target.tokens:.3g} with data.max_epochs={target.max_epochs:g}: the domains' caps "
                        f"({small}) sum to {sum(caps.values()):.3f} < 1, so no mixture fits the target run; {FIX}")
    return caps


def epochs_at_target(mixture: Mapping[str, float], tokens: float, available: Mapping[str, float]) -> dict[str, float | None]:
    """Passes the target run makes over each domain at `mixture`: w_d * tokens / available_d (None: a
    weight on a domain with no tokens at all, which no repetition can give)."""
    out: dict[str, float | None] = {}
    for d, w in mixture.items():
        n = available.get(d)
        if n is None:
            continue
        out[d] = w * tokens / n if n > 0 else (0.0 if w <= 0 else None)
    return out


def over_cap(mixture: Mapping[str, float], caps: Mapping[str, float]) -> list[str]:
    """The domains whose weight is above its cap (beyond the storage rounding)."""
    return [d for d, w in mixture.items() if w > caps.get(d, 1.0) + ON_CAP]


# ------------------------------------------------------------------------------------ the optima


def model_objective(strategy):
    """The strategy's predicted objective (mean, plus the constraint penalty) as fun(W (n, k)) -> (n,);
    None when the strategy has no model or cannot fit it yet (too few runs)."""
    from orchestrator.strategies.base import Predictive

    if not isinstance(strategy, Predictive):
        return None

    def fun(W: np.ndarray) -> np.ndarray:
        mean, std, loss_domains = strategy.predict_losses(np.atleast_2d(W))
        return strategy.objective.compose(mean, std, loss_domains)[0] + strategy.penalty(mean, loss_domains)

    try:
        fun(np.full((1, len(strategy.domains)), 1.0 / len(strategy.domains)))
    except ValueError:
        return None
    return fun


def unconstrained_optimum(strategy, free: Bounds, around: np.ndarray, seed: int,
                          n_candidates: int = 2048) -> tuple[np.ndarray, float] | None:
    """The minimiser (k,) of the strategy's model over `free` (bounds without the target caps) and its
    predicted objective; `around` (c, k) are the best known mixtures (the recommendation first), whose
    own value is a floor, so the unconstrained optimum is never predicted worse than the feasible one.
    None without a model."""
    fun = model_objective(strategy)
    if fun is None:
        return None
    rng = np.random.default_rng([seed, len(strategy.observations), 13])
    # The mixtures the surrogate strategies search with: 2,048 Sobol points and clouds around the best,
    # polished by SLSQP on a smooth mean (2 starts; bayesopt's Ax predictions are too slow to polish).
    polish = 0 if strategy.kind == "bayesopt" else 2
    w, value = minimize_on_simplex(fun, free, rng, n_candidates=n_candidates, centres=around, n_local=128, polish=polish)
    start = around[:1]
    if free.contains(start)[0]:
        v0 = float(fun(start)[0])
        if v0 <= value:
            w, value = start[0], v0
    return w, float(value)


def optima(strategy, rec, target: TargetCaps, caps: Mapping[str, float], free: Bounds, seed: int) -> dict[str, Any]:
    """The feasible recommendation and the unconstrained optimum, side by side (the `target` block of
    recommendation.json): per domain weight, epochs at the target run and the cap; the predicted
    objective of each, by the same model; and what the cap costs."""
    feasible = rec.mixture.as_dict()
    fun = model_objective(strategy)
    block: dict[str, Any] = {"tokens": target.tokens, "max_epochs": target.max_epochs, "available_tokens": target.available,
                             "declared": list(target.declared), "caps": dict(caps), "target_caps": target.caps,
                             "feasible": {"mixture": feasible, "epochs": target.epochs(feasible),
                                          "objective": float(fun(rec.mixture.as_array()[None, :])[0]) if fun else rec.objective,
                                          "predicted_by": "model" if fun else "observed"}}
    if fun is not None:
        around = np.vstack([rec.mixture.as_array()[None, :], _best_runs(strategy, 4)])
        w, value = unconstrained_optimum(strategy, free, around, seed)
        m = Mixture.from_array(strategy.domains, w)
        block["unconstrained"] = {"mixture": m.as_dict(), "epochs": target.epochs(m.as_dict()), "objective": value,
                                  "predicted_by": "model", "source": "the model's minimum without the target caps"}
        block["cap_cost"] = max(block["feasible"]["objective"] - value, 0.0)
        note = None
    else:
        best = min(strategy.observations, key=lambda o: strategy.objective(o.losses)) if strategy.observations else None
        m = best.mixture if best is not None else rec.mixture
        block["unconstrained"] = {"mixture": m.as_dict(), "epochs": target.epochs(m.as_dict()),
                                  "objective": strategy.objective(best.losses) if best is not None else rec.objective,
                                  "predicted_by": "observed", "source": "the best observed run"}
        block["cap_cost"] = None
        note = (f"strategy {strategy.kind} has no model: the best observed run is the only unconstrained point it can show, "
                "and every run the sweep trained lies within the target caps")
    block["over_cap"] = over_cap(block["unconstrained"]["mixture"], target.caps)
    block["summary"] = cap_sentence(block) if note is None else note
    return block


def cap_sentence(block: Mapping[str, Any]) -> str:
    """One sentence: how much objective the target caps cost, and which domain they hold back."""
    free, over = block["unconstrained"], block.get("over_cap") or []
    if not over:
        return ("the unconstrained optimum already fits the target run (no domain beyond data.max_epochs="
                f"{block['max_epochs']:g} there): the caps cost nothing")
    reps = ", ".join(f"{d} {free['mixture'][d]:.3f} ({_times(free['epochs'].get(d))} epochs, cap {block['target_caps'][d]:.3f})"
                     for d in over)
    cost = block.get("cap_cost")
    return (f"unconstrained, the model would give {reps}, more than data.max_epochs={block['max_epochs']:g} at "
            f"target.tokens={block['tokens']:.3g}; the caps cost {cost:.4f} in predicted objective "
            f"({block['feasible']['objective']:.4f} feasible vs {free['objective']:.4f} unconstrained)")


def _times(e: float | None) -> str:
    return "unbounded" if e is None or not math.isfinite(e) else f"{e:.1f}"


def _best_runs(strategy, count: int) -> np.ndarray:
    order = sorted(strategy.observations, key=lambda o: strategy.objective(o.losses))[:count]
    return np.array([o.mixture.as_array() for o in order]).reshape(len(order), len(strategy.domains))


def feasible_or_best_inside(strategy, rec, caps: Mapping[str, float]):
    """`rec` when it honours the target caps; else (an observed seed run beyond them: every proposal is
    inside) the best observed run that does, said in its notes. None when no run does."""
    from orchestrator.strategies.base import OBSERVED, Recommendation

    if not over_cap(rec.mixture.as_dict(), caps):
        return rec
    inside = [o for o in strategy.observations if not over_cap(o.mixture.as_dict(), caps)]
    if not inside:
        return None
    best = min(inside, key=lambda o: strategy.objective(o.losses))
    why = f"the strategy's pick {rec.mixture} exceeds the target caps; best observed run within them instead"
    return Recommendation(best.mixture, dict(best.losses), dict(best.loss_stderr), strategy.objective(best.losses),
                          strategy.objective.std(best.loss_stderr, best.losses), OBSERVED, rec.trials_used, [*rec.notes, why])
