import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.spec import parse_spec
from workers import data as data_mod
from workers.data import DataError, MixtureSampler, prepare_domains, sequences_per_domain


def _spec(domains, tmp_path, **proxy):
    return parse_spec({
        "domains": domains,
        "proxy": {"preset": "debug", "val_tokens_per_domain": 2048, **proxy},
        "data": {"cache_dir": str(tmp_path / "cache")},
    })


def test_sequences_split_exactly_by_weight():
    counts = sequences_per_domain({"a": 0.5, "b": 0.3, "c": 0.2, "z": 0.0}, 101)
    assert sum(counts.values()) == 101 and counts["z"] == 0
    assert counts == {"a": 51, "b": 30, "c": 20, "z": 0}


def test_sampler_meets_the_token_budget_and_proportions():
    rng = np.random.default_rng(0)
    train = {d: rng.integers(0, 256, size=50_000).astype(np.uint16) for d in ("a", "b", "c")}
    w = {"a": 0.6, "b": 0.3, "c": 0.1}
    s = MixtureSampler(train, w, seq_len=32, batch_size=8, budget_tokens=100_000, seed=1)
    seen = {d: 0 for d in w}
    batches = 0
    for batch, ids in s:
        assert batch.shape == (8, 33)
        for i in ids:
            seen[s.domains[i]] += 32
        batches += 1
    assert s.tokens == batches * 8 * 32 == sum(seen.values()) <= 100_000
    assert 100_000 - s.tokens < 8 * 32  # rounded down to whole batches, no more
    for d in w:  # exact up to one sequence (largest-remainder rounding)
        assert abs(seen[d] / s.tokens - w[d]) <= 32 / s.tokens


def test_sampler_batches_are_reproducible_per_step():
    train = {"a": np.arange(10_000, dtype=np.uint16), "b": np.arange(10_000, dtype=np.uint16)[::-1].copy()}
    s1 = MixtureSampler(train, {"a": 0.5, "b": 0.5}, 16, 4, 4096, seed=3)
    s2 = MixtureSampler(train, {"a": 0.5, "b": 0.5}, 16, 4, 4096, seed=3)
    assert np.array_equal(s1.batch(5)[0], s2.batch(5)[0])
    assert not np.array_equal(s1.batch(5)[0], s1.batch(6)[0])


def test_validation_tokens_are_held_out_and_cache_is_reused(text_domains, tmp_path, monkeypatch):
    spec = _spec({n: {"path": str(p)} for n, p in text_domains.items()}, tmp_path)
    tokens, vocab = prepare_domains(spec, seq_len=128, log=lambda m: None)
    assert vocab == 257
    for t in tokens.values():
        assert len(t.val) == 2048 and len(t.train) > 10_000
    # The second preparation reads the cache: tokenising again would fail here.
    monkeypatch.setattr(data_mod, "_tokenize_domain", lambda *a: (_ for _ in ()).throw(AssertionError("re-tokenised")))
    again, _ = prepare_domains(spec, seq_len=128, log=lambda m: None)
    for d in tokens:
        assert np.array_equal(again[d].val, tokens[d].val)
        assert np.array_equal(again[d].train, tokens[d].train)


def test_validation_split_never_overlaps_training_tokens(tmp_path):
    # Every document is unique, so a window of the validation tail found in training would be a leak.
    docs = [f"document number {i} says {i * 7919 % 10007}" for i in range(3000)]
    (tmp_path / "a.txt").write_text("\n".join(docs[:1500]))
    (tmp_path / "b.txt").write_text("\n".join(docs[1500:]))
    spec = _spec({"a": {"path": str(tmp_path / "a.txt")}, "b": {"path": str(tmp_path / "b.txt")}}, tmp_path)
    tokens, _ = prepare_domains(spec, seq_len=128, log=lambda m: None)
    for t in tokens.values():
        train_text = bytes(t.train[t.train < 256].astype(np.uint8)).decode()
        val_docs = bytes(t.val[t.val < 256].astype(np.uint8)).decode().split("\n")
        whole = [d for d in val_docs[1:-1] if d]  # first and last may be cut by the split
        assert whole and not any(d in train_text for d in whole)


def test_jsonl_and_parquet_sources(tmp_path):
    rows = [{"body": f"row {i} " + "lorem ipsum " * 30} for i in range(200)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pq.write_table(pa.table({"body": [r["body"] for r in rows]}), tmp_path / "b.parquet")
    spec = _spec({"a": {"path": str(tmp_path / "a.jsonl"), "text_column": "body"},
                  "b": {"path": str(tmp_path / "*.parquet"), "text_column": "body"}}, tmp_path)
    tokens, _ = prepare_domains(spec, seq_len=128, log=lambda m: None)
    assert len(tokens["a"].train) + len(tokens["a"].val) == len(tokens["b"].train) + len(tokens["b"].val)


@pytest.mark.parametrize("setup, expected", [
    (lambda p: None, "no file matches"),
    (lambda p: (p / "x.txt").write_text("   \n"), "hold no text"),
    (lambda p: (p / "x.txt").write_bytes(b"\xff\xfe\x00bad"), "not UTF-8"),
    (lambda p: (p / "x.txt").write_text("tiny domain"), "fewer than"),
    (lambda p: (p / "x.jsonl").write_text('{"content": "hi"}\n'), "no 'text' field"),
    (lambda p: pq.write_table(pa.table({"content": ["x"]}), p / "x.parquet"), "no column 'text'"),
])
def test_bad_data_is_one_line_naming_the_domain(tmp_path, text_domains, setup, expected):
    bad = tmp_path / "bad"
    bad.mkdir()
    setup(bad)
    spec = _spec({"good": {"path": str(text_domains["vowels"])}, "broken": {"path": str(bad / "x*")}}, tmp_path)
    with pytest.raises(DataError) as err:
        prepare_domains(spec, seq_len=128, log=lambda m: None)
    msg = str(err.value)
    assert "'broken'" in msg and expected in msg and "\n" not in msg
