"""Domain data: read text, tokenise once into a content-addressed cache of Arrow token shards, sample
mixtures of it.

`prepare_domains` turns each domain's source (text/JSONL/Parquet files, or a Hugging Face dataset
saved on disk or built from local files) into token shards (workers/shards.py): documents joined by
the end-of-document token, keyed by a hash of the source files' contents and the tokenizer, under
`data.shard_dir` (a path or URI every node reaches); a second sweep over the same data tokenises
nothing. Large domains (`data.ray_data_min_bytes`) are tokenised by Ray Data tasks across the
cluster, small ones in this process; both write the same shards. Whole documents, chosen from the
seed, are held out for validation and never trained on. Trials memory-map the shards
(`open_domains`): nothing is copied through the object store.

`MixtureSampler` draws training sequences from the domains in the mixture's proportions with an exact
token budget: the number of sequences per domain is fixed up front (largest remainder), then shuffled.
"""

from __future__ import annotations

import functools
import glob
import gzip
import hashlib
import json
import os
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from workers.files import is_uri
from workers.protocol import config_hash
from workers.shards import RawWriter, ShardMismatch, ShardSet, choose_validation, open_shards, read_manifest, split_raw, upload, write_manifest


class DataError(ValueError):
    """One-line, user-facing data problem naming the domain and file."""


# ------------------------------------------------------------------------------------------ request


@dataclass(frozen=True)
class DomainSource:
    """Where one domain's text comes from and how it is read (a spec's `domains.<name>`, as plain data).

    One of `demo` (a built-in corpus) or `path` (files, globs, or a saved dataset directory)."""

    demo: str | None = None
    path: str | list[str] | None = None
    format: str = "auto"  # auto | text | jsonl | parquet | hf_disk | hf_files
    text_column: str = "text"
    split: str = "train"  # hf_disk / hf_files: the split to read
    max_bytes: int | None = None  # read at most this many bytes of UTF-8 text

    def paths(self) -> list[str]:
        if self.path is None:
            return []
        return [self.path] if isinstance(self.path, str) else list(self.path)

    def reading(self) -> dict[str, Any]:
        """How the files are read: every field but where they are (part of the cache key)."""
        return {k: v for k, v in asdict(self).items() if k != "path"}


@dataclass(frozen=True)
class TokenizerSource:
    """`bytes`, or a local Hugging Face tokenizer (`huggingface` and the path of its tokenizer.json or directory)."""

    kind: str = "bytes"
    path: str | None = None


@dataclass(frozen=True)
class DataRequest:
    """What preparing a sweep's data needs: the domains' sources, the tokenizer, where the cache is, how
    much to hold out. The orchestrator builds it from the spec (orchestrator/requests.py)."""

    domains: dict[str, DomainSource]
    eval_domains: dict[str, DomainSource] = field(default_factory=dict)  # held out: evaluated, never trained on
    tokenizer: TokenizerSource = TokenizerSource()
    cache_dir: str = "~/.cache/mixsweep"  # demo corpora, digests and node-local shard copies (a local path)
    shard_dir: str | None = None  # where token shards are kept: a path or URI every node reaches
    ray_data_min_bytes: int = 256 << 20  # domains this large are tokenised by Ray Data tasks
    val_tokens: int = 16_384  # held-out validation tokens per domain
    seed: int = 0  # chooses the held-out documents

    def shard_root(self) -> str:
        root = self.shard_dir or f"{self.cache_dir.rstrip('/')}/shards"
        return root if is_uri(root) else str(Path(root).expanduser())


# ---------------------------------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, plus 256 as end-of-document. No vocabulary to ship or train."""

    vocab_size = 257
    eos_id = 256
    name = "bytes"
    identity = "bytes-v1"  # stored with the shards: ids from another tokenizer are refused

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.uint16) for t in texts]


