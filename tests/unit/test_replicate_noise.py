"""Issue 13, item 4: replicates' noise fed to the GP, and which replicates a sweep owes (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood

from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.spec import ObjectiveSpec, SpecError
from orchestrator.state import SweepState
from orchestrator.strategies import build_strategy
from orchestrator.strategies.contract import Outcome
from orchestrator.surrogates.noise import pool_replicates

DOMAINS = ("a", "b", "c")
MEAN = Objective.from_spec(ObjectiveSpec(), DOMAINS)


def _truth(w: np.ndarray) -> np.ndarray:
    return np.array([3.0 - np.sqrt(w[0]) + 0.3 * w[2], 2.5 - 0.8 * np.sqrt(w[1]), 2.0 - 0.5 * np.sqrt(w[2])])


def _gp(outcomes: list[tuple[np.ndarray, np.ndarray]]):
    gp = build_strategy("gp", {"fit_maxiter": 10}, DOMAINS, MEAN, seed=0)
    for w, y in outcomes:
        gp.tell(Outcome(Mixture.from_array(DOMAINS, w), dict(zip(DOMAINS, y))))
    return gp


def test_replicated_runs_fix_the_gp_noise_to_their_pooled_variance():
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(3), size=6)
    runs = {0: 3, 1: 2, 2: 2, 3: 1, 4: 1, 5: 1}  # runs per mixture
    outcomes = [(W[i], _truth(W[i]) + rng.normal(0, [0.02, 0.05, 0.01])) for i, n in runs.items() for _ in range(n)]
    outcomes.append(outcomes[0])  # a repeat (the same run told again) is not a replicate
    # The pooled per-domain sample variance, by hand: squared deviations over (runs - 1), summed over mixtures.
    groups = [np.array([y for w, y in outcomes[:-1] if np.array_equal(w, W[i])]) for i in runs]
    pooled = sum(((g - g.mean(0)) ** 2).sum(0) for g in groups) / sum(len(g) - 1 for g in groups)

    gp = _gp(outcomes)
    X, Y, _ = gp.training_data()
    assert len(X) == 6 and np.allclose(Y[0], groups[0].mean(0))  # one row per mixture, its mean
    surrogate, _ = gp.surrogate()
    likelihood = surrogate.model.likelihood
    assert isinstance(likelihood, FixedNoiseGaussianLikelihood)
    # BoTorch holds the noise in standardised units: back to nats^2 with the outcome transform's scale.
    noise = likelihood.noise.detach().numpy().reshape(3, 6).T * surrogate.model.outcome_transform.stdvs.detach().numpy() ** 2
    np.testing.assert_allclose(noise, pooled / np.array(list(runs.values()))[:, None], rtol=1e-9)
    np.testing.assert_allclose(pool_replicates(*gp.observed_data()[:2]).noise_var, pooled, rtol=1e-12)


def test_unreplicated_runs_keep_the_inferred_noise():
    rng = np.random.default_rng(1)
    W = rng.dirichlet(np.ones(3), size=6)
    outcomes = [(w, _truth(w) + rng.normal(0, 0.02, 3)) for w in W]
    gp = _gp(outcomes + [outcomes[2]])  # a repeat: told twice, one run
    assert gp.training_noise() is None
    X, Y, _ = gp.training_data()
    assert len(X) == 7  # the rows as told, exactly as without replicates
    surrogate, _ = gp.surrogate()
    assert isinstance(surrogate.model.likelihood, GaussianLikelihood)
    assert not isinstance(surrogate.model.likelihood, FixedNoiseGaussianLikelihood)


def _state(trials: list[tuple[tuple, int, float | None]]) -> SweepState:
    """A sweep state of trials (weights, replicate, loss or None while running), all on one loss domain."""
    state = SweepState(Objective.from_spec(ObjectiveSpec(kind="target", domain="a"), DOMAINS))
    for seq, (w, r, loss) in enumerate(trials, 1):
        state.apply({"event": "trial_proposed", "seq": 2 * seq, "trial": f"t{seq}", "mixture": dict(zip(DOMAINS, w)),
                     "options": {"replicate": r} if r else {}})
        if loss is not None:
            state.apply({"event": "trial_completed", "seq": 2 * seq + 1, "trial": f"t{seq}", "losses": {"a": loss}})
    return state


def test_top_k_ranks_only_the_target_fidelitys_runs():
    # The cheap fidelity's runs have lower losses here (another function); the replicates go to the best
    # target runs, at the target fidelity (their options are the first run's).
    state = SweepState(Objective.from_spec(ObjectiveSpec(kind="target", domain="a"), DOMAINS))
    state.apply({"event": "sweep_started", "seq": 1, "fidelities": {"small": {"cost": 1}, "big": {"cost": 8}},
                 "target_fidelity": "big"})
    runs = [((0.5, 0.3, 0.2), "small", 0.2), ((0.2, 0.5, 0.3), "big", 1.1), ((0.3, 0.2, 0.5), "small", 0.3),
            ((0.1, 0.1, 0.8), "big", 1.0), ((0.6, 0.2, 0.2), "big", 1.4)]
    for seq, (w, fidelity, loss) in enumerate(runs, 1):
        state.apply({"event": "trial_proposed", "seq": 2 * seq, "trial": f"t{seq}", "mixture": dict(zip(DOMAINS, w)),
                     "options": {"fidelity": fidelity}})
        state.apply({"event": "trial_completed", "seq": 2 * seq + 1, "trial": f"t{seq}", "losses": {"a": loss}})
    s = build_strategy("sobol", {}, DOMAINS, MEAN, seed=0)
    s.set_replicates(2, 2, 7, lambda: state)
    assert [(p.mixture.as_dict()["a"], p.options) for p in s.ask(2, [])] == [
        (0.1, {"fidelity": "big", "replicate": 1}), (0.2, {"fidelity": "big", "replicate": 1})]


def test_seeds_owe_each_mixture_its_replicates_before_anything_new():
    box = {"state": _state([((0.5, 0.3, 0.2), 0, 1.0), ((0.2, 0.5, 0.3), 0, None)])}
    s = build_strategy("sobol", {}, DOMAINS, MEAN, seed=0)
    s.set_replicates(3, None, 8, lambda: box["state"])
    s.asked = 2
    out = s.ask(3, [])
    assert [(p.mixture.as_dict()["a"], p.options.get("replicate")) for p in out] == [(0.5, 1), (0.5, 2), (0.2, 1)]
    # 8 trials, 2 proposed and 4 replicates owed: room for no new mixture with all three runs (2 < 3).
    box["state"] = _state([((0.5, 0.3, 0.2), 0, 1.0), ((0.2, 0.5, 0.3), 0, 1.0), ((0.5, 0.3, 0.2), 1, 1.1),
                           ((0.5, 0.3, 0.2), 2, 1.2), ((0.2, 0.5, 0.3), 1, 1.0), ((0.2, 0.5, 0.3), 2, 1.0)])
    assert s.ask(4, []) == []


def test_top_k_replicates_the_best_once_the_strategy_is_done():
    trials = [((0.5, 0.3, 0.2), 0, 1.3), ((0.2, 0.5, 0.3), 0, 1.1), ((0.3, 0.2, 0.5), 0, 1.2), ((0.1, 0.1, 0.8), 0, None)]
    box = {"state": _state(trials)}
    s = build_strategy("sobol", {}, DOMAINS, MEAN, seed=0)
    s.set_replicates(2, 2, 6, lambda: box["state"])  # 4 trials for the strategy, 2 held for the replicates
    assert s.ask(2, [Mixture(DOMAINS, (0.1, 0.1, 0.8))]) == []  # its own trials are not done: wait
    box["state"] = _state(trials[:3] + [((0.1, 0.1, 0.8), 0, 1.5)])
    out = s.ask(2, [])
    assert [(p.mixture.as_dict()["a"], p.options) for p in out] == [(0.2, {"replicate": 1}), (0.3, {"replicate": 1})]
    with pytest.raises(SpecError, match="budget.replicates.top_k"):
        s.set_replicates(2, 4, 6, lambda: box["state"])
