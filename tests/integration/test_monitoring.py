"""The sweep's metrics reach Ray's Prometheus endpoint (what the dashboard's metrics view reads)."""

import re
import time
import urllib.request

import pytest

from orchestrator.controller import Controller
from orchestrator.journal import replay
from orchestrator.spec import parse_spec


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


@pytest.mark.slow
def test_sweep_metrics_are_exported(ray_session, tmp_path):
    spec = parse_spec({
        "name": "metrics", "domains": {d: {} for d in ("a", "b")},
        "trainer": {"kind": "synthetic", "duration_s": 0.2, "progress_events": 2, "noise": 0.0},
        "strategy": {"kind": "sobol"}, "budget": {"trials": 3, "concurrency": 2},
    })
    Controller(spec, tmp_path / "sweep", log=lambda m: None).run()
    best = replay(tmp_path / "sweep" / "journal.jsonl").best()
    port = ray_session._private.worker.global_worker.node.metrics_export_port
    deadline, found = time.time() + 60, {}  # Ray exports every ~10 s
    while time.time() < deadline and not (found.get("mixsweep_trials_completed") == 3
                                          and found.get("mixsweep_best_objective") == pytest.approx(best.objective, rel=1e-9)):
        for line in _scrape(port).splitlines():
            m = re.match(r'ray_(mixsweep_\w+)\{.*sweep="metrics".*\} (\S+)$', line)
            if m:
                found[m.group(1)] = float(m.group(2))
        time.sleep(1)
    assert found.get("mixsweep_trials_completed") == 3
    assert found.get("mixsweep_trials_running") == 0
    # The sweep's best, exactly: a range would admit any mixture's mean loss on this problem.
    assert found.get("mixsweep_best_objective") == pytest.approx(best.objective, rel=1e-9)
    assert "mixsweep_trial_loss" in found
