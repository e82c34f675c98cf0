"""Domain data: read text, tokenise once into a content-addressed cache, sample mixtures of it.

`prepare_domains` turns each domain's source into one token stream (documents joined by the
end-of-document token), cached under `<cache_dir>/tokens/<hash>.npy` keyed by the source files'
names, sizes and mtimes and the tokenizer; a second sweep over the same data tokenises nothing. The
last `val_tokens` of each stream (after a seeded document shuffle) are held out for validation and
never trained on.

`MixtureSampler` draws training sequences from the domains in the mixture's proportions with an exact
token budget: the number of sequences per domain is fixed up front (largest remainder), then shuffled.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from orchestrator.mixture import config_hash


class DataError(ValueError):
    """One-line, user-facing data problem naming the domain and file."""


# ---------------------------------------------------------------------------------------- tokenizers


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, plus 256 as end-of-document. No vocabulary to ship or train."""

    vocab_size = 257
    eos_id = 256
    name = "bytes"

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

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        dtype = np.uint16 if self.vocab_size <= 65536 else np.uint32
        return [np.asarray(e.ids, dtype=dtype) for e in self._tok.encode_batch(texts)]


def load_tokenizer(spec) -> ByteTokenizer | HFTokenizer:
    return ByteTokenizer() if spec.kind == "bytes" else HFTokenizer(spec.path)


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
    """Documents of one file. Undecodable text and missing columns raise DataError naming the file."""
    kind = _format(path, fmt)
    if kind == "text":
        try:
            yield path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise DataError(f"domain {name!r}: {path} is not UTF-8 text; convert it or remove it from the domain") from None
    elif kind == "jsonl":
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise DataError(f"domain {name!r}: {path} line {i} is not JSON; fix the file") from None
                if text_column not in row:
                    raise DataError(f"domain {name!r}: {path} line {i} has no {text_column!r} field; set `domains.{name}.text_column`")
                yield str(row[text_column])
    else:
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        if text_column not in schema.names:
            raise DataError(f"domain {name!r}: {path} has no column {text_column!r} (has {schema.names}); set `domains.{name}.text_column`")
        for batch in pq.ParquetFile(path).iter_batches(columns=[text_column], batch_size=1024):
            yield from (str(t) for t in batch.column(0).to_pylist() if t is not None)


# -------------------------------------------------------------------------------------- preparation


@dataclass(frozen=True)
class DomainTokens:
    """A domain's training and held-out validation tokens (1-D integer arrays)."""

    train: np.ndarray
    val: np.ndarray


def _domain_sources(name: str, dspec, cache_dir: Path) -> list[Path]:
    if dspec.demo is not None:
        from workers.corpus import CorpusError, ensure_demo_domain

        try:
            return [ensure_demo_domain(dspec.demo, cache_dir / "corpus", **({"max_bytes": dspec.max_bytes} if dspec.max_bytes else {}))]
        except CorpusError as err:
            raise DataError(f"domain {name!r}: {err}") from None
    return source_files(name, dspec.paths())


def _tokenize_domain(name: str, dspec, files: list[Path], tokenizer, seed: int) -> np.ndarray:
    docs: list[str] = []
    budget = dspec.max_bytes or (1 << 62)
    for f in files:
        fmt = "jsonl" if dspec.demo is not None else dspec.format
        for doc in read_documents(name, f, fmt, dspec.text_column):
            if doc.strip():
                raw = doc.encode("utf-8")[:budget]
                docs.append(raw.decode("utf-8", errors="ignore"))
                budget -= len(raw)
            if budget <= 0:
                break
        if budget <= 0:
            break
    if not docs:
        raise DataError(f"domain {name!r}: {', '.join(map(str, files[:3]))} hold no text; point `domains.{name}` at non-empty files")
    # A seeded shuffle of whole documents, so the held-out tail samples the whole domain, not its last file.
    order = np.random.default_rng(seed).permutation(len(docs))
    encoded = tokenizer.encode([docs[i] for i in order])
    eos = np.array([tokenizer.eos_id], dtype=encoded[0].dtype)
    return np.concatenate([part for ids in encoded for part in (ids, eos)])


def prepare_domains(spec, seq_len: int, log=print) -> tuple[dict[str, DomainTokens], int]:
    """Tokenise (or load from cache) every domain; returns ({domain: tokens}, vocab size).

    Raises DataError before any training when a domain has no data, or too few tokens to hold out
    `spec.proxy.val_tokens_per_domain` and still train on sequences of `seq_len` tokens.
    """
    cache_dir = Path(spec.data.cache_dir).expanduser()
    tokenizer = load_tokenizer(spec.tokenizer)
    val_tokens = spec.proxy.val_tokens_per_domain
    out: dict[str, DomainTokens] = {}
    for name, dspec in spec.domains.items():
        files = _domain_sources(name, dspec, cache_dir)
        fingerprint = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        key = config_hash("tokens-v1", fingerprint, tokenizer.name, dspec.model_dump(mode="json"), spec.seed)
        path = cache_dir / "tokens" / f"{name}-{key}.npy"
        if path.exists():
            stream = np.load(path, mmap_mode="r")
        else:
            stream = _tokenize_domain(name, dspec, files, tokenizer, spec.seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
            np.save(tmp, stream)
            os.replace(tmp, path)
            log(f"tokenised domain {name}: {len(stream):,} tokens -> {path}")
        need = val_tokens + 4 * (seq_len + 1)
        if len(stream) < need:
            raise DataError(
                f"domain {name!r}: {len(stream):,} tokens, fewer than the {need:,} needed "
                f"({val_tokens:,} validation + a few training sequences); add data or lower `proxy.val_tokens_per_domain`"
            )
        out[name] = DomainTokens(train=np.asarray(stream[:-val_tokens]), val=np.asarray(stream[-val_tokens:]))
    return out, tokenizer.vocab_size


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

    def __init__(self, train: Mapping[str, np.ndarray], weights: Mapping[str, float], seq_len: int,
                 batch_size: int, budget_tokens: int, seed: int) -> None:
        self.domains = list(train)
        self.train, self.seq_len, self.batch_size = train, seq_len, batch_size
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
            stream = self.train[self.domains[i]]
            start = rng.integers(0, len(stream) - self.seq_len - 1)
            out[row] = stream[start : start + self.seq_len + 1]
        return out, ids

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for step in range(self.n_steps):
            yield self.batch(step)
