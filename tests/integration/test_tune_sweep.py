"""A mixsweep Strategy driving a real Ray Tune experiment as its Searcher."""

import numpy as np
import pytest

from orchestrator.objective import Objective
from orchestrator.tune import StrategySearcher

DOMAINS = ("a", "b", "c")


@pytest.mark.slow
def test_tuner_runs_a_sweep_proposed_by_the_strategy(ray_session, tmp_path):
    from ray import tune

    def trainable(config):
        import numpy as np  # the function is shipped to Tune's workers by value

        w = np.array([config["mixture"][d] for d in ("a", "b", "c")])
        opt = np.array([0.2, 0.3, 0.5])
        losses = {d: 2.0 + 0.1 * i + 4 * float(((w - opt) ** 2).sum()) + 0.5 * (opt[i] - w[i]) for i, d in enumerate("abc")}
        tune.report({**{f"loss.{d}": v for d, v in losses.items()}, "objective": float(np.mean(list(losses.values())))})

    searcher = StrategySearcher("gp", {}, DOMAINS, Objective({d: 1 / 3 for d in DOMAINS}, "mean"), seed=0,
                                base_config={"steps": 3})
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
