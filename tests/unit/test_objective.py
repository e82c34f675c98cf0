"""Robust objectives and constraints: worst and excess-worst values, spec errors, Ax outcome constraints,
and constrained strategies that never recommend a mixture breaking the constraint on observed data."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.optimize import Bounds, minimize_on_simplex
from orchestrator.runs import RunsTableError
from orchestrator.spec import ObjectiveSpec, SpecError, parse_spec
from orchestrator.strategies import build_strategy
from orchestrator.strategies.contract import Outcome

D3 = ("a", "b", "c")
# Domain a gains little from its own data: the mean-optimal mixture starves it (w_a -> 0), and its loss
# then rises 0.04 nats above its loss under the uniform mixture.
GAIN, BASE = np.array([0.02, 0.5, 0.5]), np.array([2.0, 2.1, 2.2])


def true_losses(W: np.ndarray) -> np.ndarray:
    return BASE - GAIN * np.log(np.atleast_2d(W) + 0.05)


def loss_dict(w: np.ndarray) -> dict[str, float]:
    return dict(zip(D3, true_losses(w)[0].tolist()))


UNIFORM_LOSSES = loss_dict(np.full(3, 1 / 3))


def objective(kind: str = "worst", **kw) -> Objective:
    return Objective.from_spec(ObjectiveSpec(kind=kind, **kw), D3)


def test_worst_is_the_largest_domain_loss():
    obj = objective()
    assert obj({"a": 2.0, "b": 3.5, "c": 2.5}) == 3.5
    assert obj.values(np.array([[2.0, 3.5, 2.5], [4.0, 1.0, 1.0]]), D3).tolist() == [3.5, 4.0]


def test_excess_worst_is_measured_against_the_reference_run_and_falls_back_until_it_completes():
    obj = objective(excess=True)
    losses = {"a": 2.30, "b": 2.50, "c": 2.45}
    assert obj(losses) == 2.50 and obj.notes()  # no reference yet: plain worst, and said so
    assert obj.with_run({"a": 0.5, "b": 0.25, "c": 0.25}, {"a": 2.0, "b": 2.0, "c": 2.0}) is obj  # not the reference
    learnt = obj.with_run({d: 1 / 3 for d in D3}, {"a": 2.0, "b": 2.45, "c": 2.4})
    assert learnt(losses) == pytest.approx(0.30)  # a: 2.30 - 2.0 is the largest excess
    assert learnt.notes() == []
    assert learnt.with_run({d: 1 / 3 for d in D3}, {"a": 9.0, "b": 9.0, "c": 9.0}) is learnt  # the first reference run counts


def test_observing_the_reference_returns_a_new_objective_and_leaves_the_old_one_unchanged():
    obj = objective(excess=True, constraints={"max_excess": 0.05, "max_loss": {"b": 3.0}})
    before = (dict(obj.coefficients), dict(obj.max_loss), dict(obj.reference), obj.description)
    learnt = obj.with_run({d: 1 / 3 for d in D3}, {"a": 2.0, "b": 2.45, "c": 2.4})
    assert learnt is not obj and learnt.reference == {"a": 2.0, "b": 2.45, "c": 2.4} and learnt.reference_known
    assert (dict(obj.coefficients), dict(obj.max_loss), dict(obj.reference), obj.description) == before
    assert not obj.reference_known and obj.notes() and obj({"a": 2.3, "b": 2.5, "c": 2.45}) == 2.5
    assert learnt != obj  # the reference is part of what an objective is
    # No method and no mapping inside it changes an objective in place.
    for mapping in (obj.coefficients, obj.max_loss, obj.reference, learnt.reference):
        with pytest.raises(TypeError, match="never changes"):
            mapping["a"] = 0.0
        with pytest.raises(TypeError, match="never changes"):
            mapping.update({"a": 0.0})
    with pytest.raises(AttributeError):
        obj.reference = {"a": 1.0}  # frozen dataclass
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(learnt)) == learnt and copy.deepcopy(learnt) == learnt
    assert json.loads(json.dumps(learnt.reference)) == dict(learnt.reference)


def test_composed_worst_is_exact_without_uncertainty_and_robust_with_it():
    obj = objective()
    mean = np.array([[2.0, 2.1, 2.05]])
    assert obj.compose(mean, np.zeros_like(mean), D3)[0][0] == 2.1
    m, s = obj.compose(mean, np.full_like(mean, 0.1), D3)
    assert m[0] > 2.1 + 0.03 and 0 < s[0] < 0.1  # E[max] of three uncertain domains lies above the max of the means
    linear = objective("mean")
    m, s = linear.compose(mean, np.full_like(mean, 0.3), D3)
    assert m[0] == pytest.approx(mean.mean()) and s[0] == pytest.approx(0.3 / np.sqrt(3))


def test_constraints_relative_to_the_reference_and_absolute_caps():
    obj = objective("mean", constraints={"max_excess": 0.01, "max_loss": {"b": 2.4}})
    assert obj.violated_by({"a": 5.0, "b": 2.3, "c": 5.0}) == pytest.approx(-0.1)  # only the cap is known yet
    obj = obj.with_run({d: 1 / 3 for d in D3}, {"a": 2.0, "b": 2.2, "c": 2.3})
    assert obj.violated_by({"a": 2.03, "b": 2.2, "c": 2.3}) == pytest.approx(0.02)
    assert obj.violated_by({"a": 2.0, "b": 2.25, "c": 2.3}) == pytest.approx(0.04)  # the tighter limit of b counts
    assert obj.violated_by({"a": 2.0, "b": 2.2, "c": 2.305}) < 0


def test_spec_errors_name_the_field():
    base = {"domains": {"a": {"demo": "books"}, "b": {"demo": "code"}}}
    cases = [
        ({"objective": {"kind": "mean", "excess": True}}, "excess is only for kind worst"),
        ({"objective": {"constraints": {"max_loss": {"nope": 3.0}}}}, "`objective.constraints.max_loss.nope`"),
        ({"objective": {"constraints": {"max_excess": -1}}}, "`objective.constraints.max_excess`"),
        ({"strategy": {"kind": "gp", "options": {"bounds": {"nope": [0, 0.5]}}}}, "`strategy.options.bounds.nope`"),
        ({"objective": {"kind": "worst", "excess": True, "reference": {"a": 1, "zz": 1}}}, "`objective.reference`"),
    ]
    for extra, needle in cases:
        with pytest.raises(SpecError) as err:
            parse_spec({**base, **extra})
        assert needle in str(err.value) and "\n" not in str(err.value)
    spec = parse_spec({**base, "objective": {"kind": "worst", "excess": True, "constraints": {"max_excess": 0.02}}})
    assert Objective.from_spec(spec.objective, spec.domain_names).needs_reference


def test_bayesopt_puts_the_constraints_in_the_ax_experiment():
    obj = objective("mean", constraints={"max_excess": 0.01, "max_loss": {"b": 2.5}})
    s = build_strategy("bayesopt", {"initial_trials": 3}, D3, obj, seed=0)

    def constraints() -> dict[str, float]:
        oc = s._client._experiment.optimization_config.outcome_constraints
        return {c.metric_names[0]: c.bound for c in oc}

    assert constraints() == {"limit_b": 2.5}  # the cap at once; limits relative to the reference wait for its run
    first = [p.mixture for p in s.ask(2, [])]
    assert np.allclose(first[0].as_array(), 1 / 3)  # the reference run comes first
    s.tell(Outcome(first[0], UNIFORM_LOSSES))
    assert constraints() == pytest.approx({"limit_a": UNIFORM_LOSSES["a"] + 0.01, "limit_b": 2.5,
                                           "limit_c": UNIFORM_LOSSES["c"] + 0.01})


def test_bayesopt_worst_excess_holds_results_back_until_the_reference_completes():
    s = build_strategy("bayesopt", {"initial_trials": 3}, D3, objective(excess=True), seed=0)
    ref, other = (p.mixture for p in s.ask(2, []))
    s.tell(Outcome(other, loss_dict(other.as_array())))
    data = s._client._experiment.lookup_data().df
    assert data.empty  # the objective is undefined before the reference run: Ax still sees the trial running
    s.tell(Outcome(ref, UNIFORM_LOSSES))
    df = s._client._experiment.lookup_data().df
    got = df[df.metric_name == "objective"]["mean"].tolist()
    assert len(got) == 2 and min(got) == 0.0  # the reference's own excess is 0
    expected = max(v - UNIFORM_LOSSES[d] for d, v in loss_dict(other.as_array()).items())
    assert max(got) == pytest.approx(expected) or min(got) == pytest.approx(expected)


def test_bayesopt_releases_held_results_when_the_reference_run_fails():
    obj = objective(excess=True)
    s = build_strategy("bayesopt", {"initial_trials": 3}, D3, obj, seed=0)
    ref, other = (p.mixture for p in s.ask(2, []))
    s.tell(Outcome(other, loss_dict(other.as_array())))
    s.tell_failed(ref, "node lost", retryable=True)
    df = s._client._experiment.lookup_data().df
    assert df[df.metric_name == "objective"]["mean"].tolist() == [max(loss_dict(other.as_array()).values())]
    assert any("has not completed" in n for n in s.recommend().notes)


def _mean_optimum() -> np.ndarray:
    w, _ = minimize_on_simplex(lambda W: true_losses(W).mean(axis=1), Bounds.of(D3), np.random.default_rng(0))
    return w


@pytest.mark.parametrize("kind,options,rounds", [
    ("mixing_law", {}, 4),
    ("regmix", {"prior": "uniform", "n_estimators": 100, "simulations": 2000}, 3),
    ("gp", {"fit_maxiter": 20, "candidates": 256, "local_candidates": 64, "initial_trials": 4}, 3),
])
def test_constrained_strategies_never_recommend_a_mixture_breaking_the_constraint(kind, options, rounds):
    limit = 0.01
    unconstrained = loss_dict(_mean_optimum())
    assert unconstrained["a"] - UNIFORM_LOSSES["a"] > limit + 0.02  # the constraint binds
    obj = objective("mean", constraints={"max_excess": limit})
    s = build_strategy(kind, options, D3, obj, seed=0)
    for _ in range(rounds):
        for p in s.ask(4, []):
            s.tell(Outcome(p.mixture, loss_dict(p.mixture.as_array())))
    assert not obj.reference_known  # the strategy holds its own objective; the one it was given is unchanged
    obj = s.objective
    assert obj.reference == pytest.approx(UNIFORM_LOSSES)  # the initial design ran the reference mixture
    rec = s.recommend()
    if rec.source == "observed":  # a real run: its observed losses satisfy the constraint
        assert obj.violated_by(rec.predicted) <= 0
        # why a real run: the model's pick would violate, or the model failed its cross-validation
        assert any("violate" in n or "predicts held-out runs no better" in n for n in rec.notes)
    else:  # the model's mixture: predicted to satisfy (with its std), and it does on the true losses
        assert obj.violated_by({d: v + rec.predicted_std.get(d, 0) for d, v in rec.predicted.items()}) <= 0
        assert obj.violated_by(loss_dict(rec.mixture.as_array())) <= 0.002
    truth = loss_dict(rec.mixture.as_array())
    assert np.mean(list(truth.values())) <= np.mean(list(UNIFORM_LOSSES.values())) + 1e-6  # no worse than uniform on average


def test_without_feasible_runs_the_recommendation_says_so():
    obj = objective("mean", constraints={"max_loss": {"a": 1.0}})  # no mixture gets domain a below 1 nat
    s = build_strategy("sobol", {}, D3, obj, seed=0)
    for p in s.ask(4, []):
        s.tell(Outcome(p.mixture, loss_dict(p.mixture.as_array())))
    rec = s.recommend()
    assert rec.source == "observed" and any("no observed run satisfies" in n for n in rec.notes)
    assert rec.mixture == min((o.mixture for o in s.observations), key=lambda m: loss_dict(m.as_array())["a"])


def _runs_csv(tmp_path, with_uniform: bool = True):
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(3), size=14)
    if with_uniform:
        W[0] = 1 / 3
    L = true_losses(W)
    frame = pd.DataFrame({**{f"weight.{d}": W[:, i] for i, d in enumerate(D3)},
                          **{f"loss.{d}": L[:, i] for i, d in enumerate(D3)}})
    path = tmp_path / "runs.csv"
    frame.to_csv(path, index=False)
    return path


def test_recommend_cli_with_worst_and_constraints(tmp_path):
    from orchestrator.cli import app

    runs, out = _runs_csv(tmp_path), tmp_path / "rec.json"
    result = CliRunner().invoke(app, ["recommend", "--runs", str(runs), "--out", str(out), "--strategy", "mixing_law",
                                      "--objective", "worst:excess", "--constraints", "max_excess=0.01,loss.b<=3"])
    assert result.exit_code == 0, result.output
    rec = json.loads(out.read_text())
    truth = loss_dict(np.array([rec["mixture"][d] for d in D3]))
    assert max(truth[d] - UNIFORM_LOSSES[d] for d in D3) <= 0.012  # max_excess (2 thousandths for the fit)
    assert rec["constraints"] == "max_excess=0.01,loss.b<=3"


@pytest.mark.parametrize("args,needle", [
    (["--objective", "worst:excess"], "uniform mixture"),
    (["--objective", "worst", "--constraints", "loss.nope<=2"], "'nope'"),
    (["--objective", "worst", "--constraints", "max_excess"], "--constraints"),
    (["--objective", "worstest"], "worst:excess"),
])
def test_recommend_cli_bad_objectives_are_one_line(tmp_path, args, needle):
    from orchestrator.cli import app

    runs = _runs_csv(tmp_path, with_uniform=False)
    result = CliRunner().invoke(app, ["recommend", "--runs", str(runs), "--out", str(tmp_path / "r.json"),
                                      "--strategy", "mixing_law", *args])
    assert isinstance(result.exception, RunsTableError)
    assert needle in str(result.exception) and "\n" not in str(result.exception)


def test_mixmin_minimises_the_worst_domain_of_the_expert_ensemble():
    rng = np.random.default_rng(0)
    # Per-token probabilities of 3 experts on 3 domains: each expert is best on its own domain.
    logp = {d: np.log(np.clip(rng.uniform(0.05, 0.2, size=(3, 400)) + 0.5 * np.eye(3)[:, [i]], 1e-6, 1))
            for i, d in enumerate(D3)}
    logp["a"] = logp["a"] - 1.0  # domain a is hardest: the worst objective must favour its expert
    results = {}
    for kind in ("mean", "worst"):
        s = build_strategy("mixmin", {}, D3, objective(kind), seed=0)
        for i, d in enumerate(D3):
            s.add_expert(Mixture.from_array(D3, np.eye(3)[i]), {e: logp[e][i] for e in D3})
        results[kind] = s.recommend()
    w_mean, w_worst = (results[k].mixture.as_array() for k in ("mean", "worst"))
    assert w_worst[0] > w_mean[0] + 0.05
    assert max(results["worst"].predicted.values()) < max(results["mean"].predicted.values())


def test_gp_worst_excess_trades_the_mean_for_the_starved_domain():
    obj = objective("worst", excess=True)
    s = build_strategy("gp", {"fit_maxiter": 20, "candidates": 256, "local_candidates": 64, "initial_trials": 4}, D3, obj, seed=0)
    for _ in range(2):
        for p in s.ask(4, []):
            s.tell(Outcome(p.mixture, loss_dict(p.mixture.as_array())))
    obj = s.objective
    assert obj.reference_known
    w, mean_opt = s.recommend().mixture.as_array(), _mean_optimum()
    assert w[0] > mean_opt[0] + 0.15  # domain a gets data back
    assert obj(loss_dict(w)) < obj(loss_dict(mean_opt)) - 0.02  # and no domain is much worse than under uniform
