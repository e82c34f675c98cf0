"""`mixsweep bench` end to end: real sweeps on the replay trainer, scored against the simulator's truth."""

from __future__ import annotations

import csv
import json

from conftest import make_runs_table as make_table
from conftest import run_cli
from orchestrator.bench import problem
from orchestrator.journal import read_events
from orchestrator.replay_table import ordered_table


def _bench(tmp_path, table, out, *extra):
    return run_cli(["bench", "--runs", str(table), "--strategies", "gp,sobol", "--objective", "loss.x",
                    "--budget", "6", "--concurrency", "2", "--seeds", "2", "--out", str(out),
                    "--cache-dir", str(tmp_path / "cache"), *extra], timeout=600)


def test_bench_runs_real_sweeps_scores_them_by_the_truth_and_adopts_them_when_run_again(tmp_path):
    table = tmp_path / "runs.csv"
    make_table(table)
    out = tmp_path / "bench"
    first = _bench(tmp_path, table, out)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "winner:" in first.stdout
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted((r["strategy"], r["seed"]) for r in rows) == [("gp", "0"), ("gp", "1"), ("sobol", "0"), ("sobol", "1")]
    assert (out / "regret.png").stat().st_size > 1000
    summary = {r["strategy"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert set(summary) == {"gp", "sobol"} and float(summary["sobol"]["x_sobol"]) == 1.0

    # Every figure is the simulator's truth at what the sweep chose, minus the truth's optimum.
    prob = problem(table, "loss.x", str(tmp_path / "cache"), log=lambda m: None)
    assert prob.best <= prob.value(ordered_table(table, prob.model.domains).weights).min() + 1e-9
    for r in rows:
        events = list(read_events(out / "sweeps" / f"{r['strategy']}-s{r['seed']}" / "journal.jsonl"))
        done = [e for e in events if e["event"] == "trial_completed"]
        assert len(done) == 6  # real sweeps ran their whole budget on the replay trainer
        rec = [e for e in events if e["event"] == "recommended"][-1]
        assert abs(float(r["regret_recommended"]) - prob.regret(rec["mixture"])) < 1e-9
        mixtures = {e["trial"]: e["mixture"] for e in events if e["event"] == "trial_proposed"}
        best = min(done, key=lambda e: e["losses"]["x"])  # the run a user would pick by what was observed
        assert abs(float(r["regret_best_observed"]) - prob.regret(mixtures[best["trial"]])) < 1e-9
        assert float(r["regret_best_observed"]) >= 0

    # Running the same command again trains nothing: finished sweeps are read from disk.
    journals = {p: p.read_bytes() for p in out.glob("sweeps/*/journal.jsonl")}
    again = _bench(tmp_path, table, out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.read_bytes() for p in out.glob("sweeps/*/journal.jsonl")} == journals
    assert list(csv.DictReader(open(out / "results.csv"))) == rows


def test_bench_names_a_bad_flag_in_one_line(tmp_path):
    table = tmp_path / "runs.csv"
    make_table(table)
    for extra, needle in ((["--strategies", "gp,nope"], "--strategies"), (["--objective", "loss.zzz"], "--objective")):
        out = run_cli(["bench", "--runs", str(table), *extra, "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "c")])
        assert out.returncode == 2, out.stderr
        lines = [l for l in out.stderr.strip().splitlines() if l.startswith("error")]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in out.stderr


def test_two_sweeps_holding_the_same_trial_ids_run_at_once_on_one_cluster(ray_session, tmp_path):
    """Trial ids hash (mixture, trainer, seed), not the sweep: parallel sweeps of one seed (as the bench
    runs them) start actors of the same name, which must not collide."""
    import ray

    from orchestrator.bench import sweep_task

    spec = {"name": "twin", "domains": {"a": {}, "b": {}, "c": {}},
            "trainer": {"kind": "synthetic", "duration_s": 1.0, "progress_events": 2},
            "strategy": {"kind": "sobol"}, "budget": {"trials": 3, "concurrency": 3}, "resources": {"cpus": 0.1}}
    task = ray.remote(num_cpus=0.1, max_retries=0)(sweep_task)
    dirs = [tmp_path / "one", tmp_path / "two"]
    ray.get([task.remote(spec, str(d)) for d in dirs])
    ids = [sorted(e["trial"] for e in read_events(d / "journal.jsonl") if e["event"] == "trial_completed") for d in dirs]
    assert len(ids[0]) == 3 and ids[0] == ids[1]

