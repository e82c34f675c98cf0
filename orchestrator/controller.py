"""The controller: the sweep's loop, run on the Ray head (the driver).

Design:
- The journal is the truth. Every decision is appended (fsync'd) to `journal.jsonl` before it is
  acted on, and the controller's own view of the sweep is the same fold (`SweepState.apply`) that
  `status` and `report` compute from disk. Nothing a user sees comes from a live process.
- The controller is the ask/tell loop over a TrialRunner (orchestrator/runner.py), which alone starts,
  streams, stops, retries and completes trials, on long-lived trainer actors, `budget.concurrency` at a
  time. The strategy is asked for as many mixtures as the runner has free slots, with the running and
  queued mixtures as pending, and is told every result and every failure the runner hands back.
- A trial is addressed by a hash of (mixture, proxy config, seed): a mixture proposed again (within
  `budget.weight_precision`) is trained once, its result is told again (`trial_reused`) without
  spending budget, and the strategy is asked again; a replicate must be asked for (trial option).
- Faults are the runner's: a trial whose actor dies or hangs is re-queued up to `budget.max_attempts`
  starts (resuming from its checkpoint where the trainer wrote one); one that raises or diverges ends
  FAILED with the reason, is told to the strategy and counts against the budget. The sweep goes on.
- Resume replays the journal, re-tells the outcomes to a fresh strategy in journal order, re-queues
  the trials that were running, and never re-trains a trial whose result exists. A lock with a
  heartbeat keeps a second controller off the same directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from orchestrator import __version__
from orchestrator.dispatch import placement, sweep_namespace
from orchestrator.jobs import JobFactory
from orchestrator.journal import Journal, load, read_events
from orchestrator.lock import SweepLock
from orchestrator.metrics import SweepMetrics
from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.fidelity import fidelity_plan
from orchestrator.spec import SpecError, SweepSpec
from orchestrator.state import SweepState
from orchestrator.storage import SweepStore
from orchestrator.runner import DivergenceBound, Ended, FaultHook, Job, TrialRunner
from orchestrator.sweepdir import JOURNAL, REPORT, SPEC, STRATEGY, read_frozen_spec, write_json_atomic
from orchestrator.strategies import Recommendation, Strategy, build_strategy
from orchestrator.strategies.contract import Artifacts, Outcome
from orchestrator.export import refresh_exports
from orchestrator.resume import adoptable_results, adopted_completion, check_not_orphaned, check_resumable, retell
from orchestrator.trial import TrialStatus


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
        self.state = SweepState(self.objective)
        self.strategy.set_replicates(spec.budget.replicates.seeds, spec.budget.replicates.top_k, spec.budget.trials, lambda: self.state)
        self.jobs = JobFactory(spec, self.store, log=log)
        check_requirements(self.strategy, spec, self.objective, log)
        self.plan = fidelity_plan(spec)
        if self.plan is not None:
            self.strategy.fidelities = self.plan
        self.fault = FaultHook()
        self._strategy_saved = 0.0
        self.target_run = None  # the target run's data caps, once the data is prepared (_prepare_data)
        self._data_journal: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------ setup

    def _prepare_data(self) -> int:
        """Prepare what trials read (JobFactory.prepare: token shards or the replay simulator) and cap the
        mixture space by the data (`data.max_epochs`); returns the vocabulary size (0 without a tokenizer).
        Data errors end here, before anything is written."""
        prepared = self.jobs.prepare()
        from orchestrator.strategies.base import capped_bounds
        from orchestrator.target import combined_caps, target_caps
        from workers.data import DataError

        caps = None
        if prepared.domain_tokens is not None:
            from orchestrator.mixture import token_caps

            tokens = prepared.domain_tokens
            self.strategy.domain_tokens = tokens
            try:
                caps = token_caps(tokens, self.spec.largest_trial_tokens(), self.spec.data.max_epochs)
            except ValueError as err:
                raise DataError(str(err)) from None
            self._data_journal = {"domain_tokens": tokens, "caps": caps, "max_epochs": self.spec.data.max_epochs}
        # The production run's caps (orchestrator/target.py): SpecError, one line, before anything starts.
        # `_free_bounds`: the space without them, where the unconstrained optimum is searched.
        self.target_run = target_caps(self.spec, prepared.domain_tokens)
        try:
            self._free_bounds = capped_bounds(self.domains, self.strategy.bounds, caps) if caps else self.strategy.bounds
            if self.target_run is not None:
                caps = combined_caps(caps, self.target_run)
                self._data_journal = {**self._data_journal, "caps": caps, "max_epochs": self.spec.data.max_epochs,
                                      **self.target_run.journal()}
            if caps:
                self.strategy.set_caps(caps)
        except ValueError as err:
            if isinstance(err, SpecError):
                raise
            fix = "; or declare more target.available_tokens / lower target.tokens" if self.target_run is not None else ""
            raise DataError(f"{err}{fix}") from None
        if prepared.loss_domains is not None:  # the replay simulator answers only its table's loss columns
            from orchestrator.runs import RunsTableError

            missing = sorted(set(self.objective.coefficients) - set(prepared.loss_domains))
            if missing:
                raise RunsTableError(f"`objective`: reads {missing}, which trainer.runs has no loss column for; "
                                     f"use domains of {list(prepared.loss_domains)} (objective.domains for mean or worst)")
        return prepared.vocab

    def _prepare_fidelities(self) -> None:
        """A multi-fidelity sweep prepares every fidelity's data up front (a replay table is fitted once per
        fidelity), so a table that cannot answer the objective stops the sweep before it starts."""
        for f in self.spec.fidelities or []:
            prepared = self.jobs.prepare(fidelity=f.name)
            missing = sorted(set(self.objective.coefficients) - set(prepared.loss_domains or self.objective.coefficients))
            if missing:
                from orchestrator.runs import RunsTableError

                raise RunsTableError(f"`fidelities.{f.name}.runs`: has no loss column for {missing}, which the objective reads; "
                                     "give a table with them or another objective")

    def _max_loss(self, vocab: int) -> float | None:
        if self.spec.budget.max_loss is not None:
            return self.spec.budget.max_loss
        return 2.0 * math.log(vocab) if vocab else None

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
        vocab = self._prepare_data()  # data errors end here, before anything is written
        self._prepare_fidelities()
        seeds = self._seed_runs()
        self.lock = SweepLock(self.dir)
        self.lock.acquire()
        (self.dir / "trials").mkdir(parents=True, exist_ok=True)
        frozen = {"mixsweep_version": __version__, "spec_digest": self.spec.digest(), **self.spec.model_dump(mode="json")}
        (self.dir / SPEC).write_text(yaml.safe_dump(frozen, sort_keys=False))
        self.journal = Journal(self.dir / JOURNAL)
        self._seed_strategy(seeds)
        return self._drive(vocab, "sweep_started", {})

    def resume(self) -> Recommendation | None:
        """Continue a stopped sweep: replay, adopt results the journal missed, re-tell, re-queue what was
        running, and go on."""
        self.store.pull()
        where = self.store.location
        if not (self.dir / JOURNAL).exists():
            check_not_orphaned(self.dir, [], where)
            raise SweepDirExists(f"{where} holds no sweep to resume (no {JOURNAL}); `mixsweep run` starts one")
        check_not_orphaned(self.dir, list(read_events(self.dir / JOURNAL, [])), where)  # checked, before the lock
        frozen = read_frozen_spec(self.dir)  # strictly, as every spec: duplicate keys are errors
        changes = check_resumable(frozen, self.spec.model_dump(mode="json"))
        vocab = self._prepare_data()
        self._prepare_fidelities()
        seeds = self._seed_runs()
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
        self._seed_strategy(seeds)  # in the same order as the first run: seed runs, then the journal's outcomes
        retell(self.strategy, events, self.state)  # adopted results too, in journal order
        rec = self._drive(vocab, "sweep_resumed", {"changes": {k: list(v) for k, v in changes.items()}})
        refresh_exports(self.dir, log=self.log)  # exports made before the resume would describe an older sweep
        return rec

    def _adopt_results(self) -> list[dict]:
        """Journal the completion of every trial whose result.json was written but whose `trial_completed`
        was not (a crash between the two): it is finished, never trained again. Returns the events."""
        adopted = []
        for t, body in list(adoptable_results(self.dir, self.state, self.objective.coefficients)):
            record = self.journal.append("trial_completed", **adopted_completion(body))
            self.state.apply(record)
            adopted.append(record)
            self.log(f"resume: adopted the result of {t.id} (written before a crash, never journaled)")
        return adopted

    # -------------------------------------------------------------------------------------- loop

    def _drive(self, vocab: int, opening: str, extra: dict) -> Recommendation | None:
        self.where = placement(self.spec.resources, self.cpu_fallback)
        if self.where.note:
            self.log(f"warning: {self.where.note}")
        self.jobs.resources = self.where
        self.metrics = SweepMetrics(self.spec.name)
        self.runner = self.make_runner(DivergenceBound(self._max_loss(vocab)))
        with _signals_interrupt(self.store.location):
            return self._loop(opening, extra)

    def make_runner(self, stop_rule: DivergenceBound) -> TrialRunner:
        """The runner of this sweep's trials (the ladder's too), journaling through `_record`."""
        return TrialRunner(record=self._record, state=self.state, sweep_dir=self.dir,
                           concurrency=self.spec.budget.concurrency, max_attempts=self.spec.budget.max_attempts,
                           required=tuple(self.objective.coefficients), stop_rule=stop_rule,
                           namespace=sweep_namespace(self.store.location), reuse_actors=self.spec.resources.reuse_actors,
                           on_point=self.fault)

    def _loop(self, opening: str, extra: dict) -> Recommendation | None:
        try:
            self._record(opening, name=self.spec.name, domains=list(self.domains), budget=self.spec.budget.trials,
                         concurrency=self.spec.budget.concurrency, objective=self.objective.description,
                         spec_digest=self.spec.digest(), strategy=self.spec.strategy.kind,
                         placement={"num_cpus": self.where.num_cpus, "num_gpus": self.where.num_gpus},
                         lock_taken_over=self.lock.took_over, **self._data_journal, **self._fidelity_journal(), **extra)
            for t in self.state.by_status(TrialStatus.RUNNING):  # left running by a stopped controller
                self._told(self.runner.recover(self._job(t), "the controller stopped while it ran"))
            for t in sorted(self.state.by_status(TrialStatus.PROPOSED), key=lambda t: t.proposed_seq):
                self.runner.submit(self._job(t))  # proposed or re-queued before the stop
            while True:
                self.lock.beat()
                self.store.push()
                self._fill()
                if not self.runner.busy():
                    break
                for ended in self.runner.poll(timeout_s=1.0):
                    self._told(ended)
            rec = self._recommend()
            if self.spec.ladder is not None and rec is not None:
                # Scale ladder: re-train the best mixtures and baselines at larger presets, through the same runner.
                self.ladder_stage().run(self.spec.ladder.presets, self.spec.ladder.top_k, self.spec.ladder.baselines)
            self._record("sweep_finished", completed=len(self.state.completed), reused=self.state.reused)
            return rec
        except (SweepInterrupted, KeyboardInterrupt) as err:  # SIGINT/SIGTERM, or a Ctrl-C outside the handler
            self._record("sweep_interrupted", reason=str(err) or "interrupted", running=self.runner.running_trials())
            raise
        except SystemError as err:
            # The signal's exception raised inside Ray's C extension (CoreWorker.wait) comes back wrapped
            # as "returned a result with an exception set": it is still the interruption.
            cause = err.__cause__ or err.__context__
            if not isinstance(cause, SweepInterrupted):
                raise
            self._record("sweep_interrupted", reason=str(cause), running=self.runner.running_trials())
            raise cause from None
        finally:
            self._save_strategy(force=True)
            self.runner.close()
            self.journal.close()
            self.lock.release()
            self.store.push(force=True)
            self.store.remove("controller.lock")

    def ladder_stage(self, scale_model: bool = False):
        """The scale ladder of this sweep, submitting to this sweep's runner (orchestrator/ladder.py)."""
        from orchestrator.ladder import LadderStage

        return LadderStage(self.spec, self.state, self.jobs, self.runner, self._record, self.lock.beat, self.log,
                           strategy=self.strategy, scale_model=scale_model)

    def _job(self, t) -> Job:
        """The Job of a journaled sweep trial. Its options are those journaled with the proposal, so a retry
        or a resumed sweep runs the trial as it was proposed (a journal from before options were recorded
        has none, and the trial runs without)."""
        return self.jobs.job(t.id, Mixture.from_dict(t.mixture, self.domains).as_dict(), t.options or {})

    def _fidelity_journal(self) -> dict[str, Any]:
        """`sweep_started` fields of a multi-fidelity sweep: each fidelity's cost and scale, the target and
        the cost budget (SweepState reads them: cost spent, the best run at the target)."""
        if self.plan is None:
            return {}
        return {"fidelities": {f.name: {"cost": f.cost, "params": f.params, "tokens": f.tokens} for f in self.plan.levels},
                "target_fidelity": self.plan.target, "budget_cost": self.plan.budget_cost}

    def _told(self, ended: Ended | None) -> None:
        """Tell the strategy how a trial ended: an Outcome with the losses and what the trial wrote for it
        (expert log-probabilities, DoReMi's weights; journaled with the completion, so resume tells the
        same), or the failure, `retryable` when the machine failed rather than the mixture."""
        if ended is None:
            return
        mixture = Mixture.from_dict(ended.mixture, self.domains)
        if ended.result is not None:
            self.strategy.tell(Outcome(mixture, ended.result.losses, ended.result.loss_stderr,
                                       Artifacts.from_json(ended.artifacts), self.state.trial(ended.trial).fidelity))
        else:
            self.strategy.tell_failed(mixture, ended.reason or "failed", retryable=self.state.trial(ended.trial).retryable)
        self._save_strategy()

    def _seed_runs(self):
        """The spec's seed runs (earlier runs of the same domains, at the sweep's own scale), read and checked
        before anything is written; None without them."""
        path = self.spec.strategy.seed_runs
        if path is None:
            return None
        from orchestrator.runs import RunsTableError, read_runs

        table = read_runs(Path(path).expanduser())
        if set(table.domains) != set(self.domains):
            raise RunsTableError(f"strategy.seed_runs {path}: its weight columns {list(table.domains)} must be the sweep's domains {list(self.domains)}")
        if table.multi_scale:  # a loss at another model size is another function (an export with ladder rows)
            raise RunsTableError(f"strategy.seed_runs {path}: its rows are of several sizes (scale.params/scale.tokens); "
                                 "keep only the rows at the sweep's own size")
        return table

    def _seed_strategy(self, table) -> None:
        """Tell the strategy the seed runs; they spend no budget."""
        if table is None:
            return
        for mixture, losses in zip(table.mixtures(), table.loss_dicts()):
            self.strategy.tell(Outcome(Mixture.from_dict(mixture.as_dict(), self.domains), losses))
        self.log(f"strategy seeded with {len(table)} runs from {self.spec.strategy.seed_runs}")

    def _record(self, event: str, **fields: Any) -> dict:
        # Progress and placement are not fsync'd (measured: 3.3 -> 0.57 ms per progress message);
        # the next decision's fsync carries them, and resume never needs them.
        record = self.journal.append(event, durable=event not in ("trial_progress", "trial_placed"), **fields)
        self.state.apply(record)
        self.metrics.update(record, self.state)
        self.on_event(record, self.state)
        if event in ("trial_completed", "trial_failed", "sweep_finished"):
            self.store.push(force=True)
        self.fault(event)
        return record

    def _budget_left(self) -> int:
        # Repeats are answered from known results and spend nothing; only journals written before
        # `budget.weight_precision` hold reuses that did (SweepState.reused_budget), and they still count.
        left = self.spec.budget.trials - len(self.state.trials) - self.state.reused_budget
        cost_left = self._cost_left()
        if cost_left is not None and cost_left < min(f.cost for f in self.plan.levels) - 1e-9:
            return 0  # not even the cheapest fidelity fits in what is left of budget.cost
        return left

    def _cost_left(self) -> float | None:
        """What is left of `budget.cost` (None without one). A trial spends its fidelity's cost when proposed."""
        if self.plan is None or self.plan.budget_cost is None:
            return None
        return self.plan.budget_cost - self.state.cost_spent

    # The strategy is asked at most ASK_ROUNDS times per fill, each round only for the slots that the
    # previous round's repeats left free. When the last round still starts nothing, the strategy has
    # nothing new to say until a trial ends, so it is not asked again before then (`_asked_dry_at`: the
    # number of ended trials at that time). Repeats thus spend no budget, the asks are bounded, and a
    # strategy that only repeats itself ends with the trials in flight (docs/decisions.md).
    ASK_ROUNDS = 3
    _asked_dry_at: int | None = None

    def _fill(self) -> None:
        """Ask the strategy for the runner's free slots (re-queued trials hold theirs)."""
        n = min(self.runner.free_slots(), self._budget_left())
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
        self.strategy.cost_left = self._cost_left()
        proposals = self.strategy.ask(n, [Mixture.from_dict(m, self.domains) for m in self.runner.pending_mixtures()])
        proposal_s = round(time.perf_counter() - t0, 4)
        started = repeats = 0
        for proposal in proposals[:n]:
            # Trainer options the strategy wants for this trial (experts' log-probabilities, DoReMi's
            # reference and proxy runs, a replicate) are part of its id: DoReMi's proxy run at the reference
            # mixture is not the reference run. Without options the id is what it always was.
            mixture, options = proposal.mixture, dict(proposal.options)
            if self.plan is not None:
                # A strategy that does not choose fidelities trains at the target; one that does must name one.
                options.setdefault("fidelity", self.plan.target)
                if options["fidelity"] not in {f.name for f in self.plan.levels}:
                    raise ProposalOutOfSpace(f"strategy {self.spec.strategy.kind} proposed fidelity {options['fidelity']!r}, which is "
                                             f"not one of `fidelities`; this is a bug: report it with the spec (nothing was journaled)")
                left = self._cost_left()
                if left is not None and self.plan.level(options["fidelity"]).cost > left + 1e-9:
                    continue  # does not fit in budget.cost; asked again next round, when a cheaper one may
            tid = self.jobs.trial_id(mixture, options)
            known = self._already_run(tid, mixture, options)
            if known is not None:
                self._reuse(known, mixture)
                repeats += 1
                continue
            self._check_in_space(mixture)
            self._record("trial_proposed", trial=tid, mixture=mixture.as_dict(), proposal_s=proposal_s,
                         strategy=self.spec.strategy.kind, options=options)
            self.runner.submit(self.jobs.job(tid, mixture.as_dict(), options))
            started += 1
        return started, repeats

    def _check_in_space(self, mixture: Mixture) -> None:
        """Stop, in one line, when a proposal lies outside the strategy's space (its floor and bounds where
        it has them, and the data caps): a strategy bug must not become a journaled, resumable trial."""
        bounds, caps = self.strategy.bounds, self.strategy.caps or {}
        for i, (d, w) in enumerate(mixture.as_dict().items()):
            lower, upper = float(bounds.lower[i]), min(float(bounds.upper[i]), caps.get(d, 1.0))
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
            self.strategy.tell(Outcome(mixture, known.losses, known.loss_stderr, fidelity=known.fidelity))
        elif known.status == TrialStatus.FAILED:
            self.strategy.tell_failed(mixture, known.reason or "failed before", retryable=known.retryable)

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
        target = self.target_run
        if target is not None:  # an observed seed run may lie beyond the target caps; no proposal does
            from orchestrator.target import feasible_or_best_inside

            rec = feasible_or_best_inside(self.strategy, rec, self.strategy.caps or {}) or rec
        capped = [d for d, w in rec.mixture.as_dict().items() if (self.state.caps or {}).get(d, 1.0) < 1.0 and w >= self.state.caps[d] - 1e-4]
        if capped:  # the optimum may lie beyond: more data for these domains would let the mixture move
            rec.notes.append("at its data cap (data.max_epochs" + (" at target.tokens" if target is not None else "") + "): "
                             + ", ".join(f"{d} {self.state.caps[d]:.3f}" for d in capped))
        body = rec.to_json()
        if target is not None:  # the feasible and the unconstrained optimum, side by side (orchestrator/target.py)
            from orchestrator.target import optima

            body["target"] = optima(self.strategy, rec, target, self.strategy.caps or {}, self._free_bounds, self.spec.seed)
            rec.notes.append(f"target run: {body['target']['summary']}")
            body["notes"] = rec.notes
        self._record("recommended", **body)
        (self.dir / REPORT).mkdir(exist_ok=True)
        write_json_atomic(self.dir / REPORT / "recommendation.json", body)
        return rec


