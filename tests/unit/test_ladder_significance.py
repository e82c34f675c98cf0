"""Issue 13, item 4: the ladder's verdicts carry a significance (bootstrap over mixtures and replicates)."""

from __future__ import annotations

import numpy as np

from orchestrator.ladder import _compare, bootstrap_ladder, ladder_summary
from orchestrator.objective import Objective
from orchestrator.spec import ObjectiveSpec
from orchestrator.state import SweepState

DOMAINS = ("a", "b")


def _rows(small: list, large: list) -> list[dict]:
    return [{"role": f"m{i}", "objective": y, "base_objective": float(np.mean(x)) if isinstance(x, list) else x,
             **({"base_runs": x} if isinstance(x, list) else {})} for i, (x, y) in enumerate(zip(small, large))]


def test_concordant_rows_are_significant_and_shuffled_ones_are_not():
    same = _compare(_rows([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7], [2.0, 2.2, 2.3, 2.5, 2.6, 2.8, 2.9, 3.0]))
    assert same["spearman"] == 1.0 and same["winner_held"] and same["winner_held_p"] == 1.0
    assert same["spearman_ci"] == [1.0, 1.0]
    shuffled = _compare(_rows([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7], [2.5, 2.9, 2.0, 3.0, 2.2, 2.8, 2.3, 2.6]))
    lo, hi = shuffled["spearman_ci"]
    assert lo < -0.4 and hi > 0.5  # rho near 0 with 8 mixtures: no evidence either way
    assert not shuffled["winner_held"] and shuffled["winner_held_p"] < 0.3
    assert _compare(_rows([1.0, 1.2], [2.0, 2.1]) + [{"role": "x", "objective": None, "base_objective": 1.1}])["pairs"] == 2


def test_replicates_that_disagree_make_the_winner_uncertain():
    # m0 wins at both scales by its mean, but its two runs at the small scale straddle m1's.
    noisy = _compare(_rows([[0.9, 1.25], 1.1, 1.5, 1.7], [2.0, 2.1, 2.5, 2.7]))
    assert noisy["winner_held"] and noisy["replicated"] == 1
    assert 0.4 < noisy["winner_held_p"] < 0.9
    tight = _compare(_rows([[1.07, 1.08], 1.1, 1.5, 1.7], [2.0, 2.1, 2.5, 2.7]))
    assert tight["winner_held_p"] > noisy["winner_held_p"]
    # Deterministic: the same rows, the same answer.
    assert bootstrap_ladder([[1.0, 1.3], [1.1]], [[2.0], [2.1]]) == bootstrap_ladder([[1.0, 1.3], [1.1]], [[2.0], [2.1]])


def test_the_summary_averages_a_mixtures_replicates_and_keeps_their_runs():
    state = SweepState(Objective.from_spec(ObjectiveSpec(kind="target", domain="a"), DOMAINS))
    seq = iter(range(1, 100))
    trials = [("t1", (0.5, 0.5), {}, 1.0, None), ("t2", (0.5, 0.5), {"replicate": 1}, 1.2, None),
              ("t3", (0.2, 0.8), {}, 1.3, None), ("l1", (0.5, 0.5), {}, 0.8, "1m"), ("l2", (0.2, 0.8), {}, 0.9, "1m")]
    for tid, w, options, loss, preset in trials:
        state.apply({"event": "trial_proposed", "seq": next(seq), "trial": tid, "mixture": dict(zip(DOMAINS, w)),
                     "options": options, **({"preset": preset, "role": tid} if preset else {})})
        state.apply({"event": "trial_completed", "seq": next(seq), "trial": tid, "losses": {"a": loss, "b": 1.0}})
    rung = ladder_summary(state, "debug")["rungs"][0]
    first = rung["rows"][0]
    assert first["base_runs"] == [1.0, 1.2] and abs(first["base_objective"] - 1.1) < 1e-12 and first["runs"] == [0.8]
    assert rung["winner_held"] and rung["replicated"] == 1 and 0 < rung["winner_held_p"] <= 1
