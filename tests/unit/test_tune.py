"""A mixsweep Strategy driving a real Ray Tune experiment as its Searcher."""

import pickle

import pytest

from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.tune import StrategySearcher, metrics_from_losses

DOMAINS = ("a", "b", "c")
MEAN = Objective({d: 1 / 3 for d in DOMAINS}, "mean")


def _searcher(kind: str = "mixing_law") -> StrategySearcher:
    return StrategySearcher(kind, {"starts": 2} if kind == "mixing_law" else {}, DOMAINS, MEAN, seed=0,
                            base_config={"steps": 3})


def test_searcher_tells_results_and_failures_to_the_strategy():
    s = _searcher()
    configs = {t: s.suggest(t) for t in ("t1", "t2", "t3")}
    assert all(c["steps"] == 3 and set(c["mixture"]) == set(DOMAINS) for c in configs.values())
    assert len({tuple(c["mixture"].values()) for c in configs.values()}) == 3  # pending points differ
    s.on_trial_complete("t1", {"loss.a": 2.0, "loss.b": 3.0, "loss.c": 2.5, "loss_stderr.a": 0.01, "objective": 2.5})
    s.on_trial_complete("t2", {"loss.a": float("nan"), "loss.b": 3.0, "loss.c": 2.5})
    s.on_trial_complete("t3", error=True)
    assert [(o.losses, o.loss_stderr) for o in s.strategy.observations] == [({"a": 2.0, "b": 3.0, "c": 2.5}, {"a": 0.01})]
    assert [f.reason for f in s.strategy.failures] == ["no finite loss.<domain> metrics in the last result", "trial errored"]
    assert not any(f.retryable for f in s.strategy.failures)


def test_searcher_refuses_strategies_whose_requirements_a_trainable_cannot_meet():
    for kind in ("mde", "mixmin", "doremi"):
        with pytest.raises(ValueError, match=f"strategy {kind} .*only mixsweep's proxy trainer"):
            StrategySearcher(kind, {}, DOMAINS, MEAN)
    with pytest.raises(ValueError, match="domain_tokens"):
        StrategySearcher("token_prior", {}, DOMAINS, MEAN)
    prior = StrategySearcher("token_prior", {}, DOMAINS, MEAN, domain_tokens={"a": 1, "b": 1, "c": 2})
    assert prior.suggest("t1")["mixture"] == {"a": 0.25, "b": 0.25, "c": 0.5}


def test_pickled_searcher_carries_json_state_and_proposes_the_same():
    s = _searcher()
    for t in ("t1", "t2", "t3", "t4", "t5"):
        m = Mixture.from_dict(s.suggest(t)["mixture"], DOMAINS)
        s.on_trial_complete(t, metrics_from_losses({d: 2 + w for d, w in m.as_dict().items()}, MEAN))
    s.suggest("t6")
    clone = pickle.loads(pickle.dumps(s))
    assert clone.live.keys() == {"t6"} and len(clone.strategy.observations) == 5
    assert clone.suggest("t7") == s.suggest("t7")
