import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.journal import EVENTS, Journal, JournalError, read_events, replay
from orchestrator.state import SweepState
from orchestrator.trial import TrialStatus


def _write_sweep(path):
    with Journal(path) as j:
        j.append("sweep_started", name="s", domains=["a", "b"], budget=3, concurrency=2, objective="mean")
        j.append("trial_proposed", trial="t000000000001", mixture={"a": 0.5, "b": 0.5})
        j.append("trial_started", trial="t000000000001", attempt=1)
        j.append("trial_proposed", trial="t000000000002", mixture={"a": 0.9, "b": 0.1})
        j.append("trial_started", trial="t000000000002", attempt=1)
        j.append("trial_progress", trial="t000000000001", step=1, tokens=10, losses={"a": 3.0, "b": 3.0})
        j.append("trial_completed", trial="t000000000001", losses={"a": 2.0, "b": 2.5}, objective=2.25)
        j.append("trial_failed", trial="t000000000002", reason="ValueError: boom")
        j.append("trial_reused", trial="t000000000001")


def test_a_small_sweep_replays_to_its_counts_and_its_best(tmp_path):
    p = tmp_path / "journal.jsonl"
    _write_sweep(p)
    s = replay(p)
    assert s.trials["t000000000001"].status == TrialStatus.COMPLETED and s.trials["t000000000001"].progress_events == 1
    assert s.trials["t000000000002"].status == TrialStatus.FAILED and s.trials["t000000000002"].reason == "ValueError: boom"
    summary = s.summary()
    assert (summary["completed"], summary["failed"], summary["running"], summary["reused"]) == (1, 1, 0, 1)
    assert s.best().id == "t000000000001"
    assert [json.loads(line)["seq"] for line in p.read_text().splitlines()] == list(range(9))


A, B, LADDER = "t0000000000a1", "t0000000000b2", "t0000000000a1-1m"
REC = {"mixture": {"a": 0.55, "b": 0.45}, "predicted_losses": {"a": 2.1, "b": 2.4}, "source": "model"}
# One event of every kind (and both forms of trial_reused), in an order a controller could write them.
EVERY_KIND = [
    ("sweep_started", dict(name="s", domains=["a", "b"], budget=4, concurrency=2, objective="mean loss", spec_digest="d1",
                           domain_tokens={"a": 1000, "b": 500}, caps={"a": 1.0, "b": 0.8})),
    ("trial_proposed", dict(trial=A, mixture={"a": 0.5, "b": 0.5}, proposal_s=0.25, options={"token_logprobs": True})),
    ("trial_started", dict(trial=A, attempt=1, actor="trainer-1")),
    ("trial_placed", dict(trial=A, node_id="n1", pid=42, gpus=[0])),
    ("trial_progress", dict(trial=A, step=1, tokens=64, losses={"a": 3.0, "b": 3.5}, elapsed_s=0.5)),
    ("trial_requeued", dict(trial=A, attempt=1, reason="actor died: node lost")),
    ("trial_started", dict(trial=A, attempt=2, actor="trainer-2")),
    ("sweep_interrupted", dict(reason="SIGTERM", running=[A])),
    ("sweep_resumed", dict(budget=5, changes={"budget.trials": [4, 5]})),
    ("trial_completed", dict(trial=A, losses={"a": 2.0, "b": 2.5}, loss_stderr={"a": 0.01, "b": 0.02}, objective=2.25, wall_s=3.5)),
    ("trial_proposed", dict(trial=B, mixture={"a": 0.9, "b": 0.1})),
    ("trial_failed", dict(trial=B, reason="ValueError: boom")),
    ("trial_reused", dict(trial=A, mixture={"a": 0.5004, "b": 0.4996}, matched="completed", distance=0.0004)),
    ("trial_reused", dict(trial=A, mixture={"a": 0.5, "b": 0.5})),  # journals before weight_precision: spent budget
    ("trial_proposed", dict(trial=LADDER, mixture={"a": 0.5, "b": 0.5}, preset="1m", role="top1")),
    ("trial_completed", dict(trial=LADDER, losses={"a": 1.5, "b": 1.9}, objective=1.7)),
    ("scale_recommended", dict(preset="1m", mixture={"a": 0.6, "b": 0.4}, notes=["fitted on 1 rung"])),
    ("recommended", REC),
    ("sweep_finished", dict(completed=1, reused=2)),
]


