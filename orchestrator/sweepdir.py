"""The sweep directory's layout (DESIGN.md section 4) and how files in it are written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

JOURNAL = "journal.jsonl"
SPEC = "spec.yaml"
STRATEGY = "strategy.json"
TRIALS = "trials"
REPORT = "report"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Temp file then rename (storage.write_bytes): a reader never sees half a file, a crash never leaves one."""
    from orchestrator.storage import write_bytes

    write_bytes(str(path), json.dumps(obj, indent=2, sort_keys=True).encode())


def trial_dir(sweep_dir: Path, trial: str) -> Path:
    return Path(sweep_dir) / TRIALS / trial
