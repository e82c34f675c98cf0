"""A multi-fidelity sweep end to end: `mfgp` on two replay tables (a cheap small model, a costly large
one), killed mid-way and resumed. Real controller, real Ray, real BoTorch; the replay trainer answers
each fidelity from its own table."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import yaml

from conftest import REPLAY_NOISE, make_runs_table, replay_truth, run_cli
from orchestrator.journal import load, read_events

COST = {"debug": 1.0, "1m": 10.0}
BUDGET_COST = 40.0


def _large_table(path, n: int = 40) -> None:
    """The larger model: ~1 nat lower everywhere, and it gains more from domain c."""
    rng = np.random.default_rng(7)
    W = rng.dirichlet(np.ones(3), n)
    L = replay_truth(W) - 1.0 - np.array([0.3, 0.2]) * W[:, 2:3] + rng.normal(0.0, REPLAY_NOISE, (n, 2))
    pd.DataFrame({**{f"weight.{d}": W[:, i] for i, d in enumerate("abc")}, "loss.x": L[:, 0], "loss.y": L[:, 1]}).to_csv(path, index=False)


def _spec(tmp_path) -> str:
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    make_runs_table(small)
    _large_table(large)
    spec = {
        "name": "mf", "domains": {d: {} for d in "abc"},
        "proxy": {"preset": "1m"},
        "trainer": {"kind": "replay", "runs": str(large)},
        "fidelities": [{"name": "debug", "preset": "debug", "cost": COST["debug"], "runs": str(small)},
                       {"name": "1m", "preset": "1m", "cost": COST["1m"], "runs": str(large)}],
        "objective": {"kind": "mean", "domains": ["x", "y"]},
        "strategy": {"kind": "mfgp", "options": {"fit_maxiter": 30, "candidates": 256, "local_candidates": 64,
                                                 "mc_samples": 64, "cheap_share": 0.3}},
        "budget": {"trials": 100, "concurrency": 2, "cost": BUDGET_COST},
        "resources": {"cpus": 0.1},
        "data": {"cache_dir": str(tmp_path / "cache")},
        "seed": 0,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _env(**extra) -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **extra}


def test_a_multi_fidelity_sweep_spends_its_cost_budget_at_both_fidelities_and_resumes_mid_way(ray_session, tmp_path):
    spec, sweep = _spec(tmp_path), tmp_path / "sweep"
    # The controller SIGKILLs itself right after journaling its 6th result (the 4-run design is cheap).
    crashed = run_cli(["run", spec, "--dir", str(sweep), "--quiet"], env=_env(MIXSWEEP_FAULT_KILL_AFTER="trial_completed:6"))
    assert crashed.returncode != 0
    before = list(read_events(sweep / "journal.jsonl"))
    assert not any(e["event"] == "sweep_finished" for e in before)
    kept = {e["trial"]: (sweep / "trials" / e["trial"] / "result.json").read_bytes() for e in before if e["event"] == "trial_completed"}

    # The resume joins the session's Ray (as on a cluster); the crashed run's embedded Ray died with it.
    address = ray_session.get_runtime_context().gcs_address
    out = run_cli(["resume", str(sweep), "--quiet", "--address", address], env=_env(), timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    events = list(read_events(sweep / "journal.jsonl"))
    completed = [e["trial"] for e in events if e["event"] == "trial_completed"]
    assert len(completed) == len(set(completed)), "a trial was trained twice"
    assert all((sweep / "trials" / t / "result.json").read_bytes() == blob for t, blob in kept.items())

    status = load(sweep / "journal.jsonl")[1].summary()  # what `status --json` prints; its text form is run below
    fidelity = {t["id"]: t["options"]["fidelity"] for t in status["trials"]}
    by = status["trials_by_fidelity"]
    assert by["debug"] >= 4 and by["1m"] >= 1, by  # the design at the cheap fidelity, then the target too
    spent = sum(COST[f] for f in fidelity.values())
    assert status["cost_spent"] == spent <= BUDGET_COST and status["target_fidelity"] == "1m"
    assert BUDGET_COST - spent < COST["1m"] or status["finished"]  # it stopped because the budget was spent
    assert fidelity[status["best"]["id"]] == "1m"  # a cheap run's loss is another model's: never the best run
    # The resumed strategy was re-told every run with its fidelity (strategy.json holds what it was told).
    told = [e["tell"] for e in json.loads((sweep / "strategy.json").read_text())["events"] if "tell" in e]
    proposed = {e["trial"]: e for e in events if e["event"] == "trial_proposed"}
    # A repeat of a finished run (a proposal within budget.weight_precision of it) is told its known
    # result again, without a trial: it counts among the tells (seen: 23 tells of 22 runs).
    reused = [e["trial"] for e in events if e["event"] == "trial_reused" and e["matched"] == "completed"]
    assert len(told) == len(completed) + len(reused)
    assert sorted(t["fidelity"] for t in told) == sorted(proposed[t]["options"]["fidelity"] for t in completed + reused)
    text = run_cli(["status", str(sweep)], env={**_env(), "COLUMNS": "200"}).stdout
    assert f"cost {spent:g}/{BUDGET_COST:g} (debug {by['debug']}, 1m {by['1m']})" in text and "at debug" in text
    # The runs table says each row's size: what `recommend --runs` fits over mixture and scale.
    table = tmp_path / "runs.csv"
    assert run_cli(["export", str(sweep), "--format", "runs", "--out", str(table)]).returncode == 0
    rows = pd.read_csv(table)
    assert list(rows["fidelity"]) == [fidelity[t] for t in rows["trial"]]
    assert set(zip(rows["fidelity"], rows["scale.params"])) == {("debug", 106496.0), ("1m", 1048576.0)}
    rec = status["recommendation"]
    assert rec is not None and any("target scale" in n for n in rec["notes"])
    # Predicted at the large model's scale: near the large runs' losses, not the small ones' (~1 nat above).
    large_x = [e["losses"]["x"] for e in events if e["event"] == "trial_completed" and fidelity[e["trial"]] == "1m"]
    assert abs(rec["predicted_losses"]["x"] - np.mean(large_x)) < 0.5