def check_requirements(strategy: Strategy, spec: SweepSpec, objective: Objective, log: Callable[[str], None]) -> None:
    """SpecError (one line) when the trainer cannot give what the strategy declares it needs
    (`Strategy.requirements`); a warning when the objective needs a reference run the strategy never proposes."""
    needs, kind = strategy.requirements, spec.strategy.kind
    if needs.proxy_trainer and spec.trainer.kind != "proxy":
        raise SpecError(f"`strategy.kind`: {kind} {needs.proxy_trainer}, which only the proxy trainer does; "
                        "use `trainer: {kind: proxy}` or another strategy")
    if needs.domain_tokens and spec.trainer.kind != "proxy":
        raise SpecError(f"`strategy.kind`: {kind} needs the tokens per domain, which only the proxy trainer reads (this "
                        "trainer reads no data); use `trainer: {kind: proxy}`, or strategy `fixed` with `options.weights`")
    if needs.multi_fidelity and not spec.fidelities:
        raise SpecError(f"`strategy.kind`: {kind} chooses the fidelity of each trial; list them under `fidelities:` "
                        "(docs/spec.md) or use gp")
    if spec.fidelities and not needs.multi_fidelity:
        log(f"note: strategy {kind} does not choose fidelities: every trial trains at the target fidelity "
            f"{spec.target_fidelity} (mfgp chooses per trial)")
    if objective.needs_reference and not needs.reference_run:
        log(f"warning: the objective is measured against a run at the reference mixture (`excess`, `max_excess`), "
            f"which strategy {kind} does not propose; until a trial lands there, `excess` is the plain worst loss "
            "and `max_excess` is not checked")


