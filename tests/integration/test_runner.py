"""The trial runner: trainer processes are reused across trials (never after a failure), and a ladder
trial gets every guarantee a sweep trial gets, because both run through the same runner."""

from __future__ import annotations

import json

import pytest

from orchestrator.controller import Controller
from orchestrator.journal import read_events, replay
from orchestrator.spec import parse_spec
from orchestrator.trial import TrialStatus


def _pids(sweep_dir) -> dict[str, int]:
    """trial -> pid of the process its last attempt ran in (journaled `trial_placed`)."""
    return {e["trial"]: e["pid"] for e in read_events(sweep_dir / "journal.jsonl") if e["event"] == "trial_placed"}


def _run(tmp_path, trainer: dict, trials: int, concurrency: int, reuse: bool, name: str = "runner", **extra):
    spec = parse_spec({"name": name, "domains": {d: {} for d in "abc"}, "trainer": trainer,
                       "strategy": {"kind": "sobol"}, "budget": {"trials": trials, "concurrency": concurrency},
                       "resources": {"reuse_actors": reuse}, "seed": 3, **extra})
    sweep_dir = tmp_path / f"{name}-{reuse}"
    controller = Controller(spec, sweep_dir, log=lambda m: None)
    controller.run()
    return controller, sweep_dir


SYNTHETIC = {"kind": "synthetic", "duration_s": 0.05, "progress_events": 1, "noise": 0.0}


def test_trainer_processes_are_reused_across_trials_and_not_without_reuse(ray_session, tmp_path):
    pooled, pooled_dir = _run(tmp_path, SYNTHETIC, trials=6, concurrency=2, reuse=True)
    single, single_dir = _run(tmp_path, SYNTHETIC, trials=6, concurrency=2, reuse=False)
    assert len(replay(pooled_dir / "journal.jsonl").completed) == 6
    assert pooled.runner.pool.started == 2 and len(set(_pids(pooled_dir).values())) == 2
    assert single.runner.pool.started == 6 and len(set(_pids(single_dir).values())) == 6


def test_a_process_whose_trial_failed_never_runs_another(ray_session, tmp_path):
    trainer = {"kind": "python", "callable": "trainers:fails_when_first_domain_dominates"}
    _, sweep_dir = _run(tmp_path, trainer, trials=8, concurrency=1, reuse=True, name="failing")
    state = replay(sweep_dir / "journal.jsonl")
    pids = _pids(sweep_dir)
    order = [t.id for t in state.in_order()]
    failed = [t for t in order if state.trials[t].status == TrialStatus.FAILED]
    assert failed and len(failed) < len(order), "the scenario needs both outcomes"
    for before, after in zip(order, order[1:]):
        if state.trials[before].status == TrialStatus.FAILED:
            assert pids[after] != pids[before], f"{after} ran in the process of failed {before}"
    completed_then_next = [(b, a) for b, a in zip(order, order[1:]) if state.trials[b].status == TrialStatus.COMPLETED]
    assert any(pids[a] == pids[b] for b, a in completed_then_next), "a completed trial's process is reused"


@pytest.mark.slow
def test_a_ladder_trial_gets_the_guarantees_of_a_sweep_trial(ray_session, tmp_path):
    # The optimum moves with scale, so the sweep's best mixture is far from the optimum at 1m, where its
    # losses pass the divergence bound: the ladder's trial must be stopped by the same rule as a sweep's,
    # stream progress into its trial files, and be journaled with its placement and attempt like any trial.
    trainer = {**SYNTHETIC, "progress_events": 2,
               "optimum_at_scale": {"debug": {"a": 0.8, "b": 0.1, "c": 0.1}, "1m": {"a": 0.05, "b": 0.05, "c": 0.9}}}
    _, sweep_dir = _run(tmp_path, trainer, trials=4, concurrency=2, reuse=True, name="ladder",
                        ladder={"presets": ["debug", "1m"], "top_k": 1, "baselines": ["uniform"]},
                        budget={"trials": 4, "concurrency": 2, "max_loss": 5.0})
    state = replay(sweep_dir / "journal.jsonl")
    assert state.completed
    rung = [t for t in state.ladder.values() if t.preset == "1m"]
    diverged = [t for t in rung if t.status == TrialStatus.FAILED and t.reason.startswith("diverged")]
    assert diverged and all("bound 5.00" in t.reason for t in diverged)
    for t in rung:
        assert t.placement and t.attempts == 1
        lines = (sweep_dir / "trials" / t.id / "progress.jsonl").read_text().splitlines()
        assert lines and json.loads(lines[0])["trial"] == t.id
