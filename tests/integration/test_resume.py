"""Crash a real `mixsweep run` with SIGKILL at several points, then `mixsweep resume` it.

Promises checked: every trial finished before the crash is kept byte for byte, none is trained
twice, the budget completes, and `status --json` lists each trial once.

Each crash is a real `mixsweep run` with its own embedded Ray, SIGKILLed with its whole process group.
The resumes join the test session's Ray (as a resume on a cluster does) rather than each starting one;
the tests that only need "a sweep killed mid-trial" each resume their own copy of one such crash.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from orchestrator.journal import read_events

MIXSWEEP = [sys.executable, "-m", "orchestrator.cli"]
BUDGET = 6


def _spec(tmp_path: Path, **budget) -> Path:
    spec = {
        "name": "crash", "domains": {d: {} for d in ("a", "b", "c")},
        "trainer": {"kind": "synthetic", "duration_s": 1.2, "progress_events": 4, "noise": 0.0},
        "strategy": {"kind": "sobol"}, "budget": {"trials": BUDGET, "concurrency": 2, **budget}, "seed": 0,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, **extra}


def _events(sweep: Path) -> list[dict]:
    return list(read_events(sweep / "journal.jsonl", [])) if (sweep / "journal.jsonl").exists() else []


def _run_until(spec: Path, sweep: Path, stop_when, env: dict, timeout_s: float = 120) -> None:
    """Start `mixsweep run` in its own process group; SIGKILL the group once stop_when(events) holds."""
    proc = subprocess.Popen(MIXSWEEP + ["run", str(spec), "--dir", str(sweep), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout_s
    try:
        while proc.poll() is None and time.time() < deadline:
            if stop_when is not None and stop_when(_events(sweep)):
                break
            time.sleep(0.05)
        assert time.time() < deadline, "the kill point was never reached"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _resume(sweep: Path, address: str, *extra: str):
    """`mixsweep resume` joining the session's Ray (the env keeps the session's RAY_AUTH_MODE)."""
    return run_cli(["resume", str(sweep), *extra, "--address", address], env=_env())


def _completed(events):
    return [e for e in events if e["event"] == "trial_completed"]


def _before_first_result(events):
    return any(e["event"] == "trial_progress" for e in events) and not _completed(events)


def _mid_trial(events):
    done = _completed(events)
    return bool(done) and any(e["event"] == "trial_progress" and e["seq"] > done[0]["seq"] for e in events)


def _mid_trial_after_two(events):
    """Two results journaled and a later trial's progress after them: killed mid-trial, with results on disk."""
    done = _completed(events)
    return len(done) >= 2 and any(e["event"] == "trial_progress" and e["seq"] > done[1]["seq"] for e in events)


@pytest.fixture(scope="module")
def killed_mid_trial(tmp_path_factory) -> tuple[Path, Path]:
    """(spec, sweep) of one `mixsweep run` SIGKILLed mid-trial; tests resume copies of it, never it."""
    root = tmp_path_factory.mktemp("killed")
    spec, sweep = _spec(root), root / "sweep"
    _run_until(spec, sweep, _mid_trial_after_two, _env())
    return spec, sweep


