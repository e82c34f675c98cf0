"""Scale ladder on a real local Ray: the synthetic trainer's optimum moves with model size, and the ladder
must say that the small-scale winner did not hold (and that it did when the optimum stays put)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from orchestrator.controller import Controller
from orchestrator.journal import read_events, replay
from orchestrator.ladder import ladder_summary
from orchestrator.spec import SpecError, parse_spec

SMALL_OPT = {"a": 0.7, "b": 0.2, "c": 0.1}
LARGE_OPT = {"a": 0.1, "b": 0.2, "c": 0.7}


def _spec(moves: bool, ladder: dict | None = None, trials: int = 6) -> dict:
    at_scale = {"debug": SMALL_OPT, "1m": LARGE_OPT if moves else SMALL_OPT}
    spec = {"name": "ladder", "domains": {d: {} for d in "abc"},
            "trainer": {"kind": "synthetic", "duration_s": 0.1, "progress_events": 2, "noise": 0.0, "optimum_at_scale": at_scale},
            "strategy": {"kind": "sobol"}, "budget": {"trials": trials, "concurrency": 3}, "seed": 1}
    if ladder is not None:
        spec["ladder"] = ladder
    return spec


def _started(sweep_dir: Path) -> list[str]:
    return [e["trial"] for e in read_events(sweep_dir / "journal.jsonl") if e["event"] == "trial_started"]


@pytest.fixture(scope="module")
def moving_sweep(ray_session, tmp_path_factory) -> Path:
    """A finished sweep whose ladder re-trained top1, top2 and uniform at 1m, where the optimum moved."""
    d = tmp_path_factory.mktemp("ladder") / "moving"
    spec = parse_spec(_spec(True, {"presets": ["debug", "1m"], "top_k": 2, "baselines": ["uniform"]}))
    Controller(spec, d, log=lambda m: None).run()
    return d


@pytest.mark.slow
def test_ladder_reports_that_the_winner_did_not_hold_when_the_optimum_moves(moving_sweep):
    state = replay(moving_sweep / "journal.jsonl")
    at_1m = [t for t in state.ladder.values() if t.preset == "1m"]
    assert sorted(t.role for t in at_1m) == ["top1", "top2", "uniform"]
    assert all(t.id.endswith("-1m") and t.id not in state.trials for t in at_1m)
    # The ladder spent no budget and was not told to the strategy as same-scale observations.
    assert len(state.trials) == 6
    assert len(json.loads((moving_sweep / "strategy.json").read_text())["events"]) == 6
    # top1/top2 are the sweep's two best by objective.
    best = sorted(state.completed, key=lambda t: t.objective)[:2]
    assert [t.mixture for t in best] == [next(t.mixture for t in at_1m if t.role == r) for r in ("top1", "top2")]

    rung = ladder_summary(state, "debug")["rungs"][0]
    assert rung["preset"] == "1m" and rung["pairs"] == 3
    # At 1m the winner is the re-trained mixture nearest the 1m optimum (noise 0: the synthetic loss is
    # a quadratic around it), which is not the debug winner.
    nearest = min(at_1m, key=lambda t: sum((t.mixture[d] - LARGE_OPT[d]) ** 2 for d in "abc"))
    assert rung["winner"] == nearest.role and rung["winner_base"] == "top1"
    assert rung["winner_held"] is False and rung["spearman"] < 1.0
    # A larger model reaches lower losses on the mixture whose optimum did not move away from it.
    uniform_1m = next(t for t in at_1m if t.role == "uniform")
    assert uniform_1m.objective < next(r["base_objective"] for r in rung["rows"] if r["role"] == "uniform")


@pytest.mark.slow
def test_ladder_reports_that_the_winner_held_when_the_optimum_stays(ray_session, tmp_path):
    spec = parse_spec(_spec(False, {"presets": ["debug", "1m"], "top_k": 2, "baselines": []}, trials=3))
    Controller(spec, tmp_path / "s", log=lambda m: None).run()
    rung = ladder_summary(replay(tmp_path / "s" / "journal.jsonl"), "debug")["rungs"][0]
    assert rung["pairs"] == 2 and rung["winner_held"] is True
    assert rung["spearman"] == pytest.approx(1.0)


@pytest.mark.slow
def test_the_scale_model_moves_the_recommendation_toward_the_larger_scale_optimum(ray_session, moving_sweep, tmp_path):
    """`ladder.scale_model`: a GP with model size as an input, fitted on both scales, recommends at 1m a
    mixture nearer the 1m optimum than the sweep's own recommendation; it fits the 1m runs it saw."""
    spec = parse_spec(_spec(True, {"presets": ["debug", "1m"], "top_k": 3, "baselines": ["uniform"], "scale_model": True}, trials=8))
    Controller(spec, tmp_path / "s", log=lambda m: None).run()
    state = replay(tmp_path / "s" / "journal.jsonl")
    scaled = state.scale_recommendations["1m"]
    assert scaled["runs"]["ladder"] == 4 and set(scaled["mixture"]) == set("abc")
    l1 = lambda m, opt: sum(abs(m[d] - opt[d]) for d in "abc")  # noqa: E731
    assert l1(scaled["mixture"], LARGE_OPT) < l1(state.recommendation["mixture"], LARGE_OPT)
    # It fits what it saw at 1m (noise-free losses): the objective predicted for each re-trained mixture.
    from orchestrator.ladder import scale_recommendation
    from orchestrator.mixture import Mixture
    from orchestrator.optimize import Bounds
    from orchestrator.scale_model import ScaleAwareGP
    from workers.presets import PRESETS

    at_1m = [t for t in state.ladder.values() if t.preset == "1m"]
    runs = [*((t, "debug") for t in state.completed), *((t, "1m") for t in at_1m)]
    W = np.array([Mixture.from_dict(t.mixture, tuple("abc")).as_array() for t, _ in runs])
    gp = ScaleAwareGP().fit(W, np.array([PRESETS[p].non_embedding_params() for _, p in runs], float),
                            np.array([[t.losses[d] for d in "abc"] for t, _ in runs]))
    mean, _ = gp.predict(W[-len(at_1m):], PRESETS["1m"].non_embedding_params())
    assert np.abs(mean - np.array([[t.losses[d] for d in "abc"] for t in at_1m])).max() < 0.05
    assert rung_has_scale_line(tmp_path / "s")
    # Without the option (the module's sweep) there is no such recommendation.
    assert replay(moving_sweep / "journal.jsonl").scale_recommendations == {}
    with pytest.raises(ValueError, match="no completed trial"):
        scale_recommendation(type(state)(), tuple("abc"), "debug", "1m", None, Bounds.of(tuple("abc")), 0)


