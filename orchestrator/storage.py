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


class StorageError(OSError):
    """A sweep or shard location that cannot be used: unknown scheme, or storage that cannot be reached."""


def _fs(uri: str):
    """(filesystem, path) of a URI; StorageError naming the URI and the fix when pyarrow has no
    filesystem for its scheme or cannot set one up (e.g. bad credentials or options in the URI)."""
    from pyarrow import ArrowException, fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ArrowException, OSError, ValueError) as err:
        scheme = str(uri).split("://", 1)[0]
        raise StorageError(f"{uri}: cannot use this location ({_first_line(err)}); give a local path or a "
                           f"file://, s3://, gs:// or hdfs:// URI (scheme {scheme!r})") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


class _Reaching:
    """Turns an OSError from remote storage (network, permissions, missing bucket) into StorageError,
    one line naming the location; FileNotFoundError passes through (callers treat it as absent)."""

    def __init__(self, location: str) -> None:
        self.location = location

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if err is not None and isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
            raise StorageError(f"{self.location}: storage cannot be reached ({_first_line(err)}); check the URI, "
                               "the credentials and the network") from None
        return False


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
        with _Reaching(self.location):
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
        with _Reaching(self.location):
            return filesystem.get_file_info(f"{root.rstrip('/')}/{name}").type == fs.FileType.File

    def results(self) -> list[str]:
        """`trials/<id>/result.json` of every finished trial, as paths relative to the sweep directory."""
        if not self.remote:
            return [p.relative_to(self.local).as_posix() for p in sorted((self.local / "trials").glob("*/result.json"))]
        from pyarrow import fs

        filesystem, root = _fs(self.location)
        base = f"{root.rstrip('/')}/trials"
        with _Reaching(self.location):
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
        with _Reaching(self.location):
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


def read_bytes(location: str) -> bytes | None:
    """A file's bytes from a path or URI; None if it does not exist."""
    if not is_uri(location):
        p = Path(location)
        return p.read_bytes() if p.exists() else None
    filesystem, path = _fs(location)
    try:
        with _Reaching(location), filesystem.open_input_stream(path) as src:
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
    with _Reaching(location):
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
