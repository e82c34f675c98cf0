"""Target-run feasibility (orchestrator/target.py): the caps and epochs arithmetic, the one-line errors
raised before anything starts, and the unconstrained optimum beside the feasible one."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.controller import Controller
from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.optimize import Bounds
from orchestrator.spec import SpecError, parse_spec
from orchestrator.strategies import build_strategy
from orchestrator.strategies.contract import Outcome
from orchestrator.target import (
    combined_caps,
    epochs_at_target,
    feasible_or_best_inside,
    optima,
    over_cap,
    target_caps,
)
from workers.backends import synthetic_losses

DOMAINS = ("small", "web", "code")


def _spec(target: dict | None, max_epochs: float = 4.0, **extra):
    return parse_spec({"name": "t", "domains": {d: {} for d in DOMAINS}, "trainer": {"kind": "synthetic"},
                       "data": {"max_epochs": max_epochs}, **({"target": target} if target is not None else {}), **extra})


def test_target_caps_are_max_epochs_times_available_over_target_tokens():
    spec = _spec({"tokens": 2e12, "available_tokens": {"small": 1e11, "web": 3e11, "code": 9e12}}, max_epochs=4)
    t = target_caps(spec, None)
    # small: 4 x 1e11 / 2e12 = 0.2; web: 4 x 3e11 / 2e12 = 0.6; code: 18 passes' worth, capped at 1
    assert t.caps == pytest.approx({"small": 0.2, "web": 0.6, "code": 1.0})
    assert t.declared == DOMAINS
    assert target_caps(_spec(None), None) is None
    assert target_caps(_spec({"params": 1e9}), None) is None  # a scale without tokens caps nothing


def test_undeclared_domains_fall_back_to_the_prepared_tokens():
    spec = _spec({"tokens": 1e6, "available_tokens": {"small": 5e4}}, max_epochs=2)
    t = target_caps(spec, {"small": 10, "web": 1e5, "code": 2e6})
    assert t.available == {"small": 5e4, "web": 1e5, "code": 2e6}  # the declaration wins over the sample's count
    assert t.caps == pytest.approx({"small": 0.1, "web": 0.2, "code": 1.0})
    assert t.declared == ("small",)


def test_a_trainer_without_data_must_declare_the_available_tokens_in_one_line():
    spec = _spec({"tokens": 1e12, "available_tokens": {"small": 1e11}})
    with pytest.raises(SpecError) as err:
        target_caps(spec, None)
    msg = str(err.value)
    assert "\n" not in msg and "`target.available_tokens`" in msg and "['web', 'code']" in msg and "synthetic" in msg


def test_the_sweep_honours_the_smaller_of_the_proxy_and_target_caps():
    t = target_caps(_spec({"tokens": 1e12, "available_tokens": {"small": 1e11, "web": 1e13, "code": 1e13}}), None)
    assert combined_caps({"small": 1.0, "web": 0.3, "code": 1.0}, t) == pytest.approx({"small": 0.4, "web": 0.3, "code": 1.0})
    assert combined_caps(None, t) == pytest.approx(t.caps)


def test_caps_summing_below_one_are_refused_naming_the_fields_and_the_fix():
    t = target_caps(_spec({"tokens": 1e12, "available_tokens": {"small": 1e10, "web": 5e10, "code": 1e11}}), None)
    with pytest.raises(SpecError) as err:  # 0.04 + 0.2 + 0.4 = 0.64 < 1
        combined_caps(None, t)
    msg = str(err.value)
    assert "\n" not in msg and "`target.tokens`" in msg and "data.max_epochs=4" in msg and "0.640 < 1" in msg
    assert "declare more target.available_tokens" in msg and "lower target.tokens" in msg


def test_epochs_at_the_target_run():
    e = epochs_at_target({"small": 0.3, "web": 0.7, "code": 0.0}, 2e12, {"small": 2e10, "web": 1.4e12, "code": 0.0})
    assert e == pytest.approx({"small": 30.0, "web": 1.0, "code": 0.0})  # 1% of the tokens at 30%: 30 passes
    assert epochs_at_target({"code": 0.1}, 1e9, {"code": 0.0}) == {"code": None}  # no repetition gives tokens that do not exist
    assert over_cap({"small": 0.40005, "web": 0.6}, {"small": 0.4}) == []  # within the storage rounding
    assert over_cap({"small": 0.41, "web": 0.59}, {"small": 0.4}) == ["small"]


def test_run_refuses_a_target_without_available_tokens_before_anything_is_written(tmp_path):
    spec = _spec({"tokens": 1e12})
    with pytest.raises(SpecError, match="target.available_tokens"):
        Controller(spec, tmp_path / "sweep", log=lambda m: None).run()
    assert not (tmp_path / "sweep" / "journal.jsonl").exists()


def test_run_refuses_target_caps_that_leave_no_mixture(tmp_path):
    spec = _spec({"tokens": 1e12, "available_tokens": {"small": 1e9, "web": 1e9, "code": 1e9}})
    with pytest.raises(SpecError, match="no mixture fits the target run"):
        Controller(spec, tmp_path / "sweep", log=lambda m: None).run()
    assert not (tmp_path / "sweep" / "journal.jsonl").exists()


OPTIMUM = {"small": 0.55, "web": 0.25, "code": 0.2}
TARGET = {"tokens": 1e12, "available_tokens": {"small": 1e11, "web": 5e12, "code": 5e12}}  # small capped at 0.4


def _told(kind: str, caps: dict[str, float], n: int = 10, options: dict | None = None):
    """A strategy told n synthetic outcomes at Sobol mixtures inside the caps."""
    objective = Objective.from_spec(_spec(None).objective, DOMAINS)
    s = build_strategy(kind, options or {}, DOMAINS, objective, 0)
    s.set_caps(caps)
    rng = np.random.default_rng(0)
    for _ in range(n):
        w = Mixture.from_array(DOMAINS, rng.dirichlet(np.ones(3)))
        from orchestrator.mixture import within_caps

        m = within_caps(w, caps)
        s.tell(Outcome(m, synthetic_losses(m.as_dict(), OPTIMUM)))
    return s


def test_a_model_strategy_shows_the_unconstrained_optimum_beyond_the_cap_and_what_the_cap_costs():
    t = target_caps(_spec(TARGET), None)
    s = _told("gp", t.caps, options={"initial_trials": 4})
    rec = s.recommend()
    assert rec.mixture.as_dict()["small"] <= t.caps["small"] + 1e-4
    block = optima(s, rec, t, t.caps, Bounds.of(DOMAINS), seed=0)
    free = block["unconstrained"]
    assert free["predicted_by"] == "model" and block["over_cap"] == ["small"]
    # The true optimum is 0.55: the model sees beyond the cap (0.4), not all the way from 10 runs inside
    # it (its noise prior, surrogates.gp.NOISE_PRIOR_LOC, keeps it from trusting every wiggle).
    assert free["mixture"]["small"] > t.caps["small"] + 0.02
    assert free["epochs"]["small"] == pytest.approx(free["mixture"]["small"] * 10, rel=1e-6) and free["epochs"]["small"] > 4
    assert block["feasible"]["epochs"]["small"] <= 4 + 1e-3
    assert block["cap_cost"] == pytest.approx(block["feasible"]["objective"] - free["objective"]) and block["cap_cost"] > 0
    assert "more than data.max_epochs=4" in block["summary"] and f"{block['cap_cost']:.4f}" in block["summary"]


def test_a_strategy_without_a_model_says_its_best_run_is_the_only_unconstrained_point():
    t = target_caps(_spec(TARGET), None)
    s = _told("sobol", t.caps, n=6)
    block = optima(s, s.recommend(), t, t.caps, Bounds.of(DOMAINS), seed=0)
    assert block["unconstrained"]["predicted_by"] == "observed" and block["cap_cost"] is None
    assert "no model" in block["summary"] and "best observed run" in block["summary"]


def test_a_seed_run_beyond_the_target_cap_is_not_recommended():
    t = target_caps(_spec(TARGET), None)
    s = _told("sobol", t.caps, n=4)
    seed = Mixture.from_dict(OPTIMUM, DOMAINS)  # the true optimum, told as a seed run, 5.5 passes over small
    s.tell(Outcome(seed, synthetic_losses(OPTIMUM, OPTIMUM)))
    rec = s.recommend()
    assert rec.mixture == seed
    fixed = feasible_or_best_inside(s, rec, t.caps)
    assert not over_cap(fixed.mixture.as_dict(), t.caps) and "exceeds the target caps" in fixed.notes[-1]


def test_recommend_with_a_target_spec_caps_a_runs_table_answer(tmp_path):
    import json

    import pandas as pd

    from orchestrator.recommend import recommend_command

    rng = np.random.default_rng(1)
    rows = []
    for w in rng.dirichlet(np.ones(3), size=16):
        m = dict(zip(DOMAINS, w))
        rows.append({**{f"weight.{d}": m[d] for d in DOMAINS}, **{f"loss.{d}": v for d, v in synthetic_losses(m, OPTIMUM).items()}})
    runs = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(runs, index=False)
    spec = tmp_path / "spec.yaml"
    domains = "domains: {small: {}, web: {}, code: {}}\ntrainer: {kind: synthetic}\n"
    spec.write_text(domains + "target: {tokens: 1.0e12, available_tokens: {small: 1.0e11, web: 5.0e12, code: 5.0e12}}\n")
    out = tmp_path / "rec.json"
    recommend_command(runs=runs, out=out, objective="mean", strategy="gp", propose=None, predict=None, seed=0,
                      options='{"fit_maxiter": 50}', target=spec)  # the sweep's fit, not the offline 200 steps: faster
    body = json.loads(out.read_text())
    assert body["mixture"]["small"] <= 0.4 + 1e-4 and body["target"]["unconstrained"]["mixture"]["small"] > 0.45
    assert body["target"]["over_cap"] == ["small"] and body["target_spec"] == str(spec)

    spec.write_text(domains + "target: {tokens: 1.0e12, available_tokens: {small: 1.0e11}}\n")
    with pytest.raises(SpecError) as err:
        recommend_command(runs=runs, out=out, objective="mean", strategy="gp", propose=None, predict=None, seed=0, options="", target=spec)
    assert "\n" not in str(err.value) and "`target.available_tokens`: a runs table holds no token counts" in str(err.value)
