import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.requests import data_request
from orchestrator.spec import parse_spec
from workers.protocol import config_hash
from workers import data as data_mod
from workers.data import DataError, MixtureSampler, data_payload, open_domains, prepare_domains, sequences_per_domain


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


def _open(spec, seq_len=128):
    shards, vocab = prepare_domains(data_request(spec), seq_len=seq_len, log=lambda m: None)
    return open_domains(data_payload(shards, data_request(spec))), shards, vocab


def _flat(t) -> np.ndarray:
    return np.concatenate(list(t.train))


def test_validation_tokens_are_held_out_and_cache_is_reused(text_domains, tmp_path, monkeypatch):
    spec = _spec({n: {"path": str(p)} for n, p in text_domains.items()}, tmp_path)
    tokens, shards, vocab = _open(spec)
    assert vocab == 257
    for t in tokens.values():
        assert len(t.val) == 2048 and t.train_tokens > 10_000
    files = sorted(Path(s.location, f) for s in shards.values() for f in (*s.train_files, s.val_file, "manifest.json"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    # The second preparation reads the cache: tokenising again would fail here.
    boom = lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-tokenised"))
    monkeypatch.setattr(data_mod, "_tokenise_in_process", boom)
    monkeypatch.setattr(data_mod, "_tokenise_with_ray", boom)
    again, _, _ = _open(spec)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    for d in tokens:
        assert np.array_equal(again[d].val, tokens[d].val)
        assert np.array_equal(_flat(again[d]), _flat(tokens[d]))


def test_the_same_content_elsewhere_hits_the_same_cache_entry(text_domains, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(text_domains["vowels"], copy)
    one = _spec({"a": {"path": str(text_domains["vowels"])}, "b": {"path": str(text_domains["digits"])}}, tmp_path)
    two = _spec({"a": {"path": str(copy)}, "b": {"path": str(text_domains["digits"])}}, tmp_path)
    first, _ = prepare_domains(data_request(one), seq_len=128, log=lambda m: None)
    second, _ = prepare_domains(data_request(two), seq_len=128, log=lambda m: None)
    assert first["a"].location == second["a"].location
    (copy / "part0.txt").write_text("changed " * 500)
    third, _ = prepare_domains(data_request(two), seq_len=128, log=lambda m: None)
    assert third["a"].location != first["a"].location


def test_cache_keys_are_computed_from_the_spec_as_before(text_domains, tmp_path):
    """The data request hashes what the spec always did, so token shards cached before it existed are reused."""
    spec = _spec({"a": {"path": str(text_domains["vowels"]), "max_bytes": 50_000}, "b": {"path": str(text_domains["digits"])}}, tmp_path)
    shards, _ = prepare_domains(data_request(spec), seq_len=128, log=lambda m: None)
    cache = tmp_path / "cache"
    for name, dspec in spec.domains.items():
        files = data_mod.source_files(name, dspec.paths())
        key = config_hash("shards-v1", [data_mod._file_digest(f, cache) for f in files], dspec.model_dump(mode="json", exclude={"path"}),
                          spec.tokenizer.model_dump(mode="json"), spec.proxy.val_tokens_per_domain, spec.seed)
        assert shards[name].location == str(cache / "shards" / f"{name}-{key}")


def test_trials_memory_map_the_shards(text_domains, tmp_path):
    spec = _spec({n: {"path": str(p)} for n, p in text_domains.items()}, tmp_path)
    tokens, shards, _ = _open(spec)
    payload = data_payload(shards, data_request(spec))
    assert len(json.dumps(payload)) < 2000  # what an actor is handed: names, not tokens
    for t in tokens.values():
        for arr in (*t.train, t.val):
            assert not arr.flags.owndata and not arr.flags.writeable  # a view of the mapped file
            assert arr.dtype == np.uint16


def _text(ids: np.ndarray) -> str:
    """Byte-tokenised text back, end-of-document tokens as newlines."""
    return bytes(np.where(np.asarray(ids) == 256, 10, ids).astype(np.uint8)).decode(errors="replace")


def test_validation_split_never_overlaps_training_tokens(tmp_path):
    # Every document is unique, so a document of the validation set found in training would be a leak.
    docs = [f"document number {i} says {i * 7919 % 10007}" for i in range(3000)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs[:1500]))
    (tmp_path / "b.txt").write_text("\n".join(docs[1500:]))  # one long document: held out in pieces
    spec = _spec({"a": {"path": str(tmp_path / "a.jsonl")}, "b": {"path": str(tmp_path / "b.txt")}}, tmp_path)
    tokens, shards, _ = _open(spec)
    for name, t in tokens.items():
        assert shards[name].val_units >= 2
        train_lines = set(_text(_flat(t)).split("\n"))
        held = _text(t.val).split("\n")[1:-1]  # the first and last line may be cut by a piece boundary
        assert len(held) > 20 and not train_lines & set(held)
        assert shards[name].train_tokens + shards[name].val_tokens == len(_text(_flat(t))) + shards[name].val_tokens


def test_validation_holds_whole_documents(tmp_path):
    rows = [f"doc {i} " + "xy" * (i % 50) for i in range(400)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": r}) for r in rows))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": r}) for r in rows[::-1]))
    spec = _spec({"a": {"path": str(tmp_path / "a.jsonl")}, "b": {"path": str(tmp_path / "b.jsonl")}}, tmp_path,
                 val_tokens_per_domain=1000)
    _, shards, _ = _open(spec)
    from workers.shards import open_shards

    train, val = open_shards(shards["a"])  # the whole val file, before a trial trims it to 1000 tokens
    held, trained = _text(val).split("\n")[:-1], _text(np.concatenate(train)).split("\n")[:-1]
    assert len(val) >= 1000 and val[-1] == 256  # whole documents, each ending in EOS
    assert sorted(held + trained) == sorted(rows)  # every document on exactly one side, none cut
    assert set(held) != set(_text(open_shards(shards["b"])[1]).split("\n")[:-1])  # chosen by seed, not by position


