import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.journal import Journal, JournalError, replay
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


def test_replay_folds_every_event(tmp_path):
    p = tmp_path / "journal.jsonl"
    _write_sweep(p)
    s = replay(p)
    assert s.trials["t000000000001"].status == TrialStatus.COMPLETED and s.trials["t000000000001"].progress_events == 1
    assert s.trials["t000000000002"].status == TrialStatus.FAILED and s.trials["t000000000002"].reason == "ValueError: boom"
    summary = s.summary()
    assert (summary["completed"], summary["failed"], summary["running"], summary["reused"]) == (1, 1, 0, 1)
    assert s.best().id == "t000000000001"
    assert [json.loads(line)["seq"] for line in p.read_text().splitlines()] == list(range(9))


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