def _copy(killed: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    spec, sweep = killed
    shutil.copytree(sweep, tmp_path / "sweep")
    return spec, tmp_path / "sweep"


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before_first_result", "mid_trial", "between_result_and_next_proposal"])
def test_every_trial_runs_exactly_once_after_resume(ray_session, request, tmp_path, point):
    address = ray_session.get_runtime_context().gcs_address
    spec, sweep = _spec(tmp_path), tmp_path / "sweep"
    if point == "between_result_and_next_proposal":
        # The controller kills itself right after journaling its 2nd result, before telling or asking.
        _run_until(spec, sweep, None, _env(MIXSWEEP_FAULT_KILL_AFTER="trial_completed:2"))
    elif point == "mid_trial":
        spec, sweep = _copy(request.getfixturevalue("killed_mid_trial"), tmp_path)
        assert _mid_trial(_events(sweep))
    else:
        _run_until(spec, sweep, _before_first_result, _env())
    before = _events(sweep)
    assert not any(e["event"] == "sweep_finished" for e in before), "the crash came too late"
    kept = {e["trial"]: (sweep / "trials" / e["trial"] / "result.json").read_bytes() for e in _completed(before)}
    running = {e["trial"] for e in before if e["event"] == "trial_started"} - set(kept)

    out = _resume(sweep, address, "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    after = _events(sweep)
    completed = [e["trial"] for e in _completed(after)]
    assert len(completed) == len(set(completed)), "a trial was trained twice"
    for tid, blob in kept.items():
        assert (sweep / "trials" / tid / "result.json").read_bytes() == blob
    status = json.loads(run_cli(["status", str(sweep), "--json"]).stdout)
    ids = [t["id"] for t in status["trials"]]
    assert len(ids) == len(set(ids)) == BUDGET and status["completed"] == BUDGET and status["resumes"] == 1
    for t in status["trials"]:
        assert t["attempts"] == (2 if t["id"] in running else 1)
    assert status["finished"] and status["recommendation"] is not None


@pytest.mark.slow
def test_resume_refuses_a_changed_spec_and_accepts_a_larger_budget(ray_session, killed_mid_trial, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    spec, sweep = _copy(killed_mid_trial, tmp_path)
    assert len(_completed(_events(sweep))) >= 1
    changed = yaml.safe_load(spec.read_text())
    changed["seed"] = 7
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(changed))
    out = _resume(sweep, address, "--spec", str(bad))
    assert out.returncode == 2 and "seed (0 -> 7)" in out.stderr and "Traceback" not in out.stderr
    changed["seed"], changed["budget"]["trials"] = 0, BUDGET + 2
    more = tmp_path / "more.yaml"
    more.write_text(yaml.safe_dump(changed))
    out = _resume(sweep, address, "--spec", str(more), "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = [e for e in _events(sweep) if e["event"] == "sweep_resumed"]
    assert resumed[0]["changes"] == {"budget.trials": [BUDGET, BUDGET + 2]}
    assert len(_completed(_events(sweep))) == BUDGET + 2


@pytest.mark.slow
def test_a_result_written_but_not_journaled_is_adopted_never_trained_again(ray_session, tmp_path):
    # SIGKILL after the 2nd trial's result.json is written, before its `trial_completed` is journaled.
    spec, sweep = _spec(tmp_path), tmp_path / "sweep"
    _run_until(spec, sweep, None, _env(MIXSWEEP_FAULT_KILL_AFTER="result_written:2"))
    before = _events(sweep)
    journaled = {e["trial"] for e in _completed(before)}
    orphans = {p.parent.name: p.read_bytes() for p in (sweep / "trials").glob("*/result.json") if p.parent.name not in journaled}
    assert len(orphans) == 1, "the kill point leaves exactly one result the journal has not seen"
    (orphan, blob), = orphans.items()

    out = _resume(sweep, ray_session.get_runtime_context().gcs_address, "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    after = _events(sweep)
    assert [e["attempt"] for e in after if e["event"] == "trial_started" and e["trial"] == orphan] == [1], "re-trained"
    done = [e for e in _completed(after) if e["trial"] == orphan]
    assert len(done) == 1 and done[0]["adopted"] is True
    assert (sweep / "trials" / orphan / "result.json").read_bytes() == blob
    resumed = next(e["seq"] for e in after if e["event"] == "sweep_resumed")
    assert done[0]["seq"] < resumed  # adopted (and told to the strategy) before anything new was asked
    status = json.loads(run_cli(["status", str(sweep), "--json"]).stdout)
    assert status["completed"] == BUDGET and status["finished"]


@pytest.mark.slow
def test_results_beside_an_empty_or_missing_journal_are_never_trained_again(ray_session, killed_mid_trial, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    spec, sweep = _copy(killed_mid_trial, tmp_path)
    results = {p: p.read_bytes() for p in (sweep / "trials").glob("*/result.json")}
    assert len(results) >= 2
    (sweep / "controller.lock").unlink(missing_ok=True)
    (sweep / "journal.jsonl").write_bytes(b"")
    out = _resume(sweep, address, "--quiet")
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1 and "journal.jsonl is empty but trials/ holds" in errors[0], out.stderr[-2000:]
    (sweep / "journal.jsonl").unlink()
    out = run_cli(["run", str(spec), "--dir", str(sweep), "--quiet", "--address", address], env=_env())
    assert out.returncode == 2 and "finished trial result(s) but no journal.jsonl" in out.stderr, out.stderr[-2000:]
    assert {p: p.read_bytes() for p in (sweep / "trials").glob("*/result.json")} == results
