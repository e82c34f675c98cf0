"""The journal: an append-only JSONL log of sweep events; the sweep's single source of truth.

Each line is one event `{"seq", "time", "event", ...}`. Appends are flushed and, unless
`durable=False`, fsync'd before the controller acts on them, so a crash loses at most the event being
written. The controller passes `durable=False` for `trial_progress` and `trial_placed` only (flushed,
so a killed process loses none; on the disk with the next fsync): resume never needs them. `replay` folds the log
into a SweepState; a last line cut by a crash is dropped (and reported), corruption elsewhere is an
error naming the line.

Nothing read from the journal is trusted: every line is checked as it is read (`read_events`, the one
reader), before its names become paths, table columns or code. Trial ids must be ids the controller
makes (sweepdir.TRIAL_ID) and name a trial an earlier line proposed; mixtures and losses must name the
frozen spec's domains (`spec.yaml` beside the journal); a line repeated with its seq is read once.
Anything else is a JournalError naming the line.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from orchestrator.objective import Objective
from orchestrator.spec import SpecError
from orchestrator.state import SweepState
from orchestrator.sweepdir import SPEC, BadTrialId, check_trial_id, read_frozen_spec

EVENTS = (
    "sweep_started",
    "sweep_resumed",
    "trial_proposed",
    "trial_started",
    "trial_placed",
    "trial_requeued",
    "trial_progress",
    "trial_completed",
    "scale_recommended",
    "trial_failed",
    "trial_reused",
    "recommended",
    "sweep_finished",
    "sweep_interrupted",  # SIGINT/SIGTERM stopped the controller; resume continues (controller._signals_interrupt)
)


class JournalError(ValueError):
    """The journal cannot be read; the message names the line."""


class Journal:
    """Appends events to `<sweep dir>/journal.jsonl`."""

    def __init__(self, path: str | Path, repair: bool = False, log=print) -> None:
        """Open for appending. With `repair`, a last line torn by a crash is cut off first (and said
        so), since appending after half a line would corrupt the next event."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if repair and self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                log(f"journal: dropping a last line cut by a crash ({len(data) - keep} bytes)")
                with open(self.path, "r+b") as fh:
                    fh.truncate(keep)
        # One past the highest seq, not a line count: a line repeated by hand is read once (read_events).
        self._seq = max((e["seq"] for e in read_events(self.path)), default=-1) + 1 if self.path.exists() else 0
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, event: str, durable: bool = True, **fields: Any) -> dict[str, Any]:
        """Write one event and return it. `durable` fsyncs it; without, it is flushed and reaches the
        disk with the next durable event (for progress, which a resume never needs)."""
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}")
        record = {"seq": self._seq, "time": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(record, separators=(",", ":")) + "\n"
        # The seq is spent before the write: SIGINT/SIGTERM raise inside the controller wherever it is
        # (controller._signals_interrupt), and an interruption journaled after a write that had not yet
        # counted its seq would reuse it. An interruption before the write leaves a gap, which is harmless.
        self._seq += 1
        self._fh.write(line)
        self._fh.flush()
        if durable:
            os.fsync(self._fh.fileno())
        return record

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | Path, warn: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the journal's events, each checked (module docstring) against the frozen spec beside it.

    A torn last line is skipped (noted in `warn`), as is a line repeated with the same seq; anything
    else wrong raises JournalError naming the line and the fix."""
    path = Path(path)
    names = Names.beside(path)
    lines = path.read_bytes().split(b"\n")
    last = len(lines) - 1 if lines[-1] == b"" else len(lines)
    seen: dict[int, bytes] = {}  # seq -> the line that had it
    proposed: set[str] = set()
    for i, raw in enumerate(lines[:last]):
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or "event" not in record:
                raise ValueError("not an event object")
        except ValueError as err:
            # Every append ends in a newline, so only a final line without one can be a torn write.
            if i == last - 1 and lines[-1] != b"":
                if warn is not None:
                    warn.append(f"journal line {i + 1} was cut by a crash and is ignored")
                return
            raise JournalError(f"{path}: line {i + 1} is not a journal event ({err}); restore it from a backup or remove it") from None
        try:
            if _repeated(record, raw, seen):
                if warn is not None:
                    warn.append(f"journal line {i + 1} repeats seq {record['seq']} and is read once")
                continue
            check_event(record, names, proposed)
        except (ValueError, TypeError) as err:
            raise JournalError(f"{path}: line {i + 1}: {err}; restore the journal from a backup") from None
        yield record


def load(path: str | Path, warn: list[str] | None = None,
         objective: Objective | None = None) -> tuple[list[dict[str, Any]], SweepState]:
    """The journal's checked events and their fold, read once. Trials are scored with `objective`
    (default: the frozen spec's beside the journal; none without a spec.yaml there)."""
    events = list(read_events(path, warn))
    state = SweepState(objective if objective is not None else objective_beside(Path(path)))
    for record in events:
        state.apply(record)
    return events, state


def objective_beside(journal: Path) -> Objective | None:
    """The sweep's Objective from `spec.yaml` in the journal's directory (None without one); JournalError
    naming the file when its objective or domains cannot be read."""
    raw = frozen_beside(journal)
    if raw is None:
        return None
    try:
        return Objective.from_frozen_spec(raw)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise JournalError(f"{journal.parent / SPEC}: its objective cannot be read ({type(err).__name__}); "
                           "restore it from a backup") from None


def frozen_beside(journal: Path) -> dict[str, Any] | None:
    """The frozen spec in the journal's directory (sweepdir.read_frozen_spec, strict; None without one);
    JournalError, one line, when it cannot be read."""
    try:
        return read_frozen_spec(journal.parent, missing_ok=True)
    except SpecError as err:
        raise JournalError(f"not a frozen spec: {err}") from None


def replay(path: str | Path, warn: list[str] | None = None) -> SweepState:
    """Fold the journal at `path` into the sweep's state."""
    return load(path, warn)[1]


def last_seq(events: list[dict[str, Any]]) -> int:
    """The seq of the newest event (-1 for none): what an export was made from."""
    return max((e["seq"] for e in events), default=-1)


# ------------------------------------------------------------------------------------ checks

# The controller's names: spec domains, eval domains, a replayed table's or a trainer's own evaluated
# sets. Where the spec cannot list them all, a loss name must still be one (no path, quote or newline).
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
MIXTURE_FIELDS = ("mixture", "weights", "caps", "domain_tokens")  # domain -> weight (or tokens, cap)
LOSS_FIELDS = ("losses", "loss_stderr", "predicted_losses", "predicted_std")  # evaluated domain -> nats/token
TRIAL_EVENTS = ("trial_proposed", "trial_started", "trial_placed", "trial_requeued", "trial_progress",
                "trial_completed", "trial_failed", "trial_reused")
REQUIRED = {"trial_proposed": ("mixture",), "trial_completed": ("losses",), "recommended": ("mixture",),
            "scale_recommended": ("preset",)}


@dataclass(frozen=True)
class Names:
    """The names a journal may use, from the frozen spec: training domains (mixture keys) and
    evaluated domains (loss keys; None where the trainer may evaluate sets the spec does not list)."""

    domains: frozenset[str] | None = None
    loss_domains: frozenset[str] | None = None

    @classmethod
    def beside(cls, journal: Path) -> "Names":
        """From `spec.yaml` in the journal's directory; names are only checked as names without one."""
        raw = frozen_beside(journal)
        if raw is None:
            return cls()
        try:
            return cls.from_spec(raw)
        except (AttributeError, KeyError, TypeError) as err:
            raise JournalError(f"{journal.parent / SPEC}: not a frozen spec ({type(err).__name__}); restore it from a backup") from None

    @classmethod
    def from_spec(cls, raw: dict[str, Any]) -> "Names":
        domains = frozenset(raw["domains"])
        trainer = (raw.get("trainer") or {}).get("kind", "proxy")
        if trainer not in ("proxy", "synthetic"):  # replay, command, python: their own evaluated sets
            return cls(domains, None)
        objective = raw.get("objective") or {}
        named = set(objective.get("weights") or {}) | set(objective.get("domains") or [])
        named |= {objective["domain"]} if objective.get("domain") else set()
        return cls(domains, domains | frozenset(raw.get("eval_domains") or {}) | frozenset(named))


def check_event(e: dict[str, Any], names: Names, proposed: set[str]) -> None:
    """ValueError (one line) for an event the controller could not have written; `proposed` gathers the
    trial ids proposed so far."""
    if not isinstance(e.get("seq"), int) or isinstance(e["seq"], bool):
        raise ValueError(f"seq {e.get('seq')!r} is not an integer")
    kind = e["event"]
    for f in REQUIRED.get(kind, ()):
        if f not in e:
            raise ValueError(f"{kind} has no {f!r}")
    if kind in TRIAL_EVENTS or "trial" in e:
        _check_trial(e, kind, proposed)
    if "domains" in e and kind in ("sweep_started", "sweep_resumed"):
        _check_keys("domains", e["domains"], names.domains, exact=True)
    for f in MIXTURE_FIELDS:
        if e.get(f) is not None:
            _check_keys(f, _numbers(f, e[f], none_ok=False), names.domains, exact=f == "mixture")
    for f in LOSS_FIELDS:
        if e.get(f) is not None:
            _check_keys(f, _numbers(f, e[f], none_ok=True), names.loss_domains, exact=False)
    if kind == "trial_completed" and not all(math.isfinite(v) for v in e["losses"].values()):
        raise ValueError(f"trial_completed of {e['trial']} has non-finite losses {e['losses']}")


def _check_trial(e: dict[str, Any], kind: str, proposed: set[str]) -> None:
    try:
        tid = check_trial_id(e.get("trial"))
    except BadTrialId as err:
        raise ValueError(str(err)) from None
    if kind == "trial_proposed":
        proposed.add(tid)
    elif tid not in proposed:
        raise ValueError(f"{kind} names trial {tid}, which no earlier line proposed")


def _numbers(field: str, value: Any, none_ok: bool) -> dict[str, Any]:
    """`value` if it maps names to numbers (or None, for predictions that have none)."""
    def number(v: Any) -> bool:
        return (v is None and none_ok) or (isinstance(v, (int, float)) and not isinstance(v, bool))

    if not isinstance(value, dict) or not all(number(v) for v in value.values()):
        raise ValueError(f"{field} is not a mapping of domain -> number")
    return value


def _check_keys(field: str, keys: Any, allowed: frozenset[str] | None, exact: bool) -> None:
    """Keys (or a list) of domain names: names at all, and the spec's where the spec is known."""
    if not isinstance(keys, (dict, list)):
        raise ValueError(f"{field} is not a mapping or list of domains")
    bad = [k for k in keys if not isinstance(k, str) or not NAME.fullmatch(k)]
    if allowed is not None:
        bad += sorted(set(keys) - allowed - set(bad))
        if exact and not bad and set(keys) != allowed:
            raise ValueError(f"{field} names domains {sorted(keys)}, not the frozen spec's {sorted(allowed)}")
    if bad:
        shown = ", ".join(repr(str(k)[:40]) for k in bad[:3])
        known = f"; the frozen spec ({SPEC}) has {sorted(allowed)}" if allowed is not None else ""
        raise ValueError(f"{field} names unknown domain(s) {shown}{known}")


def _repeated(record: dict[str, Any], raw: bytes, seen: dict[int, bytes]) -> bool:
    """True for a line that repeats an earlier line with its seq; a different event with a seq already
    read is corruption (ValueError)."""
    seq = record.get("seq")
    if not isinstance(seq, int) or seq not in seen:
        if isinstance(seq, int):
            seen[seq] = raw
        return False
    if json.loads(seen[seq]) != record:
        raise ValueError(f"seq {seq} is used by two different events")
    return True
