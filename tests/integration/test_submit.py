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
def test_a_submitted_sweep_runs_on_the_cluster_and_a_stopped_job_is_resumed_by_a_new_one(ray_head, tmp_path):
    # One sweep for both promises (each job costs the head a driver start): the first job is stopped
    # mid-sweep, the second (--resume) runs the sweep to the end on the cluster's GPU worker.
    address, env = ray_head
    sweep = tmp_path / "sweep"
    spec = _spec(tmp_path, duration_s=2.0, trials=6)
    job_id = _submit([str(spec), "--address", address, "--dir", str(sweep)], env)
    assert job_id.startswith("mixsweep-submitted-")
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
    assert status["completed"] == 6 and status["resumes"] == 1 and status["finished"]
    # placed on the worker node, each holding one of its declared GPUs
    assert all(t["placement"]["gpus"] for t in status["trials"])
    logs = subprocess.run(MIXSWEEP + ["logs", again, "--address", address], env=env, capture_output=True, text=True, timeout=60)
    assert "Recommended mixture" in logs.stdout and "SUCCEEDED" in logs.stdout


def test_submit_refuses_a_relative_sweep_dir(tmp_path):
    out = subprocess.run(MIXSWEEP + ["submit", str(_spec(tmp_path)), "--address", "http://127.0.0.1:1", "--dir", "runs/x"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "absolute path or URI" in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------- waiting for the head's job agent (no Ray)

class _AgentLater:
    """A Jobs client whose head has no job agent for the first `refusals` submissions."""

    REFUSAL = "Request failed with status code 500: No available agent to submit job, please try again later.."

    def __init__(self, refusals: int, error: str | None = None):
        self.refusals, self.error, self.calls = refusals, error, []

    def submit_job(self, **job):
        self.calls.append(job)
        if self.error:
            raise RuntimeError(self.error)
        if len(self.calls) <= self.refusals:
            raise RuntimeError(self.REFUSAL)
        return job["submission_id"]


def test_submit_waits_for_the_job_agent_with_one_line_and_the_same_submission_id():
    from orchestrator.submit import submit_when_agent_ready

    client, said = _AgentLater(refusals=2), []
    job = {"entrypoint": "true", "submission_id": "mixsweep-x-1"}
    assert submit_when_agent_ready(client, "http://h:1", job, said.append, wait_s=5, poll_s=0.01) == "mixsweep-x-1"
    assert len(client.calls) == 3 and all(c == job for c in client.calls)
    assert len(said) == 1 and "waiting up to 5 s" in said[0] and "http://h:1" in said[0]


def test_submit_gives_up_after_the_wait_naming_the_address_and_what_to_check():
    from orchestrator.submit import SubmitError, submit_when_agent_ready

    start = time.monotonic()
    with pytest.raises(SubmitError) as err:
        submit_when_agent_ready(_AgentLater(refusals=10**6), "http://h:1", {"submission_id": "s"}, lambda _: None,
                                wait_s=0.3, poll_s=0.05)
    assert time.monotonic() - start < 2
    line = str(err.value)
    assert "\n" not in line and "http://h:1" in line and "ray status" in line and "dashboard_agent.log" in line


def test_submit_does_not_retry_other_errors():
    from orchestrator.submit import submit_when_agent_ready

    client = _AgentLater(refusals=0, error="Request failed with status code 400: bad runtime_env")
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        submit_when_agent_ready(client, "http://h:1", {"submission_id": "s"}, lambda _: None, wait_s=5, poll_s=0.01)
    assert len(client.calls) == 1


def test_submit_gives_up_in_one_line_when_the_agent_never_comes(tmp_path):
    # The whole CLI against a fake head that always answers "no agent": exit 2, one line, no traceback.
    import http.server
    import threading

    class NoAgent(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the client's version check
            self._send(200, json.dumps({"version": "4", "ray_version": "2.60.0", "ray_commit": "x"}))

        def do_POST(self):
            self._send(500, "No available agent to submit job, please try again later.")

        def _send(self, code, body):
            self.send_response(code)
            self.send_header("Content-Type", "application/json" if code == 200 else "text/plain")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoAgent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_address[1]}"
    env = {**os.environ, "MIXSWEEP_SUBMIT_AGENT_WAIT_S": "3"}
    try:
        out = subprocess.run(MIXSWEEP + ["submit", str(_spec(tmp_path)), "--address", address, "--dir", str(tmp_path / "s")],
                             capture_output=True, text=True, env=env, timeout=60)
    finally:
        server.shutdown()
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    # (Ray's own INFO lines may come before: only ours are checked)
    assert sum("waiting up to 3 s" in line for line in lines) == 1
    assert address in lines[-1] and "job agent" in lines[-1] and "ray status" in lines[-1]
