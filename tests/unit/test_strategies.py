import numpy as np
import pytest

from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.spec import ObjectiveSpec
from orchestrator.strategies import STRATEGIES, build_strategy
from orchestrator.strategies.configs import CONFIGS
from orchestrator.strategies.contract import Failure, Outcome, Proposal
from workers.backends import default_optimum, synthetic_losses

DOMAINS = ("a", "b", "c", "d")
MEAN = Objective.from_spec(ObjectiveSpec(), DOMAINS)
OPT = default_optimum(list(DOMAINS))


def _losses(m: Mixture) -> dict:
    return synthetic_losses(m.as_dict(), OPT)


def _mixtures(proposals: list[Proposal]) -> list[Mixture]:
    assert all(not p.options for p in proposals)  # these strategies ask their trials for nothing special
    return [p.mixture for p in proposals]


def test_objectives_combine_per_domain_losses():
    losses = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 6.0}
    assert MEAN(losses) == 3.0
    assert Objective.from_spec(ObjectiveSpec(kind="target", domain="c"), DOMAINS)(losses) == 3.0
    w = Objective.from_spec(ObjectiveSpec(kind="weighted", weights={"a": 3, "d": 1}), DOMAINS)
    assert w(losses) == pytest.approx(0.75 * 1 + 0.25 * 6)


def test_synthetic_optimum_is_where_it_says():
    best = MEAN(_losses(Mixture.from_dict(OPT, DOMAINS)))
    rng = np.random.default_rng(0)
    for w in rng.dirichlet(np.ones(4), size=200):
        assert MEAN(_losses(Mixture.from_array(DOMAINS, w))) >= best - 1e-9


def test_sobol_is_deterministic_and_independent_of_batching():
    s1 = build_strategy("sobol", {}, DOMAINS, MEAN, seed=3)
    s2 = build_strategy("sobol", {}, DOMAINS, MEAN, seed=3)
    one_batch = _mixtures(s1.ask(6, []))
    in_pieces = _mixtures(s2.ask(2, []) + s2.ask(4, []))
    assert [m.weights for m in one_batch] == [m.weights for m in in_pieces]
    assert len({m.weights for m in one_batch}) == 6
    assert s1.asked == s2.asked == 6
    floor = _mixtures(build_strategy("sobol", {"min_weight": 0.05}, DOMAINS, MEAN, seed=3).ask(8, []))
    assert min(min(m.weights) for m in floor) >= 0.05 - 1e-6


def test_uniform_proposes_once():
    s = build_strategy("uniform", {}, DOMAINS, MEAN, seed=0)
    assert s.ask(3, []) == [Proposal(Mixture.uniform(DOMAINS))]
    assert s.ask(3, []) == []


def test_recommend_before_any_result_is_an_error():
    with pytest.raises(ValueError, match="no completed trial"):
        build_strategy("sobol", {}, DOMAINS, MEAN, seed=0).recommend()


@pytest.mark.slow
def test_bayesopt_beats_its_own_sobol_start_and_predicts_what_it_recommends():
    s = build_strategy("bayesopt", {"initial_trials": 5}, DOMAINS, MEAN, seed=0)
    pending = _mixtures(s.ask(2, []))
    assert len(pending) == 2 and pending[0] != pending[1]
    told = []
    while len(told) < 14:
        m = pending.pop(0)
        s.tell(Outcome(m, _losses(m)))
        told.append(MEAN(_losses(m)))
        pending += _mixtures(s.ask(1, pending))
        assert all(x not in told for x in pending[-1:])
    assert min(told[5:]) < min(told[:5])  # the GP found better than the Sobol points
    rec = s.recommend()
    # The model's optimum or an observed run, whichever the GP predicts best (the in-sample rule).
    assert rec.source in ("model", "in-sample") and set(rec.predicted) == set(DOMAINS)
    assert (rec.mixture in [o.mixture for o in s.observations]) is (rec.source == "in-sample")
    runs = np.array([o.mixture.as_array() for o in s.observations])
    mean, _, loss_domains = s.predict_losses(runs)
    assert rec.objective <= MEAN.values(mean, loss_domains).min() + 1e-9
    truth = MEAN(_losses(rec.mixture))
    assert abs(rec.objective - truth) < 0.1
    assert truth < MEAN(_losses(Mixture.uniform(DOMAINS)))


