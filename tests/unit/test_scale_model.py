"""The scale-aware GP learns a loss whose optimum and level move with model size."""

import numpy as np
import pytest

from orchestrator.scale_model import ScaleAwareGP, scale_coordinate
from orchestrator.surrogates.gp import GPSurrogate

SMALL, LARGE = 5e6, 1e8


def loss(W, params):
    # Optimum moves from domain 0 towards domain 2 with scale; the level drops with scale.
    t = (np.log10(params) - np.log10(SMALL)) / (np.log10(LARGE) - np.log10(SMALL))
    opt = (1 - t) * np.array([0.6, 0.3, 0.1]) + t * np.array([0.1, 0.3, 0.6])
    base = 3.0 - 0.5 * t
    return np.column_stack([base + ((W - opt) ** 2).sum(1), base + 0.5 * ((W - opt) ** 2).sum(1)])


def test_scale_coordinate_maps_1m_to_0_and_1b_to_1():
    assert scale_coordinate(1e6) == pytest.approx(0.0) and scale_coordinate(1e9) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        scale_coordinate(0)


def test_scale_model_predicts_the_larger_scale_better_than_a_scale_blind_gp():
    rng = np.random.default_rng(0)
    W_small = rng.dirichlet(np.ones(3), 24)
    W_large = rng.dirichlet(np.ones(3), 5)
    W = np.vstack([W_small, W_large])
    P = np.array([SMALL] * 24 + [LARGE] * 5)
    Y = np.vstack([loss(W_small, SMALL), loss(W_large, LARGE)])
    model = ScaleAwareGP().fit(W, P, Y)
    blind = GPSurrogate().fit(W, Y)
    W_test = rng.dirichlet(np.ones(3), 50)
    truth = loss(W_test, LARGE)
    err_scale = np.abs(model.predict(W_test, LARGE)[0] - truth).mean()
    err_blind = np.abs(blind.predict(W_test)[0] - truth).mean()
    assert err_scale < 0.5 * err_blind
    # It still fits the small scale and the re-trained mixtures.
    assert np.abs(model.predict(W_large, LARGE)[0] - loss(W_large, LARGE)).max() < 0.05
    assert np.abs(model.predict(W_small, SMALL)[0] - loss(W_small, SMALL)).max() < 0.05


def test_scale_model_refuses_too_few_runs():
    with pytest.raises(ValueError, match="at least"):
        ScaleAwareGP().fit(np.full((2, 3), 1 / 3), np.array([SMALL, LARGE]), np.ones((2, 2)))