def test_replay_folds_every_kind_of_event_into_the_state_it_changes(tmp_path):
    p = tmp_path / "journal.jsonl"
    with Journal(p) as j:
        for kind, fields in EVERY_KIND:
            j.append(kind, **fields)
    events = iter(read_events(p))
    assert {kind for kind, _ in EVERY_KIND} == set(EVENTS)  # a new kind must be folded and checked here
    s = SweepState()

    def fold(kind):
        e = next(events)
        assert e["event"] == kind
        s.apply(e)
        return e

    fold("sweep_started")
    assert (s.name, s.domains, s.budget, s.concurrency, s.objective_text, s.spec_digest) == ("s", ("a", "b"), 4, 2, "mean loss", "d1")
    assert (s.domain_tokens, s.caps, s.finished, s.resumes) == ({"a": 1000, "b": 500}, {"a": 1.0, "b": 0.8}, False, 0)
    e = fold("trial_proposed")
    a = s.trials[A]
    assert (a.status, a.mixture, a.proposed_seq, a.proposal_s, a.options) == (TrialStatus.PROPOSED, {"a": 0.5, "b": 0.5}, e["seq"], 0.25, {"token_logprobs": True})
    fold("trial_started")
    assert (a.status, a.attempts) == (TrialStatus.RUNNING, 1)
    fold("trial_placed")
    assert a.placement == {"node_id": "n1", "pid": 42, "gpus": [0]} and a.status == TrialStatus.RUNNING
    fold("trial_progress")
    assert (a.progress_events, a.last_progress) == (1, {"step": 1, "tokens": 64, "losses": {"a": 3.0, "b": 3.5}})
    fold("trial_requeued")
    assert (a.status, a.failed_attempts, a.attempts) == (TrialStatus.PROPOSED, ["actor died: node lost"], 1)
    fold("trial_started")
    assert (a.status, a.attempts) == (TrialStatus.RUNNING, 2)
    fold("sweep_interrupted")
    assert s.interruptions == 1 and a.status == TrialStatus.RUNNING  # resume re-queues it
    fold("sweep_resumed")
    assert (s.resumes, s.budget, s.name, s.domains, s.finished) == (1, 5, "s", ("a", "b"), False)
    e = fold("trial_completed")
    assert (a.status, a.losses, a.loss_stderr, a.wall_s) == (TrialStatus.COMPLETED, {"a": 2.0, "b": 2.5}, {"a": 0.01, "b": 0.02}, 3.5)
    assert (a.completed_seq, a.objective, s.best()) == (e["seq"], 2.25, a)  # no objective defined: the journaled number
    fold("trial_proposed")
    fold("trial_failed")
    b = s.trials[B]
    assert (b.status, b.reason, b.losses) == (TrialStatus.FAILED, "ValueError: boom", None)
    fold("trial_reused")
    assert (s.reused, s.reused_budget, len(s.trials)) == (1, 0, 2)  # a repeat is no new trial and spends nothing
    fold("trial_reused")
    assert (s.reused, s.reused_budget) == (2, 1)
    fold("trial_proposed")
    assert LADDER not in s.trials and (s.ladder[LADDER].preset, s.ladder[LADDER].role) == ("1m", "top1")
    fold("trial_completed")
    assert s.trial(LADDER).status == TrialStatus.COMPLETED and s.best() is a  # a ladder run is never the sweep's best
    fold("scale_recommended")
    assert s.scale_recommendations == {"1m": {"preset": "1m", "mixture": {"a": 0.6, "b": 0.4}, "notes": ["fitted on 1 rung"]}}
    fold("recommended")
    assert s.recommendation == REC and not s.finished
    fold("sweep_finished")
    assert s.finished
    assert next(events, None) is None
    summary = s.summary()
    assert (summary["proposed"], summary["completed"], summary["failed"], summary["running"]) == (2, 1, 1, 0)
    assert replay(p).summary() == summary  # replaying the file folds to the same state


def test_reopened_journal_continues_the_sequence(tmp_path):
    p = tmp_path / "journal.jsonl"
    _write_sweep(p)
    with Journal(p) as j:
        assert j.append("sweep_finished")["seq"] == 9


def test_torn_last_line_is_dropped_and_reported(tmp_path):
    p = tmp_path / "journal.jsonl"
    _write_sweep(p)
    data = p.read_bytes()
    p.write_bytes(data[:-20])  # a crash mid-write of the last event
    warn = []
    s = replay(p, warn)
    assert "t000000000002" in s.trials and s.reused == 0
    assert warn and "line 9" in warn[0]


def test_corruption_before_the_end_names_the_line(tmp_path):
    p = tmp_path / "journal.jsonl"
    _write_sweep(p)
    lines = p.read_text().splitlines()
    lines[3] = "{not json"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(JournalError, match="line 4"):
        replay(p)


def test_unknown_event_is_refused(tmp_path):
    with Journal(tmp_path / "j.jsonl") as j, pytest.raises(ValueError):
        j.append("trial_exploded")


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_any_prefix_of_a_journal_replays_consistently(tmp_path_factory, cut):
    p = tmp_path_factory.mktemp("j") / "journal.jsonl"
    _write_sweep(p)
    data = p.read_bytes()
    p.write_bytes(data[: cut % (len(data) + 1)])
    s = replay(p, [])
    summary = s.summary()
    # Counts are consistent with the trials listed, whatever the cut.
    assert summary["completed"] + summary["failed"] + summary["running"] <= summary["proposed"] == len(s.trials)
    for t in s.trials.values():
        assert (t.losses is not None) == (t.status == TrialStatus.COMPLETED)
