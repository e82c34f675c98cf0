"""A constrained sweep on a real local Ray with the synthetic trainer: the mean-optimal mixture starves a
domain, and the recommendation must keep every domain within `max_excess` of its uniform-mixture loss."""

from __future__ import annotations

import json

import numpy as np

from orchestrator.controller import Controller
from orchestrator.export import export
from orchestrator.journal import replay
from orchestrator.spec import parse_spec
from workers.backends import synthetic_losses

# Domain a's optimum share is just below uniform: at the mean-optimal mixture its loss is 0.0078 nats
# above its loss under the uniform mixture (the synthetic law's own-data term outweighs the quadratic).
OPTIMUM = {"a": 0.47, "b": 0.53}
LIMIT = 0.002


UNIFORM = {"a": 0.5, "b": 0.5}  # the reference run's mixture


def excess(mixture: dict[str, float]) -> float:
    """Largest noise-free loss increase over the uniform mixture, nats."""
    uniform, here = synthetic_losses(UNIFORM, OPTIMUM), synthetic_losses(mixture, OPTIMUM)
    return max(here[d] - uniform[d] for d in OPTIMUM)


def mean_loss(mixture: dict[str, float]) -> float:
    """The objective, noise-free: the mean of the two domains' losses, nats."""
    return float(np.mean(list(synthetic_losses(mixture, OPTIMUM).values())))


def constrained_optimum() -> float:
    """The lowest mean loss of any mixture within the limit (a grid of mixtures 1e-4 apart)."""
    feasible = [mean_loss({"a": a, "b": 1 - a}) for a in np.linspace(0, 1, 10_001) if excess({"a": a, "b": 1 - a}) <= LIMIT]
    return min(feasible)


def test_constrained_sweep_recommends_a_mixture_within_the_limit(ray_session, tmp_path):
    assert excess(OPTIMUM) > LIMIT + 0.005  # unconstrained, the mean's optimum breaks the constraint
    spec = parse_spec({
        "name": "constrained", "domains": {"a": {}, "b": {}},
        "trainer": {"kind": "synthetic", "optimum": OPTIMUM, "noise": 0.0, "duration_s": 0.1, "progress_events": 1},
        "objective": {"kind": "mean", "constraints": {"max_excess": LIMIT}},
        "strategy": {"kind": "gp", "options": {"initial_trials": 4}}, "budget": {"trials": 8, "concurrency": 4},
    })
    rec = Controller(spec, tmp_path / "sweep", log=lambda m: None).run()
    state = replay(tmp_path / "sweep" / "journal.jsonl")
    mixtures = [t.mixture for t in state.completed]
    assert any(abs(m["a"] - 0.5) < 1e-9 for m in mixtures)  # the reference run at the uniform mixture
    assert len(mixtures) == 8
    chosen = rec.mixture.as_dict()
    if rec.source == "observed":
        assert any(m == chosen for m in mixtures) and excess(chosen) <= LIMIT + 1e-9
    else:
        assert excess(chosen) <= LIMIT + 1e-3  # the model's mixture, checked on the true law
    assert abs(chosen["a"] - OPTIMUM["a"]) > 0.01  # not the unconstrained optimum
    gap = mean_loss(UNIFORM) - constrained_optimum()
    assert gap > 0.005
    fallback = "predicted to violate the constraints" in " ".join(rec.notes)
    if fallback:
        # The GP's noise prior (surrogates.gp.NOISE_PRIOR_LOC, set for real runs' seed noise) keeps its std
        # at the model's mixture above the 0.002-nat limit from 8 noiseless runs in about half the sweeps:
        # then the best observed run that satisfies the constraint, by its observed losses, not a guess.
        feasible = [m for m in mixtures if excess(m) <= LIMIT + 1e-9]
        assert rec.source == "observed" and chosen == min(feasible, key=mean_loss), (chosen, rec.notes)
    else:
        # ... the model's mixture, and not the reference run (feasible, at excess 0): it must win most of
        # what the constraint leaves to win over it (0.0053 nats, from 2.0572 at uniform to 2.0519 at a=0.485).
        assert mean_loss(UNIFORM) - mean_loss(chosen) >= 0.75 * gap, (chosen, mean_loss(chosen))
    assert state.recommendation["mixture"] == chosen
    exported = json.loads(export(tmp_path / "sweep", "json").read_text())
    assert np.allclose([exported["mixture"][d] for d in OPTIMUM], [chosen[d] for d in OPTIMUM], rtol=0, atol=0)
