"""Token shards: a domain's tokens as Arrow IPC files, written once and memory-mapped by every trial.

A cache entry is a directory `<shard root>/<domain>-<key>/` holding

    train-00000.arrow ...   training tokens, one record batch of one column `ids` (uint16, or uint32
                            when the vocabulary needs it), at most SHARD_TOKENS tokens per file
    val.arrow               the held-out validation documents (never in a train shard)
    manifest.json           token counts, file names, the tokenizer's identity; written last, so an
                            entry without it is unfinished and is rebuilt

The shard root is a local path or a URI (s3://, gs://, file://, ...; pyarrow filesystems). A trial
opens the files with `pyarrow.memory_map` and takes zero-copy numpy views, so its resident memory
holds only the pages it touches; for a URI each node first copies the entry once into its own local
cache. Handing a trial an entry costs a few hundred bytes (`ShardSet.to_json`), whatever the corpus.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from workers.files import is_uri

# 32M uint16 tokens = 64 MiB per train shard: big enough that a window rarely needs another file,
# small enough that the writer buffers one shard at a time and a URI copy can resume per file.
SHARD_TOKENS = 1 << 25
MANIFEST = "manifest.json"


class ShardMismatch(ValueError):
    """The cached shards were made with another tokenizer than the one asked for."""


@dataclass(frozen=True)
class ShardSet:
    """One domain's cache entry, as plain JSON: what a trial needs to open it anywhere."""

    domain: str
    location: str  # the entry directory: a path or a URI
    train_files: tuple[str, ...]
    val_file: str
    train_tokens: int
    val_tokens: int
    units: int  # holdout units: documents, long ones cut into pieces (workers.data.units)
    val_units: int
    dtype: str
    tokenizer: str  # the tokenizer's identity (content digest), checked when the shards are opened

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "train_files": list(self.train_files)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "ShardSet":
        return cls(**{**raw, "train_files": tuple(raw["train_files"])})


# ----------------------------------------------------------------------------------------- writing


def _write_ids(path: Path, ids: np.ndarray, meta: dict[str, str]) -> None:
    table = pa.table({"ids": pa.array(ids)}).replace_schema_metadata(meta)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(len(ids), 1))  # one batch: one contiguous buffer
    os.replace(tmp, path)


class RawWriter:
    """Pass one: every document's tokens (EOS included) in document order, one record batch per
    chunk handed in, plus the lengths of its holdout units. Memory: one chunk."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype = path, np.dtype(dtype)
        self.schema = pa.schema([("ids", pa.from_numpy_dtype(self.dtype))])
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_file(self._sink, self.schema)
        self.lengths: list[np.ndarray] = []

    def add(self, ids: np.ndarray, lengths: np.ndarray) -> None:
        if len(lengths):
            self._writer.write_batch(pa.record_batch([pa.array(ids.astype(self.dtype, copy=False))], schema=self.schema))
            self.lengths.append(np.asarray(lengths, dtype=np.int64))

    def close(self) -> list[np.ndarray]:
        """Document lengths, one array per record batch written."""
        self._writer.close()
        self._sink.close()
        return self.lengths


def choose_validation(lengths: np.ndarray, val_tokens: int, seed: int) -> np.ndarray:
    """(n_units,) bool: the held-out units (documents, or pieces of long ones). Units are taken in a
    seeded random order until they hold at least `val_tokens` tokens, so the split depends only on
    (seed, unit lengths) and not on how the tokens were computed."""
    is_val = np.zeros(len(lengths), dtype=bool)
    order = np.random.default_rng(seed).permutation(len(lengths))
    enough = int(np.searchsorted(np.cumsum(lengths[order]), val_tokens)) + 1
    is_val[order[:enough]] = True
    return is_val


def split_raw(raw: Path, batch_lengths: list[np.ndarray], is_val: np.ndarray, out_dir: Path,
              meta: dict[str, str]) -> tuple[list[str], int, int]:
    """Pass two: rewrite the raw file as train shards of SHARD_TOKENS and one val file, dropping
    every validation document from training. Returns (train file names, train tokens, val tokens).
    Memory: one raw batch plus one shard being filled."""
    reader = pa.ipc.open_file(pa.memory_map(str(raw), "r"))
    files: list[str] = []
    buf: list[np.ndarray] = []
    buffered = total = 0
    val_parts: list[np.ndarray] = []

    def flush(final: bool) -> None:
        nonlocal buf, buffered
        while buffered >= SHARD_TOKENS or (final and buffered):
            flat = np.concatenate(buf)
            name = f"train-{len(files):05d}.arrow"
            _write_ids(out_dir / name, flat[:SHARD_TOKENS], {**meta, "split": "train"})
            files.append(name)
            rest = flat[SHARD_TOKENS:]
            buf, buffered = ([rest] if len(rest) else []), len(rest)

    doc = 0
    for i, lens in enumerate(batch_lengths):
        ids = reader.get_batch(i).column(0).to_numpy()
        held = np.repeat(is_val[doc: doc + len(lens)], lens)
        doc += len(lens)
        val_parts.append(ids[held])
        train = ids[~held]
        if len(train):
            buf.append(train)
            buffered += len(train)
            total += len(train)
            flush(False)
    flush(True)
    val = np.concatenate(val_parts)
    _write_ids(out_dir / "val.arrow", val, {**meta, "split": "val"})
    return files, total, len(val)


def write_manifest(entry: Path, shards: ShardSet) -> None:
    tmp = entry / f"{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(shards.to_json(), indent=1))
    os.replace(tmp, entry / MANIFEST)


def read_manifest(location: str) -> ShardSet | None:
    """The entry's manifest at a path or URI; None when the entry is missing or unfinished."""
    from workers.files import read_bytes

    blob = read_bytes(f"{location.rstrip('/')}/{MANIFEST}")
    if blob is None:
        return None
    try:
        return ShardSet.from_json(json.loads(blob))
    except (ValueError, TypeError, KeyError):  # a damaged manifest: the entry is unfinished, tokenise again
        return None