def test_jsonl_and_parquet_sources(tmp_path):
    rows = [{"body": f"row {i} " + "lorem ipsum " * 30} for i in range(200)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    pq.write_table(pa.table({"body": [r["body"] for r in rows]}), tmp_path / "b.parquet")
    spec = _spec({"a": {"path": str(tmp_path / "a.jsonl"), "text_column": "body"},
                  "b": {"path": str(tmp_path / "*.parquet"), "text_column": "body"}}, tmp_path)
    tokens, _, _ = _open(spec)
    assert tokens["a"].train_tokens + len(tokens["a"].val) == tokens["b"].train_tokens + len(tokens["b"].val)
    assert np.array_equal(_flat(tokens["a"]), _flat(tokens["b"]))  # same rows, same seed: same split


def test_hugging_face_datasets_as_domains(tmp_path):
    import datasets

    rows = [f"row {i} " + "lorem ipsum dolor " * 20 for i in range(300)]
    datasets.Dataset.from_dict({"content": rows, "n": list(range(300))}).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"content": rows[::-1]})}).save_to_disk(str(tmp_path / "dd"))
    pq.write_table(pa.table({"content": rows}), tmp_path / "rows.parquet")
    spec = _spec({"disk": {"path": str(tmp_path / "saved"), "format": "hf_disk", "text_column": "content"},
                  "dict": {"path": str(tmp_path / "dd"), "format": "hf_disk", "text_column": "content"},
                  "files": {"path": str(tmp_path / "rows.parquet"), "format": "hf_files", "text_column": "content"},
                  "plain": {"path": str(tmp_path / "rows.parquet"), "text_column": "content"}}, tmp_path)
    tokens, shards, _ = _open(spec)
    total = sum(len(r) + 1 for r in rows)
    for name in ("disk", "dict", "files", "plain"):
        assert shards[name].train_tokens + shards[name].val_tokens == total
    # The same rows through `datasets` and through pyarrow give the same tokens and split.
    assert np.array_equal(_flat(tokens["files"]), _flat(tokens["plain"]))
    assert np.array_equal(_flat(tokens["disk"]), _flat(tokens["plain"]))


def test_sampler_over_shards_meets_proportions_and_stays_inside_shards():
    # Domain "a" in three shards whose values name the shard: a window crossing shards would mix them.
    train = {"a": [np.full(5_000, k, dtype=np.uint16) for k in range(3)], "b": np.full(20_000, 9, dtype=np.uint16)}
    w = {"a": 0.25, "b": 0.75}
    s = MixtureSampler(train, w, seq_len=64, batch_size=16, budget_tokens=1_000_000, seed=0)
    seen, shard_hits = {"a": 0, "b": 0}, np.zeros(3)
    for batch, ids in s:
        for row, i in zip(batch, ids):
            assert len(set(row.tolist())) == 1  # one shard per window
            seen[s.domains[i]] += 1
            if s.domains[i] == "a":
                shard_hits[row[0]] += 1
    n = sum(seen.values())
    for d in w:  # tolerance: one sequence (largest-remainder rounding of the exact split)
        assert abs(seen[d] / n - w[d]) <= 1 / n
    assert shard_hits.min() > 0.25 * shard_hits.sum()  # every shard is drawn from, by its size


