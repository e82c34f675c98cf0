"""`mfgp`: the fidelity rule (cheap while the model is unsure what a cheap run would say, the target once
it knows), its cost caps, and proposals that name a fidelity. Real BoTorch, no Ray."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.spec import ObjectiveSpec
from orchestrator.strategies.contract import Fidelity, FidelityPlan, Outcome
from orchestrator.strategies.registry import build_strategy

DOMAINS = ("a", "b", "c")
SMALL, LARGE = Fidelity("small", 1.0, 1e6, 2e7), Fidelity("large", 60.0, 6e7, 2e7)


def losses(W: np.ndarray, params: float) -> np.ndarray:
    """Two domains; the larger model is ~1 nat better everywhere and prefers slightly more of c."""
    s = np.log10(params) - 6.0
    x = 3.0 - 0.8 * np.sqrt(W[:, 0]) + 0.2 * W[:, 2] - 0.5 * s
    y = 2.5 - 0.6 * np.sqrt(W[:, 1]) + 0.1 * W[:, 0] - (0.5 + 0.1 * W[:, 2]) * s
    return np.stack([x, y], axis=1)


def strategy(budget_cost: float | None = 600.0, **options):
    objective = Objective.from_spec(ObjectiveSpec(kind="mean", domains=["x", "y"]), DOMAINS)
    s = build_strategy("mfgp", {"fit_maxiter": 30, **options}, DOMAINS, objective, seed=0)
    s.fidelities = FidelityPlan((SMALL, LARGE), target="large", at_params=LARGE.params, budget_cost=budget_cost)
    return s


def tell(s, W: np.ndarray, fidelity: Fidelity, seed: int = 0) -> None:
    L = losses(W, fidelity.params) + np.random.default_rng(seed).normal(0.0, 0.01, (len(W), 2))
    for w, l in zip(W, L):
        s.tell(Outcome(Mixture.from_array(DOMAINS, w), {"x": l[0], "y": l[1]}, fidelity=fidelity.name))


def test_the_initial_design_runs_at_the_cheapest_fidelity():
    s = strategy()
    proposals = s.ask(3, [])
    assert len(proposals) == 3 and {p.options["fidelity"] for p in proposals} == {"small"}


def test_a_mixture_the_cheap_fidelity_knows_goes_to_the_target_and_an_unknown_one_stays_cheap():
    s = strategy()
    rng = np.random.default_rng(1)
    near = np.array([0.5, 0.3, 0.2])
    cloud = np.clip(near + rng.normal(0.0, 0.01, (12, 3)), 0.0, None)
    tell(s, np.vstack([cloud / cloud.sum(1, keepdims=True), rng.dirichlet(np.ones(3), 8)]), SMALL)
    tell(s, rng.dirichlet(np.ones(3), 3), LARGE, seed=1)
    std_near, noise = s.objective_std_and_noise(near[None, :], "small")
    std_far, _ = s.objective_std_and_noise(np.array([[0.02, 0.02, 0.96]]), "small")
    assert std_near[0] < noise < std_far[0]  # what the rule reads: the cheap model is sure near its runs only
    assert s.choose_fidelity(Mixture.from_array(DOMAINS, near)) == "large"
    assert s.choose_fidelity(Mixture.from_array(DOMAINS, np.array([0.02, 0.02, 0.96]))) == "small"


def test_cost_caps_bound_the_cheap_share_and_what_is_left():
    s = strategy(budget_cost=40.0, cheap_share=0.25)  # cheap may spend at most 10
    rng = np.random.default_rng(2)
    tell(s, rng.dirichlet(np.ones(3), 10), SMALL)
    tell(s, rng.dirichlet(np.ones(3), 2), LARGE, seed=3)
    far = Mixture.from_array(DOMAINS, np.array([0.02, 0.02, 0.96]))
    assert s.cheap_spent() == 10.0
    assert s.choose_fidelity(far) == "large"  # unsure, but the cheap share is spent
    s.cost_left = 30.0  # the target (60) no longer fits: what is left buys cheap runs
    assert s.choose_fidelity(far) == "small"


def test_model_proposals_name_a_fidelity_and_the_recommendation_is_at_the_target_scale():
    s = strategy()
    rng = np.random.default_rng(4)
    tell(s, rng.dirichlet(np.ones(3), 12), SMALL)
    tell(s, rng.dirichlet(np.ones(3), 3), LARGE, seed=5)
    s.asked = 15
    proposals = s.ask(2, [])
    assert len(proposals) == 2 and all(p.options["fidelity"] in ("small", "large") for p in proposals)
    rec = s.recommend()
    # Predicted at the large model's scale: ~1 nat below the small runs' losses (the trend in log size).
    small_mean = np.mean([o.losses["x"] for o in s.observations if o.fidelity == "small"])
    assert rec.predicted["x"] < small_mean - 0.5
    assert any("target scale" in n for n in rec.notes)


def test_mfgp_without_fidelities_says_what_to_add():
    objective = Objective.from_spec(ObjectiveSpec(kind="mean", domains=["x", "y"]), DOMAINS)
    s = build_strategy("mfgp", {}, DOMAINS, objective, seed=0)
    with pytest.raises(ValueError, match="fidelities"):
        s.plan


def test_one_mixture_at_two_fidelities_is_two_rows_and_its_replicates_at_one_are_pooled():
    s = strategy()
    rng = np.random.default_rng(6)
    W = rng.dirichlet(np.ones(3), 6)
    tell(s, W, SMALL)
    tell(s, W[:2], LARGE, seed=1)  # the same mixtures at the target: another function's values
    X, Y, _ = s.training_data()
    assert len(X) == 8
    tell(s, W[:1], SMALL, seed=9)  # a replicate at the small fidelity (another seed's noise)
    X, Y, _ = s.training_data()
    assert len(X) == 8 and len(s.surrogate()[0].params) == 8  # pooled into one row, scales kept row for row


def test_a_fidelity_table_needs_the_replay_trainer_and_data_caps_hold_at_the_largest_fidelity(tmp_path):
    from orchestrator.spec import SpecError, parse_spec

    table = tmp_path / "runs.csv"
    table.write_text("weight.a,weight.b,loss.a\n0.5,0.5,3.0\n")
    base = {"domains": {"a": {}, "b": {}}, "trainer": {"kind": "synthetic"}}
    with pytest.raises(SpecError, match=r"`fidelities.small.runs`: only the replay trainer"):
        parse_spec({**base, "fidelities": [{"name": "small", "preset": "debug", "runs": str(table)}, {"name": "big", "preset": "1m"}]})
    spec = parse_spec({**base, "proxy": {"preset": "debug"},
                       "fidelities": [{"name": "small", "preset": "debug"}, {"name": "big", "preset": "60m", "cost": 60}]})
    assert spec.largest_trial_tokens() == spec.fidelity_tokens("big") > spec.proxy.training_tokens()
    assert spec.target_fidelity == "big" and spec.fidelity_cost("small") == pytest.approx(6 * spec.fidelity_params("small") * spec.fidelity_tokens("small") / 1e15)


def test_an_export_refuses_a_journal_fidelity_the_spec_lacks():
    from orchestrator.export import ExportError, runs_table
    from orchestrator.spec import parse_spec
    from orchestrator.state import SweepState

    spec = parse_spec({"domains": {"a": {}, "b": {}}, "trainer": {"kind": "synthetic"},
                       "fidelities": [{"name": "small", "preset": "debug"}, {"name": "big", "preset": "1m"}]})
    state = SweepState()
    for seq, (fid, loss) in enumerate((("small", 3.0), ("../../etc", 2.0))):
        tid = f"t{seq:012x}"
        state.apply({"event": "trial_proposed", "seq": 2 * seq, "trial": tid, "mixture": {"a": 0.5, "b": 0.5}, "options": {"fidelity": fid}})
        state.apply({"event": "trial_completed", "seq": 2 * seq + 1, "trial": tid, "losses": {"a": loss, "b": loss}})
    with pytest.raises(ExportError, match=r"fidelities \['\.\./\.\./etc'\].*frozen spec") as err:
        runs_table(state, spec)
    assert "\n" not in str(err.value)


def test_the_recommendation_is_weighed_against_target_runs_and_carries_the_target_scales_std():
    s = strategy()
    rng = np.random.default_rng(8)
    tell(s, rng.dirichlet(np.ones(3), 14), SMALL)
    large = rng.dirichlet(np.ones(3), 4)
    tell(s, large, LARGE, seed=2)
    assert {o.fidelity for o in s.candidate_runs()} == {"large"}  # a cheap run's loss is another model's
    rec = s.recommend()
    if rec.source == "in-sample":
        assert any(np.allclose(rec.mixture.as_array(), w, atol=1e-6) for w in large)
    surrogate, loss_domains = s.surrogate()
    from orchestrator.surrogates.gp import posterior_mean_std

    _, gp_std = posterior_mean_std(surrogate.model.model, s._inputs_at(surrogate.model, rec.mixture.as_array()[None, :], None))
    # Compared on the GP's std, reported with the trend's error too: wider at the target scale.
    assert rec.objective_std > s.objective.compose(gp_std, gp_std, loss_domains)[1][0]
