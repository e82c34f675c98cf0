"""Surrogates recover the laws they model, and the shared optimiser stays inside the bounds."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from orchestrator.optimize import Bounds, minimize_on_simplex, project
from orchestrator.surrogates.bimix import BiMixSurrogate
from orchestrator.surrogates.gp import GPSurrogate
from orchestrator.surrogates.lightgbm import LightGBMSurrogate
from orchestrator.surrogates.mixing_law import MixingLawSurrogate

RNG = np.random.default_rng(0)
K = 4
T = np.array([[-2.0, 0.3, 0.0, 0.1], [0.2, -1.5, 0.4, 0.0], [0.0, 0.0, -3.0, 0.5]])  # 3 evaluated domains
C = np.array([2.0, 2.5, 1.8])


def mixing_law_losses(W: np.ndarray) -> np.ndarray:
    """(n, 3) losses from a known exponential mixing law."""
    return C + np.exp(W @ T.T)


def test_mixing_law_recovers_a_known_law_and_predicts_unseen_mixtures():
    W = RNG.dirichlet(np.ones(K), size=30)
    fit = MixingLawSurrogate(starts=4, seed=0).fit(W, mixing_law_losses(W))
    test = RNG.dirichlet(np.ones(K), size=50)
    mean, std = fit.predict(test)
    assert mean.shape == std.shape == (50, 3)
    assert np.abs(mean - mixing_law_losses(test)).max() < 0.01
    assert np.all(std < 0.01)


def test_bimix_is_exact_on_its_own_power_law():
    W = RNG.dirichlet(np.ones(K), size=12)
    Y = 3.0 / (W[:, [0, 2]] + 1e-3) ** np.array([0.1, 0.25])  # domains 0 and 2 are evaluated
    fit = BiMixSurrogate(pairs=[0, 2]).fit(W, Y)
    np.testing.assert_allclose(fit.coef[:, 1], [0.1, 0.25], atol=1e-8)
    test = RNG.dirichlet(np.ones(K), size=5)
    np.testing.assert_allclose(fit.predict(test)[0], 3.0 / (test[:, [0, 2]] + 1e-3) ** np.array([0.1, 0.25]), rtol=1e-8)


@pytest.mark.parametrize("make", [lambda: GPSurrogate(maxiter=30), lambda: LightGBMSurrogate(n_estimators=300, members=3)],
                         ids=["gp", "lightgbm"])
def test_flexible_surrogates_rank_held_out_mixtures(make):
    W = RNG.dirichlet(np.ones(K), size=40)
    noise = RNG.normal(0, 0.005, (40, 3))
    fit = make().fit(W, mixing_law_losses(W) + noise)
    test = RNG.dirichlet(np.ones(K), size=60)
    mean, std = fit.predict(test)
    assert mean.shape == std.shape == (60, 3) and np.all(std >= 0)
    truth = mixing_law_losses(test).mean(axis=1)
    assert spearmanr(mean.mean(axis=1), truth).statistic > 0.8


def test_gp_uncertainty_grows_away_from_the_data():
    W = np.array([[0.7, 0.1, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1], [0.65, 0.15, 0.1, 0.1], [0.7, 0.2, 0.05, 0.05]])
    fit = GPSurrogate(maxiter=30).fit(W, mixing_law_losses(W))
    _, std = fit.predict(np.array([[0.66, 0.15, 0.1, 0.09], [0.0, 0.0, 0.0, 1.0]]))
    assert np.all(std[1] > std[0])


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_gp_infers_run_to_run_noise_from_a_sweeps_runs(share):
    """32 runs whose noise sd is `share` of their spread: 10% is a random design over the RegMix runs,
    50% a sweep's runs crowded around good mixtures. The GP must not take the noise for signal in
    either (under BoTorch's default noise prior, 4 of these 6 draws at 50% inferred under a quarter)."""
    ratios = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        W = rng.dirichlet(np.ones(8), size=32)
        truth = 3.0 - 0.5 * np.log(W[:, 0] + 0.05) + 0.3 * (W[:, 1] - 0.2) ** 2 + 0.2 * np.sqrt(W[:, 2])
        sd = share * truth.std()
        model = GPSurrogate().fit(W, (truth + sd * rng.standard_normal(32))[:, None]).model
        inferred = np.sqrt(model.likelihood.noise.detach().numpy().ravel()[0]) * model.outcome_transform.stdvs.detach().numpy().ravel()[0]
        ratios.append(inferred / sd)
    assert 0.5 < min(ratios) and max(ratios) < 1.5, ratios


def test_mixing_law_uncertainty_grows_where_the_runs_do_not_pin_the_law_down():
    # Runs near uniform leave the law's slopes towards a vertex uncertain: the delta method's std is
    # larger there than at the runs, and at the runs it stays within sqrt(2) of the residual error.
    W = RNG.dirichlet(np.full(K, 30.0), size=30)
    Y = mixing_law_losses(W) + RNG.normal(0, 0.01, (30, 3))
    fit = MixingLawSurrogate(starts=4, seed=0).fit(W, Y)
    _, at_runs = fit.predict(W)
    _, at_vertex = fit.predict(np.array([[0.0, 0.0, 0.0, 1.0]]))
    assert np.all(at_runs >= fit.sigma - 1e-12) and np.all(at_runs <= np.sqrt(2) * fit.sigma + 1e-12)
    assert np.all(at_vertex[0] > 3 * at_runs.mean(axis=0))


def test_batched_gradient_matches_scipys_finite_differences_and_stays_inside_the_bounds():
    from scipy.optimize import approx_fprime

    from orchestrator.optimize import batched_gradient
    calls, seen = [], []

    def fun(X):
        calls.append(len(X))
        seen.append(X.copy())
        return np.log1p(X @ np.array([1.0, 2.0, 3.0, 4.0])) + (X**2).sum(axis=1)
    w = np.array([0.1, 0.2, 0.3, 0.4])
    value, grad = batched_gradient(fun, w, upper=np.array([1.0, 1.0, 1.0, 0.4]))
    assert calls == [5]  # one call for the value and every coordinate
    assert value == pytest.approx(fun(w[None])[0])
    np.testing.assert_allclose(grad, approx_fprime(w, lambda x: fun(x[None])[0]), rtol=1e-5)
    assert np.all(seen[0][:, 3] <= 0.4)  # the step at the upper bound goes backwards


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=5, max_size=5), st.floats(0.0, 0.15), st.floats(0.3, 1.0))
def test_projection_lands_inside_any_feasible_bounds(v, floor, cap):
    bounds = Bounds.of(tuple("abcde"), min_weight=floor, per_domain={"a": (floor, cap)})
    w = project(np.array(v), bounds)[0]
    assert bounds.contains(w[None, :])[0]


def test_projection_is_the_identity_inside_the_set():
    bounds = Bounds.of(("a", "b", "c"), 0.1)
    w = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(project(w, bounds)[0], w, atol=1e-12)


def test_minimiser_finds_a_bounded_optimum():
    target = np.array([0.05, 0.05, 0.6, 0.3])
    bounds = Bounds.of(tuple("abcd"), per_domain={"c": (0.0, 0.4)})
    w, value = minimize_on_simplex(lambda X: ((X - target) ** 2).sum(axis=1), bounds, np.random.default_rng(0),
                                   n_candidates=512, n_local=0)
    assert bounds.contains(w[None, :])[0]
    assert w[2] == pytest.approx(0.4, abs=1e-4)  # pressed against its cap
    np.testing.assert_allclose(w, project(target, bounds)[0], atol=1e-3)


def test_infeasible_bounds_name_the_fix():
    with pytest.raises(ValueError, match="lower bounds must sum to <= 1"):
        Bounds.of(("a", "b"), min_weight=0.6)
    with pytest.raises(ValueError, match="unknown domain 'z'"):
        Bounds.of(("a", "b"), per_domain={"z": (0, 1)})
