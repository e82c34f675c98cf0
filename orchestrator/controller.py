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
- A trial is addressed by a hash of (mixture, proxy config, seed): a mixture proposed again (within
  `budget.weight_precision`) is trained once, its result is told again (`trial_reused`) without
  spending budget, and the strategy is asked again; a replicate must be asked for (trial option).
- Faults: a trial whose actor dies (process killed, node lost) or that hangs past its timeout is
  re-queued up to `budget.max_attempts` starts, on any node, resuming from its checkpoint where the
  trainer wrote one. A trainer that raises, or losses that turn non-finite or explode, end the trial
  FAILED with the reason; it is told to the strategy and counts against the budget. The sweep goes on.
- Resume replays the journal, re-tells the outcomes to a fresh strategy in journal order, re-queues
  the trials that were running, and never re-trains a trial whose result exists. A lock with a
  heartbeat keeps a second controller off the same directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray
import yaml

from orchestrator import __version__
from orchestrator.dispatch import attempt_timeout_s, died, launch, placement, stop, sweep_namespace
from orchestrator.journal import Journal, load, read_events
from orchestrator.lock import SweepLock
from orchestrator.metrics import SweepMetrics
from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.spec import SpecError, SweepSpec, read_yaml
from orchestrator.state import SweepState
from orchestrator.storage import SweepStore
from orchestrator.sweepdir import JOURNAL, REPORT, SPEC, STRATEGY, trial_dir, write_json_atomic
from orchestrator.strategies import Recommendation, build_strategy
from orchestrator.export import refresh_exports
from orchestrator.resume import (adoptable_results, adopted_completion, check_not_orphaned, check_resumable, retell,
                                 tell_artifacts)
from orchestrator.trial import Placement, TrialResult, TrialStatus, message_from_json, trial_id
from workers.model import preset_json


@dataclass
class Running:
    trial: str
    mixture: Mixture
    actor: Any
    started: float  # time.time() of this attempt's start
    deadline: float  # time.time() after which the attempt counts as hung


class SweepDirExists(RuntimeError):
    pass


class SweepInterrupted(BaseException):
    """SIGINT or SIGTERM stopped the controller. The trials in flight were stopped, the interruption was
    journaled (`sweep_interrupted`), and `mixsweep resume` continues; the message says so in one line.
    A BaseException like KeyboardInterrupt (no `except Exception` swallows it), but not one: typer turns
    a KeyboardInterrupt into a bare exit code, and this message must reach the CLI's error boundary."""


class ProposalOutOfSpace(RuntimeError):
    """A strategy proposed a mixture outside its own space (floor, bounds, data caps): a bug, never journaled."""


