"""The surrogate strategies (gp, regmix, mixing_law, bimix) and the reference mixtures (fixed, token_prior):
valid proposals inside the bounds, better than uniform on a problem with a known optimum, and a JSON
state from which a restored strategy proposes exactly what the original would."""

import json

import numpy as np
import pytest
from scipy.optimize import minimize

from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.optimize import Bounds
from orchestrator.spec import SpecError, parse_spec
from orchestrator.strategies import STRATEGIES, build_strategy
from orchestrator.strategies.contract import Outcome, Proposal
from orchestrator.strategies.model_based import ModelStrategy

DOMAINS = ("a", "b", "c", "d")
MEAN = Objective({d: 0.25 for d in DOMAINS}, "mean")
ALPHA, B = np.array([0.3, 0.5, 0.2, 0.4]), np.array([0.3, 0.5, 0.2, 0.6])

# Small settings keep each sweep to a second or two; the defaults are exercised by the benchmarks.
FAST = {
    "gp": {"candidates": 256, "local_candidates": 64, "fit_maxiter": 30},
    "mixing_law": {"starts": 4},
    "bimix": {},
    "regmix": {"prior": "uniform", "n_estimators": 200, "simulations": 2000, "top_k": 32},
}


def law_losses(w: np.ndarray) -> np.ndarray:
    """Per-domain power laws in each domain's own weight: diminishing returns, a unique optimum."""
    return 2.0 + B * (np.asarray(w) + 0.02) ** (-ALPHA)


def true_objective(m: Mixture) -> float:
    return float(law_losses(m.as_array()).mean())


def optimum_value() -> float:
    res = minimize(lambda w: law_losses(w).mean(), np.full(4, 0.25), method="SLSQP", bounds=[(0, 1)] * 4,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}], options={"ftol": 1e-12})
    return float(res.fun)


def sweep(kind: str, budget: int, seed: int = 0, concurrency: int = 2, options: dict | None = None):
    """Run an in-process sweep with noisy observations; returns the strategy and every proposal."""
    s = build_strategy(kind, {**FAST[kind], **(options or {})}, DOMAINS, MEAN, seed)
    rng, pending, proposed, told = np.random.default_rng(seed), [], [], 0
    while told < budget:
        new = [p.mixture for p in s.ask(concurrency - len(pending), pending)]
        proposed += new
        pending += new
        m = pending.pop(0)
        s.tell(Outcome(m, dict(zip(DOMAINS, map(float, law_losses(m.as_array()) + rng.normal(0, 0.005, 4))))))
        told += 1
    return s, proposed


# RegMix regresses with trees, which need more runs (its paper uses 512): 28 rather than 16.
@pytest.mark.parametrize("kind,budget", [("gp", 16), ("mixing_law", 16), ("bimix", 16), ("regmix", 28)])
def test_strategy_beats_uniform_after_a_small_budget(kind, budget):
    s, proposed = sweep(kind, budget=budget)
    uniform = true_objective(Mixture.uniform(DOMAINS))
    model_phase = proposed[s.initial_trials:]
    assert model_phase, "the strategy never left its initial design"
    assert min(true_objective(m) for m in model_phase) < uniform - 0.002
    rec = s.recommend()
    assert rec.source in ("model", "in-sample") and set(rec.predicted) == set(DOMAINS)
    truth = true_objective(rec.mixture)
    assert truth < uniform
    assert truth - optimum_value() < 0.5 * (uniform - optimum_value())
    assert abs(rec.objective - truth) < 0.1  # the prediction is about the mixture it recommends


@pytest.mark.parametrize("kind", ["gp", "mixing_law", "bimix", "regmix"])
def test_proposals_stay_on_the_simplex_inside_the_bounds(kind):
    options = {"min_weight": 0.05, "bounds": {"a": [0.1, 0.3], "d": [0.0, 0.2]}}
    s, proposed = sweep(kind, budget=12, options=options)
    bounds = Bounds.of(DOMAINS, 0.05, {"a": (0.1, 0.3), "d": (0.0, 0.2)})
    W = np.array([m.as_array() for m in proposed + [s.recommend().mixture]])
    assert bounds.contains(W, tol=2e-6).all()  # mixtures are stored rounded to 6 decimals


@pytest.mark.parametrize("kind", ["gp", "mixing_law", "bimix", "regmix"])
def test_restored_strategy_proposes_exactly_what_the_original_would(kind):
    s, proposed = sweep(kind, budget=11, concurrency=3)
    pending = proposed[-2:]
    state = json.loads(json.dumps(s.state_dict()))
    restored = build_strategy(kind, FAST[kind], DOMAINS, MEAN, seed=0)
    restored.load_state_dict(state)
    assert restored.asked == s.asked == len(proposed)  # `asked` is part of the state
    assert restored.ask(2, pending) == s.ask(2, pending)


def test_gp_batch_differs_from_pending_and_itself():
    s, proposed = sweep("gp", budget=8, concurrency=1)
    pending = [proposed[-1]]
    batch = [p.mixture for p in s.ask(3, pending)]
    keys = [m.key() for m in batch + pending]
    assert len(batch) == 3 and len(set(keys)) == 4