@pytest.mark.parametrize("setup, expected", [
    (lambda p: None, "no file matches"),
    (lambda p: (p / "x.txt").write_text("   \n"), "hold no text"),
    (lambda p: (p / "x.txt").write_bytes(b"\xff\xfe\x00bad"), "not UTF-8"),
    (lambda p: (p / "x.txt").write_text("tiny domain"), "too few"),
    (lambda p: (p / "x.jsonl").write_text('{"content": "hi"}\n'), "no 'text' field"),
    (lambda p: pq.write_table(pa.table({"content": ["x"]}), p / "x.parquet"), "no column 'text'"),
])
def test_bad_data_is_one_line_naming_the_domain(tmp_path, text_domains, setup, expected):
    bad = tmp_path / "bad"
    bad.mkdir()
    setup(bad)
    spec = _spec({"good": {"path": str(text_domains["vowels"])}, "broken": {"path": str(bad / "x*")}}, tmp_path)
    with pytest.raises(DataError) as err:
        prepare_domains(data_request(spec), seq_len=128, log=lambda m: None)
    msg = str(err.value)
    assert "'broken'" in msg and expected in msg and "\n" not in msg


def _bpe(path: Path, corpus: list[str], vocab: int) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["[UNK]", "</s>"]))
    tok.save(str(path))
    return path


def test_shards_made_with_another_tokenizer_are_refused(text_domains, tmp_path):
    corpus = [p.read_text() for d in text_domains.values() for p in sorted(d.iterdir())]
    tok = _bpe(tmp_path / "tokenizer.json", corpus, 120)
    spec = parse_spec({"domains": {n: {"path": str(p)} for n, p in text_domains.items()}, "tokenizer": str(tok),
                       "proxy": {"val_tokens_per_domain": 512}, "data": {"cache_dir": str(tmp_path / "cache")}})
    shards, _ = prepare_domains(data_request(spec), seq_len=32, log=lambda m: None)
    payload = data_payload(shards, data_request(spec))
    _bpe(tok, corpus, 90)  # another tokenizer saved over the same file: same cache slot, other ids
    with pytest.raises(DataError) as err:
        prepare_domains(data_request(spec), seq_len=32, log=lambda m: None)
    msg = str(err.value)
    assert "'vowels'" in msg and "tokenizer" in msg and "delete" in msg and "\n" not in msg
    # A trial checks the shards it opens against the sweep's tokenizer too.
    payload["domains"]["vowels"]["tokenizer"] = "hf-sha256:0000"
    with pytest.raises(DataError, match=r"domain 'vowels': .*train-00000.arrow holds tokens of tokenizer"):
        open_domains(payload)


@pytest.mark.parametrize("setup, fmt, expected", [
    (lambda p: __import__("datasets").Dataset.from_dict({"body": ["x" * 100] * 50}).save_to_disk(str(p / "x")), "hf_disk", "no column 'text'"),
    (lambda p: (p / "x").mkdir(), "hf_disk", "not a dataset saved with `save_to_disk`"),
    (lambda p: (p / "x.parquet").write_bytes(b"PAR1 not really parquet"), "hf_files", "could not be read by `datasets`"),
    (lambda p: pq.write_table(pa.table({"body": ["x" * 100] * 50}), p / "x.parquet"), "hf_files", "no column 'text'"),
])
def test_bad_hugging_face_sources_are_one_line(tmp_path, text_domains, setup, fmt, expected):
    bad = tmp_path / "bad"
    bad.mkdir()
    setup(bad)
    path = bad / ("x" if fmt == "hf_disk" else "x*")  # hf_disk names one directory
    spec = _spec({"good": {"path": str(text_domains["vowels"])}, "broken": {"path": str(path), "format": fmt}}, tmp_path)
    with pytest.raises(DataError) as err:
        prepare_domains(data_request(spec), seq_len=128, log=lambda m: None)
    msg = str(err.value)
    assert "'broken'" in msg and str(bad) in msg and expected in msg and "\n" not in msg


