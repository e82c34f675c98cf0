"""Issue 13, item 4: `budget.replicates`: every mixture trained `seeds` times, each run spending budget.

Real Ray, the synthetic trainer with noise (a replicate's seed changes its noise), the default `gp`
strategy (its GP takes over after the initial design and is fitted with the replicates' pooled noise);
`status` counts the replicates, and a sweep stopped mid-way and resumed trains nothing twice and ends
as the uninterrupted one did.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from conftest import run_cli
from orchestrator.controller import Controller
from orchestrator.journal import read_events, replay
from orchestrator.spec import parse_spec

DOMAINS = ("a", "b", "c")


def _spec(trials: int, seeds: int = 2, top_k: int | None = None):
    return parse_spec({
        "name": "replicates", "domains": {d: {} for d in DOMAINS},
        "trainer": {"kind": "synthetic", "duration_s": 0.1, "progress_events": 2, "noise": 0.02},
        "strategy": {"kind": "gp", "options": {"initial_trials": 3}},
        "budget": {"trials": trials, "concurrency": 1, "replicates": {"seeds": seeds, "top_k": top_k}}, "seed": 0,
    })


def _runs(sweep: Path) -> list[tuple[tuple, int]]:
    """(mixture, replicate) of every trial, in the order proposed."""
    return [(tuple(t.mixture[d] for d in DOMAINS), t.replicate) for t in replay(sweep / "journal.jsonl").in_order()]


def test_every_mixture_runs_twice_spends_budget_and_resumes_without_retraining(ray_session, tmp_path):
    whole = Controller(_spec(trials=9), tmp_path / "whole", log=lambda m: None)
    whole.run()
    runs = _runs(tmp_path / "whole")
    # 9 trials, 2 runs per mixture: 4 mixtures twice each (the ninth would leave a mixture with one run).
    assert len(runs) == 8 and Counter(m for m, _ in runs) == {m: 2 for m, r in runs if r == 0}
    assert [r for _, r in runs] == [0, 1] * 4  # a mixture's replicate runs right after it
    state = replay(tmp_path / "whole" / "journal.jsonl")
    first, second = state.in_order()[:2]
    assert first.losses != second.losses  # another seed: another sample of the noise
    # The fourth mixture came from the GP, fitted with the noise the replicates measured (not inferred).
    assert whole.strategy.training_noise() is not None and len(whole.strategy.training_data()[0]) == 4
    status = json.loads(run_cli(["status", str(tmp_path / "whole"), "--json"]).stdout)
    assert (status["proposed"], status["completed"], status["replicates"], status["reused"]) == (8, 8, 4, 0)

    # Stopped after the fifth trial completed: its replicate owed, the strategy's count mid-pair.
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole", cut)
    lines = (cut / "journal.jsonl").read_text().splitlines(keepends=True)
    fifth = [i for i, line in enumerate(lines) if json.loads(line)["event"] == "trial_completed"][4]
    (cut / "journal.jsonl").write_text("".join(lines[:fifth + 1]))
    kept = replay(cut / "journal.jsonl")
    for d in (cut / "trials").iterdir():
        if d.name not in kept.trials:
            shutil.rmtree(d)
    Controller(_spec(trials=9), cut, log=lambda m: None).resume()
    events = list(read_events(cut / "journal.jsonl"))
    resumed_at = next(i for i, e in enumerate(events) if e["event"] == "sweep_resumed")
    started = Counter(e["trial"] for e in events[resumed_at:] if e["event"] == "trial_started")
    assert started and not set(started) & {t for t, r in kept.trials.items() if r.status.is_final}
    assert _runs(cut) == runs  # the same mixtures and replicates, in the same order


def test_top_k_replicates_the_best_mixtures_from_the_held_budget(ray_session, tmp_path):
    Controller(_spec(trials=6, seeds=2, top_k=2), tmp_path / "sweep", log=lambda m: None).run()
    state = replay(tmp_path / "sweep" / "journal.jsonl")
    order = state.in_order()
    own, extra = order[:4], order[4:]
    assert [t.replicate for t in own] == [0] * 4 and [t.replicate for t in extra] == [1, 1]
    best = sorted(own, key=lambda t: t.objective)[:2]
    assert [t.mixture for t in extra] == [t.mixture for t in best]
