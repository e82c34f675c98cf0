"""Hostile exports: names that would be code, and exports that outlive the journal they came from.

The journal check (test_sweepdir_journal.py) keeps such names out of a sweep; these cases hold the
second wall, the formats themselves: whatever a name holds, every format writes it through a
serializer, so it reads back as the same string and never as code or an extra line.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from orchestrator.export import export, parse_megatron, refresh_exports, render_hf, render_json, render_megatron, render_yaml
from orchestrator.journal import Journal
from orchestrator.runs import read_frame, runs_frame, write_frame
from orchestrator.mixture import Mixture

HOSTILE = [
    'web"""\nimport os; os.system("touch PWNED")\n"""',
    "code'''\n__import__('os')\n'''",
    "math\\",
    "line\nbreak",
    "x\"); import os #",
    "${HOME}$(id)`id`",
    "=cmd|' /C calc'!A0",
    "é\u2028\u0000",
]


def _rec(name: str) -> dict:
    return {"mixture": {name: 0.6, "b": 0.4, "z": 0.0}, "predicted_losses": {name: 2.0}, "objective": 2.0, "source": "model",
            "trials_used": 3, "notes": [name]}


@pytest.mark.parametrize("name", HOSTILE)
def test_the_hf_module_holds_every_name_as_a_literal_never_as_code(tmp_path, name):
    source = render_hf(_rec(name)["mixture"], sweep=name)
    tree = ast.parse(source)  # it parses: no name ended a string early
    kinds = [type(node).__name__ for node in tree.body]
    assert kinds == ["Expr", "ImportFrom", "Assign", "Assign", "Assign", "Assign", "Assign", "FunctionDef"]
    values = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}
    assert values["SWEEP"] == name and values["DOMAINS"] == [name, "b"] and values["LEFT_OUT"] == ["z"]
    assert name not in ast.get_docstring(tree)
    assert [n.module for n in tree.body if isinstance(n, ast.ImportFrom)] == ["datasets"]  # the only import


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_json_and_yaml_read_back_every_name_exactly(name, fmt):
    text = render_json(_rec(name), name, 7) if fmt == "json" else render_yaml(_rec(name), name, 7)
    doc = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    assert doc["sweep"] == name and doc["domains"] == [name, "b", "z"] and doc["notes"] == [name] and doc["journal_seq"] == 7


@pytest.mark.parametrize("name", HOSTILE[:6])
def test_a_runs_table_keeps_a_name_in_one_column(tmp_path, name):
    frame = runs_frame([Mixture.from_dict({name: 0.5, "b": 0.5}, (name, "b"))], [{name: 2.0, "b": 2.1}])
    back = read_frame(write_frame(frame, tmp_path / "runs.csv"))
    assert list(back.columns) == [f"weight.{name}", "weight.b", f"loss.{name}", "loss.b"] and len(back) == 1


def test_a_megatron_blend_is_pairs_of_weight_and_path_whatever_the_names():
    mixture = {HOSTILE[0]: 0.5, "b": 0.5}
    blend = render_megatron(mixture, {HOSTILE[0]: "/data/web", "b": "/data/b"})
    assert parse_megatron(blend) == [(0.5, "/data/web"), (0.5, "/data/b")] and blend.count("\n") == 1


# --------------------------------------------------------------------------- stale exports


def _sweep(tmp_path: Path) -> Path:
    d = tmp_path / "parent" / "sweep"
    d.mkdir(parents=True)
    (d / "spec.yaml").write_text(yaml.safe_dump({"name": "s", "domains": {"a": {}, "b": {}}, "trainer": {"kind": "synthetic"}}))
    with Journal(d / "journal.jsonl") as j:
        j.append("sweep_started", name="s", domains=["a", "b"])
        j.append("trial_proposed", trial="t000000000001", mixture={"a": 0.7, "b": 0.3})
        j.append("trial_completed", trial="t000000000001", losses={"a": 2.0, "b": 2.2}, objective=2.1)
        j.append("recommended", mixture={"a": 0.7, "b": 0.3}, predicted_losses={}, objective=2.1, source="observed", trials_used=1, notes=[])
    return d


def _resumed(d: Path, mixture: dict) -> None:
    """What a resume appends: more trials and a new recommendation."""
    with Journal(d / "journal.jsonl") as j:
        j.append("sweep_resumed", name="s", domains=["a", "b"])
        j.append("recommended", mixture=mixture, predicted_losses={}, objective=2.0, source="model", trials_used=2, notes=[])


@pytest.mark.parametrize("fmt", ["json", "yaml", "hf", "runs"])
def test_an_export_made_before_a_resume_is_made_again_after_it(tmp_path, fmt):
    d = _sweep(tmp_path)
    path = export(d, fmt)
    _resumed(d, {"a": 0.2, "b": 0.8})
    assert refresh_exports(d, log=lambda m: None) == [str(path)]
    if fmt in ("json", "yaml"):
        doc = yaml.safe_load(path.read_text())
        assert doc["mixture"] == {"a": 0.2, "b": 0.8} and doc["journal_seq"] == 5
    elif fmt == "hf":
        assert "PROBABILITIES = [0.2, 0.8]" in path.read_text() and "JOURNAL_SEQ = 5" in path.read_text()
    assert json.loads((d / "report" / "exports.json").read_text())[path.name]["journal_seq"] == 5
    assert refresh_exports(d, log=lambda m: None) == []  # up to date: nothing re-made


def test_an_export_that_can_no_longer_be_made_is_removed_and_said(tmp_path):
    d = _sweep(tmp_path)
    path = export(d, "megatron", paths="a=/data/a,b=/data/b")
    with Journal(d / "journal.jsonl") as j:  # the sweep's recommendation now has a domain the paths do not cover...
        j.append("sweep_resumed", name="s", domains=["a", "b"])
    (d / "report" / "exports.json").write_text(json.dumps({path.name: {"format": "megatron", "paths": {"a": "/data/a"}, "journal_seq": 0}}))
    said: list[str] = []
    refresh_exports(d, log=said.append)
    assert not path.exists() and said and "cannot be made again" in said[0] and "\n" not in said[0]


def test_exports_outside_the_sweep_are_never_refreshed_and_a_manifest_cannot_point_outside(tmp_path):
    d = _sweep(tmp_path)
    mine = export(d, "json", out=tmp_path / "mine.json")
    blob = mine.read_bytes()
    (d / "report").mkdir(exist_ok=True)
    (d / "report" / "exports.json").write_text(json.dumps({"../../escape.json": {"format": "json", "paths": None, "journal_seq": -5}}))
    _resumed(d, {"a": 0.2, "b": 0.8})
    refresh_exports(d, log=lambda m: None)
    assert mine.read_bytes() == blob  # the user's own file, outside the sweep: theirs, untouched
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "parent" / "escape.json").exists()
    assert (d / "report" / "escape.json").exists()  # the name, taken as a file in report/ only


@pytest.mark.parametrize("rows, distinct, ok", [(8, 1, False), (8, 2, False), (3, 3, True), (9, 3, True)])
def test_copies_of_one_run_do_not_count_towards_a_strategys_minimum(tmp_path, rows, distinct, ok):
    from orchestrator.runs import RunsTableError, read_runs, require_runs

    mixtures = [{"a": 0.2 + 0.1 * (i % distinct), "b": 0.8 - 0.1 * (i % distinct)} for i in range(rows)]
    frame = runs_frame([Mixture.from_dict(m, ("a", "b")) for m in mixtures], [{"a": 2.0, "b": 2.1}] * rows)
    table = read_runs(write_frame(frame, tmp_path / "runs.csv"))
    if ok:
        require_runs(table, 3, "strategy x")
        return
    with pytest.raises(RunsTableError, match=f"has {rows} usable runs but only {distinct} distinct mixture") as err:
        require_runs(table, 3, "strategy x")
    assert "\n" not in str(err.value)
