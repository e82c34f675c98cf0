"""The controller: the sweep's loop, run on the Ray head (the driver).

Design:
- The journal is the truth. Every decision is appended (fsync'd) to `journal.jsonl` before it is
  acted on, and the controller's own view of the sweep is the same fold (`SweepState.apply`) that
  `status` and `report` compute from disk. Nothing a user sees comes from a live process.
- Concurrency is the controller's alone. It keeps `budget.concurrency` trials in flight: each is a Ray
  actor `trial-<id>` whose `run` is a streaming generator, and one `ray.wait` over all generators
  returns whichever trial spoke next: a progress event (journaled as it arrives) or the result.
- The strategy only answers ask/tell. It is asked for as many mixtures as there are free slots, with
  the running mixtures as pending, and is told every result and every failure.
- A trial is addressed by a hash of (mixture, proxy config, seed): a mixture proposed twice is
  trained once, and its result is told again (`trial_reused`).
- A trial that raises, or whose actor dies, is FAILED with the reason, told to the strategy, and
  counts against the budget; the sweep goes on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray
import yaml

from orchestrator import __version__
from orchestrator.dispatch import Placement, launch, placement, stop
from orchestrator.journal import Journal
from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.spec import SweepSpec
from orchestrator.state import SweepState
from orchestrator.sweepdir import JOURNAL, REPORT, SPEC, STRATEGY, trial_dir, write_json_atomic
from orchestrator.strategies import Recommendation, build_strategy
from orchestrator.trial import TrialResult, TrialStatus, message_from_json, trial_id
from workers.model import preset_json


@dataclass
class Running:
    trial: str
    mixture: Mixture
    actor: Any
    started: float


class SweepDirExists(RuntimeError):
    pass


class Controller:
    """Runs one sweep to its budget and returns the recommendation."""

    def __init__(self, spec: SweepSpec, sweep_dir: str | Path, on_event: Callable[[dict, SweepState], None] | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.spec, self.dir, self.log = spec, Path(sweep_dir), log
        self.on_event = on_event or (lambda record, state: None)
        self.domains = spec.domain_names
        self.objective = Objective.from_spec(spec.objective, self.domains)
        self.strategy = build_strategy(spec.strategy.kind, spec.strategy.options, self.domains, self.objective, spec.seed)
        self.state = SweepState()
        self.running: dict[Any, Running] = {}
        self._proxy_key = self._trial_config()

    # ------------------------------------------------------------------------------------ setup

    def _trial_config(self) -> dict[str, Any]:
        """What, besides the mixture and seed, determines a trial's outcome (part of its id)."""
        t = self.spec.trainer.model_dump(mode="json")
        if t["kind"] == "proxy":
            t.update(proxy=self.spec.proxy.model_dump(mode="json"), model=preset_json(self.spec.proxy.preset),
                     tokenizer=self.spec.tokenizer.model_dump(mode="json"))
        return t

    def _open_dir(self) -> Journal:
        if (self.dir / JOURNAL).exists():
            raise SweepDirExists(f"sweep directory {self.dir} already holds a sweep; pass another --dir")
        (self.dir / "trials").mkdir(parents=True, exist_ok=True)
        frozen = {"mixsweep_version": __version__, "spec_digest": self.spec.digest(), **self.spec.model_dump(mode="json")}
        (self.dir / SPEC).write_text(yaml.safe_dump(frozen, sort_keys=False))
        return Journal(self.dir / JOURNAL)

    def _prepare_data(self) -> tuple[Any, int]:
        """Tokenise the domains once on the driver and share them through the object store, so trial
        actors on any node read the same tokens without a shared filesystem."""
        if self.spec.trainer.kind != "proxy":
            return None, 0
        from workers.data import prepare_domains

        seq_len = self.spec.proxy.seq_len or preset_json(self.spec.proxy.preset)["seq_len"]
        tokens, vocab = prepare_domains(self.spec, seq_len, log=self.log)
        self.strategy.domain_tokens = {d: int(len(t.train)) for d, t in tokens.items()}
        ref = ray.put({d: {"train": t.train, "val": t.val} for d, t in tokens.items()})
        return ref, vocab

    # ------------------------------------------------------------------------------------- loop

    def run(self) -> Recommendation:
        """Run the sweep to its budget. Data errors raise before any trial starts."""
        data_ref, vocab = self._prepare_data()
        self.where = placement(self.spec.resources)
        if self.where.note:
            self.log(f"warning: {self.where.note}")
        self.journal = self._open_dir()
        self._payload_base = self._payload_template(vocab)
        self._data_ref = data_ref
        try:
            self._record("sweep_started", name=self.spec.name, domains=list(self.domains), budget=self.spec.budget.trials,
                         concurrency=self.spec.budget.concurrency, objective=self.objective.description,
                         spec_digest=self.spec.digest(), strategy=self.spec.strategy.kind,
                         placement={"num_cpus": self.where.num_cpus, "num_gpus": self.where.num_gpus})
            while True:
                self._fill()
                if not self.running:
                    break
                ready, _ = ray.wait(list(self.running), num_returns=1, timeout=1.0)
                for gen in ready:
                    self._advance(gen)
            rec = self._recommend()
            self._record("sweep_finished", completed=len(self.state.completed), reused=self.state.reused)
            return rec
        finally:
            for r in self.running.values():
                stop(r.actor)
            self.journal.close()

    def _record(self, event: str, **fields: Any) -> dict:
        record = self.journal.append(event, **fields)
        self.state.apply(record)
        self.on_event(record, self.state)
        return record

    def _budget_left(self) -> int:
        return self.spec.budget.trials - len(self.state.trials) - self.state.reused

    def _fill(self) -> None:
        """Ask the strategy for as many mixtures as there are free slots and start them."""
        n = min(self.spec.budget.concurrency - len(self.running), self._budget_left())
        if n <= 0:
            return
        t0 = time.perf_counter()
        proposals = self.strategy.ask(n, [r.mixture for r in self.running.values()])
        proposal_s = round(time.perf_counter() - t0, 4)
        for mixture in proposals[:n]:
            tid = trial_id(mixture, self._proxy_key, self.spec.seed)
            known = self.state.trials.get(tid)
            if known is not None:
                self._reuse(known, mixture)
                continue
            self._record("trial_proposed", trial=tid, mixture=mixture.as_dict(), proposal_s=proposal_s,
                         strategy=self.spec.strategy.kind)
            self._start(tid, mixture)

    def _reuse(self, known, mixture: Mixture) -> None:
        """The strategy proposed a mixture already tried: tell it the known outcome, train nothing.
        A reuse still spends one unit of budget, so a strategy that keeps repeating itself ends."""
        if known.status == TrialStatus.COMPLETED:
            self._record("trial_reused", trial=known.id)
            self.strategy.tell(mixture, known.losses, known.loss_stderr)
        elif known.status == TrialStatus.FAILED:
            self._record("trial_reused", trial=known.id)
            self.strategy.tell_failed(mixture, known.reason or "failed before")

    def _payload_template(self, vocab: int) -> dict[str, Any]:
        from workers.train import TrainConfig

        base = {"trainer": self.spec.trainer.model_dump(mode="json"), "seed": self.spec.seed, "vocab_size": vocab,
                "cpus": self.where.num_cpus}
        if self.spec.trainer.kind == "proxy":
            base["train_config"] = TrainConfig.from_spec(self.spec.proxy, self.spec.seed).__dict__
        return base

    def _start(self, tid: str, mixture: Mixture) -> None:
        trial_dir(self.dir, tid).mkdir(parents=True, exist_ok=True)
        payload = {**self._payload_base, "trial": tid, "mixture": mixture.as_dict()}
        actor, gen = launch(tid, payload, self._data_ref, self.where)
        attempt = self.state.trials[tid].attempts + 1
        self.running[gen] = Running(tid, mixture, actor, time.time())
        self._record("trial_started", trial=tid, attempt=attempt, actor=f"trial-{tid}")

    def _advance(self, gen) -> None:
        """Take the next message a trial streamed: progress, its result, or its failure."""
        run = self.running[gen]
        try:
            message = message_from_json(ray.get(next(gen)))
        except StopIteration:
            return self._fail(gen, "the trainer ended without a result")
        except Exception as err:
            return self._fail(gen, _reason(err))
        if isinstance(message, TrialResult):
            return self._complete(gen, message)
        record = self._record("trial_progress", trial=run.trial, step=message.step, tokens=message.tokens,
                              losses=message.losses, elapsed_s=round(message.elapsed_s, 3))
        with open(trial_dir(self.dir, run.trial) / "progress.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _complete(self, gen, result: TrialResult) -> None:
        run = self.running[gen]
        missing = [d for d in self.objective.coefficients if d not in result.losses]
        if missing or not result.is_finite():
            return self._fail(gen, f"invalid result: missing {missing}" if missing else f"non-finite losses {result.losses}")
        del self.running[gen]
        stop(run.actor)
        body = {"trial": run.trial, "mixture": run.mixture.as_dict(), **result.to_json()}
        body.pop("kind")
        write_json_atomic(trial_dir(self.dir, run.trial) / "result.json", body)
        self._record("trial_completed", trial=run.trial, losses=result.losses, loss_stderr=result.loss_stderr,
                     objective=self.objective(result.losses), tokens=result.tokens, steps=result.steps,
                     wall_s=round(time.time() - run.started, 3))
        self.strategy.tell(run.mixture, result.losses, result.loss_stderr)
        self._save_strategy()

    def _fail(self, gen, reason: str) -> None:
        run = self.running.pop(gen)
        stop(run.actor)
        self._record("trial_failed", trial=run.trial, reason=reason)
        self.strategy.tell_failed(run.mixture, reason)
        self._save_strategy()

    def _save_strategy(self) -> None:
        write_json_atomic(self.dir / STRATEGY, self.strategy.state_dict())

    def _recommend(self) -> Recommendation | None:
        if not self.state.completed:
            self.log("no trial completed: nothing to recommend")
            return None
        rec = self.strategy.recommend()
        self._record("recommended", **rec.to_json())
        (self.dir / REPORT).mkdir(exist_ok=True)
        write_json_atomic(self.dir / REPORT / "recommendation.json", rec.to_json())
        return rec


def _reason(err: BaseException) -> str:
    """One line saying why a trial failed (the user's exception, not Ray's wrapping of it)."""
    cause = getattr(err, "cause", None) or err
    if isinstance(err, ray.exceptions.RayActorError):
        return f"actor died: {str(err).splitlines()[0][:300]}"
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1][:300] if text else ''}"
