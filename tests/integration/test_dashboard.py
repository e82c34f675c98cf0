"""The real Ray dashboard, rendered by headless Chromium, lists a running sweep's trial actors.

A `mixsweep run` subprocess runs a synthetic sweep on its own embedded Ray (dashboard on 127.0.0.1,
token authentication on, with a token this test chose). Chromium is driven through the DevTools
protocol (over aiohttp's websocket client, already installed with ray[default]): the test hands it
the dashboard's session cookie, as `POST /api/authenticate` would, opens the Actors page, waits for
the JavaScript to render the table, and checks that every actor the sweep's journal says a trial
started on (`trainer-<n>`, pooled) appears in the page's text, and that mixsweep served the dashboard
on loopback only. The screenshot is kept in tests/artifacts/dashboard_actors.png.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from test_cluster_ops import _accepts, _non_loopback_ipv4

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a sandboxed root user on a machine with no network but loopback (see docs/cluster.md).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--window-size=1400,900"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)"),
]

SPEC = """\
name: dashboard
domains: {books: {}, code: {}, math: {}}
trainer: {kind: synthetic, duration_s: 120, progress_events: 60}
strategy: {kind: sobol}
budget: {trials: 2, concurrency: 2}
resources: {cpus: 0.5, gpus: 0}
"""


class Lines:
    """A subprocess's stdout, line by line, readable with a timeout (a thread drains the pipe)."""

    def __init__(self, stream) -> None:
        self.q: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=lambda: [self.q.put(l) for l in stream], daemon=True).start()

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match:
        """The first line matching `pattern` within `timeout_s` seconds."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no line matching {pattern!r} in {timeout_s} s; output so far:\n" + "".join(self.seen))


@pytest.fixture
def sweep(tmp_path):
    """A running sweep: (dashboard URL, sweep dir, token). Stopped with SIGINT (as Ctrl-C would) after."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PYTHONUNBUFFERED": "1",
           "COLUMNS": "500"}  # rich wraps at 80 columns on a pipe; the URL must stay on one line
    env.pop("RAY_ADDRESS", None)  # an embedded Ray of its own, never a cluster the caller points at
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(spec), "--dir", str(tmp_path / "run"),
                             "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = Lines(proc.stdout).wait_for(r"Ray dashboard: (http://127\.0\.0\.1:\d+)", 90).group(1)
        yield url, tmp_path / "run", token
    finally:
        proc.send_signal(signal.SIGINT)  # the CLI stops its trials and its embedded Ray on the way out
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def running_actors(sweep_dir: Path, n: int, timeout_s: float) -> list[str]:
    """The actor names of the first `n` trial_started events in the journal, waiting up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        journal = sweep_dir / "journal.jsonl"
        events = [json.loads(l) for l in journal.read_text().splitlines()] if journal.exists() else []
        names = [e["actor"] for e in events if e["event"] == "trial_started"]
        if len(names) >= n:
            return names[:n]
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} trials started in {timeout_s} s")


class DevTools:
    """The few DevTools-protocol calls this test needs, on one page target."""

    def __init__(self, ws) -> None:
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params):
        """Send one command and return its result (events arriving meanwhile are skipped)."""
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg["result"]

    async def text(self) -> str:
        out = await self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                              returnByValue=True)
        return out["result"].get("value", "")


def start_chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """Start headless Chromium; returns it and its DevTools HTTP endpoint (http://127.0.0.1:PORT)."""
    proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"  # Chromium writes the port it chose here
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError("chromium did not open its DevTools port")
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port_file.read_text().split()[0]}"


async def render_actors_page(devtools_http: str, dashboard: str, token: str, expect: list[str],
                             screenshot: Path, timeout_s: float = 45) -> str:
    """Open the dashboard's Actors page with the session cookie; wait until every name in `expect`
    is rendered (or `timeout_s` passes); save a screenshot; return the page's text."""
    import aiohttp

    with urllib.request.urlopen(devtools_http + "/json/list", timeout=10) as r:
        page = next(t for t in json.load(r) if t["type"] == "page")
    async with aiohttp.ClientSession() as http, http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        cdp = DevTools(ws)
        await cdp.call("Network.enable")
        await cdp.call("Network.setCookie", name="ray-authentication-token", value=token, url=dashboard,
                       httpOnly=True, sameSite="Strict")
        await cdp.call("Page.navigate", url=f"{dashboard}/#/actors")
        deadline, text = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            text = await cdp.text()
            if all(name in text for name in expect):
                break
            await asyncio.sleep(0.5)
        shot = await cdp.call("Page.captureScreenshot", format="png")
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        return text


def test_dashboard_lists_the_running_trial_actors(sweep):
    dashboard, sweep_dir, token = sweep
    actors = running_actors(sweep_dir, 2, timeout_s=60)
    assert all(re.fullmatch(r"trainer-\d+|trial-t[0-9a-f]+", a) for a in actors)  # pooled, or one per trial
    # mixsweep serves the embedded dashboard on loopback only (cli._init_ray: dashboard_host): the printed
    # URL is 127.0.0.1 (the fixture waits for it), and no other address of this machine answers there.
    port = int(dashboard.rsplit(":", 1)[1])
    other = _non_loopback_ipv4()
    assert other is None or not _accepts(other, port), f"the dashboard port {port} is reachable on {other}"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")  # screenshots are test output, never committed
    screenshot = ARTIFACTS / "dashboard_actors.png"
    # Chromium's helper processes may still write to the profile after the browser exits: scratch, not a result.
    with tempfile.TemporaryDirectory(prefix="mixsweep-chromium-", ignore_cleanup_errors=True) as profile:
        browser, devtools = start_chromium(Path(profile))
        try:
            text = asyncio.run(render_actors_page(devtools, dashboard, token, actors, screenshot))
        finally:
            browser.terminate()
            browser.wait(timeout=10)
    missing = [a for a in actors if a not in text]
    assert not missing, f"the dashboard did not render {missing}; screenshot: {screenshot}\npage text:\n{text[:2000]}"
    assert "ALIVE" in text  # the trials are shown running, not just named
    assert screenshot.stat().st_size > 10_000  # a real rendering, not a blank page
