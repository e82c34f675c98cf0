"""One controller per sweep directory: a lock file with a heartbeat.

The running controller rewrites `<dir>/controller.lock` every few seconds. A second controller refuses
while the heartbeat is fresh; a lock whose heartbeat is older than `stale_s` was left by a controller
that was killed (SIGKILL, lost head node) and is taken over, so resume is never blocked by it; on the
same host a lock whose process is gone is taken over at once.

Exactly one of any number of processes calling `acquire` at once gets the lock (POSIX paths):
- No lock file: the lock is written whole to a private temp file and hard-linked into place;
  link(2) fails when the name exists, so one racer wins and no reader ever sees an empty lock.
- A stale lock: taking it over is a compare-and-swap on its content. Each racer that judged the
  same bytes stale tries to create `controller.lock.takeover-<hash of those bytes>` with O_EXCL; only
  one can. The winner re-reads the lock, and replaces it (rename) only if it still holds those
  bytes; any change in between (another takeover, a live owner's heartbeat) makes it give up.
  A racer that loses is refused like any second controller. A takeover claim left by a racer killed
  inside those few microseconds is itself stale after `stale_s`, and the next generation's claim
  (`...-<hash>.1`) is taken instead.
- The owner's heartbeat checks that the lock is still its own before rewriting it, so a controller
  that was paused past `stale_s` and taken over stops instead of writing over its successor.
On object stores the lock lives in the local mirror and is pushed with the sweep (storage.py): two
heads on different machines are kept apart only as well as the pushed heartbeat is seen, best effort
(docs/resume.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path

LOCK = "controller.lock"


class SweepLocked(RuntimeError):
    """Another live controller owns the sweep directory."""


class SweepLock:
    def __init__(self, sweep_dir: str | Path, stale_s: float = 30.0, beat_s: float = 5.0) -> None:
        self.path = Path(sweep_dir) / LOCK
        self.stale_s, self.beat_s = stale_s, beat_s
        self.token = uuid.uuid4().hex  # who owns the lock: this object, not just this pid
        self._last = 0.0
        self.took_over: dict | None = None

    def acquire(self) -> None:
        """Take the lock, or raise SweepLocked naming the owner while its heartbeat is fresh."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._create():
            return
        raw = self._raw()
        if raw is None and self._create():  # released between our attempt and our read
            return
        owner = _parse(raw or b"")
        if "heartbeat" not in owner:  # empty or torn: judge it by when it was written, not as stale at once
            owner["heartbeat"] = self._mtime()
        if not self._is_stale(owner):
            raise self._locked(owner)
        if not self._take_over(raw or b""):
            raise self._locked(_parse(self._raw() or b""), taking_over=True)
        self.took_over = owner

    def beat(self, force: bool = False) -> None:
        """Refresh the heartbeat (cheap to call every loop turn: writes at most every beat_s). SweepLocked
        if another controller has taken the lock over meanwhile (this one was paused past stale_s)."""
        now = time.time()
        if not force and now - self._last < self.beat_s:
            return
        owner = _parse(self._raw() or b"")
        if owner.get("token") != self.token:
            raise SweepLocked(f"{self.path.parent}: the lock was taken over by pid {owner.get('pid')} on {owner.get('host')} "
                              "while this controller was not beating; stop this one")
        os.replace(self._private(now), self.path)
        self._last = now

    def release(self) -> None:
        if _parse(self._raw() or b"").get("token") == self.token:
            self.path.unlink(missing_ok=True)

    # -------------------------------------------------------------------------------- mechanics

    def _content(self, now: float) -> bytes:
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "heartbeat": now, "token": self.token}).encode()

    def _private(self, now: float) -> Path:
        """The lock's next content, whole, in a file only this process writes."""
        tmp = self.path.with_name(f"{LOCK}.tmp{os.getpid()}-{self.token[:8]}")
        tmp.write_bytes(self._content(now))
        return tmp

    def _create(self) -> bool:
        """Make the lock where there is none: True if this process did (link fails if the name exists)."""
        now = time.time()
        tmp = self._private(now)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: O_EXCL, then the content in one write
            if not _create_exclusive(self.path, tmp.read_bytes()):
                return False
        finally:
            tmp.unlink(missing_ok=True)
        self._last = now
        return True

    def _take_over(self, judged: bytes) -> bool:
        """Replace the lock if it still holds `judged` (the bytes found stale); True if this process did."""
        claim = self._claim(hashlib.sha256(judged).hexdigest()[:16])
        if claim is None:
            return False
        try:
            if self._raw() != judged:  # someone took it over, or the owner beat: it is not stale any more
                return False
            now = time.time()
            os.replace(self._private(now), self.path)
            self._last = now
            return True
        finally:
            claim.unlink(missing_ok=True)

    def _claim(self, version: str) -> Path | None:
        """O_EXCL-create the takeover claim for one version of the lock; None if another racer holds it.
        A claim older than stale_s was left by a racer that died holding it: the next generation's is tried."""
        for generation in range(16):
            claim = self.path.with_name(f"{LOCK}.takeover-{version}" + (f".{generation}" if generation else ""))
            try:
                os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return claim
            except FileExistsError:
                try:
                    if time.time() - claim.stat().st_mtime < self.stale_s:
                        return None
                except FileNotFoundError:  # its holder just finished: this version is settled
                    return None
        return None

    def _is_stale(self, owner: dict) -> bool:
        age = time.time() - _heartbeat(owner)
        return age >= self.stale_s or _dead_here(owner)

    def _locked(self, owner: dict, taking_over: bool = False) -> SweepLocked:
        age = time.time() - _heartbeat(owner)
        what = "is taking over" if taking_over else "is being run by"
        return SweepLocked(
            f"{self.path.parent} {what} pid {owner.get('pid')} on {owner.get('host')} "
            f"(heartbeat {max(age, 0):.0f} s ago); stop that controller first, or wait {self.stale_s:.0f} s if it was killed")

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _raw(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None


def _create_exclusive(path: Path, content: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    return True


def _parse(raw: bytes) -> dict:
    try:
        owner = json.loads(raw or b"{}")
    except ValueError:
        return {}  # torn by a crash, or (without hard links) caught between create and write: see acquire
    return owner if isinstance(owner, dict) else {}


def _heartbeat(owner: dict) -> float:
    beat = owner.get("heartbeat", 0.0)
    return float(beat) if isinstance(beat, (int, float)) and not isinstance(beat, bool) else 0.0


def _dead_here(owner: dict) -> bool:
    """The owner ran on this host and its process is gone: no need to wait for the heartbeat to age."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False
