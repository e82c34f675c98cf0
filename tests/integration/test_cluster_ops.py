"""Cluster operations: what an embedded Ray exposes on the network, and the local multi-node cluster
(cluster/local.sh) next to an embedded sweep.

Every Ray here runs in subprocesses of its own session, killed by process group at the end: the test
session's Ray and any other Ray on the machine are left alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Starts the embedded Ray exactly as `mixsweep run` without --address does, prints its metrics port,
# and keeps it up until stdin closes.
EMBEDDED = """
import sys, ray
from orchestrator.cli import _init_ray
_init_ray(None)
print(ray._private.worker.global_worker.node.metrics_export_port, flush=True)
sys.stdin.read()
ray.shutdown()
"""


def _non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine other than 127.x, or None."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:  # no packet is sent: this only asks the kernel which source address it would route from
            s.connect(("192.0.2.1", 9))
            out.append(s.getsockname()[0])
        except OSError:
            pass
    return next((a for a in out if "." in a and not a.startswith("127.")), None)


def _accepts(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(3)
        return s.connect_ex((host, port)) == 0


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.mark.slow
def test_embedded_ray_serves_metrics_on_loopback_only():
    other = _non_loopback_ipv4()
    if other is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try the metrics port on")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-c", EMBEDDED], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    try:
        port = int(proc.stdout.readline())
        deadline = time.time() + 30  # the agent may open the port a moment after ray.init returns
        while not _accepts("127.0.0.1", port) and time.time() < deadline:
            time.sleep(0.5)
        assert _accepts("127.0.0.1", port), f"metrics port {port} not open on 127.0.0.1"
        assert not _accepts(other, port), f"metrics port {port} is reachable on {other}"
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        _kill_group(proc)


# ------------------------------------------------- cluster/local.sh next to an embedded sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIXSWEEP = [sys.executable, "-m", "orchestrator.cli"]


def _synthetic(path, name: str, duration_s: float, trials: int) -> str:
    import yaml

    spec = {"name": name, "domains": {d: {} for d in ("a", "b", "c")},
            "trainer": {"kind": "synthetic", "duration_s": duration_s, "progress_events": 2, "noise": 0.0},
            "strategy": {"kind": "sobol"}, "budget": {"trials": trials, "concurrency": 2},
            "resources": {"gpus": 0, "cpus": 1}}
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _state(local_dir) -> dict:
    text = (local_dir / "cluster.env").read_text()
    return dict(line.split("=", 1) for line in text.split() if "=" in line)


def _leftovers(sid: str, marks: list[str]) -> list[str]:
    """ps lines of processes in session `sid` or naming one of `marks` on their command line."""
    ps = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True).stdout.splitlines()
    return [l for l in ps if l.split()[1] == sid or any(m in l for m in marks)]


def _done(sweep) -> bool:
    journal = sweep / "journal.jsonl"
    return journal.exists() and '"sweep_finished"' in journal.read_text()


@pytest.mark.slow
def test_local_cluster_starts_and_takes_a_submitted_sweep_next_to_an_embedded_sweep_and_stops_clean(tmp_path):
    import shutil
    import tempfile

    # Ray's socket paths under its temp dir must stay under 107 bytes: pytest's tmp_path is too deep.
    local_dir = tempfile.mkdtemp(prefix="mxl-", dir="/tmp")
    bin_dir = os.path.dirname(sys.executable)  # `ray` for local.sh, `python` for the job's entrypoint
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PATH=bin_dir + os.pathsep + env["PATH"], RAY_AUTH_MODE="token", PYTHON=sys.executable,
               MIXSWEEP_LOCAL_DIR=local_dir, WORKERS="1")
    local_sh = [os.path.join(ROOT, "cluster", "local.sh")]
    embedded_dir, submitted_dir = tmp_path / "embedded", tmp_path / "submitted"
    run_env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    embedded = subprocess.Popen(MIXSWEEP + ["run", _synthetic(tmp_path / "e.yaml", "embedded", 4.0, 12), "--dir",
                                            str(embedded_dir), "--quiet"], env=run_env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    sid = None
    try:
        deadline = time.time() + 90  # the embedded Ray holds its ports once its first trial runs
        while not ((embedded_dir / "journal.jsonl").exists() and '"trial_' in (embedded_dir / "journal.jsonl").read_text()):
            assert time.time() < deadline and embedded.poll() is None, "the embedded sweep did not start"
            time.sleep(0.5)
        start = subprocess.run(["bash", *local_sh, "start"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=150)
        assert start.returncode == 0, start.stderr[-3000:]
        sid = _state(Path(local_dir))["SID"]
        dashboard = subprocess.run(["bash", *local_sh, "dashboard"], env=env, capture_output=True, text=True,
                                   check=True).stdout.strip()
        out = subprocess.run(MIXSWEEP + ["submit", _synthetic(tmp_path / "s.yaml", "submitted", 0.5, 4), "--address",
                                         dashboard, "--dir", str(submitted_dir)], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        deadline = time.time() + 150
        while not (_done(submitted_dir) and _done(embedded_dir)):
            assert time.time() < deadline, f"unfinished: submitted {_done(submitted_dir)}, embedded {_done(embedded_dir)}"
            time.sleep(1)
        assert embedded.wait(timeout=60) == 0
    finally:
        stop = subprocess.run(["bash", *local_sh, "stop"], env=env, capture_output=True, text=True, timeout=60)
        _kill_group(embedded)
    assert stop.returncode == 0, stop.stderr[-2000:]
    left = _leftovers(sid, [local_dir, str(submitted_dir)])
    shutil.rmtree(local_dir, ignore_errors=True)
    assert not left, "\n".join(left)