def rung_has_scale_line(sweep_dir: Path) -> bool:
    """The report's ladder section shows the scale-aware recommendation."""
    from orchestrator.report import write_report

    return "Scale-aware model" in Path(write_report(sweep_dir)["html"]).read_text()


@pytest.mark.slow
def test_a_resumed_sweep_does_not_retrain_finished_ladder_trials(moving_sweep, tmp_path):
    # The journal is the truth: cutting it right after the first ladder trial completed at 1m leaves
    # exactly what a controller killed at that moment leaves.
    d = tmp_path / "cut"
    shutil.copytree(moving_sweep, d)
    lines = (d / "journal.jsonl").read_text().splitlines(keepends=True)
    events = [json.loads(l) for l in lines]
    ladder_ids = {e["trial"] for e in events if e["event"] == "trial_proposed" and e.get("preset") == "1m"}
    cut = next(i for i, e in enumerate(events) if e["event"] == "trial_completed" and e["trial"] in ladder_ids)
    (d / "journal.jsonl").write_text("".join(lines[:cut + 1]))
    finished_before = {e["trial"] for e in events[:cut + 1] if e["event"] == "trial_completed"}
    # Ladder results the cut journal no longer knows would be adopted on resume (never re-trained);
    # remove them so the unfinished ladder trials really are unfinished.
    for tid in ladder_ids - finished_before:
        (d / "trials" / tid / "result.json").unlink(missing_ok=True)
    started_before = _started(d)

    spec = parse_spec(_spec(True, {"presets": ["debug", "1m"], "top_k": 2, "baselines": ["uniform"]}))
    Controller(spec, d, log=lambda m: None).resume()
    started_after = _started(d)[len(started_before):]
    assert started_after, "the unfinished ladder trials must run on resume"
    assert not set(started_after) & finished_before  # nothing finished is trained again
    state = replay(d / "journal.jsonl")
    assert state.ladder and all(t.status.value == "completed" for t in state.ladder.values())
    assert ladder_summary(state, "debug")["rungs"][0]["winner_held"] is False