def upload(entry: Path, location: str) -> None:
    """Copy a finished local entry to a URI, the manifest last (it marks the entry complete)."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(location)
    filesystem.create_dir(root, recursive=True)
    names = sorted(p.name for p in entry.iterdir() if p.is_file() and ".tmp" not in p.name)
    for name in sorted(names, key=lambda n: n == MANIFEST):
        fs.copy_files(str(entry / name), f"{root}/{name}", destination_filesystem=filesystem)


# ----------------------------------------------------------------------------------------- reading


def local_entry(shards: ShardSet, local_cache: str | Path) -> Path:
    """The entry as a local directory: itself for a path; for a URI, a node-local copy made once
    (each file copied to a temp name and renamed, so a crashed copy is never taken for a whole one)."""
    if not is_uri(shards.location):
        return Path(shards.location)
    from pyarrow import fs

    entry = Path(local_cache).expanduser() / "shards" / shards.location.rstrip("/").rsplit("/", 1)[-1]
    entry.mkdir(parents=True, exist_ok=True)
    filesystem, root = fs.FileSystem.from_uri(shards.location)
    for name in (*shards.train_files, shards.val_file):
        dest = entry / name
        if dest.exists():
            continue
        tmp = entry / f"{name}.tmp{os.getpid()}"
        fs.copy_files(f"{root}/{name}", str(tmp), source_filesystem=filesystem, destination_filesystem=fs.LocalFileSystem())
        os.replace(tmp, dest)
    return entry


def map_ids(path: Path, tokenizer: str, domain: str) -> np.ndarray:
    """A shard's tokens as a read-only numpy view of the memory-mapped file (no copy). Raises
    ShardMismatch when the file was written for another tokenizer."""
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
    except (pa.ArrowException, OSError) as err:
        raise ShardMismatch(f"domain {domain!r}: the token shard {path} is missing or damaged ({type(err).__name__}); "
                            f"delete {path.parent} to tokenise again") from None
    meta = {k.decode(): v.decode() for k, v in (reader.schema.metadata or {}).items()}
    if meta.get("tokenizer") != tokenizer:
        raise ShardMismatch(f"domain {domain!r}: {path} holds tokens of tokenizer {meta.get('tokenizer')!r}, not the "
                            f"spec's {tokenizer!r}; delete {path.parent} to tokenise again, or restore the tokenizer it was made with")
    if reader.num_record_batches == 0:
        return np.zeros(0, dtype=np.uint16)
    return reader.get_batch(0).column(0).to_numpy()  # zero-copy: primitive, no nulls, one buffer


def open_shards(shards: ShardSet, local_cache: str | Path = "~/.cache/mixsweep") -> tuple[list[np.ndarray], np.ndarray]:
    """(train shard views, val view) of one domain, memory-mapped."""
    entry = local_entry(shards, local_cache)
    train = [map_ids(entry / f, shards.tokenizer, shards.domain) for f in shards.train_files]
    return train, map_ids(entry / shards.val_file, shards.tokenizer, shards.domain)
