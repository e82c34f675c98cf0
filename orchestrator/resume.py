"""What resuming a sweep needs that a fresh one does not: spec compatibility, strategy rebuild, and
adopting results that finished but were never journaled.

Both are pure functions of the sweep directory's files, so `mixsweep resume` on another machine
(a restarted head) reaches the same decisions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

from orchestrator.journal import JournalError
from orchestrator.mixture import Mixture
from orchestrator.state import SweepState, TrialRecord
from orchestrator.strategies.base import Strategy
from orchestrator.strategies.contract import Artifacts, Outcome
from orchestrator.sweepdir import JOURNAL, result_files, trial_dir

# Changes a resumed sweep accepts: more budget, different concurrency or fault tolerance.
# `budget.weight_precision` only decides which later proposals count as repeats; the repeats already
# journaled are re-told as they were (retell), so changing it (or a sweep from before it) is safe.
SAFE_CHANGES = {"budget.concurrency", "budget.max_attempts", "budget.trial_timeout_s", "budget.weight_precision", "dir",
                "resources.reuse_actors"}


class SpecChanged(ValueError):
    """The spec given to resume differs from the one the sweep ran with in an unsafe way."""


class ResultConflict(JournalError):
    """A trial's result.json on disk disagrees with the journal, or results exist without a journal."""


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
    """The safe changes to record, or SpecChanged naming every unsafe field.

    The frozen spec is read through today's schema first, so a field added since the sweep started
    (e.g. `budget.replicates`) compares as its default, not as a change from nothing."""
    from orchestrator.spec import FROZEN_EXTRAS, SpecError, parse_spec

    try:
        frozen = parse_spec({k: v for k, v in frozen.items() if k not in FROZEN_EXTRAS}).model_dump(mode="json")
    except SpecError:  # no longer valid: compared as written, so the change is named
        pass
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
    """Tell the strategy every outcome in journal order, as the crashed controller did: completions
    with the artifacts journaled beside them, failures, and the repeats answered from earlier trials.

    Strategies are deterministic given their seed and the order of events, so this restores the
    strategy exactly, without trusting strategy.json (which a crash may have left behind the journal).
    Then `asked` is the number of proposals the journal holds (trials proposed plus repeats), so that
    sequence strategies (Sobol, the model strategies' design) continue where they were.
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
            strategy.tell(Outcome(mixture, e["losses"], e.get("loss_stderr"), Artifacts.from_json(e.get("artifacts")), t.fidelity))
        else:
            strategy.tell_failed(mixture, e.get("reason") or "failed", retryable=bool(e.get("retryable", False)))
    strategy.asked = len(state.trials) + state.reused


def _retell_reuse(strategy: Strategy, e: dict[str, Any], t: TrialRecord) -> None:
    """Tell a repeat what the controller told it (Controller._reuse): the matched trial's outcome at the
    proposed mixture, or nothing when the trial was still in flight. Events from before
    `budget.weight_precision` name neither the proposal nor `matched`: those matched the trial's own
    mixture, always completed or failed."""
    mixture = Mixture.from_dict(e.get("mixture") or t.mixture, strategy.domains)
    matched = e.get("matched") or ("completed" if t.losses is not None else "failed")
    if matched == "completed":
        strategy.tell(Outcome(mixture, t.losses, t.loss_stderr, fidelity=t.fidelity))
    elif matched == "failed":
        strategy.tell_failed(mixture, t.reason or "failed", retryable=t.retryable)


# ------------------------------------------------------------------------------ adopting results

# The controller writes trials/<id>/result.json, then journals `trial_completed`. A crash between the
# two leaves a finished trial the journal still shows running: resume adopts the result (journals the
# completion with `adopted: true` and tells the strategy) rather than training it again and
# overwriting the file. A result that does not match its journal line is never adopted nor
# overwritten: resume stops and names it.


def check_not_orphaned(sweep_dir: Path, events: list[dict[str, Any]], where: str) -> None:
    """ResultConflict when finished results sit beside a journal that is missing or holds no event:
    resuming would train every one of them again and overwrite their results."""
    results = result_files(sweep_dir)
    if results and not events:
        state = "is empty" if (Path(sweep_dir) / JOURNAL).exists() else "is missing"
        raise ResultConflict(f"{where}: {JOURNAL} {state} but trials/ holds {len(results)} finished result(s); restore "
                             f"{JOURNAL} from a backup, or move the directory aside and start a new sweep in another --dir")


def adoptable_results(sweep_dir: Path, state: SweepState, needed: Iterable[str]) -> Iterator[tuple[TrialRecord, dict[str, Any]]]:
    """(trial, result.json) for every trial the journal shows proposed or running whose result is on
    disk; `needed` are the domains the objective reads. ResultConflict naming a result that is not this
    trial's (another id or mixture, losses missing or not finite, not JSON)."""
    needed = list(needed)
    for t in [*state.trials.values(), *state.ladder.values()]:
        path = trial_dir(sweep_dir, t.id) / "result.json"
        if t.status.is_final or not path.is_file():
            continue
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            body, problem = None, f"not JSON ({type(err).__name__})"
        else:
            problem = result_problem(body, t, needed)
        if problem:
            raise ResultConflict(f"{path}: {problem}, so it is not trial {t.id}'s result as journaled; "
                                 "move the file away to train the trial again, or restore the journal it belongs to")
        yield t, body


def result_problem(body: Any, t: TrialRecord, needed: list[str]) -> str | None:
    """Why `body` is not trial t's result, or None."""
    if not isinstance(body, dict):
        return "not a result object"
    if body.get("trial") != t.id:
        return f"it names trial {str(body.get('trial'))[:40]!r}"
    mixture = body.get("mixture")
    if not isinstance(mixture, dict) or set(mixture) != set(t.mixture) or any(
            not _number(mixture[d]) or abs(mixture[d] - t.mixture[d]) > 1e-9 for d in t.mixture):
        return f"its mixture {mixture} is not the journal's {t.mixture}"
    losses = body.get("losses")
    if not isinstance(losses, dict) or not losses or not all(_number(v) and math.isfinite(v) for v in losses.values()):
        return f"its losses {losses} are not finite numbers"
    missing = [d for d in needed if d not in losses]
    if missing:
        return f"its losses miss {missing}, which the objective reads"
    return None


def adopted_completion(body: dict[str, Any]) -> dict[str, Any]:
    """The `trial_completed` fields for an adopted result: facts only (losses, tokens, artifacts). No
    objective is journaled: SweepState derives it from the losses."""
    info = body.get("info") if isinstance(body.get("info"), dict) else {}
    artifacts = Artifacts.from_json(info).to_json()
    return {"trial": body["trial"], "losses": body["losses"], "loss_stderr": body.get("loss_stderr") or {},
            "tokens": body.get("tokens", 0), "steps": body.get("steps", 0),
            "wall_s": body.get("wall_s"), "adopted": True, **({"artifacts": artifacts} if artifacts else {})}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