def test_bayesopt_accepts_results_it_did_not_propose_and_rebuilds_from_state():
    s = build_strategy("bayesopt", {"initial_trials": 3}, DOMAINS, MEAN, seed=1)
    rng = np.random.default_rng(1)
    for w in rng.dirichlet(np.ones(4), size=4):
        m = Mixture.from_array(DOMAINS, w)
        s.tell(Outcome(m, _losses(m)))
    failed = Mixture.from_array(DOMAINS, rng.dirichlet(np.ones(4)))
    s.tell_failed(failed, "diverged", retryable=False)
    state = s.state_dict()
    rebuilt = build_strategy("bayesopt", {"initial_trials": 3}, DOMAINS, MEAN, seed=1)
    rebuilt.load_state_dict(state)
    assert len(rebuilt.observations) == 4 and rebuilt.failures == [Failure(failed, "diverged", False)]
    assert rebuilt.recommend().mixture == s.recommend().mixture


def test_registry_lists_the_strategies_of_this_release():
    release = {"gp", "mfgp", "bayesopt", "regmix", "mixing_law", "bimix", "mde", "mixmin", "doremi",
               "sobol", "uniform", "fixed", "token_prior"}
    assert set(STRATEGIES) == release  # a strategy deleted (or added without docs and tests) fails here
    assert {k: cls.Config for k, cls in STRATEGIES.items()} == CONFIGS  # the spec validates exactly these options
    assert all(STRATEGIES[k].kind == k for k in release)


def test_bayesopt_with_a_target_objective_tracks_the_other_domains():
    target = Objective.from_spec(ObjectiveSpec(kind="target", domain="b"), DOMAINS)
    s = build_strategy("bayesopt", {"initial_trials": 2}, DOMAINS, target, seed=0)
    for m in _mixtures(s.ask(2, [])):
        s.tell(Outcome(m, _losses(m)))
    experiment = s._client._experiment
    assert experiment.optimization_config.objective.metric_names == ["loss_b"]  # minimised: b alone
    assert {m.name for m in experiment.tracking_metrics} == {"loss_a", "loss_c", "loss_d"}  # tracked, not optimised
    data = experiment.lookup_data().df
    assert set(data.metric_name) == {"loss_a", "loss_b", "loss_c", "loss_d"}  # every domain's loss reached Ax
    assert len(s.ask(1, [])) == 1
    mean, _, loss_domains = s.predict_losses(np.full((1, 4), 0.25))
    assert set(loss_domains) == set(DOMAINS) and np.isfinite(mean).all()  # a GP per tracked domain too


def test_resume_retells_outcomes_with_artifacts_and_failures_with_their_cause():
    """resume.retell hands the strategy what the controller did: an Outcome with the journaled stderr and
    artifacts, a failure with `retryable` as journaled, and `asked` = proposals in the journal."""
    from orchestrator.resume import retell
    from orchestrator.state import SweepState

    a, b = Mixture.uniform(DOMAINS), Mixture.from_dict({"a": 0.4, "b": 0.3, "c": 0.2, "d": 0.1}, DOMAINS)
    events = [{"event": "sweep_started", "domains": list(DOMAINS)},
              {"event": "trial_proposed", "trial": "t1", "mixture": a.as_dict()},
              {"event": "trial_proposed", "trial": "t2", "mixture": b.as_dict()},
              {"event": "trial_completed", "trial": "t1", "losses": _losses(a), "loss_stderr": {"a": 0.01},
               "artifacts": {"final_weights": "/w.pt", "unrelated": 1}},
              {"event": "trial_failed", "trial": "t2", "reason": "hung: no result after 600 s", "retryable": True}]
    state = SweepState(MEAN)
    for seq, e in enumerate(events):
        state.apply({**e, "seq": seq})
    s = build_strategy("sobol", {}, DOMAINS, MEAN, seed=0)
    retell(s, events, state)
    (outcome,) = s.observations
    assert outcome.mixture == a and outcome.loss_stderr == {"a": 0.01} and outcome.artifacts.final_weights == "/w.pt"
    assert s.failures == [Failure(b, "hung: no result after 600 s", True)] and s.asked == 2
    assert state.trials["t2"].to_json()["retryable"] is True
