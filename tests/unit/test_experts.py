"""MDE and MixMin on cached expert log-probabilities (no training here; see the integration test)."""

import numpy as np
import pytest

from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.spec import ObjectiveSpec
from orchestrator.strategies import build_strategy
from orchestrator.strategies.contract import Artifacts, Outcome
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
        s.add_expert(Mixture.from_array(DOMAINS, np.eye(3)[i]), _experts()[d])
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
        s.add_expert(Mixture.from_array(DOMAINS, np.eye(3)[i]), experts[d])
    assert s.ensemble().eval_domains == ("a", "b", "c", "downstream")
    w, trace, _ = s.solve(s.ensemble())
    assert all(b <= a + 1e-12 for a, b in zip(trace, trace[1:]))
    assert w[0] == pytest.approx(0.7, abs=0.08) and w[1] == pytest.approx(0.3, abs=0.08) and w[2] < 0.05
    rec = s.recommend()
    assert "downstream" in rec.predicted and rec.objective == pytest.approx(rec.predicted["downstream"])


def _expert_outcome(tmp_path, proposal, experts, losses=None) -> Outcome:
    """What a sweep's expert trial gives back: its losses, and where it wrote its log-probabilities."""
    from orchestrator.storage import write_arrays

    m = proposal.mixture
    domain = m.domains[int(np.argmax(m.weights))]
    location = str(tmp_path / f"expert_{domain}.npz")
    write_arrays(location, experts[domain])
    return Outcome(m, losses or {d: 3.0 for d in DOMAINS}, artifacts=Artifacts(token_logprobs=location))


def test_mixmin_asks_for_experts_then_its_optimum_once(tmp_path):
    s = build_strategy("mixmin", {}, DOMAINS, MEAN, seed=0)
    first = s.ask(2, [])
    assert [max(p.mixture.weights) for p in first] == [1.0, 1.0]
    rest = s.ask(3, [p.mixture for p in first])
    assert len(rest) == 1 and rest[0] not in first
    assert all(p.options == {"token_logprobs": True} for p in first + rest)  # each expert writes its log-probabilities
    for p in first + rest:
        s.tell(_expert_outcome(tmp_path, p, _experts()))
    assert set(s.expert_sources) == set(DOMAINS) and s.ensemble() is not None  # read from where the trials wrote them
    optimum = s.ask(2, [])
    assert len(optimum) == 1 and max(optimum[0].mixture.weights) < 0.99 and optimum[0].options == {}
    assert s.ask(2, []) == []
    rec = s.recommend()
    assert rec.mixture == optimum[0].mixture and rec.source == "model" and set(rec.predicted) == set(DOMAINS)


def test_a_restored_mixmin_reads_its_experts_again_and_proposes_its_optimum_once(tmp_path):
    s = build_strategy("mixmin", {}, DOMAINS, MEAN, seed=0)
    for p in s.ask(3, []):
        s.tell(_expert_outcome(tmp_path, p, _experts()))
    restored = build_strategy("mixmin", {}, DOMAINS, MEAN, seed=0)
    restored.load_state_dict(s.state_dict())
    assert restored.asked == 3 and set(restored.expert_logprobs) == set(DOMAINS)
    optimum = restored.ask(1, [])
    assert optimum == s.ask(1, []) and len(optimum) == 1
    assert restored.ask(1, [optimum[0].mixture]) == [] and restored.ask(1, []) == []  # in flight, then once only


def test_mde_regression_learns_the_gap_between_ensemble_and_truth():
    experts = _experts(seed=1)
    ens = ExpertEnsemble(DOMAINS, experts)

    def truth(w):  # real runs differ from the ensemble by a smooth, domain-specific offset
        return {d: float(v) for d, v in zip(DOMAINS, ens.losses(w)[0] + 0.3 * (w - 1 / 3) ** 2 + np.array([0.1, 0.2, 0.3]))}

    s = build_strategy("mde", {"seed_mixtures": 4}, DOMAINS, MEAN, seed=0)
    for p in s.ask(3, []):
        s.add_expert(p.mixture, experts[p.mixture.domains[int(np.argmax(p.mixture.weights))]])
        s.tell(Outcome(p.mixture, truth(p.mixture.as_array())))
    for _ in range(4):
        for p in s.ask(2, []):
            m = p.mixture
            assert abs(sum(m.weights) - 1) < 1e-5 and min(m.weights) >= 0 and p.options == {}
            s.tell(Outcome(m, truth(m.as_array())))
    rec = s.recommend()
    # The model's optimum or an observed run it predicts about as well (the half-std margin of
    # decisions.md); either way `objective` is the regression's prediction, checked against the truth.
    assert rec.source in ("model", "in-sample")
    actual = MEAN(truth(rec.mixture.as_array()))
    assert abs(rec.objective - actual) < 0.05  # the regression corrected the ensemble's offset
    assert actual < MEAN(truth(np.full(3, 1 / 3)))


def test_expert_strategies_refuse_trainers_without_token_logprobs(tmp_path):
    from orchestrator.controller import Controller
    from orchestrator.spec import SpecError, parse_spec

    spec = parse_spec({"domains": {"a": {}, "b": {}}, "trainer": {"kind": "synthetic"}, "strategy": {"kind": "mde"}})
    with pytest.raises(SpecError, match="only the proxy trainer"):
        Controller(spec, tmp_path)
