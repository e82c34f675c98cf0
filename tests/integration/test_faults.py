"""Trials that diverge, raise or hang end FAILED with their reason; a lost node's trial is retried."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.controller import Controller
from orchestrator.journal import replay
from orchestrator.spec import parse_spec
from orchestrator.trial import TrialStatus


def _sweep(tmp_path, trainer: str, **budget):
    spec = parse_spec({
        "name": trainer, "domains": {d: {} for d in ("a", "b")},
        "trainer": {"kind": "python", "callable": f"trainers:{trainer}"},
        "strategy": {"kind": "sobol"}, "budget": {"trials": 2, "concurrency": 2, **budget},
    })
    controller = Controller(spec, tmp_path / "sweep", log=lambda m: None)
    controller.run()
    return controller, replay(tmp_path / "sweep" / "journal.jsonl")


def test_a_diverging_trial_fails_with_its_step(ray_session, tmp_path):
    controller, state = _sweep(tmp_path, "diverges")
    failed = state.by_status(TrialStatus.FAILED)
    assert len(failed) == 2 and not controller.strategy.observations
    assert all(t.reason.startswith("diverged at step 2") for t in failed)


def test_a_diverging_proxy_loss_past_the_bound_fails(ray_session, tmp_path):
    _, state = _sweep(tmp_path, "quadratic", max_loss=1.5)  # quadratic reports losses above 2
    assert len(state.trials) == 2
    assert all(t.status == TrialStatus.FAILED and "bound 1.50" in t.reason for t in state.trials.values())


@pytest.mark.slow
def test_a_hanging_trial_is_retried_then_fails(ray_session, tmp_path):
    _, state = _sweep(tmp_path, "hangs", trial_timeout_s=2.0, max_attempts=2)
    for t in state.trials.values():
        assert t.status == TrialStatus.FAILED and t.attempts == 2
        assert t.reason.startswith("hung") and "(attempt 2 of 2)" in t.reason
        assert len(t.failed_attempts) == 1 and t.failed_attempts[0].startswith("hung")


@pytest.mark.slow
def test_a_trial_on_a_lost_node_is_retried_on_another(tmp_path):
    # Its own Ray cluster (head + two GPU worker nodes), so it runs in a subprocess of its own.
    script = Path(__file__).with_name("node_loss_scenario.py")
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "scenario.json").read_text())
    state = replay(tmp_path / "sweep" / "journal.jsonl")
    victim = state.trials[report["victim_trial"]]
    assert victim.status == TrialStatus.COMPLETED and victim.attempts >= 2
    assert victim.failed_attempts and all(r.startswith("actor died") for r in victim.failed_attempts)
    assert victim.placement["node_id"] != report["removed_node"]
    assert victim.placement["gpus"], "the retried attempt holds a GPU"
    assert len(state.completed) == report["budget"]
