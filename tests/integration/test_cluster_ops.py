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