def test_shards_at_a_uri_are_copied_to_the_node_once(text_domains, tmp_path):
    spec = parse_spec({"domains": {n: {"path": str(p)} for n, p in text_domains.items()},
                       "proxy": {"val_tokens_per_domain": 2048},
                       "data": {"cache_dir": str(tmp_path / "node"), "shard_dir": f"file://{tmp_path / 'bucket'}"}})
    shards, _ = prepare_domains(data_request(spec), seq_len=128, log=lambda m: None)
    assert all(s.location.startswith("file://") for s in shards.values())
    assert (tmp_path / "bucket" / Path(shards["vowels"].location).name / "manifest.json").exists()
    tokens = open_domains(data_payload(shards, data_request(spec)))
    local = tmp_path / "node" / "shards" / Path(shards["vowels"].location).name / "train-00000.arrow"
    stamp = local.stat().st_mtime_ns
    again = open_domains(data_payload(shards, data_request(spec)))  # already on this node: not copied again
    assert local.stat().st_mtime_ns == stamp
    assert np.array_equal(again["vowels"].val, tokens["vowels"].val) and not tokens["vowels"].train[0].flags.owndata


# ------------------------------------------------------------------------------------------- caps


def test_caps_follow_the_tokens_and_fail_in_one_line():
    from orchestrator.mixture import token_caps

    caps = token_caps({"big": 10_000_000, "small": 50_000}, tokens_per_trial=1_000_000, max_epochs=4)
    assert caps == {"big": 1.0, "small": pytest.approx(0.2)}
    with pytest.raises(ValueError) as err:
        token_caps({"a": 50_000, "b": 100_000}, tokens_per_trial=1_000_000, max_epochs=2)
    msg = str(err.value)
    assert "a (50,000 tokens, cap 0.100)" in msg and "b (100,000" in msg and "proxy.tokens_per_trial" in msg
    assert "data.max_epochs" in msg and "\n" not in msg


def test_no_strategy_proposes_above_a_cap():
    from orchestrator.objective import Objective
    from orchestrator.strategies import STRATEGIES, build_strategy
    from orchestrator.strategies.contract import Outcome

    domains = ("a", "b", "small")
    caps = {"a": 1.0, "b": 1.0, "small": 0.05}
    optimum = np.array([0.2, 0.2, 0.6])  # outside the caps: the search pushes against them
    objective = Objective.from_spec(parse_spec({"domains": {d: {"path": "x"} for d in domains},
                                                "trainer": {"kind": "synthetic"}}).objective, domains)
    options = {"fixed": {"weights": {"a": 0.1, "b": 0.1, "small": 0.8}}}
    for kind in sorted(STRATEGIES):
        s = build_strategy(kind, options.get(kind, {}), domains, objective, seed=0)
        s.domain_tokens = {"a": 10**6, "b": 10**6, "small": 5_000}
        if s.requirements.multi_fidelity:  # a multi-fidelity sweep tells it its fidelities; untagged runs are the target's
            from orchestrator.strategies.contract import Fidelity, FidelityPlan

            s.fidelities = FidelityPlan((Fidelity("small", 1.0, 1e6, 1e7), Fidelity("large", 10.0, 6e7, 1e7)), "large", 6e7)
        if kind in ("mde", "mixmin"):  # one expert per domain trains on "small" alone: refused up front
            with pytest.raises(ValueError, match="'small'.*raise data.max_epochs"):
                s.set_caps(caps)
            continue
        s.set_caps(caps)
        proposed = []
        for _ in range(3):  # 9 proposals: past the 4-point initial design of the model-based ones
            for m in (p.mixture for p in s.ask(3, [])):
                proposed.append(m)
                w = m.as_array()
                s.tell(Outcome(m, {d: float(1 + 3 * (w[i] - optimum[i]) ** 2) for i, d in enumerate(domains)}))
        assert proposed, kind
        assert all(m.as_dict()["small"] <= 0.05 + 1e-6 for m in proposed), (kind, [str(m) for m in proposed])
        assert all(abs(sum(m.weights) - 1) < 1e-5 for m in proposed)


