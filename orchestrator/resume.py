"""What resuming a sweep needs that a fresh one does not: spec compatibility and strategy rebuild.

Both are pure functions of the sweep directory's files, so `mixsweep resume` on another machine
(a restarted head) reaches the same decisions.
"""

from __future__ import annotations

from typing import Any, Iterable

from orchestrator.mixture import Mixture
from orchestrator.state import SweepState, TrialRecord
from orchestrator.strategies import Strategy

# Changes a resumed sweep accepts: more budget, different concurrency or fault tolerance.
# `budget.weight_precision` only decides which later proposals count as repeats; the repeats already
# journaled are re-told as they were (retell), so changing it (or a sweep from before it) is safe.
SAFE_CHANGES = {"budget.concurrency", "budget.max_attempts", "budget.trial_timeout_s", "budget.weight_precision", "dir"}


class SpecChanged(ValueError):
    """The spec given to resume differs from the one the sweep ran with in an unsafe way."""


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): obj}


def spec_changes(frozen: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted field -> (old, new) for every field that differs (metadata keys ignored)."""
    old = _flatten({k: v for k, v in frozen.items() if k not in ("mixsweep_version", "spec_digest")})
    cur = _flatten(new)
    order_old, order_new = list(frozen.get("domains", {})), list(new.get("domains", {}))
    changes = {k: (old.get(k), cur.get(k)) for k in sorted(set(old) | set(cur)) if old.get(k) != cur.get(k)}
    if order_old != order_new:
        changes["domains (order)"] = (order_old, order_new)
    return changes


def check_resumable(frozen: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The safe changes to record, or SpecChanged naming every unsafe field."""
    changes = spec_changes(frozen, new)
    unsafe = {k: v for k, v in changes.items() if k not in SAFE_CHANGES and k != "budget.trials"}
    trials = changes.get("budget.trials")
    if trials is not None and trials[1] < trials[0]:
        unsafe["budget.trials"] = trials
    if unsafe:
        fields = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in unsafe.items())
        raise SpecChanged(f"the spec changed in fields a resumed sweep cannot accept: {fields}; "
                          "resume with the original spec, or start a new sweep in another --dir")
    return changes


def retell(strategy: Strategy, events: Iterable[dict[str, Any]], state: SweepState) -> None:
    """Tell the strategy every outcome in journal order, as the crashed controller did.

    Strategies are deterministic given their seed and the order of events, so this restores the
    strategy exactly, without trusting strategy.json (which a crash may have left behind the journal).
    """
    domains = strategy.domains
    for e in events:
        kind = e["event"]
        if kind not in ("trial_completed", "trial_failed", "trial_reused"):
            continue
        if e["trial"] in state.ladder:  # another model size: never a same-scale observation (ladder.py)
            continue
        t = state.trials[e["trial"]]
        if kind == "trial_reused":
            _retell_reuse(strategy, e, t)
            continue
        mixture = Mixture.from_dict(t.mixture, domains)
        if kind == "trial_completed":
            tell_artifacts(strategy, mixture, e.get("artifacts") or {})
            strategy.tell(mixture, t.losses, t.loss_stderr)
        else:
            strategy.tell_failed(mixture, t.reason or "failed")
    if hasattr(strategy, "asked"):
        # Sequence strategies (Sobol) continue where they were, rather than re-proposing old points.
        strategy.asked = len(state.trials) + state.reused


def _retell_reuse(strategy: Strategy, e: dict[str, Any], t: TrialRecord) -> None:
    """Tell a repeat what the controller told it (Controller._reuse): the matched trial's outcome at the
    proposed mixture, or nothing when the trial was still in flight. Events from before
    `budget.weight_precision` name neither the proposal nor `matched`: those matched the trial's own
    mixture, always completed or failed."""
    mixture = Mixture.from_dict(e.get("mixture") or t.mixture, strategy.domains)
    matched = e.get("matched") or ("completed" if t.losses is not None else "failed")
    if matched == "completed":
        strategy.tell(mixture, t.losses, t.loss_stderr)
    elif matched == "failed":
        strategy.tell_failed(mixture, t.reason or "failed")


def tell_artifacts(strategy: Strategy, mixture: Mixture, artifacts: dict[str, str]) -> None:
    """Hand a trial's arrays (expert log-probabilities) to a strategy that asked for them."""
    location = artifacts.get("token_logprobs")
    if location and hasattr(strategy, "tell_expert"):
        from orchestrator.storage import read_arrays

        strategy.tell_expert(mixture, read_arrays(location), source=location)
    if artifacts and hasattr(strategy, "tell_artifacts"):  # e.g. DoReMi: reference weights, averaged weights
        strategy.tell_artifacts(mixture, artifacts)
