"""Any mixsweep Strategy as a Ray Tune `Searcher`, for pipelines that already run on Ray Tune.

Tune decides when trials run and stop (schedulers, concurrency, resources); the strategy decides what
mixture each trial trains on. Each suggested config is `{"mixture": {domain: weight}}` merged over
`base_config` (with `"trial_options"` when the strategy's proposal carries any). The trainable reports
its per-domain validation losses as `loss.<domain>` (the runs-table names), optionally their standard
errors as `loss_stderr.<domain>`, and may report `objective`, the number Tune ranks by
(`metrics_from_losses` computes it). A trial that errors or reports no finite `loss.*` is told to the
strategy as failed. Strategies that need mixsweep's proxy trainer (experts' log-probabilities, DoReMi)
are refused at construction: a Tune trainable cannot give what their `requirements` declare.

State is JSON, never a pickled model: pickling the searcher (Tune does, to checkpoint an experiment)
keeps the strategy's `state_dict()` and rebuilds the strategy from its kind and options, and
`save`/`restore` write and read the same JSON.

    searcher = StrategySearcher("gp", {}, domains=("web", "code"), objective=objective, seed=0)
    tune.Tuner(train_fn, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=32,
               max_concurrent_trials=4)).fit()
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from ray.tune.search import Searcher

from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.runs import LOSS
from orchestrator.strategies import Strategy, build_strategy
from orchestrator.strategies.contract import Outcome

OBJECTIVE = "objective"
LOSS_STDERR = "loss_stderr."  # optional: the standard error of each domain's loss, nats/token


def metrics_from_losses(losses: Mapping[str, float], objective: Objective) -> dict[str, float]:
    """What a trainable reports: `loss.<domain>` per domain (nats/token) and the `objective`."""
    return {**{LOSS + d: float(v) for d, v in losses.items()}, OBJECTIVE: objective(losses)}


class StrategySearcher(Searcher):
    """Ray Tune Searcher proposing mixtures from a mixsweep Strategy (built from kind and options)."""

    def __init__(self, kind: str, options: Mapping[str, Any], domains: tuple[str, ...], objective: Objective,
                 seed: int = 0, base_config: Mapping[str, Any] | None = None,
                 domain_tokens: Mapping[str, int] | None = None) -> None:
        super().__init__(metric=OBJECTIVE, mode="min")
        from orchestrator.strategies import STRATEGIES

        needs = STRATEGIES[kind].requirements if kind in STRATEGIES else None
        if needs is not None and needs.proxy_trainer:
            raise ValueError(f"strategy {kind} {needs.proxy_trainer}, which only mixsweep's proxy trainer gives and a Tune "
                             "trainable does not; run it with `mixsweep run`, or use another strategy (e.g. gp)")
        if needs is not None and needs.domain_tokens and not domain_tokens:
            raise ValueError(f"strategy {kind} needs the tokens per domain: pass domain_tokens={{domain: tokens}}")
        self._build = {"kind": kind, "options": dict(options), "domains": tuple(domains), "objective": objective,
                       "seed": seed, "base_config": dict(base_config or {}),
                       "domain_tokens": dict(domain_tokens) if domain_tokens else None}
        self.strategy = self._new_strategy()
        self.live: dict[str, Mixture] = {}  # Tune trial id -> mixture it is training on

    def _new_strategy(self) -> Strategy:
        b = self._build
        strategy = build_strategy(b["kind"], b["options"], b["domains"], b["objective"], b["seed"])
        strategy.domain_tokens = b["domain_tokens"]
        return strategy

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        """Tune may name its own metric/mode; the strategy always minimises its objective."""
        if mode not in (None, "min"):
            return False
        self._metric = metric or OBJECTIVE
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        """`{"mixture": {domain: weight}}` over `base_config`, plus `"trial_options"` when the strategy asks
        the trial for something (an expert's log-probabilities): a Tune trainable that cannot honour them
        should not be paired with such a strategy (its `requirements` say so)."""
        proposals = self.strategy.ask(1, list(self.live.values()))
        if not proposals:
            # Nothing now: wait for running trials, or, with none running, the strategy is done.
            return None if self.live else Searcher.FINISHED
        proposal = proposals[0]
        self.live[trial_id] = proposal.mixture
        options = {"trial_options": dict(proposal.options)} if proposal.options else {}
        return {**self._build["base_config"], "mixture": proposal.mixture.as_dict(), **options}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        mixture = self.live.pop(trial_id, None)
        if mixture is None:
            return
        losses = {k[len(LOSS):]: v for k, v in (result or {}).items() if k.startswith(LOSS)}
        if error or not losses or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in losses.values()):
            reason = "trial errored" if error else "no finite loss.<domain> metrics in the last result"
            # Tune's error says nothing of why: an errored trial is not known to be the machine's fault.
            self.strategy.tell_failed(mixture, reason, retryable=False)
        else:
            stderr = {k[len(LOSS_STDERR):]: v for k, v in (result or {}).items() if k.startswith(LOSS_STDERR)}
            self.strategy.tell(Outcome(mixture, {d: float(v) for d, v in losses.items()},
                                       {d: float(v) for d, v in stderr.items() if isinstance(v, (int, float)) and math.isfinite(v)}))

    # -- state: JSON only ------------------------------------------------------------------------
    def get_state(self) -> dict:
        return {"strategy": self.strategy.state_dict(), "live": {t: m.as_dict() for t, m in self.live.items()}}

    def set_state(self, state: dict) -> None:
        self.strategy = self._new_strategy()
        self.strategy.load_state_dict(state["strategy"])
        domains = self._build["domains"]
        self.live = {t: Mixture.from_dict(w, domains) for t, w in state["live"].items()}

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.get_state()))

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))

    def __getstate__(self) -> dict:
        return {"build": self._build, "state": json.loads(json.dumps(self.get_state())),
                "metric": self._metric, "mode": self._mode}

    def __setstate__(self, data: dict) -> None:
        Searcher.__init__(self, metric=data["metric"], mode=data["mode"])
        self._build = data["build"]
        self.set_state(data["state"])
