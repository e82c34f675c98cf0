"""`mixsweep submit` through the real Ray Jobs API of a separately started Ray head.

The head runs in its own process group (killed at the end: never `ray stop`, which would stop every
Ray on the machine) with free ports, so it coexists with the test session's Ray.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

MIXSWEEP = [sys.executable, "-m", "orchestrator.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    temp = tmp_path_factory.mktemp("rayhead")
    dash = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # job entrypoints run `python` from the head's PATH
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    env.pop("RAY_ADDRESS", None)
    gcs_port = _free_port()
    cmd = [str(Path(bin_dir) / "ray"), "start", "--head", "--block", f"--port={gcs_port}", f"--dashboard-port={dash}",
           "--dashboard-host=127.0.0.1", f"--dashboard-agent-listen-port={_free_port()}",
           f"--dashboard-agent-grpc-port={_free_port()}", f"--metrics-export-port={_free_port()}",
           f"--runtime-env-agent-port={_free_port()}", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # A worker node that declares GPUs, as a separate Ray node: trials can only be placed there.
    worker_cmd = [str(Path(bin_dir) / "ray"), "start", "--block", f"--address=127.0.0.1:{gcs_port}", "--num-cpus=2",
                  "--num-gpus=2", f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                  f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]
    time.sleep(5)
    worker = subprocess.Popen(worker_cmd, env={**env, "RAY_AUTH_MODE": "token"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    client_env = {**env, "RAY_AUTH_MODE": "token"}  # the head keeps Ray's token auth on
    deadline = time.time() + 90
    while time.time() < deadline:  # ready when the Jobs API answers with a live agent
        ok = subprocess.run([str(Path(bin_dir) / "ray"), "job", "list", "--address", address], env=client_env,
                            capture_output=True, text=True)
        if ok.returncode == 0:
            break
        time.sleep(2)
    else:
        for p in (worker, proc):
            os.killpg(p.pid, signal.SIGKILL)
        pytest.fail("the Ray head did not come up")
    yield address, client_env
    for p in (worker, proc):
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _spec(tmp_path, duration_s=0.5, trials=5) -> Path:
    spec = {"name": "submitted", "domains": {d: {} for d in ("a", "b", "c")},
            "trainer": {"kind": "synthetic", "duration_s": duration_s, "progress_events": 3, "noise": 0.0},
            "strategy": {"kind": "sobol"}, "budget": {"trials": trials, "concurrency": 2},
            "resources": {"gpus": 1, "cpus": 1}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _job_status(address, env, job_id) -> str:
    # In a subprocess: Ray reads RAY_AUTH_MODE once per process.
    code = "import sys; from ray.job_submission import JobSubmissionClient as C; print(C(sys.argv[1]).get_job_status(sys.argv[2]))"
    out = subprocess.run([sys.executable, "-c", code, address, job_id], env=env, capture_output=True, text=True, timeout=60)
    return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else "UNKNOWN"


def _submit(args, env) -> str:
    out = subprocess.run(MIXSWEEP + ["submit", *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return next(line.split()[-1] for line in out.stdout.splitlines() if line.startswith("submitted job"))


def _wait(address, env, job_id, want, timeout_s=180) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = _job_status(address, env, job_id)
        if status in want:
            return status
        time.sleep(1)
    pytest.fail(f"job {job_id} still {status}")


@pytest.mark.slow
def test_a_submitted_sweep_runs_on_the_cluster(ray_head, tmp_path):
    address, env = ray_head
    sweep = tmp_path / "sweep"
    job_id = _submit([str(_spec(tmp_path)), "--address", address, "--dir", str(sweep)], env)
    assert job_id.startswith("mixsweep-submitted-")
    assert _wait(address, env, job_id, {"SUCCEEDED", "FAILED"}) == "SUCCEEDED"
    status = json.loads(subprocess.run(MIXSWEEP + ["status", str(sweep), "--json"], capture_output=True, text=True).stdout)
    assert status["completed"] == 5 and status["finished"]
    # placed on the worker node, each holding one of its declared GPUs
    assert all(t["placement"]["gpus"] for t in status["trials"])
    logs = subprocess.run(MIXSWEEP + ["logs", job_id, "--address", address], env=env, capture_output=True, text=True, timeout=60)
    assert "Recommended mixture" in logs.stdout and "SUCCEEDED" in logs.stdout


@pytest.mark.slow
def test_a_stopped_job_is_resumed_by_a_new_one(ray_head, tmp_path):
    address, env = ray_head
    sweep = tmp_path / "sweep"
    spec = _spec(tmp_path, duration_s=2.0, trials=6)
    job_id = _submit([str(spec), "--address", address, "--dir", str(sweep)], env)
    journal = sweep / "journal.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (journal.exists() and '"trial_completed"' in journal.read_text()):
        time.sleep(0.5)
    subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "stop", job_id, "--address", address], env=env,
                   capture_output=True, timeout=60)
    assert _wait(address, env, job_id, {"STOPPED", "FAILED", "SUCCEEDED"}) == "STOPPED"
    again = _submit([str(spec), "--address", address, "--dir", str(sweep), "--resume"], env)
    assert _wait(address, env, again, {"SUCCEEDED", "FAILED"}) == "SUCCEEDED"
    status = json.loads(subprocess.run(MIXSWEEP + ["status", str(sweep), "--json"], capture_output=True, text=True).stdout)
    assert status["completed"] == 6 and status["resumes"] == 1


def test_submit_refuses_a_relative_sweep_dir(tmp_path):
    out = subprocess.run(MIXSWEEP + ["submit", str(_spec(tmp_path)), "--address", "http://127.0.0.1:1", "--dir", "runs/x"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "absolute path or URI" in out.stderr and "Traceback" not in out.stderr
