"""Hostile runs tables and data files: each is refused with ONE line naming the file (and the column or
line) and the fix, or read correctly (diverged runs dropped with a warning). No Ray; nothing is written
outside the test's tmp dir.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.runs import RunsTableError, RunsTableWarning, read_runs
from workers.data import DataError, read_documents

H = "weight.web,weight.code,loss.web,loss.code\n"
OK_ROW = "0.4,0.6,3.0,2.5\n"


pytestmark = pytest.mark.usefixtures("confined")  # tests/conftest.py


def _one_line(err: Exception) -> str:
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg, repr(msg)
    return msg


def _parquet(columns: dict, names: list[str] | None = None) -> bytes:
    import io

    buf = io.BytesIO()
    table = pa.table(list(columns.values()), names=names or list(columns))
    pq.write_table(table, buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------------- runs tables
BAD_RUNS = [  # (id, file name, content, substrings)
    ("dup-loss-column", "r.csv", "weight.web,weight.code,loss.code,loss.code\n0.5,0.5,2,9\n", ["'loss.code' appears twice"]),
    ("dup-weight-column", "r.csv", "weight.web,weight.web,loss.web\n0.5,0.5,2\n", ["'weight.web' appears twice"]),
    ("dup-extra-column", "r.csv", "run,run,weight.web,weight.code,loss.web\na,b,0.5,0.5,2\n", ["'run' appears twice"]),
    ("dup-gz", "r.csv.gz", gzip.compress(b"weight.a,weight.b,loss.a,loss.a\n0.5,0.5,1,2\n"), ["'loss.a' appears twice"]),
    ("dup-parquet", "r.parquet", _parquet({"w1": pa.array([0.5]), "w2": pa.array([0.5]), "l1": pa.array([1.0]), "l2": pa.array([2.0])},
                                          ["weight.a", "weight.b", "loss.a", "loss.a"]), ["'loss.a' appears twice"]),
    ("all-1e308", "r.csv", H + "0.5,0.5,1e308,2\n", ["no run has finite, plausible losses"]),
    ("all-nan", "r.csv", H + "0.5,0.5,nan,2\n", ["no run has finite"]),
    ("text-in-loss", "r.csv", H + "0.5,0.5,low,2\n", ["column loss.web", "'low'", "numbers only"]),
    ("text-in-weight", "r.csv", H + "half,0.5,1,2\n", ["column weight.web", "'half'"]),
    ("negative-loss", "r.csv", H + "0.5,0.5,-2,2\n", ["loss.web = -2.0", ">= 0"]),
    ("negative-weight", "r.csv", H + "-0.5,1.5,1,2\n", ["weight.web", ">= 0"]),
    ("huge-weight", "r.csv", H + "1e308,0.5,1,2\n", ["sum to"]),
    ("off-simplex", "r.csv", H + "0.5,0.2,1,2\n", ["sum to 0.7000", "renormalise"]),
    ("empty", "r.csv", "", ["the file is empty"]),
    ("header-only", "r.csv", H, ["header but no runs"]),
    ("no-loss-columns", "r.csv", "weight.web,weight.code\n0.5,0.5\n", ["no `loss.<domain>` columns"]),
    ("one-weight", "r.csv", "weight.web,loss.web\n1,2\n", ["at least 2 `weight.<domain>`"]),
    ("non-utf8", "r.csv", (H + OK_ROW).replace("loss.code", "loss.c\xf6de").encode("latin-1"), ["cannot be read", "UnicodeDecodeError"]),
    ("corrupt-parquet", "r.parquet", b"PAR1 this is not parquet PAR1", ["cannot be read", "parquet"]),
    ("truncated-parquet", "r.parquet", _parquet({"weight.a": pa.array([0.5]), "weight.b": pa.array([0.5]), "loss.a": pa.array([1.0])})[:-20],
     ["cannot be read"]),
    ("gzip-garbage", "r.csv.gz", b"\x1f\x8b\x08\x00 definitely not deflate", ["cannot be read"]),
    ("gzip-truncated", "r.csv.gz", gzip.compress((H + OK_ROW * 200).encode())[:60], ["cannot be read"]),
    ("newline-in-name", "r.csv", '"weight.web\n",weight.code,loss.web\n0.5,0.5,1\n', ["names no usable domain"]),
    ("empty-name", "r.csv", "weight.,weight.code,loss.web\n0.5,0.5,1\n", ["names no usable domain"]),
    ("unknown-extension", "r.tsv", H + OK_ROW, ["unknown format '.tsv'"]),
    ("missing-file", None, None, ["not found"]),
    # Scale columns (runs of several sizes): counts on every row or none; a misspelt scale is no silent extra.
    ("scale-on-some-rows", "r.csv", H[:-1] + ",scale.params\n" + OK_ROW[:-1] + ",6e7\n" + OK_ROW[:-1] + ",\n",
     ["row 2 has no scale.params", "every row or drop the column"]),
    ("scale-1e308-tokens", "r.csv", H[:-1] + ",scale.tokens\n" + OK_ROW[:-1] + ",1e308\n", ["row 1 has scale.tokens = 1e+308", "between 1 and"]),
    ("scale-text", "r.csv", H[:-1] + ",scale.params\n" + OK_ROW[:-1] + ",60M\n", ["column scale.params", "'60M'", "numbers only"]),
    ("scale-negative-parquet", "r.parquet", _parquet({"weight.a": pa.array([0.5]), "weight.b": pa.array([0.5]), "loss.a": pa.array([1.0]),
                                                     "scale.params": pa.array([-6e7])}), ["row 1 has scale.params = -60000000.0"]),
    ("scale-unknown-column", "r.csv", H[:-1] + ",scale.flops\n" + OK_ROW[:-1] + ",1e20\n", ["'scale.flops' is no scale column"]),
]


@pytest.mark.parametrize("name,content,expected", [pytest.param(n, c, x, id=i) for i, n, c, x in BAD_RUNS])
def test_a_hostile_runs_table_is_one_line(tmp_path: Path, name, content, expected) -> None:
    path = tmp_path / (name or "absent.csv")
    if content is not None:
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(RunsTableError) as exc:
        read_runs(path)
    msg = _one_line(exc.value)
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


@pytest.mark.parametrize("bad", ["1e308", "nan", "inf", "-inf", "1e5", ""])
def test_a_diverged_run_is_dropped_with_a_warning_and_the_rest_is_kept(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "r.csv"
    path.write_text(H + f"0.5,0.5,{bad},2.0\n" + OK_ROW)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_runs(path)
    assert table.losses.tolist() == [[3.0, 2.5]] and table.domains == ("web", "code")
    assert [w.category for w in caught] == [RunsTableWarning] and "dropped 1 of 2" in str(caught[0].message)


def test_a_repeated_loss_column_never_becomes_a_phantom_domain(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("weight.web,weight.code,loss.web,loss.code,loss.code\n0.5,0.5,1,2,3\n")
    with pytest.raises(RunsTableError):
        read_runs(path)  # pandas alone would read a domain `code.1` into the mean


# ------------------------------------------------------------------------------------ data files
BAD_DATA = [  # (id, file name, content, substrings)
    ("null-text", "d.jsonl", b'{"text": "ok"}\n{"text": null}\n', ["line 2", "is null, not a string"]),
    ("number-text", "d.jsonl", b'{"text": 12}\n', ["line 1", "is int, not a string"]),
    ("list-text", "d.jsonl", b'{"text": ["a"]}\n', ["is list, not a string"]),
    ("object-text", "d.jsonl", b'{"text": {"a": 1}}\n', ["is dict, not a string"]),
    ("json-string-line", "d.jsonl", b'"a line of text"\n', ["line 1", "JSON string, not an object"]),
    ("json-number-line", "d.jsonl", b'{"text": "a"}\n42\n', ["line 2", "JSON number"]),
    ("json-null-line", "d.jsonl", b"null\n", ["JSON null"]),
    ("not-json", "d.jsonl", b'{"text": "a"\n', ["line 1 is not JSON"]),
    ("missing-field", "d.jsonl", b'{"body": "a"}\n', ["no 'text' field", "text_column"]),
    ("non-utf8-jsonl", "d.jsonl", b'{"text": "a"}\n{"text": "caf\xe9"}\n', ["line 2", "not UTF-8"]),
    ("non-utf8-gz", "d.jsonl.gz", gzip.compress(b'{"text": "\xff"}\n'), ["line 1", "not UTF-8"]),
    ("corrupt-gzip", "d.jsonl.gz", b"\x1f\x8b\x08\x00garbage", ["not a valid gzip file"]),
    ("truncated-gzip", "d.jsonl.gz", gzip.compress(b'{"text": "abc"}\n' * 500)[:40], ["not a valid gzip file"]),
    ("plain-not-gzip", "d.jsonl.gz", b'{"text": "not compressed"}\n', ["not a valid gzip file"]),
    ("non-utf8-text", "d.txt", b"caf\xe9", ["not UTF-8 text"]),
    ("corrupt-parquet", "d.parquet", b"PAR1 garbage PAR1", ["not a readable Parquet file"]),
    ("parquet-int-column", "d.parquet", _parquet({"text": pa.array([1, 2])}), ["holds int64, not strings"]),
    ("parquet-no-column", "d.parquet", _parquet({"body": pa.array(["a"])}), ["no column 'text'"]),
]


@pytest.mark.parametrize("name,content,expected", [pytest.param(n, c, x, id=i) for i, n, c, x in BAD_DATA])
def test_a_hostile_data_file_is_one_line_naming_domain_and_file(tmp_path: Path, name, content, expected) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        list(read_documents("web", path, "auto", "text"))
    msg = _one_line(exc.value)
    assert "domain 'web'" in msg and str(path) in msg
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


@pytest.mark.parametrize("name,content,docs", [
    ("empty.jsonl", b"", []),
    ("blank-lines.jsonl", b'\n\n{"text": "a"}\n\n', ["a"]),
    ("crlf.jsonl", b'{"text": "a"}\r\n{"text": "b"}\r\n', ["a", "b"]),
    ("ok.jsonl.gz", gzip.compress(b'{"text": "x", "other": null}\n'), ["x"]),
    ("nulls.parquet", _parquet({"text": pa.array(["a", None, "b"])}), ["a", "b"]),
])
def test_odd_but_valid_data_files_read_their_documents(tmp_path: Path, name, content, docs) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert list(read_documents("web", path, "auto", "text")) == docs


def test_seed_runs_of_several_sizes_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    # An `export --format runs` with ladder rows holds runs of several model sizes: told to the strategy as
    # runs of the sweep's size, they would be another function. Refused in one line, nothing written.
    from orchestrator.controller import Controller
    from orchestrator.spec import parse_spec

    table = tmp_path / "seed.csv"
    table.write_text("weight.a,weight.b,loss.a,loss.b,scale.params\n0.5,0.5,2.0,2.1,1000000\n0.3,0.7,1.8,1.9,60000000\n")
    spec = parse_spec({"name": "seeded", "domains": {"a": {}, "b": {}},
                       "trainer": {"kind": "synthetic", "duration_s": 0.0, "progress_events": 1},
                       "strategy": {"kind": "sobol", "seed_runs": str(table)}, "budget": {"trials": 2, "concurrency": 1}})
    with pytest.raises(RunsTableError, match="several sizes") as err:
        Controller(spec, tmp_path / "sweep", log=lambda m: None).run()
    assert "\n" not in str(err.value) and "strategy.seed_runs" in str(err.value)
    assert not (tmp_path / "sweep" / "journal.jsonl").exists()