@contextlib.contextmanager
def _signals_interrupt(where: str):
    """SIGINT and SIGTERM raise SweepInterrupted in the loop, so that `_drive` journals the interruption and
    its `finally` stops the trials and lets go of the lock. Ray's own SIGTERM handler (installed by
    ray.init) would kill its processes and exit(1) with nothing journaled. Later signals are ignored
    while the controller cleans up; the previous handlers come back afterwards."""
    import threading

    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return

    def interrupt(signum, frame):
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        raise SweepInterrupted(f"interrupted by {signal.Signals(signum).name}; finished trials are kept, "
                               f"`mixsweep resume {where}` continues")

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Controller:
    """Runs one sweep to its budget and returns the recommendation."""

    def __init__(self, spec: SweepSpec, sweep_dir: str | Path, on_event: Callable[[dict, SweepState], None] | None = None,
                 log: Callable[[str], None] = print, cpu_fallback: bool = True) -> None:
        self.store = SweepStore(sweep_dir, spec.data.cache_dir)
        self.spec, self.dir, self.log = spec, self.store.local, log
        self.cpu_fallback = cpu_fallback
        self.on_event = on_event or (lambda record, state: None)
        self.domains = spec.domain_names
        self.objective = Objective.from_spec(spec.objective, self.domains)
        self.strategy = build_strategy(spec.strategy.kind, spec.strategy.options, self.domains, self.objective, spec.seed)
        self.state = SweepState()
        self.running: dict[Any, Running] = {}
        if getattr(self.strategy, "needs_token_logprobs", False) and spec.trainer.kind != "proxy":
            raise SpecError(f"`strategy.kind`: {spec.strategy.kind} needs per-token log-probabilities of domain experts, "
                            "which only the proxy trainer writes; use `trainer: {kind: proxy}` or another strategy")
        needs = getattr(self.strategy, "needs_proxy_trainer", None)  # why the strategy needs it, in words
        if needs and spec.trainer.kind != "proxy":
            raise SpecError(f"`strategy.kind`: {spec.strategy.kind} {needs}, which only the proxy trainer does; "
                            "use `trainer: {kind: proxy}` or another strategy")
        self._trial_key = self._trial_config()
        self._timeout_s = attempt_timeout_s(spec)
        self._kill_after = _fault_hook()
        self._strategy_saved = 0.0
        self._retry_at: dict[str, float] = {}  # trial -> earliest restart time after a died/hung attempt

    # ------------------------------------------------------------------------------------ setup

    def _trial_config(self) -> dict[str, Any]:
        """What, besides the mixture and seed, determines a trial's outcome (part of its id): the trainer
        backend's id fields (workers/trainers.py)."""
        from orchestrator.requests import trial_key

        return trial_key(self.spec)

    def _prepare_data(self) -> tuple[Any, int]:
        """Tokenise the domains into cached token shards (or find them) and cap the mixture space.

        Trials get only the shards' locations (a few hundred bytes) and memory-map them where they
        run: the data's location is a path or URI every node reaches, never the object store."""
        from orchestrator.requests import data_request, trainer_backend
        from workers.trainers import REPLAY_MODEL, TOKEN_SHARDS

        self._data_journal: dict[str, Any] = {}
        reads = trainer_backend(self.spec).reads_data
        if reads == REPLAY_MODEL:
            return self._prepare_replay(), 0
        if reads != TOKEN_SHARDS:
            return None, 0
        from orchestrator.mixture import token_caps
        from workers.data import DataError, data_payload, prepare_domains, prepare_eval_domains

        seq_len = self.spec.proxy.seq_len or preset_json(self.spec.proxy.preset)["seq_len"]
        request = data_request(self.spec)
        shards, vocab = prepare_domains(request, seq_len, log=self.log)
        eval_shards = prepare_eval_domains(request, log=self.log)
        tokens = {d: s.train_tokens for d, s in shards.items()}
        self.strategy.domain_tokens = tokens
        try:
            caps = token_caps(tokens, self.spec.proxy.training_tokens(), self.spec.data.max_epochs)
            self.strategy.set_caps(caps)
        except ValueError as err:
            raise DataError(str(err)) from None
        self._data_journal = {"domain_tokens": tokens, "caps": caps, "max_epochs": self.spec.data.max_epochs}
        return data_payload(shards, request, eval_shards), vocab

    def _prepare_replay(self) -> dict[str, Any]:
        """The replay trainer's fitted simulator, as the arrays every trial predicts from (~0.1 MB)."""
        from orchestrator.replay_table import replay_model
        from orchestrator.runs import RunsTableError

        model = replay_model(self.spec.trainer.runs, self.domains, self.spec.data.cache_dir, log=self.log)
        missing = sorted(set(self.objective.coefficients) - set(model.loss_domains))
        if missing:
            raise RunsTableError(f"`objective`: reads {missing}, which trainer.runs has no loss column for; "
                                 f"use domains of {list(model.loss_domains)} (objective.domains for mean or worst)")
        return model.to_payload()

    def _max_loss(self, vocab: int) -> float | None:
        if self.spec.budget.max_loss is not None:
            return self.spec.budget.max_loss
        return 2.0 * math.log(vocab) if self.spec.trainer.kind == "proxy" else None

    # ------------------------------------------------------------------------------ entry points

    def run(self) -> Recommendation | None:
        """Start a new sweep in an empty directory and run it to its budget."""
        where = self.store.location
        if self.store.exists(JOURNAL):
            raise SweepDirExists(f"sweep directory {where} already holds a sweep; `mixsweep resume {where}` continues it, or pass another --dir")
        results = self.store.results()
        if results:  # a sweep whose journal was lost: starting over would overwrite its results
            raise SweepDirExists(f"sweep directory {where} holds {len(results)} finished trial result(s) but no {JOURNAL}; "
                                 f"restore {JOURNAL} from a backup, or pass another --dir")
        data_ref, vocab = self._prepare_data()  # data errors end here, before anything is written
        self.lock = SweepLock(self.dir)
        self.lock.acquire()
        (self.dir / "trials").mkdir(parents=True, exist_ok=True)
        frozen = {"mixsweep_version": __version__, "spec_digest": self.spec.digest(), **self.spec.model_dump(mode="json")}
        (self.dir / SPEC).write_text(yaml.safe_dump(frozen, sort_keys=False))
        self.journal = Journal(self.dir / JOURNAL)
        self._seed_strategy()
        return self._drive(data_ref, vocab, "sweep_started", {})

    def resume(self) -> Recommendation | None:
        """Continue a stopped sweep: replay, adopt results the journal missed, re-tell, re-queue what was
        running, and go on."""
        self.store.pull()
        where = self.store.location
        if not (self.dir / JOURNAL).exists():
            check_not_orphaned(self.dir, [], where)
            raise SweepDirExists(f"{where} holds no sweep to resume (no {JOURNAL}); `mixsweep run` starts one")
        check_not_orphaned(self.dir, list(read_events(self.dir / JOURNAL, [])), where)  # checked, before the lock
        frozen = read_yaml(self.dir / SPEC, "frozen spec")  # strictly, as every spec: duplicate keys are errors
        changes = check_resumable(frozen, self.spec.model_dump(mode="json"))
        data_ref, vocab = self._prepare_data()
        self.lock = SweepLock(self.dir)
        self.lock.acquire()
        try:
            self.journal = Journal(self.dir / JOURNAL, repair=True, log=self.log)
            events, self.state = load(self.dir / JOURNAL)
            events += self._adopt_results()
        except BaseException:  # a journal or result that cannot be resumed: let go, so a fixed dir resumes
            if hasattr(self, "journal"):
                self.journal.close()
            self.lock.release()
            raise
        self._seed_strategy()  # in the same order as the first run: seed runs, then the journal's outcomes
        retell(self.strategy, events, self.state)  # adopted results too, in journal order
        rec = self._drive(data_ref, vocab, "sweep_resumed", {"changes": {k: list(v) for k, v in changes.items()}})
        refresh_exports(self.dir, log=self.log)  # exports made before the resume would describe an older sweep
        return rec

    def _adopt_results(self) -> list[dict]:
        """Journal the completion of every trial whose result.json was written but whose `trial_completed`
        was not (a crash between the two): it is finished, never trained again. Returns the events."""
        adopted = []
        for t, body in list(adoptable_results(self.dir, self.state, self.objective.coefficients)):
            record = self.journal.append("trial_completed", **adopted_completion(body, self.objective))
            self.state.apply(record)
            adopted.append(record)
            self.log(f"resume: adopted the result of {t.id} (written before a crash, never journaled)")
        return adopted

    # -------------------------------------------------------------------------------------- loop

    def _drive(self, data_ref: Any, vocab: int, opening: str, extra: dict) -> Recommendation | None:
        self.where = placement(self.spec.resources, self.cpu_fallback)
        if self.where.note:
            self.log(f"warning: {self.where.note}")
        self._data_ref, self._bound = data_ref, self._max_loss(vocab)
        self.metrics = SweepMetrics(self.spec.name)
        self._payload_base = self._payload_template(vocab)
        with _signals_interrupt(self.store.location):
            return self._loop(opening, extra)

    def _loop(self, opening: str, extra: dict) -> Recommendation | None:
        try:
            self._record(opening, name=self.spec.name, domains=list(self.domains), budget=self.spec.budget.trials,
                         concurrency=self.spec.budget.concurrency, objective=self.objective.description,
                         spec_digest=self.spec.digest(), strategy=self.spec.strategy.kind,
                         placement={"num_cpus": self.where.num_cpus, "num_gpus": self.where.num_gpus},
                         lock_taken_over=self.lock.took_over, **self._data_journal, **extra)
            for t in self.state.by_status(TrialStatus.RUNNING):  # left running by a stopped controller
                self._requeue_or_fail(t.id, "the controller stopped while it ran")
            while True:
                self.lock.beat()
                self.store.push()
                self._fill()
                if not self.running:
                    if not self.state.by_status(TrialStatus.PROPOSED):
                        break
                    time.sleep(0.2)  # only retries waiting out their back-off
                    continue
                ready, rest = ray.wait(list(self.running), num_returns=1, timeout=1.0)
                if ready and rest:  # take everything already waiting, so one ask fills many slots
                    more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                    ready += more
                for gen in ready:
                    if gen not in self.running:  # ended by an earlier message of this batch
                        continue
                    self._advance(gen)
                self._check_deadlines()
            rec = self._recommend()
            if self.spec.ladder is not None and rec is not None:
                # Scale ladder: re-train the best mixtures and baselines at larger presets (orchestrator/ladder.py).
                from orchestrator.ladder import LadderStage

                LadderStage(self).run(self.spec.ladder.presets, self.spec.ladder.top_k, self.spec.ladder.baselines)
            self._record("sweep_finished", completed=len(self.state.completed), reused=self.state.reused)
            return rec
        except (SweepInterrupted, KeyboardInterrupt) as err:  # SIGINT/SIGTERM, or a Ctrl-C outside the handler
            self._record("sweep_interrupted", reason=str(err) or "interrupted",
                         running=sorted(r.trial for r in self.running.values()))
            raise
        except SystemError as err:
            # The signal's exception raised inside Ray's C extension (CoreWorker.wait) comes back wrapped
            # as "returned a result with an exception set": it is still the interruption.
            cause = err.__cause__ or err.__context__
            if not isinstance(cause, SweepInterrupted):
                raise
            self._record("sweep_interrupted", reason=str(cause), running=sorted(r.trial for r in self.running.values()))
            raise cause from None
        finally:
            self._save_strategy(force=True)
            for r in self.running.values():
                stop(r.actor)
            self.journal.close()
            self.lock.release()
            self.store.push(force=True)
            self.store.remove("controller.lock")

    def _seed_strategy(self) -> None:
        """Tell the strategy the spec's seed runs (earlier runs of the same domains); not budget."""
        path = self.spec.strategy.seed_runs
        if path is None:
            return
        from orchestrator.runs import RunsTableError, read_runs

        table = read_runs(Path(path).expanduser())
        if set(table.domains) != set(self.domains):
            raise RunsTableError(f"strategy.seed_runs {path}: its weight columns {list(table.domains)} must be the sweep's domains {list(self.domains)}")
        for mixture, losses in zip(table.mixtures(), table.loss_dicts()):
            self.strategy.tell(Mixture.from_dict(mixture.as_dict(), self.domains), losses)
        self.log(f"strategy seeded with {len(table)} runs from {path}")

    def _record(self, event: str, **fields: Any) -> dict:
        # Progress and placement are not fsync'd (measured: 3.3 -> 0.57 ms per progress message);
        # the next decision's fsync carries them, and resume never needs them.
        record = self.journal.append(event, durable=event not in ("trial_progress", "trial_placed"), **fields)
        self.state.apply(record)
        self.metrics.update(record, self.state)
        self.on_event(record, self.state)
        if event in ("trial_completed", "trial_failed", "sweep_finished"):
            self.store.push(force=True)
        _fault_point(self._kill_after, event)
        return record

    def _budget_left(self) -> int:
        # Repeats are answered from known results and spend nothing; only journals written before
        # `budget.weight_precision` hold reuses that did (SweepState.reused_budget), and they still count.
        return self.spec.budget.trials - len(self.state.trials) - self.state.reused_budget

    # The strategy is asked at most ASK_ROUNDS times per fill, each round only for the slots that the
    # previous round's repeats left free. When the last round still starts nothing, the strategy has
    # nothing new to say until a trial ends, so it is not asked again before then (`_asked_dry_at`: the
    # number of ended trials at that time). Repeats thus spend no budget, the asks are bounded, and a
    # strategy that only repeats itself ends with the trials in flight (docs/decisions.md).
    ASK_ROUNDS = 3
    _asked_dry_at: int | None = None

    def _fill(self) -> None:
        """Start re-queued trials first, then ask the strategy for the remaining free slots."""
        free = self.spec.budget.concurrency - len(self.running)
        running_ids = {r.trial for r in self.running.values()}
        for t in self.state.by_status(TrialStatus.PROPOSED):
            if t.id in running_ids or time.time() < self._retry_at.get(t.id, 0.0):
                continue
            if free > 0:
                self._start(t.id, Mixture.from_dict(t.mixture, self.domains))
                free -= 1
        n = min(free, self._budget_left())
        ended = sum(t.status.is_final for t in self.state.trials.values())
        if n <= 0 or self._asked_dry_at == ended:
            return
        for _ in range(self.ASK_ROUNDS):
            started, repeats = self._ask_round(n)
            if not repeats:
                return
            n = repeats
        if not started:
            self._asked_dry_at = ended

    def _ask_round(self, n: int) -> tuple[int, int]:
        """Ask the strategy for up to n mixtures; start the new ones, answer the repeats.
        Returns (trials started, repeats answered)."""
        t0 = time.perf_counter()
        proposals = self.strategy.ask(n, [r.mixture for r in self.running.values()])
        proposal_s = round(time.perf_counter() - t0, 4)
        started = repeats = 0
        for mixture in proposals[:n]:
            # Trainer options the strategy wants for this trial (experts' log-probabilities, DoReMi's
            # reference and proxy runs, a replicate) are part of its id: DoReMi's proxy run at the reference
            # mixture is not the reference run. Without options the id is what it always was.
            options = self.strategy.trial_options(mixture)
            tid = trial_id(mixture, {**self._trial_key, "options": options} if options else self._trial_key, self.spec.seed)
            known = self._already_run(tid, mixture, options)
            if known is not None:
                self._reuse(known, mixture)
                repeats += 1
                continue
            self._check_in_space(mixture)
            self._record("trial_proposed", trial=tid, mixture=mixture.as_dict(), proposal_s=proposal_s,
                         strategy=self.spec.strategy.kind, options=options)
            self._start(tid, mixture)
            started += 1
        return started, repeats

    def _check_in_space(self, mixture: Mixture) -> None:
        """Stop, in one line, when a proposal lies outside the strategy's space (its floor and bounds where
        it has them, and the data caps): a strategy bug must not become a journaled, resumable trial."""
        bounds = getattr(self.strategy, "bounds", None)
        caps = self.strategy.caps or {}
        for i, (d, w) in enumerate(mixture.as_dict().items()):
            lower = float(bounds.lower[i]) if bounds is not None else 0.0
            upper = min(float(bounds.upper[i]) if bounds is not None else 1.0, caps.get(d, 1.0))
            if not lower - 1e-5 <= w <= upper + 1e-5:  # weights are stored to 6 decimals
                raise ProposalOutOfSpace(f"strategy {self.spec.strategy.kind} proposed {d}={w:.6f}, outside its space "
                                         f"[{lower:.6f}, {upper:.6f}] (min_weight, bounds, data caps); this is a bug: report it "
                                         f"with the spec (nothing was journaled; `mixsweep resume {self.store.location}` "
                                         "with another strategy continues)")

    def _already_run(self, tid: str, mixture: Mixture, options: dict[str, Any]):
        """The sweep trial (completed, failed, running or waiting) that this proposal repeats, or None.

        A repeat has the same trial options (so a replicate asked for on purpose is never one) and every
        weight within `budget.weight_precision` of the trial's; the nearest trial when several are.
        Trials whose options were not journaled (older sweeps) count as having none."""
        if tid in self.state.trials:
            return self.state.trials[tid]
        want, weights = _options_key(options), mixture.as_dict()
        tolerance = self.spec.budget.weight_precision + 1e-9  # weights are stored to 6 decimals
        nearest, distance = None, math.inf
        for t in self.state.trials.values():
            if _options_key(t.options) != want:
                continue
            d = _weight_distance(t.mixture, weights)
            if d <= tolerance and d < distance:
                nearest, distance = t, d
        return nearest

    def _reuse(self, known, mixture: Mixture) -> None:
        """The strategy proposed a mixture already run or in flight: train nothing and spend no budget.

        A completed or failed trial's outcome is told now, at the proposed mixture (the strategy's own
        bookkeeping, e.g. Ax's trial index, is keyed by what it proposed). A trial still in flight is
        told nothing more: its result is told when it ends, and the strategy sees it as pending meanwhile.
        `matched` records which it was, so resume re-tells exactly this (resume.retell)."""
        self._record("trial_reused", trial=known.id, mixture=mixture.as_dict(), matched=known.status.value,
                     distance=round(_weight_distance(known.mixture, mixture.as_dict()), 6))
        if known.status == TrialStatus.COMPLETED:
            self.strategy.tell(mixture, known.losses, known.loss_stderr)
        elif known.status == TrialStatus.FAILED:
            self.strategy.tell_failed(mixture, known.reason or "failed before")

    def _payload_template(self, vocab: int):
        """The TrialRequest every trial of the sweep shares (workers/protocol.py)."""
        from orchestrator.requests import trial_template

        return trial_template(self.spec, vocab, self.where.num_cpus)

    def _start(self, tid: str, mixture: Mixture) -> None:
        tdir = trial_dir(self.dir, tid)
        tdir.mkdir(parents=True, exist_ok=True)
        # Actors write checkpoints where every node can reach them: the sweep's own location.
        shared = f"{self.store.location.rstrip('/')}/trials/{tid}" if self.store.remote else str(tdir.resolve())
        attempt = self.state.trials[tid].attempts + 1
        name = f"trial-{tid}" if attempt == 1 else f"trial-{tid}-{attempt}"
        self._record("trial_started", trial=tid, attempt=attempt, actor=name)
        # The options journaled with the proposal, so a retry or a resumed sweep runs the trial as it was
        # proposed (a journal from before options were recorded has none: ask the strategy again).
        options = self.state.trials[tid].options
        payload = self._payload_base.for_trial(tid, mixture.as_dict(), shared,
                                               options if options is not None else self.strategy.trial_options(mixture)).to_json()
        actor, gen = launch(name, payload, self._data_ref, self.where, sweep_namespace(self.store.location))
        now = time.time()
        self.running[gen] = Running(tid, mixture, actor, now, now + (self._timeout_s or math.inf))

    def _advance(self, gen) -> None:
        """Take the next message a trial streamed: placement, progress, its result, or its failure."""
        run = self.running[gen]
        try:
            message = message_from_json(ray.get(next(gen)))
        except StopIteration:
            return self._fail(gen, "the trainer ended without a result")
        except Exception as err:
            if died(err):
                return self._requeue_or_fail(run.trial, _reason(err), gen)
            return self._fail(gen, _reason(err))
        if isinstance(message, TrialResult):
            return self._complete(gen, message)
        if isinstance(message, Placement):
            self._record("trial_placed", trial=run.trial, node_id=message.node_id, pid=message.pid, gpus=message.gpus)
            return
        record = self._record("trial_progress", trial=run.trial, step=message.step, tokens=message.tokens,
                              losses=message.losses, **({"weights": message.weights} if message.weights else {}),
                              elapsed_s=round(message.elapsed_s, 3),
                              **({"loss_stderr": message.loss_stderr} if message.loss_stderr else {}),
                              **({"tokens_per_s": round(message.tokens_per_s, 1)} if message.tokens_per_s else {}))
        with open(trial_dir(self.dir, run.trial) / "progress.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        bad = {d: v for d, v in message.losses.items() if not math.isfinite(v) or (self._bound and v > self._bound)}
        if bad:
            self._fail(gen, f"diverged at step {message.step}: losses {bad}" + (f" (bound {self._bound:.2f})" if self._bound else ""))

    def _check_deadlines(self) -> None:
        now = time.time()
        for gen, run in list(self.running.items()):
            if now > run.deadline:
                self._requeue_or_fail(run.trial, f"hung: no result after {now - run.started:.0f} s (timeout {self._timeout_s:.0f} s)", gen)

    def _requeue_or_fail(self, tid: str, reason: str, gen: Any = None) -> None:
        """An attempt died or hung: start the trial again (any node) unless it used all its attempts."""
        if gen is not None:
            stop(self.running.pop(gen).actor)
        attempts = self.state.trials[tid].attempts
        if attempts < self.spec.budget.max_attempts:
            self._record("trial_requeued", trial=tid, attempt=attempts, reason=reason)
            # Back off before restarting: a lost node is only marked dead after missed heartbeats,
            # and a retry scheduled before that lands on it again.
            self._retry_at[tid] = time.time() + min(30.0, 5.0 * attempts)
            return
        self._record("trial_failed", trial=tid, reason=f"{reason} (attempt {attempts} of {self.spec.budget.max_attempts})")
        self.strategy.tell_failed(Mixture.from_dict(self.state.trials[tid].mixture, self.domains), reason)
        self._save_strategy()

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
        _fault_point(self._kill_after, "result_written")  # crash tests: a result the journal has not seen
        # What the trial wrote or learnt for the strategy (expert log-probabilities, DoReMi's reference
        # weights and averaged weights): journaled, so resume tells it again (resume.tell_artifacts).
        artifacts = {k: result.info[k] for k in ("token_logprobs", "final_weights", "online") if k in result.info}
        self._record("trial_completed", trial=run.trial, losses=result.losses, loss_stderr=result.loss_stderr,
                     objective=self.objective(result.losses), tokens=result.tokens, steps=result.steps,
                     wall_s=round(time.time() - run.started, 3), **({"artifacts": artifacts} if artifacts else {}))
        tell_artifacts(self.strategy, run.mixture, artifacts)
        self.strategy.tell(run.mixture, result.losses, result.loss_stderr)
        self._save_strategy()

    def _fail(self, gen, reason: str) -> None:
        run = self.running.pop(gen)
        stop(run.actor)
        self._record("trial_failed", trial=run.trial, reason=reason)
        self.strategy.tell_failed(run.mixture, reason)
        self._save_strategy()

    def _save_strategy(self, force: bool = False) -> None:
        """strategy.json, at most every 5 s (resume re-tells from the journal; this is for people)."""
        if force or time.time() - self._strategy_saved >= 5.0:
            write_json_atomic(self.dir / STRATEGY, self.strategy.state_dict())
            self._strategy_saved = time.time()

    def _recommend(self) -> Recommendation | None:
        if not self.state.completed:
            self.log("no trial completed: nothing to recommend")
            return None
        rec = self.strategy.recommend()
        capped = [d for d, w in rec.mixture.as_dict().items() if (self.state.caps or {}).get(d, 1.0) < 1.0 and w >= self.state.caps[d] - 1e-4]
        if capped:  # the optimum may lie beyond: more data for these domains would let the mixture move
            rec.notes.append("at its data cap (data.max_epochs): " + ", ".join(f"{d} {self.state.caps[d]:.3f}" for d in capped))
        self._record("recommended", **rec.to_json())
        (self.dir / REPORT).mkdir(exist_ok=True)
        write_json_atomic(self.dir / REPORT / "recommendation.json", rec.to_json())
        return rec


def _options_key(options: dict[str, Any] | None) -> str:
    """Trial options in a comparable form (journaled options come back from JSON)."""
    return json.dumps(options or {}, sort_keys=True)


def _weight_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """max |a_d - b_d| over the domains: the distance `budget.weight_precision` bounds."""
    return max(abs(a[d] - b[d]) for d in b)


def _fault_hook() -> list | None:
    """Fault injection for crash tests: MIXSWEEP_FAULT_KILL_AFTER=<event>:<n> SIGKILLs the controller
    right after journaling its n-th <event> (e.g. trial_completed:2, between a result and the next ask).
    Besides journal events, `result_written` kills it after a trial's result.json is written and before
    its `trial_completed` is journaled (the window resume closes by adopting the result)."""
    spec = os.environ.get("MIXSWEEP_FAULT_KILL_AFTER")
    if not spec:
        return None
    event, _, n = spec.partition(":")
    return [event, int(n or 1)]


def _fault_point(hook: list | None, point: str) -> None:
    """Count down the fault hook at a point that is not a journal event; SIGKILL at zero."""
    if hook and hook[0] == point:
        hook[1] -= 1
        if hook[1] == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def _reason(err: BaseException) -> str:
    """One line saying why a trial failed (the user's exception, not Ray's wrapping of it)."""
    cause = getattr(err, "cause", None) or err
    if died(err):
        return f"actor died: {str(err).strip().splitlines()[0][:300]}"
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1][:300] if text else ''}"
