"""One controller per sweep directory: a lock file with a heartbeat.

The running controller rewrites `<dir>/controller.lock` every few seconds. A second controller refuses
while the heartbeat is fresh; a lock whose heartbeat is older than `stale_s` was left by a controller
that was killed (SIGKILL, lost head node) and is taken over, so resume is never blocked by it; on the
same host a lock whose process is gone is taken over at once.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

LOCK = "controller.lock"


class SweepLocked(RuntimeError):
    """Another live controller owns the sweep directory."""


class SweepLock:
    def __init__(self, sweep_dir: str | Path, stale_s: float = 30.0, beat_s: float = 5.0) -> None:
        self.path = Path(sweep_dir) / LOCK
        self.stale_s, self.beat_s = stale_s, beat_s
        self._last = 0.0
        self.took_over: dict | None = None

    def acquire(self) -> None:
        """Take the lock, or raise SweepLocked naming the owner while its heartbeat is fresh."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
        except FileExistsError:
            owner = self._read()
            age = time.time() - owner.get("heartbeat", 0.0)
            if age < self.stale_s and not _dead_here(owner):
                raise SweepLocked(
                    f"{self.path.parent} is being run by pid {owner.get('pid')} on {owner.get('host')} "
                    f"(heartbeat {age:.0f} s ago); stop that controller first, or wait {self.stale_s:.0f} s if it was killed"
                ) from None
            self.took_over = owner
        self.beat(force=True)

    def beat(self, force: bool = False) -> None:
        """Refresh the heartbeat (cheap to call every loop turn: writes at most every beat_s)."""
        now = time.time()
        if not force and now - self._last < self.beat_s:
            return
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "heartbeat": now}))
        os.replace(tmp, self.path)
        self._last = now

    def release(self) -> None:
        if self._read().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}  # a lock torn by a crash is as good as stale


def _dead_here(owner: dict) -> bool:
    """The owner ran on this host and its process is gone: no need to wait for the heartbeat to age."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
