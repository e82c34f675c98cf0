"""MDE and MixMin on cached expert log-probabilities (no training here; see the integration test)."""

import numpy as np
import pytest

from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.spec import ObjectiveSpec
from orchestrator.strategies import build_strategy
from orchestrator.strategies.experts import ExpertEnsemble

DOMAINS = ("a", "b", "c")
MEAN = Objective.from_spec(ObjectiveSpec(), DOMAINS)


def _experts(seed=0, tokens=400):
    """Expert i predicts domain i's tokens well (p ~ 0.6) and the others poorly (p ~ 0.05)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in DOMAINS:
        out[i] = {j: np.log(np.clip(rng.beta(6, 4, tokens) if i == j else rng.beta(1, 19, tokens), 1e-6, 1)).astype(np.float32)
                  for j in DOMAINS}
    return out


def test_mde_estimate_is_the_token_level_ensemble_loss():
    p1, p2 = np.array([0.5, 0.25, 0.1]), np.array([0.1, 0.5, 0.4])
    ens = ExpertEnsemble(("x", "y"), {"x": {"x": np.log(p1), "y": np.log(p1)}, "y": {"x": np.log(p2), "y": np.log(p2)}})
    w = np.array([0.3, 0.7])
    by_hand = -np.mean(np.log(0.3 * p1 + 0.7 * p2))
    assert ens.losses(w)[0, 0] == pytest.approx(by_hand, rel=1e-12)
    # the gradient is the derivative of that loss
    eps = 1e-6
    num = [(ens.losses(w + eps * e)[0, 0] - ens.losses(w - eps * e)[0, 0]) / (2 * eps) for e in np.eye(2)]
    assert ens.gradient(w, np.array([1.0, 0.0])) == pytest.approx(num, rel=1e-5)


def test_mixmin_decreases_its_objective_monotonically_and_beats_every_vertex():
    s = build_strategy("mixmin", {}, DOMAINS, MEAN, seed=0)
    for i, d in enumerate(DOMAINS):
        s.tell_expert(Mixture.from_array(DOMAINS, np.eye(3)[i]), _experts()[d])
    w, trace, _ = s.solve(s.ensemble())
    assert len(trace) > 3 and all(b <= a + 1e-12 for a, b in zip(trace, trace[1:]))
    ens = s.ensemble()
    value = ens.losses(w)[0].mean()
    assert value < ens.losses(np.full(3, 1 / 3))[0].mean()
    assert all(value < ens.losses(v)[0].mean() for v in np.eye(3))


def test_mixmin_targets_a_downstream_set_that_is_not_a_training_domain():
    """A downstream set drawn 70% like domain a and 30% like b: the ensemble that best predicts it
    weights the experts by those shares (the mixture-likelihood optimum), whatever the training domains'
    own losses say."""
    rng = np.random.default_rng(3)
    experts = _experts()
    n = 1000
    from_a = rng.random(n) < 0.7
    for i in DOMAINS:
        good, poor = np.log(rng.beta(6, 4, n)), np.log(rng.beta(1, 19, n))
        experts[i]["downstream"] = np.where(from_a, good if i == "a" else poor, good if i == "b" else poor).astype(np.float32)
    target = Objective({"downstream": 1.0}, "loss on downstream")
    s = build_strategy("mixmin", {"max_steps": 400}, DOMAINS, target, seed=0)
    for i, d in enumerate(DOMAINS):
        s.tell_expert(Mixture.from_array(DOMAINS, np.eye(3)[i]), experts[d])
    assert s.ensemble().eval_domains == ("a", "b", "c", "downstream")
    w, trace, _ = s.solve(s.ensemble())
    assert all(b <= a + 1e-12 for a, b in zip(trace, trace[1:]))
    assert w[0] == pytest.approx(0.7, abs=0.08) and w[1] == pytest.approx(0.3, abs=0.08) and w[2] < 0.05
    rec = s.recommend()
    assert "downstream" in rec.predicted and rec.objective == pytest.approx(rec.predicted["downstream"])


def test_mixmin_asks_for_experts_then_its_optimum_once():
    s = build_strategy("mixmin", {}, DOMAINS, MEAN, seed=0)
    first = s.ask(2, [])
    assert [max(m.weights) for m in first] == [1.0, 1.0]
    rest = s.ask(3, first)
    assert len(rest) == 1 and rest[0] not in first
    assert all(s.wants_token_logprobs(m) for m in first + rest)
    for m in first + rest:
        s.tell_expert(m, _experts()[m.domains[int(np.argmax(m.weights))]])
    optimum = s.ask(2, [])
    assert len(optimum) == 1 and max(optimum[0].weights) < 0.99 and not s.wants_token_logprobs(optimum[0])
    assert s.ask(2, []) == []
    rec = s.recommend()
    assert rec.mixture == optimum[0] and rec.source == "model" and set(rec.predicted) == set(DOMAINS)


def test_mde_regression_learns_the_gap_between_ensemble_and_truth():
    experts = _experts(seed=1)
    ens = ExpertEnsemble(DOMAINS, experts)

    def truth(w):  # real runs differ from the ensemble by a smooth, domain-specific offset
        return {d: float(v) for d, v in zip(DOMAINS, ens.losses(w)[0] + 0.3 * (w - 1 / 3) ** 2 + np.array([0.1, 0.2, 0.3]))}

    s = build_strategy("mde", {"seed_mixtures": 4}, DOMAINS, MEAN, seed=0)
    for m in s.ask(3, []):
        s.tell_expert(m, experts[m.domains[int(np.argmax(m.weights))]])
        s.tell(m, truth(m.as_array()))
    for _ in range(4):
        for m in s.ask(2, []):
            assert abs(sum(m.weights) - 1) < 1e-5 and min(m.weights) >= 0
            s.tell(m, truth(m.as_array()))
    rec = s.recommend()
    assert rec.source == "model"
    actual = MEAN(truth(rec.mixture.as_array()))
    assert abs(rec.objective - actual) < 0.05  # the regression corrected the ensemble's offset
    assert actual < MEAN(truth(np.full(3, 1 / 3)))


def test_expert_strategies_refuse_trainers_without_token_logprobs(tmp_path):
    from orchestrator.controller import Controller
    from orchestrator.spec import SpecError, parse_spec

    spec = parse_spec({"domains": {"a": {}, "b": {}}, "trainer": {"kind": "synthetic"}, "strategy": {"kind": "mde"}})
    with pytest.raises(SpecError, match="only the proxy trainer"):
        Controller(spec, tmp_path)
