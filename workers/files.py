"""Files at a path or a URI: local paths, or pyarrow filesystems (s3://, gs://, file://, hdfs://).

Trials read and write where every node reaches (checkpoints, expert log-probabilities, token shards),
and the head keeps sweep directories the same way (orchestrator/storage.py builds on this). A whole
file is written at once: to a temp name then renamed locally, and as one object on an object store
(which makes it visible only at close), so a reader never sees half of one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_URI = re.compile(r"^[a-z][a-z0-9+.-]*://")


def is_uri(location: str | Path) -> bool:
    return bool(_URI.match(str(location)))


class StorageError(OSError):
    """A location that cannot be used: unknown scheme, or storage that cannot be reached."""


def filesystem(uri: str):
    """(pyarrow filesystem, path) of a URI; StorageError naming the URI and the fix when pyarrow has no
    filesystem for its scheme or cannot set one up (e.g. bad credentials or options in the URI)."""
    from pyarrow import ArrowException, fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ArrowException, OSError, ValueError) as err:
        scheme = str(uri).split("://", 1)[0]
        raise StorageError(f"{uri}: cannot use this location ({first_line(err)}); give a local path or a "
                           f"file://, s3://, gs:// or hdfs:// URI (scheme {scheme!r})") from None


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


class Reaching:
    """Turns an OSError from remote storage (network, permissions, missing bucket) into StorageError,
    one line naming the location; FileNotFoundError passes through (callers treat it as absent)."""

    def __init__(self, location: str) -> None:
        self.location = location

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if err is not None and isinstance(err, OSError) and not isinstance(err, FileNotFoundError):
            raise StorageError(f"{self.location}: storage cannot be reached ({first_line(err)}); check the URI, "
                               "the credentials and the network") from None
        return False


def read_bytes(location: str) -> bytes | None:
    """A file's bytes from a path or URI; None if it does not exist."""
    if not is_uri(location):
        p = Path(location)
        return p.read_bytes() if p.exists() else None
    fsys, path = filesystem(location)
    try:
        with Reaching(location), fsys.open_input_stream(path) as src:
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
    fsys, path = filesystem(location)
    with Reaching(location):
        fsys.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fsys.open_output_stream(path) as out:  # object stores make a whole object visible at close
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
