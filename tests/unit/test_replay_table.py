"""The replay trainer: a smooth model of a runs table, the table's noise, answers seeded per trial."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.replay_table import ordered_table, replay_model
from orchestrator.runs import RunsTableError
from conftest import REPLAY_NOISE as NOISE
from conftest import make_runs_table as make_table
from conftest import replay_truth as true_losses
from workers.replay import ReplayModel, fit_replay, run_replay

DOMAINS = ("a", "b", "c")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "runs.csv"
    W, L = make_table(path)
    return path, fit_replay(W, L, DOMAINS, ("x", "y"))


def test_the_simulator_recovers_the_smooth_truth_and_the_tables_noise(fitted):
    _, model = fitted
    W = np.random.default_rng(5).dirichlet(np.ones(3), 200)  # mixtures the table never ran
    err = model.truth(W) - true_losses(W)
    assert np.sqrt((err**2).mean()) < 0.02  # well inside the run-to-run noise of 0.03
    # The noise each answer carries is the table's own, estimated by the fit (0.03 was added).
    assert np.all((model.noise_sd > 0.5 * NOISE) & (model.noise_sd < 1.6 * NOISE))


def test_a_trials_answer_is_truth_plus_noise_seeded_by_the_trial(fitted):
    _, model = fitted
    mixture = {"a": 0.2, "b": 0.5, "c": 0.3}
    events = []
    first = run_replay(mixture, {"progress_events": 3}, model, "t0123456789ab", 0, events.append)
    again = run_replay(mixture, {}, model, "t0123456789ab", 0, lambda p: None)
    other = run_replay(mixture, {}, model, "tffffffffffff", 0, lambda p: None)
    assert first.losses == again.losses  # a retried or resumed trial answers the same
    assert first.losses != other.losses  # another trial (a replicate) draws other noise
    # Many trials at one mixture average to the truth, spread by the estimated noise.
    draws = np.array([list(run_replay(mixture, {}, model, f"t{i:012x}", 0, lambda p: None).losses.values())
                      for i in range(400)])
    truth = model.truth(np.array([[0.2, 0.5, 0.3]]))[0]
    assert np.allclose(draws.mean(0), truth, atol=4 * model.noise_sd.max() / np.sqrt(400))
    assert np.allclose(draws.std(0), model.noise_sd, rtol=0.2)
    # Progress looks like a loss curve: decreasing to the final answer.
    assert [e.step for e in events] == [1, 2, 3]
    xs = [e.losses["x"] for e in events]
    assert xs[0] > xs[1] > xs[2] == pytest.approx(first.losses["x"])


def test_a_noise_of_zero_answers_the_truth(fitted):
    _, model = fitted
    out = run_replay({"a": 0.6, "b": 0.2, "c": 0.2}, {"noise": 0.0}, model, "t0123456789ab", 3, lambda p: None)
    assert list(out.losses.values()) == pytest.approx(list(model.truth(np.array([[0.6, 0.2, 0.2]]))[0]))


def test_the_fit_is_cached_by_content_and_survives_a_round_trip(fitted, tmp_path):
    path, _ = fitted
    logs = []
    first = replay_model(path, DOMAINS, tmp_path, log=logs.append)
    second = replay_model(path, DOMAINS, tmp_path, log=logs.append)
    assert len(logs) == 1  # fitted once; the second call loaded the cache
    W = np.random.default_rng(1).dirichlet(np.ones(3), 5)
    assert np.array_equal(first.truth(W), second.truth(W))
    payload = ReplayModel.from_payload(first.to_payload())
    assert np.array_equal(payload.truth(W), first.truth(W))


def test_the_sweeps_domain_order_is_the_mixtures_axis_order(fitted, tmp_path):
    path, model = fitted
    flipped = replay_model(path, ("c", "a", "b"), tmp_path, log=lambda m: None)
    w = np.array([[0.2, 0.5, 0.3]])
    assert flipped.truth(w[:, [2, 0, 1]]) == pytest.approx(model.truth(w), abs=1e-3)


def test_a_table_whose_domains_are_not_the_specs_is_a_one_line_error(fitted):
    path, _ = fitted
    with pytest.raises(RunsTableError, match=r"missing \['d'\].*not in the spec \['c'\]"):
        ordered_table(path, ("a", "b", "d"))
