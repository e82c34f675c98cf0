"""The sweep directory's layout (DESIGN.md section 4) and how files in it are written."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

JOURNAL = "journal.jsonl"
SPEC = "spec.yaml"
STRATEGY = "strategy.json"
TRIALS = "trials"
REPORT = "report"

# Every trial id the controller makes: "t" + 12 hex digits of a content hash (trial.trial_id), and
# ladder trials with their preset appended (ladder.ladder_trial_id: t<hash>-1m). Ids come back from
# the journal, a file anyone can edit, and become directory names: nothing else may pass.
TRIAL_ID = re.compile(r"t[0-9a-f]{12}(?:-[A-Za-z0-9_]{1,32})?")


class BadTrialId(ValueError):
    """A trial id that is not one the controller makes (and could name a path outside the sweep)."""


def check_trial_id(trial: object) -> str:
    """`trial` if it is a trial id (TRIAL_ID), else BadTrialId (one line)."""
    if not isinstance(trial, str) or not TRIAL_ID.fullmatch(trial):
        raise BadTrialId(f"trial id {str(trial)[:80]!r} is not t + 12 hex digits (+ -preset for ladder trials)")
    return trial


def write_json_atomic(path: Path, obj: Any) -> None:
    """Temp file then rename (storage.write_bytes): a reader never sees half a file, a crash never leaves one."""
    from orchestrator.storage import write_bytes

    write_bytes(str(path), json.dumps(obj, indent=2, sort_keys=True).encode())


def read_frozen_spec(sweep_dir: str | Path, missing_ok: bool = False) -> dict[str, Any] | None:
    """The frozen `spec.yaml` of a sweep directory as the controller wrote it (spec fields plus
    spec.FROZEN_EXTRAS), read strictly like every spec (spec.read_yaml: duplicate keys are errors). The
    one reader of that file. Missing: None with `missing_ok`, else SpecError; unreadable, not YAML or not
    a mapping: SpecError, one line naming the file and the fix."""
    from orchestrator.spec import SpecError, read_yaml

    p = Path(sweep_dir) / SPEC
    if not p.is_file():
        if missing_ok:
            return None
        raise SpecError(f"{sweep_dir}: no {SPEC} (the sweep's frozen spec); restore it, or pass the sweep's spec "
                        "with `--spec FILE` where the command takes one")
    raw = read_yaml(p, "frozen spec")
    if not isinstance(raw, dict):
        raise SpecError(f"frozen spec {p}: not a YAML mapping; restore it from the spec the sweep ran with")
    return raw


def trial_dir(sweep_dir: Path, trial: str) -> Path:
    """`<sweep dir>/trials/<id>`; BadTrialId for anything but a trial id, so no name reaches outside."""
    return Path(sweep_dir) / TRIALS / check_trial_id(trial)


def result_files(sweep_dir: Path) -> list[Path]:
    """Every `trials/<id>/result.json` under a local sweep directory (finished trials' results)."""
    return sorted((Path(sweep_dir) / TRIALS).glob("*/result.json"))