@pytest.mark.slow
def test_ladder_command_retrains_a_finished_sweep(ray_session, moving_sweep, tmp_path):
    # The same finished sweep without its ladder: its journal with the ladder's events left out.
    d = tmp_path / "s"
    shutil.copytree(moving_sweep, d)
    events = list(read_events(d / "journal.jsonl"))
    ladder_ids = {e["trial"] for e in events if e["event"] == "trial_proposed" and e.get("preset")}
    (d / "journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events if e.get("trial") not in ladder_ids))
    assert replay(d / "journal.jsonl").ladder == {}

    # The command joins the tests' Ray (as it would join a cluster) rather than starting its own.
    address = ray_session.get_runtime_context().gcs_address
    out = run_cli(["ladder", str(d), "--preset", "1m", "--top", "2", "--baselines", "uniform", "--address", address],
                  env={**os.environ, "COLUMNS": "300"}, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "winner held: no" in out.stdout and "Spearman" in out.stdout
    state = replay(d / "journal.jsonl")
    roles_1m = sorted(t.role for t in state.ladder.values() if t.preset == "1m")
    assert roles_1m == ["top1", "top2", "uniform"]
    summary = json.loads((d / "report" / "ladder.json").read_text())
    assert summary["rungs"][0]["winner_held"] is False and summary["rungs"][0]["spearman"] is not None
    assert "Winner held: <b><span class=\"bad\">no</span>" in (d / "report" / "report.html").read_text()



@pytest.mark.parametrize("ladder, message", [
    ({"presets": ["1m", "debug"]}, "`ladder.presets`: ['1m', 'debug'] must grow in model size"),
    ({"presets": ["debug", "2m"]}, "`ladder.presets`: unknown preset '2m'"),
    ({"presets": ["debug"]}, "`ladder.presets`: a ladder needs at least 2 presets"),
    ({"presets": ["1m", "25m"]}, "`ladder.presets`: the first rung must be the sweep's proxy.preset 'debug'"),
    ({"presets": ["debug", "1m"], "baselines": ["best"]}, "`ladder.baselines.0`"),
])
def test_ladder_spec_errors_are_one_line(ladder, message):
    with pytest.raises(SpecError) as err:
        parse_spec(_spec(True, ladder))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_ladder_command_refuses_a_preset_no_larger_than_the_sweeps():
    from orchestrator.ladder import LadderError, check_rung

    check_rung("debug", "1m")
    with pytest.raises(LadderError, match="--preset: debug is not larger than the sweep's preset 1m"):
        check_rung("1m", "debug")
    with pytest.raises(LadderError, match="--preset: unknown preset '2m'"):
        check_rung("debug", "2m")


def test_optimum_at_scale_names_known_presets_and_every_domain():
    bad = _spec(True)
    bad["trainer"]["optimum_at_scale"] = {"huge": SMALL_OPT}
    with pytest.raises(SpecError, match="`trainer.optimum_at_scale`: unknown preset 'huge'"):
        parse_spec(bad)
    bad["trainer"]["optimum_at_scale"] = {"1m": {"a": 1.0}}
    with pytest.raises(SpecError, match="`trainer.optimum_at_scale.1m`: must give every domain"):
        parse_spec(bad)


def test_synthetic_optimum_moves_with_the_preset():
    from workers.backends import run_synthetic

    config = {"optimum_at_scale": {"debug": SMALL_OPT, "1m": LARGE_OPT}, "noise": 0.0, "progress_events": 1}
    mean = lambda preset, w: np.mean(list(run_synthetic(w, {**config, "preset": preset}, 0, lambda p: None).losses.values()))  # noqa: E731
    assert mean("debug", SMALL_OPT) < mean("debug", LARGE_OPT)
    assert mean("1m", LARGE_OPT) < mean("1m", SMALL_OPT)
