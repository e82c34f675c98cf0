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
import os
import re
import time
from pathlib import Path

_URI = re.compile(r"^[a-z][a-z0-9+.-]*://")


def is_uri(location: str | Path) -> bool:
    return bool(_URI.match(str(location)))


def _fs(uri: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)


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
        return self.local

    def exists(self, name: str) -> bool:
        if not self.remote:
            return (self.local / name).exists()
        from pyarrow import fs

        filesystem, root = _fs(self.location)
        return filesystem.get_file_info(f"{root.rstrip('/')}/{name}").type == fs.FileType.File

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
        for rel, path, stamp in changed:
            dest = f"{root.rstrip('/')}/{rel}"
            filesystem.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            with filesystem.open_output_stream(dest) as out:
                out.write(path.read_bytes())
            self._pushed[rel] = stamp
        self._last_push = time.time()
        return len(changed)

    def remove(self, name: str) -> None:
        """Delete one file of the remote directory (the lock, when a controller lets go)."""
        if self.remote:
            filesystem, root = _fs(self.location)
            try:
                filesystem.delete_file(f"{root.rstrip('/')}/{name}")
            except FileNotFoundError:
                pass


def read_bytes(location: str) -> bytes | None:
    """A file's bytes from a path or URI; None if it does not exist."""
    if not is_uri(location):
        p = Path(location)
        return p.read_bytes() if p.exists() else None
    filesystem, path = _fs(location)
    try:
        with filesystem.open_input_stream(path) as src:
            return src.read()
    except FileNotFoundError:
        return None


def write_bytes(location: str, data: bytes) -> None:
    """Write a whole file to a path or URI, never leaving half of it (temp + rename where possible)."""
    if not is_uri(location):
        p = Path(location)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(p)
        return
    filesystem, path = _fs(location)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as out:  # object stores make a whole object visible at close
        out.write(data)


def write_arrays(location: str, arrays: dict) -> None:
    """Named numpy arrays as one compressed .npz at a path or URI."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes(location, buf.getvalue())


def read_arrays(location: str) -> dict:
    """The arrays of an .npz at a path or URI; plain arrays only, nothing is unpickled."""
    import io

    import numpy as np

    blob = read_bytes(location)
    if blob is None:
        raise FileNotFoundError(location)
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
