"""Issue 12, item 5: no budget wasted on repeats.

A proposal of a mixture already run (within `budget.weight_precision`), or in flight, is told the known
result without spending budget and the strategy is asked again; a replicate asked for on purpose is
trained again with another seed; `status` counts both; a resumed sweep re-tells repeats as they were.
Real Ray and the synthetic trainer; the strategies below are defined here and registered per test.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from conftest import run_cli
from orchestrator.controller import Controller
from orchestrator.journal import read_events, replay
from orchestrator.mixture import Mixture
from orchestrator.resume import retell
from orchestrator.spec import parse_spec
from orchestrator.state import SweepState
from orchestrator.strategies import STRATEGIES, Strategy
from orchestrator.strategies.configs import CONFIGS, StrategyConfig
from orchestrator.strategies.contract import Proposal
from orchestrator.trial import TrialStatus

DOMAINS = ("a", "b", "c")
NEW = [(0.5, 0.3, 0.2), (0.2, 0.5, 0.3), (0.3, 0.2, 0.5), (0.4, 0.4, 0.2), (0.1, 0.1, 0.8)]
NEAR = 5e-4  # inside the default weight_precision (1e-3)


def _mixture(w) -> Mixture:
    return Mixture(DOMAINS, tuple(w))


class Repeater(Strategy):
    """After each new mixture is told, re-proposes it exactly, then shifted by 5e-4, then moves on.
    Its next proposal depends only on how many outcomes it was told (so resume can rebuild it)."""

    kind = "test_repeater"

    def next_proposals(self, n, pending):
        told = len(self.observations) + len(self.failures)
        i, phase = divmod(told, 3)
        w = list(NEW[i % len(NEW)])
        if phase == 2:
            w[0], w[1] = w[0] + NEAR, w[1] - NEAR
        return [Proposal(_mixture(w))] if n >= 1 else []


class Parrot(Strategy):
    """Proposes the same mixture on every ask, forever; counts its asks."""

    kind = "test_parrot"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asks = 0

    def next_proposals(self, n, pending):
        self.asks += 1
        return [Proposal(_mixture(NEW[0]))] if n >= 1 else []


class Replicator(Strategy):
    """Runs X, then a replicate of X on purpose, then repeats both (not on purpose), then Y."""

    kind = "test_replicator"
    PLAN = [(NEW[0], 0), (NEW[0], 1), (NEW[0], 0), (NEW[0], 1), (NEW[1], 0)]

    def next_proposals(self, n, pending):
        w, replicate = self.PLAN[min(len(self.observations), len(self.PLAN) - 1)]
        return [Proposal(_mixture(w), {"replicate": replicate} if replicate else {})] if n >= 1 else []


@pytest.fixture
def test_strategies():
    added = {cls.kind: cls for cls in (Repeater, Parrot, Replicator)}
    STRATEGIES.update(added)
    CONFIGS.update({kind: StrategyConfig for kind in added})  # the spec validates a kind's options by CONFIGS
    yield
    for kind in added:
        STRATEGIES.pop(kind, None)
        CONFIGS.pop(kind, None)


def _spec(kind: str, trials: int, concurrency: int = 1, noise: float = 0.0, duration_s: float = 0.2):
    return parse_spec({
        "name": kind, "domains": {d: {} for d in DOMAINS},
        "trainer": {"kind": "synthetic", "duration_s": duration_s, "progress_events": 2, "noise": noise},
        "strategy": {"kind": kind}, "budget": {"trials": trials, "concurrency": concurrency}, "seed": 0,
    })


def _status_json(sweep_dir: Path) -> dict:
    out = run_cli(["status", str(sweep_dir), "--json"])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _reuses(sweep_dir: Path) -> list[dict]:
    return [e for e in read_events(sweep_dir / "journal.jsonl") if e["event"] == "trial_reused"]


def _observed(strategy: Strategy) -> list[tuple[dict, dict]]:
    return [(o.mixture.as_dict(), o.losses) for o in strategy.observations]


def test_a_repeated_mixture_is_told_its_result_and_spends_no_budget(ray_session, test_strategies, tmp_path):
    controller = Controller(_spec("test_repeater", trials=4), tmp_path / "sweep", log=lambda m: None)
    controller.run()
    state = replay(tmp_path / "sweep" / "journal.jsonl")
    # The full budget went to distinct mixtures, in the order proposed: the repeats trained nothing.
    trained = [tuple(t.mixture[d] for d in DOMAINS) for t in state.in_order()]
    assert trained == NEW[:4] and all(t.status == TrialStatus.COMPLETED for t in state.trials.values())
    # Each of the first three was re-proposed twice (exactly, then 5e-4 away) and told its own result.
    reuses = _reuses(tmp_path / "sweep")
    assert [r["matched"] for r in reuses] == ["completed"] * 6
    assert [r["distance"] for r in reuses] == pytest.approx([0.0, NEAR] * 3)
    by_id = {t.id: t for t in state.trials.values()}
    observed = _observed(controller.strategy)
    assert len(observed) == 4 + 6
    for r, (mixture, losses) in zip(reuses, [o for i, o in enumerate(observed) if i % 3]):
        assert mixture == r["mixture"] and losses == by_id[r["trial"]].losses
    status = _status_json(tmp_path / "sweep")
    assert (status["proposed"], status["reused"], status["reused_budget"], status["replicates"]) == (4, 6, 0, 0)


def test_a_strategy_that_only_repeats_itself_ends(ray_session, test_strategies, tmp_path):
    controller = Controller(_spec("test_parrot", trials=5, concurrency=2, duration_s=0.5), tmp_path / "sweep",
                            log=lambda m: None)
    t0 = time.time()
    controller.run()
    assert time.time() - t0 < 20
    state = replay(tmp_path / "sweep" / "journal.jsonl")
    assert state.finished and len(state.trials) == 1
    # Repeats of the trial in flight start no second copy and are told nothing; once it ends they are
    # told its result. Three asks per ended trial at most, never one per loop iteration.
    matched = [r["matched"] for r in _reuses(tmp_path / "sweep")]
    assert matched.count("completed") == 3 and set(matched) <= {"running", "proposed", "completed"}
    assert controller.strategy.asks == 1 + len(matched)
    assert controller.strategy.asks <= 1 + 3 * 2
    losses = next(iter(state.trials.values())).losses
    assert [o.losses for o in controller.strategy.observations] == [losses] * 4


def test_a_replicate_on_purpose_is_trained_again_with_another_seed(ray_session, test_strategies, tmp_path):
    controller = Controller(_spec("test_replicator", trials=3, noise=0.05), tmp_path / "sweep", log=lambda m: None)
    controller.run()
    state = replay(tmp_path / "sweep" / "journal.jsonl")
    first, replicate, other = state.in_order()
    assert first.mixture == replicate.mixture and replicate.options == {"replicate": 1} and first.id != replicate.id
    assert other.mixture == _mixture(NEW[1]).as_dict()
    # Another seed: the synthetic trainer's noise is a function of (mixture, seed) alone.
    assert replicate.losses != first.losses
    # The later, unintended repeats of each were told that run's own result, not the other's.
    observed = [o.losses for o in controller.strategy.observations]
    assert observed[:4] == [first.losses, replicate.losses, first.losses, replicate.losses]
    status = _status_json(tmp_path / "sweep")
    assert (status["proposed"], status["completed"], status["replicates"], status["reused"]) == (3, 3, 1, 2)


def test_a_resumed_sweep_retells_repeats_and_reproduces_the_counts(ray_session, test_strategies, tmp_path):
    spec = _spec("test_repeater", trials=4)
    whole = Controller(spec, tmp_path / "whole", log=lambda m: None)
    whole.run()
    # A copy stopped right after its third repeat (the exact repeat of the second mixture).
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)
    lines = (cut / "journal.jsonl").read_text().splitlines(keepends=True)
    third = [i for i, line in enumerate(lines) if json.loads(line)["event"] == "trial_reused"][2]
    (cut / "journal.jsonl").write_text("".join(lines[:third + 1]))
    kept = replay(cut / "journal.jsonl")
    assert (len(kept.trials), kept.reused) == (2, 3)
    for d in (cut / "trials").iterdir():
        if d.name not in kept.trials:
            shutil.rmtree(d)

    resumed = Controller(spec, cut, log=lambda m: None)
    resumed.resume()
    a, b = replay(tmp_path / "whole" / "journal.jsonl"), replay(cut / "journal.jsonl")
    assert [t.mixture for t in b.in_order()] == [t.mixture for t in a.in_order()]
    assert (b.reused, b.reused_budget, len(b.trials)) == (a.reused, a.reused_budget, len(a.trials)) == (6, 0, 4)
    assert _observed(resumed.strategy) == _observed(whole.strategy)


def test_repeats_replay_without_spending_budget_and_older_journals_keep_theirs(test_strategies, tmp_path):
    events = [
        {"event": "sweep_started", "seq": 0, "budget": 3, "domains": list(DOMAINS)},
        {"event": "trial_proposed", "seq": 1, "trial": "t1", "mixture": _mixture(NEW[0]).as_dict()},
        {"event": "trial_started", "seq": 2, "trial": "t1"},
        {"event": "trial_completed", "seq": 3, "trial": "t1", "losses": {"a": 1.0, "b": 2.0, "c": 3.0}},
        # written by this version: the proposal, what it matched; no budget
        {"event": "trial_reused", "seq": 4, "trial": "t1", "mixture": {"a": 0.5005, "b": 0.2995, "c": 0.2},
         "matched": "completed", "distance": 0.0005},
        {"event": "trial_reused", "seq": 5, "trial": "t1", "mixture": _mixture(NEW[0]).as_dict(), "matched": "running"},
        # written before weight_precision existed: one unit of budget, told the trial's own mixture
        {"event": "trial_reused", "seq": 6, "trial": "t1"},
    ]
    state = SweepState()
    for e in events:
        state.apply(e)
    assert (state.reused, state.reused_budget) == (3, 1)
    assert state.summary()["reused_budget"] == 1
    fresh = Controller(_spec("test_repeater", 3), tmp_path / "unused", log=lambda m: None).strategy
    retell(fresh, events, state)
    told = [o.mixture.as_dict() for o in fresh.observations]
    assert told == [_mixture(NEW[0]).as_dict(), {"a": 0.5005, "b": 0.2995, "c": 0.2}, _mixture(NEW[0]).as_dict()]


def test_weight_precision_decides_what_is_a_repeat(test_strategies, tmp_path):
    c = Controller(_spec("test_repeater", 3), tmp_path / "unused", log=lambda m: None)
    for e in ({"event": "trial_proposed", "seq": 1, "trial": "t1", "mixture": _mixture(NEW[0]).as_dict(), "options": {}},
              {"event": "trial_proposed", "seq": 2, "trial": "t2", "mixture": _mixture(NEW[0]).as_dict(),
               "options": {"replicate": 1}}):
        c.state.apply(e)

    def repeats(w, options=None):
        known = c._already_run("t-new", _mixture(w), options or {})
        return known.id if known else None

    assert repeats((0.5009, 0.2991, 0.2)) == "t1"  # within 1e-3
    assert repeats((0.502, 0.298, 0.2)) is None  # 2e-3 away: a new trial
    assert repeats((0.5009, 0.2991, 0.2), {"replicate": 1}) == "t2"  # a replicate repeats only its replicate
    assert repeats(NEW[0], {"replicate": 2}) is None
