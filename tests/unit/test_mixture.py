import numpy as np
import pytest

from orchestrator.mixture import Mixture, cube_to_simplex, simplex_to_cube
from orchestrator.trial import trial_id


def test_mixture_renormalises_and_rejects_bad_weights():
    m = Mixture(("a", "b"), (2.0, 6.0))
    assert m.as_dict() == {"a": 0.25, "b": 0.75}
    with pytest.raises(ValueError):
        Mixture(("a", "b"), (0.0, 0.0))
    with pytest.raises(ValueError):
        Mixture(("a", "b"), (-0.5, 1.5))
    with pytest.raises(ValueError):
        Mixture.from_dict({"a": 1.0}, ["a", "b"])


def test_rebuilding_a_mixture_from_its_weights_is_exact():
    m = Mixture(("a", "b", "c"), (1.0, 1.0, 1.0))
    assert sum(m.weights) == pytest.approx(1.0, abs=1e-5)
    rng = np.random.default_rng(0)
    for w in rng.dirichlet(np.ones(7), size=200):
        once = Mixture.from_array("abcdefg", w)
        assert Mixture.from_dict(once.as_dict()) == once


def test_cube_to_simplex_is_uniform_and_invertible():
    rng = np.random.default_rng(0)
    u = rng.random((20000, 4))
    w = cube_to_simplex(u)
    assert np.allclose(w.sum(axis=1), 1.0) and (w >= 0).all()
    # Dirichlet(1,...,1) on 5 domains: every marginal has mean 1/5 and variance (1/5)(4/5)/6.
    assert np.allclose(w.mean(axis=0), 0.2, atol=0.01)
    assert np.allclose(w.var(axis=0), 0.2 * 0.8 / 6, rtol=0.08)
    assert np.allclose(simplex_to_cube(w), u, atol=1e-9)


def test_trial_id_is_a_content_address():
    m1 = Mixture(("a", "b"), (0.3, 0.7))
    m2 = Mixture.from_dict({"b": 0.7, "a": 0.3}, ["a", "b"])
    assert trial_id(m1, {"preset": "debug"}, 0) == trial_id(m2, {"preset": "debug"}, 0)
    assert trial_id(m1, {"preset": "debug"}, 0) != trial_id(m1, {"preset": "debug"}, 1)
    assert trial_id(m1, {"preset": "debug"}, 0) != trial_id(m1, {"preset": "1m"}, 0)
