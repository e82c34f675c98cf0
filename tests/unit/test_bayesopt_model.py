"""`bayesopt` runs mixsweep's model inside Ax's generation strategy (orchestrator/strategies/ax_model.py)."""

import numpy as np
import torch

from orchestrator.mixture import Mixture, cube_to_simplex
from orchestrator.objective import Objective
from orchestrator.spec import ObjectiveSpec
from orchestrator.strategies import build_strategy
from orchestrator.strategies.ax_model import CubeToHellinger, MixtureGP
from orchestrator.strategies.contract import Outcome
from orchestrator.surrogates.gp import GPSurrogate

DOMAINS = ("a", "b", "c", "d")
NOISE = 0.01  # nats


def truth(W: np.ndarray) -> np.ndarray:
    """Smooth per-domain losses (n, 4), each falling with the square root of its own domain's weight."""
    return 3.0 - np.array([0.8, 0.6, 0.4, 0.5]) * np.sqrt(W) - 0.2 * np.sqrt(W[:, [2, 3, 0, 1]])


def told_strategy(n: int = 12):
    objective = Objective.from_spec(ObjectiveSpec(kind="target", domain="a"), DOMAINS)
    s = build_strategy("bayesopt", {}, DOMAINS, objective, seed=0)
    rng = np.random.default_rng(0)
    W = np.array([Mixture.from_array(DOMAINS, w).as_array() for w in rng.dirichlet(np.ones(len(DOMAINS)), n)])
    Y = truth(W) + rng.normal(0.0, NOISE, W.shape)
    for w, y in zip(W, Y):
        # The stderr is an evaluation's, far below the run-to-run noise: the model must not trust it.
        s.tell(Outcome(Mixture.from_array(DOMAINS, w), dict(zip(DOMAINS, y)), dict.fromkeys(DOMAINS, 1e-6)))
    return s, W, Y


def test_the_model_in_axs_generation_strategy_is_mixsweeps_gp_on_sqrt_w():
    s, W, Y = told_strategy()
    mean, std, loss_domains = s.predict_losses(W)  # fits Ax's generation strategy to the 12 runs
    model = s._generation.adapter.generator.surrogate.model  # the BoTorch model Ax's generator fitted
    assert isinstance(model, MixtureGP) and isinstance(model.input_transform, CubeToHellinger)
    # The kernel sees sqrt(w): Ax's cube coordinates mapped back onto the runs' mixtures.
    u = model.train_inputs[0][0] if model.train_inputs[0].dim() == 3 else model.train_inputs[0]
    cube = s._generation.adapter.generator.surrogate.Xs[0]
    assert np.allclose(cube_to_simplex(cube.numpy()), W, atol=1e-9)
    assert torch.allclose(u, torch.tensor(np.sqrt(W + 1e-10)), atol=1e-9)
    # Noise inferred, not the 1e-6 stderr: predictions at the runs stay within the noise of what was observed,
    # and agree with mixsweep's own GP fitted to the same runs.
    assert loss_domains == DOMAINS
    assert np.abs(mean - Y).max() < 4 * NOISE
    # Same model, same data, same fit: Ax's predictions are `gp`'s (measured: 4e-4 nats apart; a model that
    # took the stderr as its noise would interpolate the runs, about NOISE away).
    own_mean, own_std = GPSurrogate().fit(W, Y).predict(W)
    assert np.abs(mean - own_mean).max() < 0.2 * NOISE and np.abs(std - own_std).max() < 0.2 * NOISE
    assert (std > 0).all()


def test_bayesopt_opens_towards_a_target_objectives_domain_and_attaches_it_to_ax():
    objective = Objective.from_spec(ObjectiveSpec(kind="target", domain="x"), ("x", "y", "z"))
    s = build_strategy("bayesopt", {}, ("x", "y", "z"), objective, seed=0)
    first = [p.mixture.as_array() for p in s.ask(4, [])]
    assert np.allclose(first[0], 1 / 3)  # the reference run
    assert first[1][0] > 0.6 and first[2][0] > 0.85  # half and 85% of the way to the target's domain
    assert len(s._generation.experiment.trials) == 4  # all four are Ax trials (three attached, one Sobol)


def _moves(w: np.ndarray, step: float = 1e-3) -> np.ndarray:
    """Mixtures `step` away from w (k,) along every edge of the simplex that stays inside it."""
    out = []
    for i in range(len(w)):
        for j in range(len(w)):
            if i != j and w[j] >= step:
                v = w.copy()
                v[i], v[j] = v[i] + step, v[j] - step
                out.append(v)
    return np.array(out)


def test_bayesopt_recommends_gps_optimum_search_on_its_own_predictions():
    # The optimum is `gp`'s: the minimiser of Ax's predicted objective + RECOMMEND_RISK std, candidates then
    # SLSQP (model_based.minimize_objective). The search it replaced (candidates only, predictions through
    # `Mixture`, whose rounding to 1e-6 gave SLSQP a flat objective) stopped 8e-6 nats above a minimum here.
    from orchestrator.strategies.base import IN_SAMPLE, MODEL
    from orchestrator.strategies.model_based import RECOMMEND_RISK, predicted_upper, recommend_rng

    s, W, Y = told_strategy()

    def upper(X: np.ndarray) -> np.ndarray:
        return predicted_upper(s, s.predict_losses, X, RECOMMEND_RISK)

    w = s.model_optimum(recommend_rng(s))
    assert upper(_moves(w)).min() >= upper(w[None])[0] - 1e-7  # no small move inside the simplex improves it
    # base.best_predicted decides between it and the runs, as for `gp` (the same results, the same optimum).
    rec = s.recommend()
    expected = s.best_predicted(w, s.predict_losses, [])
    assert rec.source == expected.source in (MODEL, IN_SAMPLE)
    assert rec.mixture == expected.mixture
