"""DoReMi end to end: a real Ray sweep runs the reference, the online proxy and the averaged weights."""

from __future__ import annotations

import pytest

from orchestrator.objective import Objective


@pytest.mark.slow
def test_doremi_sweep_on_ray_recommends_a_measured_run_at_the_averaged_weights(ray_session, text_domains, tmp_path):
    from orchestrator.controller import Controller
    from orchestrator.journal import read_events
    from orchestrator.spec import parse_spec
    from orchestrator.state import SweepState

    spec = parse_spec({
        "name": "doremi", "domains": {n: {"path": str(p)} for n, p in text_domains.items()},
        "proxy": {"preset": "debug", "tokens_per_trial": 16_384, "eval_every_tokens": 8192, "val_tokens_per_domain": 2048},
        "strategy": {"kind": "doremi"}, "budget": {"trials": 4, "concurrency": 2},
        "data": {"cache_dir": str(tmp_path / "cache")},
    })
    rec = Controller(spec, tmp_path / "sweep", log=lambda m: None).run()
    events = list(read_events(tmp_path / "sweep" / "journal.jsonl"))
    proposed = [e for e in events if e["event"] == "trial_proposed"]
    done = {e["trial"]: e for e in events if e["event"] == "trial_completed"}
    assert len(proposed) == 3 and len(done) == 3  # reference, proxy, the averaged weights; nothing more
    ref, proxy, final = proposed
    assert ref["mixture"] == proxy["mixture"] and ref["trial"] != proxy["trial"]  # same mixture, other trials
    assert ref["options"] == {"save_final_weights": True} and proxy["options"]["online"]["kind"] == "doremi"
    assert proxy["options"]["online"]["reference"] == done[ref["trial"]]["artifacts"]["final_weights"]
    average = done[proxy["trial"]]["artifacts"]["online"]["average"]
    assert final["mixture"] == pytest.approx(average, abs=1e-6) and final["options"] == {}
    weights = [e["weights"] for e in events if e["event"] == "trial_progress" and e["trial"] == proxy["trial"]]
    assert len(weights) == 2 and all(sum(w.values()) == pytest.approx(1.0) for w in weights)
    assert rec.mixture.as_dict() == final["mixture"] and rec.source == "observed"
    assert rec.predicted == done[final["trial"]]["losses"]
    state = SweepState(Objective.from_spec(spec.objective, spec.domain_names))  # trials scored as `status` scores them
    for e in events:
        state.apply(e)
    assert state.trials[proxy["trial"]].to_json()["online_weights"] == weights[-1]  # what `status --json` shows
    # The proxy run's losses are not its mixture's: never the best run, or a runs-table row.
    from orchestrator.export import runs_table

    assert not state.trials[proxy["trial"]].measures_mixture and state.best().id != proxy["trial"]
    assert proxy["trial"] not in set(runs_table(state)["trial"]) and len(runs_table(state)) == 2