def test_model_strategies_wait_rather_than_guess_before_enough_runs():
    s = build_strategy("mixing_law", FAST["mixing_law"], DOMAINS, MEAN, seed=0)
    first = [p.mixture for p in s.ask(10, [])]
    assert len(first) == s.initial_trials == 6  # k + 2 runs to fit k + 1 parameters per domain
    assert s.ask(2, first) == []  # nothing back yet: wait instead of proposing blind


def test_fixed_proposes_its_mixture_once_and_checks_domains():
    s = build_strategy("fixed", {"weights": {"a": 1, "b": 1, "c": 2, "d": 0}}, DOMAINS, MEAN, seed=0)
    assert s.ask(2, []) == [Proposal(Mixture.from_dict({"a": 0.25, "b": 0.25, "c": 0.5, "d": 0.0}, DOMAINS))]
    assert s.ask(2, []) == []
    with pytest.raises(ValueError, match=r"no weight for \['d'\]"):
        build_strategy("fixed", {"weights": {"a": 1, "b": 1, "c": 2}}, DOMAINS, MEAN, seed=0)


def test_token_prior_follows_the_tokens_and_says_when_there_are_none():
    s = build_strategy("token_prior", {}, DOMAINS, MEAN, seed=0)
    with pytest.raises(ValueError, match="use strategy `fixed`"):
        s.ask(1, [])
    s.domain_tokens = {"a": 100, "b": 300, "c": 600, "d": 0}
    assert s.ask(1, []) == [Proposal(Mixture.from_dict({"a": 0.1, "b": 0.3, "c": 0.6, "d": 0.0}, DOMAINS))]


def test_regmix_swarm_centres_on_the_tempered_token_prior():
    s = build_strategy("regmix", FAST["regmix"] | {"prior": "tokens"}, DOMAINS, MEAN, seed=0)
    with pytest.raises(ValueError, match="prior: uniform"):
        s.ask(1, [])
    s.domain_tokens = {"a": 1, "b": 1, "c": 1, "d": 97}
    prior = s.prior()
    np.testing.assert_allclose(prior, np.sqrt([0.01, 0.01, 0.01, 0.97]) / np.sqrt([0.01, 0.01, 0.01, 0.97]).sum())
    swarm = s.swarm(2000, np.random.default_rng(0))
    assert np.all(swarm <= 15 * prior + 1e-9)  # RegMix's rejection rule
    assert swarm[:, 3].mean() > 0.5  # centred on the big domain


def test_spec_accepts_new_strategies_and_checks_their_options():
    base = {"domains": {"a": {"demo": "books"}, "b": {"demo": "code"}}}
    assert parse_spec({**base, "strategy": {"kind": "gp", "options": {"min_weight": 0.1}}}).strategy.kind == "gp"
    with pytest.raises(SpecError, match="strategy.options.bounds.a"):
        parse_spec({**base, "strategy": {"kind": "gp", "options": {"bounds": {"a": [0.5, 0.2]}}}})
    assert {"gp", "regmix", "mixing_law", "bimix", "fixed", "token_prior"} <= set(STRATEGIES)
    assert all(issubclass(STRATEGIES[k], ModelStrategy) for k in ("gp", "regmix", "mixing_law", "bimix"))


def test_a_target_objective_starts_its_design_towards_its_own_domain():
    """Single-domain targets are minimised near their domain's face, where Sobol points in k dimensions
    almost never go: the design visits that direction right after the reference run."""
    from orchestrator.objective import Objective
    from orchestrator.strategies import build_strategy

    domains = ("a", "b", "c", "d", "e")
    target = build_strategy("gp", {}, domains, Objective({"c": 1.0}, "loss on c"), seed=0)
    pts = target.initial_design_points(4)
    assert np.allclose(pts[0], 0.2)  # the reference (uniform) run first
    assert pts[1][2] == pytest.approx(0.5 + 0.5 * 0.2) and pts[2][2] == pytest.approx(0.85 + 0.15 * 0.2)
    assert np.all(pts[3][2] < 0.85)  # then the space-filling design
    mean = build_strategy("gp", {}, domains, Objective({d: 0.2 for d in domains}, "mean"), seed=0)
    from orchestrator.optimize import sobol_simplex

    # No tilt for the mean, which reads every domain alike: the reference, then the Sobol design.
    assert np.allclose(mean.initial_design_points(4)[1:], sobol_simplex(3, 5, seed=0), atol=1e-9)


def test_the_cli_and_validating_a_spec_import_no_torch_botorch_or_ax():
    """Strategy options are checked by pydantic models alone (orchestrator/strategies/configs.py), so
    `mixsweep validate` and every spec load stay light; the strategies load only when a sweep runs."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = ("import sys\n"
            "import orchestrator.cli\n"  # every command starts by importing the CLI: `status` and `validate` stay light
            "from orchestrator.spec import load_spec, parse_spec\n"
            f"load_spec({str(root / 'examples' / 'quickstart.yaml')!r})\n"
            "for kind, options in [('gp', {'min_weight': 0.1}), ('bayesopt', {}), ('regmix', {'prior': 'uniform'}), ('mde', {}),\n"
            "                      ('doremi', {'eta': 0.5}), ('fixed', {'weights': {'a': 1, 'b': 1}})]:\n"
            "    parse_spec({'domains': {'a': {'demo': 'books'}, 'b': {'demo': 'code'}}, 'strategy': {'kind': kind, 'options': options}})\n"
            "print(sorted(m for m in ('torch', 'botorch', 'ax', 'gpytorch', 'lightgbm') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
