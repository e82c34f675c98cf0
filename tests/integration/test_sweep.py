"""End-to-end sweeps on a real local Ray: the journal, result files and `status --json` must agree."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import make_text, run_cli
from orchestrator.controller import Controller
from orchestrator.journal import read_events, replay
from orchestrator.spec import parse_spec
from orchestrator.trial import TrialStatus

def _status_json(sweep_dir: Path) -> dict:
    out = run_cli(["status", str(sweep_dir), "--json"])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _check_sweep_dir_agrees(sweep_dir: Path, budget: int) -> dict:
    events = list(read_events(sweep_dir / "journal.jsonl"))
    status = _status_json(sweep_dir)
    assert status["budget"] == budget and len(status["trials"]) == budget
    assert [e["event"] for e in events][0] == "sweep_started" and events[-1]["event"] == "sweep_finished"
    ids = [t["id"] for t in status["trials"]]
    assert len(set(ids)) == len(ids)
    for t in status["trials"]:
        trial_events = [e for e in events if e.get("trial") == t["id"]]
        if t["status"] == "completed":
            result = json.loads((sweep_dir / "trials" / t["id"] / "result.json").read_text())
            assert result["losses"] == t["losses"] and result["mixture"] == t["mixture"]
            assert all(math.isfinite(v) for v in t["losses"].values())
            done_seq = next(e["seq"] for e in trial_events if e["event"] == "trial_completed")
            progress = [e["seq"] for e in trial_events if e["event"] == "trial_progress"]
            # progress was journaled as it streamed, before the trial finished
            assert progress and max(progress) < done_seq
            lines = (sweep_dir / "trials" / t["id"] / "progress.jsonl").read_text().splitlines()
            assert len(lines) == len(progress) == t["progress_events"]
        assert t["attempts"] == 1
    return status


@pytest.mark.slow
def test_synthetic_sweep_end_to_end(ray_session, tmp_path):
    spec = parse_spec({
        "name": "syn", "domains": {d: {} for d in ("a", "b", "c")},
        "trainer": {"kind": "synthetic", "duration_s": 0.3, "progress_events": 3, "noise": 0.0},
        "strategy": {"kind": "bayesopt", "options": {"initial_trials": 4}},
        "budget": {"trials": 8, "concurrency": 3}, "seed": 0,
    })
    seen_concurrency = []
    rec = Controller(spec, tmp_path / "sweep", on_event=lambda r, s: seen_concurrency.append(
        len(s.by_status(TrialStatus.RUNNING))), log=lambda m: None).run()
    status = _check_sweep_dir_agrees(tmp_path / "sweep", budget=8)
    assert status["completed"] == 8 and status["failed"] == 0
    assert max(seen_concurrency) == 3  # the controller kept every slot busy
    assert rec.source in ("model", "in-sample")  # the model's optimum or the observed run its GP predicts best
    saved = json.loads((tmp_path / "sweep" / "report" / "recommendation.json").read_text())
    assert saved["mixture"] == rec.mixture.as_dict()
    assert saved["predicted_losses"].keys() == {"a", "b", "c"}
    strategy_state = json.loads((tmp_path / "sweep" / "strategy.json").read_text())
    assert len(strategy_state["events"]) == 8


@pytest.mark.slow
def test_proxy_sweep_trains_real_models(ray_session, text_domains, tmp_path):
    spec = parse_spec({
        "name": "proxy", "domains": {n: {"path": str(p)} for n, p in text_domains.items()},
        "proxy": {"preset": "debug", "tokens_per_trial": 16_384, "eval_every_tokens": 8_192, "val_tokens_per_domain": 2048},
        "strategy": {"kind": "sobol"}, "budget": {"trials": 3, "concurrency": 2},
        "data": {"cache_dir": str(tmp_path / "cache")},
    })
    Controller(spec, tmp_path / "sweep", log=lambda m: None).run()
    status = _check_sweep_dir_agrees(tmp_path / "sweep", budget=3)
    assert status["completed"] == 3
    for t in status["trials"]:
        assert t["progress_events"] == 2
        assert all(0.0 < v < 2 * math.log(257) for v in t["losses"].values())  # finite, sane nats/token
        result = json.loads((tmp_path / "sweep" / "trials" / t["id"] / "result.json").read_text())
        assert result["tokens"] == 16_384
        counts = result["info"]["sequences_per_domain"]
        assert abs(counts["vowels"] / sum(counts.values()) - t["mixture"]["vowels"]) <= 1 / sum(counts.values())


@pytest.mark.slow
def test_a_trial_that_raises_fails_and_the_sweep_goes_on(ray_session, tmp_path):
    spec = parse_spec({
        "name": "flaky", "domains": {d: {} for d in ("a", "b", "c")},
        "trainer": {"kind": "python", "callable": "trainers:fails_when_first_domain_dominates"},
        "strategy": {"kind": "sobol"}, "budget": {"trials": 10, "concurrency": 2}, "seed": 2,
    })
    controller = Controller(spec, tmp_path / "sweep", log=lambda m: None)
    controller.run()
    state = replay(tmp_path / "sweep" / "journal.jsonl")
    failed = state.by_status(TrialStatus.FAILED)
    assert failed and state.completed and len(state.completed) + len(failed) == 10
    for t in failed:
        assert t.mixture["a"] > 0.4 and t.reason.startswith("ValueError: refusing a=")
    assert len(controller.strategy.failures) == len(failed)
    assert all(t.mixture["a"] <= 0.4 for t in state.completed)


@pytest.mark.slow
def test_non_finite_losses_never_reach_the_strategy(ray_session, tmp_path):
    spec = parse_spec({
        "name": "nan", "domains": {d: {} for d in ("a", "b")},
        "trainer": {"kind": "python", "callable": "trainers:returns_nan"},
        "strategy": {"kind": "sobol"}, "budget": {"trials": 2, "concurrency": 2},
    })
    controller = Controller(spec, tmp_path / "sweep", log=lambda m: None)
    assert controller.run() is None
    state = replay(tmp_path / "sweep" / "journal.jsonl")
    assert len(state.by_status(TrialStatus.FAILED)) == 2 and not controller.strategy.observations
    assert all("non-finite" in t.reason for t in state.trials.values())


def test_the_same_mixture_is_trained_once(ray_session, tmp_path):
    spec = parse_spec({
        "name": "uni", "domains": {d: {} for d in ("a", "b")},
        "trainer": {"kind": "python", "callable": "trainers:quadratic"},
        "strategy": {"kind": "uniform"}, "budget": {"trials": 3, "concurrency": 1},
    })
    Controller(spec, tmp_path / "sweep", log=lambda m: None).run()
    state = replay(tmp_path / "sweep" / "journal.jsonl")
    assert len(state.trials) == 1 and state.trials[next(iter(state.trials))].losses == {"a": 2.0, "b": 2.0}
    with pytest.raises(Exception, match="already holds a sweep"):
        Controller(spec, tmp_path / "sweep", log=lambda m: None).run()


@pytest.mark.slow
def test_cli_run_prints_the_recommendation(ray_session, tmp_path):
    spec = Path(__file__).parents[2] / "examples" / "synthetic.yaml"
    out = run_cli(["run", str(spec), "--dir", str(tmp_path / "s"), "--quiet"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Recommended mixture" in out.stdout and "objective (mean)" in out.stdout
    status = _status_json(tmp_path / "s")
    assert status["completed"] + status["failed"] == status["budget"] == 12
    assert (tmp_path / "s" / "report" / "objective.png").stat().st_size > 10_000
    # Refused by the sweep directory: on the session's Ray, not a second embedded one started only to refuse.
    again = run_cli(["run", str(spec), "--dir", str(tmp_path / "s"), "--address", ray_session.get_runtime_context().gcs_address])
    assert again.returncode == 2 and again.stderr.strip().startswith("error:") and "Traceback" not in again.stderr


def test_gpu_request_falls_back_to_cpu_where_the_cluster_has_none(ray_session, tmp_path):
    spec = parse_spec({
        "name": "gpu", "domains": {d: {} for d in ("a", "b")},
        "trainer": {"kind": "synthetic", "duration_s": 0.1, "progress_events": 1},
        "strategy": {"kind": "sobol"}, "budget": {"trials": 2, "concurrency": 2}, "resources": {"gpus": 1, "cpus": 1},
    })
    said = []
    Controller(spec, tmp_path / "sweep", log=said.append).run()
    state = replay(tmp_path / "sweep" / "journal.jsonl")
    assert len(state.completed) == 2
    assert any("no GPU" in m for m in said)
    started = next(read_events(tmp_path / "sweep" / "journal.jsonl"))
    assert started["placement"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert all(t.placement["gpus"] == [] for t in state.trials.values())


@pytest.mark.slow
def test_mixmin_sweep_trains_experts_and_uses_their_token_logprobs(ray_session, text_domains, tmp_path):
    spec = parse_spec({
        "name": "mixmin", "domains": {n: {"path": str(p)} for n, p in text_domains.items()},
        "proxy": {"preset": "debug", "tokens_per_trial": 16_384, "eval_every_tokens": 16_384, "val_tokens_per_domain": 2048},
        "strategy": {"kind": "mixmin"}, "budget": {"trials": 5, "concurrency": 2},
        "data": {"cache_dir": str(tmp_path / "cache")},
    })
    rec = Controller(spec, tmp_path / "sweep", log=lambda m: None).run()
    events = list(read_events(tmp_path / "sweep" / "journal.jsonl"))
    done = [e for e in events if e["event"] == "trial_completed"]
    assert len(done) == 3  # two experts, then the MixMin optimum; nothing left to try
    experts = [e for e in done if "artifacts" in e]
    assert len(experts) == 2
    from orchestrator.storage import read_arrays

    for e in experts:
        arrays = read_arrays(e["artifacts"]["token_logprobs"])
        for domain, loss in e["losses"].items():  # the cached tokens reproduce the reported loss
            assert -arrays[domain].mean() == pytest.approx(loss, rel=1e-4)
    assert rec.source == "model" and 0.0 < min(rec.mixture.weights) and max(rec.mixture.weights) < 1.0


@pytest.mark.slow
def test_mixmin_targets_a_downstream_set_given_as_text(ray_session, text_domains, tmp_path):
    """A downstream set that is 85% vowel-like text and 15% digit-like: every trial reports its loss,
    the experts' arrays cover it, and MixMin's mixture for it leans to the vowels domain."""
    import numpy as np

    rng = np.random.default_rng(7)
    # short documents, so the 2,048 held-out tokens (whole documents) hold both kinds
    docs = make_text(rng, "aeiouy", 170, 12) + make_text(rng, "0123456789+=", 30, 12)
    rng.shuffle(docs)
    (tmp_path / "downstream.txt").write_text("\n".join(docs))
    spec = parse_spec({
        "name": "downstream", "domains": {n: {"path": str(p)} for n, p in text_domains.items()},
        "eval_domains": {"downstream": {"path": str(tmp_path / "downstream.txt")}},
        "proxy": {"preset": "debug", "tokens_per_trial": 16_384, "eval_every_tokens": 16_384, "val_tokens_per_domain": 2048},
        "objective": {"kind": "target", "domain": "downstream"},
        "strategy": {"kind": "mixmin"}, "budget": {"trials": 3, "concurrency": 2},
        "data": {"cache_dir": str(tmp_path / "cache")},
    })
    rec = Controller(spec, tmp_path / "sweep", log=lambda m: None).run()
    done = [e for e in read_events(tmp_path / "sweep" / "journal.jsonl") if e["event"] == "trial_completed"]
    assert len(done) == 3 and all(set(e["losses"]) == {"vowels", "digits", "downstream"} for e in done)
    from orchestrator.storage import read_arrays

    for e in done:
        if "artifacts" in e:
            arrays = read_arrays(e["artifacts"]["token_logprobs"])
            assert -arrays["downstream"].mean() == pytest.approx(e["losses"]["downstream"], rel=1e-4)
    w = rec.mixture.as_dict()
    assert 0.6 < w["vowels"] < 0.99 and "downstream" in rec.predicted
    assert rec.objective == pytest.approx(rec.predicted["downstream"])


def test_a_sweep_seeded_with_a_runs_table_starts_from_it(ray_session, tmp_path):
    import numpy as np

    from orchestrator.mixture import Mixture
    from orchestrator.runs import runs_frame, write_frame
    from workers.backends import default_optimum, synthetic_losses

    domains = ("a", "b", "c")
    rng = np.random.default_rng(0)
    mixtures = [Mixture.from_array(domains, w) for w in rng.dirichlet(np.ones(3), size=6)]
    optimum = default_optimum(list(domains))
    write_frame(runs_frame(mixtures, [synthetic_losses(m.as_dict(), optimum) for m in mixtures]), tmp_path / "seed.csv")
    spec = parse_spec({
        "name": "seeded", "domains": {d: {} for d in domains},
        "trainer": {"kind": "synthetic", "duration_s": 0.1, "progress_events": 1, "noise": 0.0},
        "strategy": {"kind": "gp", "seed_runs": str(tmp_path / "seed.csv")}, "budget": {"trials": 2, "concurrency": 2},
    })
    controller = Controller(spec, tmp_path / "sweep", log=lambda m: None)
    controller.run()
    assert len(controller.strategy.observations) == 6 + 2  # seeds told, but only 2 trials spent
    assert len(replay(tmp_path / "sweep" / "journal.jsonl").trials) == 2
