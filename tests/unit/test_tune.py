"""A mixsweep Strategy driving a real Ray Tune experiment as its Searcher."""

import pickle

import numpy as np
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


@pytest.mark.slow
def test_tuner_runs_a_sweep_proposed_by_the_strategy(ray_session, tmp_path):
    from ray import tune

    def trainable(config):
        import numpy as np  # the function is shipped to Tune's workers by value

        w = np.array([config["mixture"][d] for d in ("a", "b", "c")])
        opt = np.array([0.2, 0.3, 0.5])
        losses = {d: 2.0 + 0.1 * i + 4 * float(((w - opt) ** 2).sum()) + 0.5 * (opt[i] - w[i]) for i, d in enumerate("abc")}
        tune.report({**{f"loss.{d}": v for d, v in losses.items()}, "objective": float(np.mean(list(losses.values())))})

    searcher = _searcher("gp")
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=8, max_concurrent_trials=2),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="mix", verbose=0))
    grid = tuner.fit()
    assert len(grid) == 8 and not grid.errors
    proposed = [r.config["mixture"] for r in grid]
    assert len({tuple(m.values()) for m in proposed}) == 8
    for r in grid:  # each trial trained on the mixture it was given, and Tune saw its per-domain losses
        w = np.array([r.config["mixture"][d] for d in DOMAINS])
        expected = 2.0 + 0.1 * np.arange(3) + 4 * ((w - [0.2, 0.3, 0.5]) ** 2).sum() + 0.5 * (np.array([0.2, 0.3, 0.5]) - w)
        np.testing.assert_allclose([r.metrics[f"loss.{d}"] for d in DOMAINS], expected, rtol=1e-9)
    best = grid.get_best_result(metric="objective", mode="min")
    assert best.metrics["objective"] == min(r.metrics["objective"] for r in grid)
