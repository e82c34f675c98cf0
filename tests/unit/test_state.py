"""SweepState scores every trial from its journaled losses and the sweep's objective, on one scale: a
reference run that completes late rescales the trials before it, and journaled objectives are ignored."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.export import recommendation, runs_table
from orchestrator.journal import Journal, load
from orchestrator.ladder import ladder_mixtures, ladder_summary
from orchestrator.objective import Objective
from orchestrator.state import SweepState
from orchestrator.sweepdir import read_frozen_spec

DOMAINS = ("a", "b")
UNIFORM = {"a": 0.5, "b": 0.5}
REFERENCE_LOSSES = {"a": 3.0, "b": 1.0}
# (id, mixture, losses, options). Completion order: the online proxy run at the reference mixture, x and
# y, then the reference run, then z. On the plain worst loss y (2.90) beats x (2.95); measured against the
# reference (excess), x (max(-0.05, -0.02) = -0.02) beats the reference itself (0) and y (0.5).
TRIALS = [
    ("t0000000000f0", UNIFORM, {"a": 2.0, "b": 0.5}, {"online": {"kind": "doremi"}}),
    ("t0000000000a1", {"a": 0.7, "b": 0.3}, {"a": 2.95, "b": 0.98}, None),
    ("t0000000000a2", {"a": 0.3, "b": 0.7}, {"a": 2.90, "b": 1.5}, None),
    ("t0000000000a3", UNIFORM, REFERENCE_LOSSES, None),
    ("t0000000000a4", {"a": 0.6, "b": 0.4}, {"a": 3.05, "b": 1.2}, None),
]
EXCESS = {"t0000000000a1": -0.02, "t0000000000a2": 0.5, "t0000000000a3": 0.0, "t0000000000a4": 0.2}


def _sweep(tmp_path, objective=None, ladder=False):
    """A sweep directory journaled as a controller that shared one objective would have: plain worst
    losses journaled before the reference run, excess after (numbers the state must ignore)."""
    d = tmp_path / "sweep"
    d.mkdir()
    spec = {"name": "late-reference", "domains": {x: {"demo": x} for x in DOMAINS},
            "objective": objective or {"kind": "worst", "excess": True}}
    (d / "spec.yaml").write_text(yaml.safe_dump(spec))
    with Journal(d / "journal.jsonl") as j:
        j.append("sweep_started", name="late-reference", domains=list(DOMAINS), budget=5, concurrency=5,
                 objective="worst excess loss over the reference run")
        for tid, mixture, _, options in TRIALS:
            j.append("trial_proposed", trial=tid, mixture=mixture, **({"options": options} if options else {}))
        known = False
        for tid, mixture, losses, options in TRIALS:
            journaled = max(losses[x] - (REFERENCE_LOSSES[x] if known else 0.0) for x in DOMAINS)
            j.append("trial_completed", trial=tid, losses=losses, objective=journaled, wall_s=1.0)
            known = known or tid == "t0000000000a3"
        if ladder:
            j.append("trial_proposed", trial="t0000000000a1-1m", mixture=TRIALS[1][1], preset="1m", role="top1")
            j.append("trial_completed", trial="t0000000000a1-1m", losses={"a": 2.5, "b": 0.9}, objective=99.0)
    return d


def test_trials_completed_before_the_reference_run_are_scored_against_it_once_it_arrives(tmp_path):
    d = _sweep(tmp_path)
    _, state = load(d / "journal.jsonl")
    assert state.reference_trial == "t0000000000a3"  # the proxy run at the same mixture is not the reference
    assert state.objective.reference == REFERENCE_LOSSES
    assert {t.id: t.objective for t in state.completed if t.id in EXCESS} == pytest.approx(EXCESS)
    assert state.trial("t0000000000f0").objective == pytest.approx(-0.5)  # scored too, never the best
    assert state.best().id == "t0000000000a1"  # on the plain worst loss it would be t...a2
    summary = state.summary()
    assert summary["best"]["objective"] == pytest.approx(-0.02) and summary["reference_trial"] == "t0000000000a3"
    assert {t["id"]: t["objective"] for t in summary["trials"] if t["id"] in EXCESS} == pytest.approx(EXCESS)
    # Every reader of the sweep directory sees the same scale.
    assert recommendation(state)["objective"] == pytest.approx(-0.02)
    frame = runs_table(state)
    assert dict(zip(frame["trial"], frame["objective"])) == pytest.approx(EXCESS)
    top = ladder_mixtures(state, DOMAINS, 2, [], None)
    assert [(role, m.as_dict()) for role, m in top] == [("top1", {"a": 0.7, "b": 0.3}), ("top2", UNIFORM)]
    result = CliRunner().invoke(app, ["status", str(d), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert {t["id"]: t["objective"] for t in shown["trials"] if t["id"] in EXCESS} == pytest.approx(EXCESS)
    assert shown["best"]["id"] == "t0000000000a1"


def test_before_the_reference_run_every_trial_is_on_the_plain_scale(tmp_path):
    d = _sweep(tmp_path)
    events, _ = load(d / "journal.jsonl")
    state = SweepState(Objective.from_frozen_spec(read_frozen_spec(d)))
    for e in events:
        state.apply(e)
        if e["event"] == "trial_completed" and e["trial"] == "t0000000000a2":
            break
    assert state.reference_trial is None and not state.objective.reference_known
    assert {t.id: t.objective for t in state.completed} == pytest.approx({"t0000000000f0": 2.0, "t0000000000a1": 2.95, "t0000000000a2": 2.90})
    assert state.objective_notes() and "has not completed" in state.objective_notes()[0]


def test_ladder_trials_are_scored_on_the_sweep_scale_and_never_the_reference(tmp_path):
    d = _sweep(tmp_path, ladder=True)
    _, state = load(d / "journal.jsonl")
    assert state.ladder["t0000000000a1-1m"].objective == pytest.approx(max(2.5 - 3.0, 0.9 - 1.0))
    rung = ladder_summary(state, "debug")["rungs"][0]
    assert rung["rows"][0]["objective"] == pytest.approx(-0.1) and rung["rows"][0]["base_objective"] == pytest.approx(-0.02)


def test_a_journaled_objective_is_ignored_where_the_objective_is_defined(tmp_path):
    d = _sweep(tmp_path, objective={"kind": "mean"})
    _, state = load(d / "journal.jsonl")
    means = {tid: sum(losses.values()) / 2 for tid, _, losses, _ in TRIALS}
    assert {t.id: t.objective for t in state.completed} == pytest.approx(means)  # not the journaled worst
    assert state.reference_trial is None and state.objective_notes() == []