class HFTokenizer:
    """A local Hugging Face tokenizer (tokenizer.json, or a directory from save_pretrained)."""

    def __init__(self, path: str) -> None:
        from tokenizers import Tokenizer

        p = Path(path).expanduser()
        file = p / "tokenizer.json" if p.is_dir() else p
        if not file.is_file():
            raise DataError(f"tokenizer: no tokenizer.json at {p}; save one with tokenizer.save_pretrained(DIR)")
        self._tok = Tokenizer.from_file(str(file))
        self.vocab_size = self._tok.get_vocab_size()
        eos = next((t for t in ("<|endoftext|>", "</s>", "<eos>", "[SEP]") if self._tok.token_to_id(t) is not None), None)
        self.eos_id = self._tok.token_to_id(eos) if eos else self.vocab_size
        self.vocab_size = max(self.vocab_size, self.eos_id + 1)
        self.name = f"hf:{file.resolve()}:{os.stat(file).st_size}"
        # What the ids mean: the tokenizer file's content, whatever its path (stored with the shards).
        self.identity = "hf-sha256:" + hashlib.sha256(file.read_bytes()).hexdigest()[:16]

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        dtype = np.uint16 if self.vocab_size <= 65536 else np.uint32
        return [np.asarray(e.ids, dtype=dtype) for e in self._tok.encode_batch(texts)]


def load_tokenizer(source: TokenizerSource) -> ByteTokenizer | HFTokenizer:
    """The tokenizer a `TokenizerSource` (or anything with its `kind` and `path`) names."""
    return ByteTokenizer() if source.kind == "bytes" else HFTokenizer(source.path)


# ------------------------------------------------------------------------------------------ reading

_TEXT_EXT = {".txt", ".md", ".rst", ".py", ".go", ".c", ".h", ".tex", ".html", ".json"}


def source_files(name: str, patterns: list[str]) -> list[Path]:
    """Expand the domain's paths/globs; raises DataError if nothing matches."""
    files: list[Path] = []
    for pat in patterns:
        expanded = os.path.expanduser(pat)
        matches = sorted(glob.glob(expanded, recursive=True)) if glob.has_magic(expanded) else [expanded]
        for m in matches:
            p = Path(m)
            if p.is_dir():
                files.extend(sorted(f for f in p.rglob("*") if f.is_file()))
            elif p.is_file():
                files.append(p)
    if not files:
        raise DataError(f"domain {name!r}: no file matches {patterns}; fix `domains.{name}.path`")
    return files


def _format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffixes = "".join(path.suffixes[-2:])
    if path.suffix == ".parquet":
        return "parquet"
    if path.suffix == ".jsonl" or suffixes == ".jsonl.gz":
        return "jsonl"
    return "text"


def read_documents(name: str, path: Path, fmt: str, text_column: str) -> Iterator[str]:
    """Documents of one file. Undecodable or corrupt files, rows that are not objects, missing columns and
    text fields that are not strings raise DataError naming the domain, the file (and line) and the fix."""
    kind = _format(path, fmt)
    if kind == "text":
        try:
            yield path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"domain {name!r}: {path} is not UTF-8 text; convert it or remove it from the domain") from None
    elif kind == "jsonl":
        yield from _jsonl_documents(name, path, text_column)
    else:
        yield from _parquet_documents(name, path, text_column)


