"""The journal: an append-only JSONL log of sweep events; the sweep's single source of truth.

Each line is one event `{"seq", "time", "event", ...}`. Appends are flushed and fsync'd before the
controller acts on them, so a crash loses at most the event being written. `replay` folds the log
into a SweepState; a last line cut by a crash is dropped (and reported), corruption elsewhere is an
error naming the line.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from orchestrator.state import SweepState

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
        self._seq = sum(1 for _ in read_events(self.path)) if self.path.exists() else 0
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, event: str, durable: bool = True, **fields: Any) -> dict[str, Any]:
        """Write one event and return it. `durable` fsyncs it; without, it is flushed and reaches the
        disk with the next durable event (for progress, which a resume never needs)."""
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}")
        record = {"seq": self._seq, "time": round(time.time(), 3), "event": event, **fields}
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()
        if durable:
            os.fsync(self._fh.fileno())
        self._seq += 1
        return record

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_events(path: str | Path, warn: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the journal's events. A torn last line is skipped (noted in `warn`); others raise."""
    lines = Path(path).read_bytes().split(b"\n")
    last = len(lines) - 1 if lines[-1] == b"" else len(lines)
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
        yield record


def replay(path: str | Path, warn: list[str] | None = None) -> SweepState:
    """Fold the journal at `path` into the sweep's state."""
    state = SweepState()
    for record in read_events(path, warn):
        state.apply(record)
    return state