def _options_key(options: dict[str, Any] | None) -> str:
    """Trial options in a comparable form (journaled options come back from JSON)."""
    return json.dumps(options or {}, sort_keys=True)


def _weight_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """max |a_d - b_d| over the domains: the distance `budget.weight_precision` bounds."""
    return max(abs(a[d] - b[d]) for d in b)


def run_ladder_command(spec: SweepSpec, sweep_dir: str, preset: str, top_k: int, baselines: list[str],
                       log: Callable[[str], None] = print, cpu_fallback: bool = True,
                       scale_model: bool = False) -> dict[str, Any] | None:
    """`mixsweep ladder`: re-train a finished sweep's best `top_k` mixtures and baselines at `preset`,
    holding the sweep's lock and appending to its journal (Ray must be initialised)."""
    from orchestrator.ladder import LadderError, check_rung

    base = spec.proxy.preset
    check_rung(base, preset)
    c = Controller(spec, sweep_dir, log=log, cpu_fallback=cpu_fallback)
    c.store.pull()
    _, c.state = load(c.dir / JOURNAL)
    if not c.state.finished:
        raise LadderError(f"the sweep in {sweep_dir} has not finished; `mixsweep resume {sweep_dir}` first")
    c.lock = SweepLock(c.dir)
    c.lock.acquire()
    c.journal = Journal(c.dir / JOURNAL, repair=True, log=log)
    try:
        c.where = c.jobs.resources = placement(spec.resources, cpu_fallback)
        c.metrics = SweepMetrics(spec.name)
        c.runner = c.make_runner(DivergenceBound(c._max_loss(c.jobs.prepare().vocab)))
        return c.ladder_stage(scale_model=scale_model).run([base, preset], top_k, baselines)
    finally:
        if hasattr(c, "runner"):
            c.runner.close()
        c.journal.close()
        c.lock.release()
        c.store.push(force=True)
        c.store.remove("controller.lock")