# What a corrupt or truncated gzip stream raises while it is read.
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def _jsonl_documents(name: str, path: Path, text_column: str) -> Iterator[str]:
    # Read as bytes and decode line by line: a text-mode reader decodes in chunks, so its error could
    # not name the line.
    opener = gzip.open if path.suffix == ".gz" else open
    i = 0
    try:
        with opener(path, "rb") as fh:
            for i, raw in enumerate(fh, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(f"domain {name!r}: {path} line {i} is not UTF-8 text; convert the file to UTF-8") from None
                if line.strip():
                    yield _jsonl_text(name, path, i, line, text_column)
    except _GZIP_ERRORS as err:
        raise DataError(f"domain {name!r}: {path} is not a valid gzip file ({type(err).__name__} after line {i}); "
                        "re-compress it or remove it from the domain") from None


def _jsonl_text(name: str, path: Path, i: int, line: str, text_column: str) -> str:
    """The text field of one JSONL line; a string, never the text of a null or a number."""
    try:
        row = json.loads(line)
    except ValueError:
        raise DataError(f"domain {name!r}: {path} line {i} is not JSON; fix the file") from None
    if not isinstance(row, dict):
        kind = {str: "string", list: "array", bool: "boolean", int: "number", float: "number"}.get(type(row), "null")
        raise DataError(f"domain {name!r}: {path} line {i} is a JSON {kind}, not an object; "
                        f"write one object per line, e.g. {{\"{text_column}\": \"...\"}}")
    if text_column not in row:
        raise DataError(f"domain {name!r}: {path} line {i} has no {text_column!r} field; set `domains.{name}.text_column`")
    text = row[text_column]
    if not isinstance(text, str):  # str(None) would train on the word "None"
        shown = "null" if text is None else type(text).__name__
        raise DataError(f"domain {name!r}: {path} line {i}: {text_column!r} is {shown}, not a string; "
                        f"fix or drop that row, or set `domains.{name}.text_column`")
    return text


def _parquet_documents(name: str, path: Path, text_column: str) -> Iterator[str]:
    """Text of a Parquet column (nulls skipped: a missing document, not a text); the column must hold strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"domain {name!r}: {path} is not a readable Parquet file ({type(err).__name__}); "
                        "rewrite it or remove it from the domain") from None
    if text_column not in schema.names:
        raise DataError(f"domain {name!r}: {path} has no column {text_column!r} (has {schema.names}); set `domains.{name}.text_column`")
    column_type = schema.field(text_column).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise DataError(f"domain {name!r}: {path} column {text_column!r} holds {column_type}, not strings; "
                        f"point `domains.{name}.text_column` at the text column")
    try:
        for batch in pq.ParquetFile(path).iter_batches(columns=[text_column], batch_size=1024):
            yield from (t for t in batch.column(0).to_pylist() if t is not None)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"domain {name!r}: {path} is a damaged Parquet file ({type(err).__name__}); "
                        "rewrite it or remove it from the domain") from None


# -------------------------------------------------------------------------------------- preparation


@dataclass(frozen=True)
class DomainTokens:
    """A domain's training shards and held-out validation tokens (memory-mapped 1-D integer arrays)."""

    train: list[np.ndarray]
    val: np.ndarray

    @property
    def train_tokens(self) -> int:
        return sum(len(s) for s in self.train)


def _domain_sources(name: str, dspec, cache_dir: Path) -> list[Path]:
    if dspec.demo is not None:
        from workers.corpus import CorpusError, ensure_demo_domain

        try:
            return [ensure_demo_domain(dspec.demo, cache_dir / "corpus", **({"max_bytes": dspec.max_bytes} if dspec.max_bytes else {}))]
        except CorpusError as err:
            raise DataError(f"domain {name!r}: {err}") from None
    if dspec.format == "hf_disk":
        p = Path(os.path.expanduser(dspec.paths()[0]))
        if not (p / "dataset_info.json").exists() and not (p / "dataset_dict.json").exists():
            raise DataError(f"domain {name!r}: {p} is not a dataset saved with `save_to_disk`; fix `domains.{name}.path` or its `format`")
        return sorted(f for f in p.rglob("*") if f.is_file())
    return source_files(name, dspec.paths())


def _hf_dataset(name: str, dspec, files: list[Path], cache_dir: Path):
    """The domain as a `datasets.Dataset` (no hub: a saved dataset, or local files through a builder)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # never reach for the hub at run time
    import datasets

    where = ", ".join(map(str, files[:3]))
    try:
        if dspec.format == "hf_disk":
            ds = datasets.load_from_disk(os.path.expanduser(dspec.paths()[0]))
        else:
            builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}.get(files[0].suffix, "text")
            ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], cache_dir=str(cache_dir / "hf"))
    except Exception as err:  # datasets raises many kinds; the message is what the user needs
        raise DataError(f"domain {name!r}: {where} could not be read by `datasets` ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200] if str(err) else ''}); fix the files or `domains.{name}.format`") from None
    if isinstance(ds, datasets.DatasetDict):
        if dspec.split not in ds:
            raise DataError(f"domain {name!r}: {where} has no split {dspec.split!r} (has {list(ds)}); set `domains.{name}.split`")
        ds = ds[dspec.split]
    if dspec.text_column not in ds.column_names:
        raise DataError(f"domain {name!r}: {where} has no column {dspec.text_column!r} (has {ds.column_names}); "
                        f"set `domains.{name}.text_column`")
    return ds


def _documents(name: str, dspec, files: list[Path], cache_dir: Path) -> Iterator[str]:
    """The domain's non-empty documents in a fixed order, cut at `max_bytes` of UTF-8 in total."""
    if dspec.format in ("hf_disk", "hf_files"):
        ds = _hf_dataset(name, dspec, files, cache_dir)
        stream = (str(t) for batch in ds.select_columns([dspec.text_column]).iter(batch_size=1024)
                  for t in batch[dspec.text_column] if t is not None)
    else:
        fmt = "jsonl" if dspec.demo is not None else dspec.format
        stream = (doc for f in files for doc in read_documents(name, f, fmt, dspec.text_column))
    budget = dspec.max_bytes or (1 << 62)
    for doc in stream:
        if not doc.strip():
            continue
        raw = doc.encode("utf-8")[:budget]
        yield raw.decode("utf-8", errors="ignore")
        budget -= len(raw)
        if budget <= 0:
            return


# The unit held out for validation: a document, or a piece of HOLDOUT_UNIT tokens of a longer one
# (a domain that is one long text file, a book, still gets a validation split drawn from all of it).
HOLDOUT_UNIT = 1024


def units(doc_lengths: np.ndarray) -> np.ndarray:
    """Lengths of the holdout units of documents of these lengths (EOS included), in order."""
    whole, rest = np.divmod(np.asarray(doc_lengths, dtype=np.int64), HOLDOUT_UNIT)
    per_doc = whole + (rest > 0)
    out = np.full(int(per_doc.sum()), HOLDOUT_UNIT, dtype=np.int64)
    last = np.cumsum(per_doc) - 1
    out[last[rest > 0]] = rest[rest > 0]
    return out


def _encode(tokenizer, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Flat token ids of docs, each followed by the end-of-document token, and the lengths of their
    holdout units (`units`)."""
    encoded = tokenizer.encode(docs)
    dtype = encoded[0].dtype if encoded else np.uint16
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    ids = np.concatenate([part for e in encoded for part in (e, eos)]) if encoded else np.zeros(0, dtype)
    return ids, units(np.fromiter((len(e) + 1 for e in encoded), dtype=np.int64, count=len(encoded)))


def _tokenise_in_process(name: str, dspec, files: list[Path], cache_dir: Path, tokenizer, writer) -> None:
    batch: list[str] = []
    for doc in _documents(name, dspec, files, cache_dir):
        batch.append(doc)
        if len(batch) == 512:
            writer.add(*_encode(tokenizer, batch))
            batch = []
    if batch:
        writer.add(*_encode(tokenizer, batch))


@functools.lru_cache(maxsize=4)
def _worker_tokenizer(kind: str, path: str | None):
    return load_tokenizer(TokenizerSource(kind, path))


def _ray_read_file(row: dict, name: str, fmt: str, text_column: str) -> list[dict]:
    return [{"text": d} for d in read_documents(name, Path(row["file"]), fmt, text_column)]


def _ray_tokenise(batch, column: str, kind: str, path: str | None):
    import pyarrow as pa

    tok = _worker_tokenizer(kind, path)
    docs = [str(t) for t in batch.column(column).to_pylist() if t is not None and str(t).strip()]
    encoded = tok.encode(docs)
    eos = np.array([tok.eos_id], dtype=encoded[0].dtype if encoded else np.uint16)
    return pa.table({"ids": pa.array([np.concatenate([e, eos]) for e in encoded],
                                     type=pa.list_(pa.from_numpy_dtype(eos.dtype)))})


def _tokenise_with_ray(name: str, dspec, files: list[Path], cache_dir: Path, tok_spec, writer) -> None:
    """The same documents and ids as `_tokenise_in_process`, tokenised by Ray Data tasks across the
    cluster; blocks come back in order (preserve_order) and are written by this process one at a time."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    if dspec.format in ("hf_disk", "hf_files"):
        ds = ray.data.from_huggingface(_hf_dataset(name, dspec, files, cache_dir).select_columns([dspec.text_column]))
        column = dspec.text_column
    else:
        ds = ray.data.from_items([{"file": str(f)} for f in files]).flat_map(
            _ray_read_file, fn_kwargs={"name": name, "fmt": dspec.format, "text_column": dspec.text_column})
        column = "text"
    ds = ds.map_batches(_ray_tokenise, batch_format="pyarrow", batch_size=512,
                        fn_kwargs={"column": column, "kind": tok_spec.kind, "path": tok_spec.path})
    try:
        for block in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            col = block.column("ids").combine_chunks()
            if len(col):
                writer.add(col.values.to_numpy(zero_copy_only=False), units(np.diff(col.offsets.to_numpy())))
    except Exception as err:  # a DataError raised in a Ray task arrives wrapped; keep its one line
        found = re.search(r"(domain '[^']*': [^\n]*)", str(err))
        if found:
            raise DataError(found.group(1)) from None
        raise


def _file_digest(path: Path, cache_dir: Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) so an unchanged corpus is read once."""
    st = path.stat()
    memo = cache_dir / "digests" / config_hash(str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo.exists():
        return memo.read_text()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(h.hexdigest())
    return h.hexdigest()


def prepare_domain(name: str, dspec: DomainSource, request: DataRequest, tokenizer, log=print,
                   section: str = "domains") -> ShardSet:
    """The domain's cache entry, tokenised now if no finished entry has its key.

    The key hashes the source files' contents (not their names), how they are read, the tokenizer's
    location, the validation size and the seed: the same corpus copied elsewhere hits the same entry.
    """
    cache_dir = Path(request.cache_dir).expanduser()
    files = _domain_sources(name, dspec, cache_dir)
    reading = dspec.reading()
    if dspec.format == "hf_disk":  # file names inside a saved dataset are part of its layout
        fingerprint = sorted((str(f.relative_to(Path(dspec.paths()[0]).expanduser())), _file_digest(f, cache_dir)) for f in files)
    else:
        fingerprint = [_file_digest(f, cache_dir) for f in files]
    key = config_hash("shards-v1", fingerprint, reading, asdict(request.tokenizer), request.val_tokens, request.seed)
    location = f"{request.shard_root().rstrip('/')}/{name}-{key}"
    found = read_manifest(location)
    if found is not None:
        if found.tokenizer != tokenizer.identity:
            raise DataError(f"domain {name!r}: the cached shards {location} were made with tokenizer {found.tokenizer}, "
                            f"but `tokenizer` is now {tokenizer.identity}; restore that tokenizer, or delete {location} to tokenise again")
        return found
    entry = Path(location) if not is_uri(location) else cache_dir / "shards" / f"{name}-{key}"
    entry.mkdir(parents=True, exist_ok=True)
    raw = entry / f"raw.arrow.tmp{os.getpid()}"
    writer = RawWriter(raw, np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32)
    size = sum(f.stat().st_size for f in files)
    try:
        if size >= request.ray_data_min_bytes and dspec.max_bytes is None and dspec.demo is None:
            log(f"tokenising domain {name} with Ray Data ({size:,} bytes)")
            _tokenise_with_ray(name, dspec, files, cache_dir, request.tokenizer, writer)
        else:
            _tokenise_in_process(name, dspec, files, cache_dir, tokenizer, writer)
        batch_lengths = writer.close()
        lengths = np.concatenate(batch_lengths) if batch_lengths else np.zeros(0, dtype=np.int64)
        where = ", ".join(map(str, files[:3])) + (f" (+{len(files) - 3} more)" if len(files) > 3 else "")
        if not len(lengths):
            raise DataError(f"domain {name!r}: {where} hold no text; point `{section}.{name}` at non-empty files")
        val_tokens = request.val_tokens
        if lengths.sum() - lengths.max() < val_tokens:  # the split needs whole units on both sides
            raise DataError(f"domain {name!r}: {where} hold {int(lengths.sum()):,} tokens, too few to "
                            f"hold out {val_tokens:,} validation tokens and still train; add data or lower `proxy.val_tokens_per_domain`")
        is_val = choose_validation(lengths, val_tokens, request.seed)
        meta = {"tokenizer": tokenizer.identity, "domain": name}
        train_files, n_train, n_val = split_raw(raw, batch_lengths, is_val, entry, meta)
    finally:
        raw.unlink(missing_ok=True)
    shards = ShardSet(domain=name, location=location, train_files=tuple(train_files), val_file="val.arrow",
                      train_tokens=n_train, val_tokens=n_val, units=len(lengths), val_units=int(is_val.sum()),
                      dtype=str(writer.dtype), tokenizer=tokenizer.identity)
    write_manifest(entry, shards)
    if is_uri(location):
        upload(entry, location)
    log(f"tokenised domain {name}: {n_train:,} training + {n_val:,} validation tokens -> {location}")
    return shards


def prepare_domains(request: DataRequest, seq_len: int, log=print) -> tuple[dict[str, ShardSet], int]:
    """Tokenise (or find in the cache) every domain; returns ({domain: its shards}, vocab size).

    Raises DataError before any training when a domain has no data, cannot be read, was cached with
    another tokenizer, or is too small to hold out its validation split and train on `seq_len` windows.
    """
    tokenizer = load_tokenizer(request.tokenizer)
    out: dict[str, ShardSet] = {}
    for name, dspec in request.domains.items():
        shards = prepare_domain(name, dspec, request, tokenizer, log)
        need = 4 * (seq_len + 1)
        if shards.train_tokens < need:
            raise DataError(f"domain {name!r}: {shards.train_tokens:,} training tokens after holding out "
                            f"{shards.val_tokens:,} for validation, fewer than the {need:,} of a few training sequences; "
                            f"add data or lower `proxy.val_tokens_per_domain`")
        out[name] = shards
    return out, tokenizer.vocab_size


def prepare_eval_domains(request: DataRequest, log=print) -> dict[str, ShardSet]:
    """Tokenise (or find) the held-out `eval_domains` sets. They are cached like domains; trials read
    only their validation split (`proxy.val_tokens_per_domain` tokens, whole documents), so a set
    evaluates the same tokens in every trial and sweep."""
    if not request.eval_domains:
        return {}
    tokenizer = load_tokenizer(request.tokenizer)
    return {name: prepare_domain(name, dspec, request, tokenizer, log, section="eval_domains")
            for name, dspec in request.eval_domains.items()}


def open_domains(data: Mapping[str, Any], section: str = "domains") -> dict[str, DomainTokens]:
    """What a trial reads: every domain's shards memory-mapped, from the payload `data_payload` built
    (`section` "eval_domains": the held-out sets). Raises DataError when a shard was written for
    another tokenizer than the sweep's."""
    out = {}
    for name, raw in data.get(section, {}).items():
        shards = ShardSet.from_json(raw)
        try:
            train, val = open_shards(shards, data.get("local_cache", "~/.cache/mixsweep"))
        except ShardMismatch as err:
            raise DataError(str(err)) from None
        out[name] = DomainTokens(train=train, val=val[: data.get("val_tokens") or len(val)])
    return out


def data_payload(shards: Mapping[str, ShardSet], request: DataRequest,
                 eval_shards: Mapping[str, ShardSet] | None = None) -> dict[str, Any]:
    """The small, JSON-only description of the data handed to every trial actor."""
    return {"domains": {d: s.to_json() for d, s in shards.items()}, "local_cache": request.cache_dir,
            "val_tokens": request.val_tokens,
            "eval_domains": {d: s.to_json() for d, s in (eval_shards or {}).items()}}


# ------------------------------------------------------------------------------------------ sampling


def sequences_per_domain(weights: Mapping[str, float], n_sequences: int) -> dict[str, int]:
    """Split n_sequences by the weights exactly (largest remainder), so the budget is met to the token."""
    names = list(weights)
    w = np.array([weights[d] for d in names], dtype=float)
    w = w / w.sum()
    raw = w * n_sequences
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n_sequences - counts.sum()]:
        counts[i] += 1
    return dict(zip(names, counts.tolist()))


class MixtureSampler:
    """Batches of (inputs, targets, domain index) drawn in mixture proportions.

    `n_steps * batch_size * seq_len` is exactly the number of target tokens trained on. Each sequence
    is a random window of its domain's packed token stream (documents already joined by EOS).
    """

    def __init__(self, train: Mapping[str, np.ndarray | Sequence[np.ndarray]], weights: Mapping[str, float], seq_len: int,
                 batch_size: int, budget_tokens: int, seed: int) -> None:
        self.domains = list(train)
        self.train, self.seq_len, self.batch_size = train, seq_len, batch_size
        # A domain is one array or a list of shards (memory-mapped views); a window never crosses a
        # shard. Window starts are numbered across a domain's shards, so one draw picks shard and start
        # (for a single array exactly the draw of rng.integers(0, len - seq_len - 1)).
        self._shards = {d: [t] if isinstance(t, np.ndarray) else [s for s in t if len(s) > seq_len + 1] for d, t in train.items()}
        self._starts = {d: np.cumsum([0] + [len(s) - seq_len - 1 for s in shards]) for d, shards in self._shards.items()}
        self.n_steps = budget_tokens // (seq_len * batch_size)
        if self.n_steps < 1:
            raise DataError(f"token budget {budget_tokens:,} is less than one batch ({seq_len * batch_size:,} tokens); raise `proxy.tokens_per_trial`")
        self.counts = sequences_per_domain({d: weights.get(d, 0.0) for d in self.domains}, self.n_steps * batch_size)
        self.seed = seed
        labels = np.concatenate([np.full(c, i, dtype=np.int64) for i, c in enumerate(self.counts.values())])
        self.schedule = np.random.default_rng(seed).permutation(labels)

    @property
    def tokens(self) -> int:
        return self.n_steps * self.batch_size * self.seq_len

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Token windows [batch, seq_len + 1] (inputs are [:, :-1], targets [:, 1:]) and domain ids."""
        ids = self.schedule[step * self.batch_size : (step + 1) * self.batch_size]
        # A generator per step makes any batch reproducible on its own (resuming mid-trial needs that).
        rng = np.random.default_rng((self.seed, step))
        out = np.empty((len(ids), self.seq_len + 1), dtype=np.int64)
        for row, i in enumerate(ids):
            d = self.domains[i]
            starts = self._starts[d]
            r = rng.integers(0, starts[-1])
            k = int(np.searchsorted(starts, r, side="right")) - 1 if len(starts) > 2 else 0
            start = r - starts[k]
            out[row] = self._shards[d][k][start : start + self.seq_len + 1]
        return out, ids

    def set_weights(self, weights: Mapping[str, float], from_step: int) -> None:
        """Online mixing: draw the sequences of steps >= from_step in these proportions instead.

        The remaining sequences are split exactly (largest remainder) and shuffled with a generator
        keyed by (seed, from_step), so a resumed trial that re-applies the same weights at the same
        step gets the same batches. `counts` follows the new schedule (after a resume, the steps before
        it count as first drawn; the online mixer keeps its own count of what was trained on).
        """
        cut = from_step * self.batch_size
        rest = sequences_per_domain({d: weights.get(d, 0.0) for d in self.domains}, len(self.schedule) - cut)
        labels = np.concatenate([np.full(c, i, dtype=np.int64) for i, c in enumerate(rest.values())])
        self.schedule[cut:] = np.random.default_rng((self.seed, from_step)).permutation(labels)
        self.counts = dict(zip(self.domains, np.bincount(self.schedule, minlength=len(self.domains)).tolist()))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for step in range(self.n_steps):
            yield self.batch(step)
