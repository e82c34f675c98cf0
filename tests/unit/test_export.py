"""`mixsweep export`: every format parses back to the recommended weights; bad input is one line."""

import ast
import json

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.export import ExportError, export, parse_megatron
from orchestrator.journal import Journal
from orchestrator.runs import read_runs

DOMAINS = ("web", "code", "math")
# Weights that do not print short (thirds, sevenths) and one zero: the round trip must be exact.
RECOMMENDED = {"web": 4 / 7, "code": 3 / 7 - 1 / 3, "math": 1 / 3}
TRIALS = [
    ("t000000000001", {"web": 1 / 3, "code": 1 / 3, "math": 1 / 3}, {"web": 2.5, "code": 2.1, "math": 2.3}),
    ("t000000000002", {"web": 0.6, "code": 0.1, "math": 0.3}, {"web": 2.3, "code": 2.4, "math": 2.35}),
    ("t000000000003", {"web": 1.0, "code": 0.0, "math": 0.0}, {"web": 2.1, "code": 3.0, "math": 2.9}),
]


def _sweep(tmp_path, recommended=True, completed=True):
    """A sweep directory written through the journal (the controller's own event format) and a spec."""
    d = tmp_path / "sweep"
    (d / "data").mkdir(parents=True)
    (d / "data" / "web.jsonl").write_text('{"text": "hello"}\n')
    spec = {"name": "exp", "domains": {"web": {"path": str(d / "data" / "web.jsonl")}, "code": {"path": str(d / "data" / "*.py")},
                                       "math": {"demo": "math"}}}
    (d / "spec.yaml").write_text(yaml.safe_dump(spec))
    with Journal(d / "journal.jsonl") as j:
        j.append("sweep_started", name="exp", domains=list(DOMAINS), budget=3, concurrency=1, objective="mean")
        for tid, mixture, losses in TRIALS:
            j.append("trial_proposed", trial=tid, mixture=mixture)
            j.append("trial_started", trial=tid, attempt=1)
            if completed:
                j.append("trial_completed", trial=tid, losses=losses, objective=sum(losses.values()) / 3, wall_s=1.5)
        j.append("trial_proposed", trial="t000000000004", mixture={"web": 0.2, "code": 0.2, "math": 0.6})
        j.append("trial_failed", trial="t000000000004", reason="diverged")
        if recommended:
            j.append("recommended", mixture=RECOMMENDED, predicted_losses={"web": 2.2, "code": 2.3, "math": 2.25},
                     objective=2.25, source="model", trials_used=3, notes=[])
    return d


def test_every_format_parses_back_to_the_recommended_weights(tmp_path):
    d = _sweep(tmp_path)
    doc = json.loads(export(d, "json").read_text())
    assert doc["mixture"] == RECOMMENDED and doc["domains"] == list(DOMAINS)
    assert yaml.safe_load(export(d, "yaml").read_text())["mixture"] == RECOMMENDED

    # Megatron: paths from the spec where a domain is one file, the others from --paths.
    from orchestrator.spec import load_frozen_spec

    blend = export(d, "megatron", paths="code=/data/code_text_document,math=/data/math_text_document", spec=load_frozen_spec(d))
    pairs = parse_megatron(blend.read_text())
    assert [p for _, p in pairs] == [str(d / "data" / "web.jsonl"), "/data/code_text_document", "/data/math_text_document"]
    assert [w for w, _ in pairs] == [RECOMMENDED[x] for x in DOMAINS]

    # Hugging Face: the snippet parses, states the domain order, and runs interleave_datasets.
    source = export(d, "hf").read_text()
    names = {t.id: ast.literal_eval(v) for node in ast.parse(source).body if isinstance(node, ast.Assign)
             for t, v in [(node.targets[0], node.value)]}
    assert dict(zip(names["DOMAINS"], names["PROBABILITIES"])) == RECOMMENDED and names["DOMAINS"] == list(DOMAINS)
    from datasets import Dataset

    namespace: dict = {}
    exec(compile(source, "interleave.py", "exec"), namespace)
    parts = {x: Dataset.from_dict({"text": [f"{x}{i}" for i in range(50)]}) for x in DOMAINS}
    mixed = namespace["interleave"](parts, seed=0, stopping_strategy="first_exhausted")
    assert len(mixed) > 0 and {t.rstrip("0123456789") for t in mixed["text"]} <= set(DOMAINS)

    table = read_runs(export(d, "runs", out=tmp_path / "runs.parquet"))
    assert len(table) == 3 and table.domains == DOMAINS  # completed trials only; the failed one has no losses
    for (tid, mixture, losses), w, row in zip(TRIALS, table.weights, table.loss_dicts()):
        assert dict(zip(DOMAINS, w.tolist())) == pytest.approx(mixture, abs=1e-12) and row == losses
    assert table.extra["trial"].tolist() == ["t000000000001", "t000000000002", "t000000000003"]


def test_zero_weight_domains_are_left_out_of_the_hf_snippet(tmp_path):
    from orchestrator.export import render_hf

    source = render_hf({"web": 0.7, "code": 0.0, "math": 0.3}, "exp")
    namespace: dict = {}
    exec(compile(source, "interleave.py", "exec"), namespace)
    assert namespace["DOMAINS"] == ["web", "math"] and namespace["PROBABILITIES"] == [0.7, 0.3]
    assert namespace["LEFT_OUT"] == ["code"]


def test_a_sweep_stopped_before_recommending_exports_its_best_trial(tmp_path):
    d = _sweep(tmp_path, recommended=False)
    doc = json.loads(export(d, "json").read_text())
    assert doc["mixture"] == TRIALS[0][1] and doc["source"] == "observed"  # t1 has the lowest mean loss (2.30)


def test_cli_writes_report_files_and_bad_input_is_one_line(tmp_path):
    d = _sweep(tmp_path)
    result = CliRunner().invoke(app, ["export", str(d), "--format", "yaml"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((d / "report" / "mixture.yaml").read_text())["mixture"] == RECOMMENDED
    cases = [
        (["--format", "csv"], "--format 'csv' is unknown"),
        (["--format", "megatron"], "pass --paths code=PATH"),
        (["--format", "megatron", "--paths", "nope=/x"], "unknown domain(s) ['nope']"),
        (["--format", "megatron", "--paths", "code"], "is not domain=PATH"),
    ]
    for args, needle in cases:
        result = CliRunner().invoke(app, ["export", str(d), *args])
        assert isinstance(result.exception, ExportError), result.output
        assert needle in str(result.exception) and "\n" not in str(result.exception)
    empty = _sweep(tmp_path / "empty", recommended=False, completed=False)
    with pytest.raises(ExportError, match="no completed trial"):
        export(empty, "runs")
