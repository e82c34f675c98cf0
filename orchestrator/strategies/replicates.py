"""`budget.replicates`: which replicates a sweep owes, read from the journal's trials (docs/spec.md, "Replicates").

`seeds = s` (top_k None): every mixture the strategy proposes is trained s times, replicate 0 (its own
proposal) and replicates 1..s-1 (trial option `{"replicate": r}`, another trainer seed), each a trial
that spends a unit of `budget.trials`. The replicates of a mixture are owed from the moment its first
run is journaled and go before any new mixture, so they run beside it; the strategy is asked only
for as many new mixtures as leave room in the budget for all s runs of each (a budget that is not a
multiple of s leaves the remainder unspent rather than a mixture with fewer runs).

`top_k = k`: the strategy's own proposals get `budget.trials - k (s - 1)` trials; once they are all
done (spent, or the strategy has nothing left to propose, and nothing is in flight), the k best
mixtures by objective (their first run; at the target fidelity in a multi-fidelity sweep) get
replicates 1..s-1 from the reserved rest of the budget.

Everything is derived from the sweep's trials as journaled (proposed, running or ended), never kept in
the strategy: a resumed sweep owes exactly what the stopped one did. The strategy's own sequence
(`Strategy.asked`, which design point comes next) counts its own proposals: `asked` less the
replicates, which are the journal's trials with option `replicate` > 0 (a strategy that asks for
replicates itself, `Proposal(options={"replicate": r})`, should not be combined with budget.replicates).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from orchestrator.mixture import Mixture
from orchestrator.strategies.contract import Proposal

if TYPE_CHECKING:
    from orchestrator.state import SweepState, TrialRecord


@dataclass(frozen=True)
class ReplicatePlan:
    """`seeds` runs per replicated mixture, `top_k` (None: every mixture), `budget` (budget.trials), and
    `sweep()`, the sweep's state as journaled (the controller's, read at each ask)."""

    seeds: int
    top_k: int | None
    budget: int
    sweep: Callable[[], "SweepState"]

    def __post_init__(self) -> None:
        if self.top_k is not None and self.own_budget < self.top_k:
            from orchestrator.spec import SpecError

            raise SpecError(f"`budget.replicates.top_k`: {self.top_k} mixtures x {self.seeds - 1} replicates leave {self.own_budget} "
                            f"of budget.trials {self.budget} to the strategy, fewer than top_k; raise budget.trials to at "
                            f"least {self.top_k * self.seeds} or lower top_k or seeds")

    @property
    def active(self) -> bool:
        return self.seeds > 1

    @property
    def own_budget(self) -> int:
        """Trials the strategy's own proposals may spend (top_k: the rest is held for the replicates)."""
        return self.budget - (self.top_k * (self.seeds - 1) if self.top_k is not None else 0)

    def owed(self, state: SweepState, domains: tuple[str, ...]) -> list[Proposal]:
        """The replicates not yet proposed, in order (by mixture, then replicate): of every first run
        (top_k None), or of the top_k best first runs (call it once the strategy's own trials are done)."""
        firsts = [t for t in state.in_order() if t.replicate == 0 and t.measures_mixture] if self.top_k is None \
            else self.best(state)
        have = {_key(t) for t in state.trials.values()}
        return [Proposal(Mixture.from_dict(t.mixture, domains), {**(t.options or {}), "replicate": r})
                for t in firsts for r in range(1, self.seeds) if _key(t, r) not in have]

    def room(self, state: SweepState, owed: int) -> int:
        """New mixtures the strategy may propose now, with `owed` replicates still to propose: top_k, what
        is left of its own budget (none once the replicates began); otherwise as many as leave room in
        the budget for all the runs of each."""
        if self.top_k is not None:
            if state.replicates:
                return 0
            return max(self.own_budget - len(state.trials) - state.reused_budget, 0)
        left = self.budget - len(state.trials) - state.reused_budget - owed
        return max(left // self.seeds, 0)

    def best(self, state: SweepState) -> list[TrialRecord]:
        """The top_k completed first runs by objective (ties: proposed first), as the ladder ranks them; in
        a multi-fidelity sweep those at the target fidelity (a cheap run's loss is of another model size,
        and the recommendation weighs target runs only)."""
        done = [t for t in state.completed if t.replicate == 0 and t.measures_mixture and state.at_target(t)
                and t.objective is not None and math.isfinite(t.objective)]
        return sorted(done, key=lambda t: (t.objective, t.proposed_seq))[:self.top_k]


def _key(t: TrialRecord, replicate: int | None = None) -> str:
    """A trial's mixture and options (with `replicate` set when given), comparable across the journal."""
    options = dict(t.options or {})
    if replicate is not None:
        options["replicate"] = replicate
    options = {k: v for k, v in options.items() if not (k == "replicate" and v == 0)}
    mixture = {d: round(float(w), 6) for d, w in t.mixture.items()}
    return json.dumps([mixture, options], sort_keys=True)
