"""SIGINT / SIGTERM during a real `mixsweep run` of a quick synthetic sweep: exit 130 with one `error:` line
(no traceback), a `sweep_interrupted` event in the journal, and `mixsweep resume` finishing the budget
with no finished trial trained twice. Real Ray in subprocesses, hence `slow`: the interrupted run's
embedded one, and the test session's, which the resume joins (as a resume on a cluster does).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_cli

BUDGET = 4
# Ray's own start-up log lines on stderr (e.g. token authentication) are not ours.
RAY_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING)\s")


def _spec(tmp_path: Path) -> Path:
    spec = {"name": "sig", "domains": {d: {} for d in ("a", "b", "c")},
            "trainer": {"kind": "synthetic", "duration_s": 1.0, "progress_events": 2, "noise": 0.0},
            "strategy": {"kind": "sobol", "options": {"min_weight": 0.1}}, "budget": {"trials": BUDGET, "concurrency": 2}, "seed": 0}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _events(sweep: Path) -> list[dict]:
    path = sweep / "journal.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def _our_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if not RAY_LOG.match(ln) and ln.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_sweep_exits_130_in_one_line_and_resume_finishes(ray_session, tmp_path: Path, signum: int) -> None:
    spec, sweep = _spec(tmp_path), tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MIXSWEEP_DEBUG")}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(spec), "--dir", str(sweep), "--quiet"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if any(e["event"] == "trial_completed" for e in _events(sweep)):
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        os.kill(proc.pid, signum)  # the controller only, as a terminal or `kill` would
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(_our_lines(err)) == 1, err
    assert _our_lines(err)[0].startswith(f"error: interrupted by {signal.Signals(signum).name}") and "mixsweep resume" in err
    events = _events(sweep)
    assert events[-1]["event"] == "sweep_interrupted"
    done_before = {e["trial"] for e in events if e["event"] == "trial_completed"}

    address = ray_session.get_runtime_context().gcs_address
    resumed = run_cli(["resume", str(sweep), "--quiet", "--address", address], env=env)
    assert resumed.returncode == 0, resumed.stderr
    events = _events(sweep)
    completed = [e["trial"] for e in events if e["event"] == "trial_completed"]
    assert len(completed) == len(set(completed)) == BUDGET and done_before <= set(completed)
    assert events[-1]["event"] == "sweep_finished"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml", "sweep"]
