"""Sweep directories on shared storage: local paths, or URIs through pyarrow filesystems (s3://, gs://,
file://, hdfs://), so a restarted head on another machine resumes the same sweep.

Object stores cannot append or rename, so the controller works in a local mirror of the URI and pushes
what changed: result files first, the journal last, right after every trial finishes or fails and at
most every few seconds otherwise. A crash therefore loses at most the last few seconds of progress
events, never a finished trial (its result is pushed before the journal line that names it). `pull`
brings the directory back for resume, status and report.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

# Reading and writing one file at a path or URI is the workers' too (checkpoints, expert
# log-probabilities): it lives with them, and the sweep directory builds on it.
from workers.files import Reaching, StorageError, is_uri, read_arrays, read_bytes, write_arrays, write_bytes
from workers.files import filesystem as _fs

__all__ = ["SweepStore", "StorageError", "is_uri", "read_arrays", "read_bytes", "write_arrays", "write_bytes"]


class SweepStore:
    """Where a sweep directory lives, and the local directory the controller writes."""

    def __init__(self, location: str | Path, cache_dir: str | Path = "~/.cache/mixsweep", push_every_s: float = 5.0) -> None:
        self.location = str(location)
        self.remote = is_uri(location)
        if self.remote:
            digest = hashlib.sha256(self.location.encode()).hexdigest()[:16]
            self.local = Path(cache_dir).expanduser() / "sweeps" / digest
        else:
            self.local = Path(location)
        self.push_every_s = push_every_s
        self._pushed: dict[str, tuple[int, int]] = {}
        self._last_push = 0.0

    def pull(self) -> Path:
        """Bring the remote directory into the local mirror (no-op for local paths); returns it."""
        if not self.remote:
            return self.local
        from pyarrow import fs

        filesystem, root = _fs(self.location)
        self.local.mkdir(parents=True, exist_ok=True)
        with Reaching(self.location):
            self._pull_files(filesystem, root)
        return self.local

    def _pull_files(self, filesystem, root: str) -> None:
        from pyarrow import fs

        infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
        for info in infos:
            if info.type != fs.FileType.File:
                continue
            rel = info.path[len(root.rstrip("/")) + 1:]
            dest = self.local / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with filesystem.open_input_stream(info.path) as src:
                dest.write_bytes(src.read())
            self._pushed[rel] = (dest.stat().st_size, dest.stat().st_mtime_ns)

    def exists(self, name: str) -> bool:
        if not self.remote:
            return (self.local / name).exists()
        from pyarrow import fs

        filesystem, root = _fs(self.location)
        with Reaching(self.location):
            return filesystem.get_file_info(f"{root.rstrip('/')}/{name}").type == fs.FileType.File

    def results(self) -> list[str]:
        """`trials/<id>/result.json` of every finished trial, as paths relative to the sweep directory."""
        if not self.remote:
            return [p.relative_to(self.local).as_posix() for p in sorted((self.local / "trials").glob("*/result.json"))]
        from pyarrow import fs

        filesystem, root = _fs(self.location)
        base = f"{root.rstrip('/')}/trials"
        with Reaching(self.location):
            infos = filesystem.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
        names = [i.path[len(root.rstrip("/")) + 1:] for i in infos if i.type == fs.FileType.File]
        return sorted(n for n in names if n.count("/") == 2 and n.endswith("/result.json"))

    def push(self, force: bool = False) -> int:
        """Upload files changed since the last push, the journal last; returns how many were sent."""
        if not self.remote or (not force and time.time() - self._last_push < self.push_every_s):
            return 0
        filesystem, root = _fs(self.location)
        changed = []
        for path in sorted(p for p in self.local.rglob("*") if p.is_file() and ".tmp" not in p.name):
            rel = path.relative_to(self.local).as_posix()
            stamp = (path.stat().st_size, path.stat().st_mtime_ns)
            if self._pushed.get(rel) != stamp:  # the lock too: a head elsewhere must see the heartbeat
                changed.append((rel, path, stamp))
        changed.sort(key=lambda c: c[0] == "journal.jsonl")  # the journal names results: it goes last
        with Reaching(self.location):
            self._upload(filesystem, root, changed)
        self._last_push = time.time()
        return len(changed)

    def _upload(self, filesystem, root: str, changed: list) -> None:
        for rel, path, stamp in changed:
            dest = f"{root.rstrip('/')}/{rel}"
            filesystem.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            with filesystem.open_output_stream(dest) as out:
                out.write(path.read_bytes())
            self._pushed[rel] = stamp

    def remove(self, name: str) -> None:
        """Delete one file of the remote directory (the lock, when a controller lets go)."""
        if self.remote:
            filesystem, root = _fs(self.location)
            try:
                filesystem.delete_file(f"{root.rstrip('/')}/{name}")
            except FileNotFoundError:
                pass