def test_a_sweep_whose_caps_leave_no_mixture_stops_before_training(text_domains, tmp_path):
    from orchestrator.controller import Controller

    spec = parse_spec({"domains": {n: {"path": str(p)} for n, p in text_domains.items()},
                       "proxy": {"val_tokens_per_domain": 2048, "tokens_per_trial": 10_000_000},
                       "data": {"cache_dir": str(tmp_path / "cache"), "max_epochs": 2}, "strategy": {"kind": "uniform"}})
    with pytest.raises(DataError) as err:
        Controller(spec, tmp_path / "sweep", log=lambda m: None).run()
    msg = str(err.value)
    assert "vowels (" in msg and "digits (" in msg and "lower proxy.tokens_per_trial or raise data.max_epochs" in msg
    assert not (tmp_path / "sweep" / "journal.jsonl").exists()


def test_the_journal_keeps_caps_and_tokens():
    from orchestrator.state import SweepState

    state = SweepState()
    state.apply({"event": "sweep_started", "name": "s", "domains": ["a", "b"], "caps": {"a": 1.0, "b": 0.3},
                 "domain_tokens": {"a": 10**6, "b": 7_500}})
    state.apply({"event": "sweep_resumed", "name": "s"})  # a resume that does not repeat them keeps them
    assert state.caps == {"a": 1.0, "b": 0.3} and state.domain_tokens == {"a": 10**6, "b": 7_500}


def test_the_controller_hands_trials_shard_names_and_caps_the_strategy(text_domains, tmp_path):
    from orchestrator.controller import Controller

    spec = parse_spec({"domains": {n: {"path": str(p)} for n, p in text_domains.items()},
                       "proxy": {"val_tokens_per_domain": 2048, "tokens_per_trial": 80_000},
                       "data": {"cache_dir": str(tmp_path / "cache"), "max_epochs": 1}, "strategy": {"kind": "sobol"}})
    c = Controller(spec, tmp_path / "sweep", log=lambda m: None)
    vocab = c._prepare_data()
    payload = c.jobs.prepare().data  # what every trial receives
    tokens = {d: s["train_tokens"] for d, s in payload["domains"].items()}
    assert vocab == 257 and len(json.dumps(payload)) < 2000 and all(40_000 < n < 80_000 for n in tokens.values())
    assert c.strategy.caps == {d: pytest.approx(n / 80_000) for d, n in tokens.items()}
    assert c._data_journal == {"domain_tokens": tokens, "caps": c.strategy.caps, "max_epochs": 1}
    for m in (p.mixture for p in c.strategy.ask(8, [])):  # sobol cannot take bounds: its points are projected onto the caps
        assert all(m.as_dict()[d] <= c.strategy.caps[d] + 1e-6 for d in tokens)


# ----------------------------------------------------------------------- hostile files (issue #14)
HOSTILE_JSONL = [  # (id, file name, bytes, substrings of the one-line error)
    ("null-text", "d.jsonl", b'{"text": "fine"}\n{"text": null}\n', ["line 2", "'text' is null, not a string"]),
    ("number-text", "d.jsonl", b'{"text": 7}\n', ["line 1", "is int, not a string"]),
    ("json-string-line", "d.jsonl", b'"just text"\n', ["line 1", "JSON string, not an object"]),
    ("non-utf8-line", "d.jsonl", b'{"text": "a"}\n{"text": "\xe9"}\n', ["line 2", "not UTF-8"]),
    ("corrupt-gzip", "d.jsonl.gz", b"\x1f\x8b\x08\x00not gzip at all", ["not a valid gzip file"]),
    ("corrupt-parquet", "d.parquet", b"PAR1 not parquet PAR1", ["not a readable Parquet file"]),
]


@pytest.mark.parametrize("name,content,expected", [pytest.param(n, c, x, id=i) for i, n, c, x in HOSTILE_JSONL])
def test_a_hostile_file_is_one_line_naming_domain_file_and_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        list(data_mod.read_documents("web", path, "auto", "text"))
    msg = str(exc.value)
    assert "\n" not in msg and "domain 'web'" in msg and str(path) in msg
    for part in expected:
        assert part in msg, msg


def test_a_parquet_text_column_must_hold_strings(tmp_path):
    pq.write_table(pa.table({"text": pa.array([1, 2])}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match="holds int64, not strings"):
        list(data_mod.read_documents("web", tmp_path / "d.parquet", "auto", "text"))


def test_a_damaged_shard_manifest_means_tokenise_again(tmp_path):
    from workers.shards import MANIFEST, read_manifest

    (tmp_path / MANIFEST).write_text("{not json")
    assert read_manifest(str(tmp_path)) is None
