"""TrialRunner: the one place where trials run.

A caller (the sweep's ask/tell loop, the scale ladder, any later stage) submits `Job`s; the runner starts
each on a trainer actor when a slot is free, streams what it reports into the journal, and hands back an
`Ended` for every trial that completed or failed for good. Everything in between is the runner's alone,
so every caller's trials get the same guarantees:

- one attempt at a time per trial; `trial_started`/`trial_placed`/`trial_progress` journaled, progress
  also appended to the trial's `progress.jsonl`;
- a `StopRule` sees every progress report and may end the trial (the divergence bound; kept apart from
  what to try next, the way Ray Tune keeps schedulers apart from searchers);
- an attempt whose process or node died, or that hung past its deadline, is re-queued (`trial_requeued`)
  and started again after a back-off, up to `max_attempts` starts, then fails;
- a trainer that raises, ends without a result, or returns losses that are missing or non-finite fails;
- a result is written to `trials/<id>/result.json` before `trial_completed` is journaled (resume adopts a
  result the journal missed), and a trial already final in the journal is never started again.

Trainer actors are long-lived: an actor whose trial completed goes back to a pool and runs the next trial
with the same resources, so process start-up (Ray worker, imports) leaves the critical path. A fresh
process is started after any failure (a trainer thread may still run, memory may be corrupt) and for
resources no idle actor has. `reuse_actors=False` gives the old one-process-per-trial behaviour, kept as
the baseline of benchmarks/orchestration.py.

Why not `ray.util.ActorPool`: it maps one-shot tasks over a fixed set of actors; trials are streaming
generators that end at different times, may need their actor killed (hung, diverged) and replaced, and
are keyed by resources.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import ray

from orchestrator.dispatch import Resources, died, start_actor, stop
from orchestrator.state import SweepState
from orchestrator.sweepdir import trial_dir, write_json_atomic
from orchestrator.trial import Placement, Progress, TrialResult, message_from_json

# What a trainer may hand back for a strategy besides losses (TrialResult.info keys), journaled with the
# completion so resume tells it again: expert log-probabilities, DoReMi's reference and averaged weights.
ARTIFACTS = ("token_logprobs", "final_weights", "online")


class StopRule(Protocol):
    """Decides, from a trial's progress report, whether it must stop now; returns why, or None."""

    def check(self, progress: Progress) -> str | None: ...


@dataclass(frozen=True)
class DivergenceBound:
    """Stop a trial whose losses turn non-finite or exceed `max_loss` (nats/token; None: only non-finite)."""

    max_loss: float | None = None

    def check(self, progress: Progress) -> str | None:
        bad = {d: v for d, v in progress.losses.items() if not math.isfinite(v) or (self.max_loss and v > self.max_loss)}
        if not bad:
            return None
        return f"diverged at step {progress.step}: losses {bad}" + (f" (bound {self.max_loss:.2f})" if self.max_loss else "")


@dataclass(frozen=True)
class Job:
    """One trial as submitted: what the trainer actor's `run` receives, and where and how long it may run."""

    trial: str
    mixture: dict[str, float]
    request: Any  # the trainer's request (workers.protocol.TrialRequest as JSON)
    data: Any  # what the trainer reads: token shards' locations, the replay model's arrays, or None
    resources: Resources
    timeout_s: float | None = None  # wall seconds after which an attempt counts as hung
    result_fields: dict[str, Any] = field(default_factory=dict)  # written into result.json beside the result


@dataclass(frozen=True)
class Ended:
    """A trial that completed (result set) or failed for good (reason set)."""

    trial: str
    mixture: dict[str, float]
    result: TrialResult | None = None
    reason: str | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Attempt:
    job: Job
    actor: Any
    name: str  # the actor's name (journaled with trial_started)
    started: float  # time.time() of this attempt's start
    deadline: float  # time.time() after which it counts as hung


class ActorPool:
    """Trainer actors kept between trials, per resource shape (see the module docstring)."""

    def __init__(self, namespace: str | None, reuse: bool = True) -> None:
        self.namespace, self.reuse = namespace, reuse
        self.idle: dict[Resources, list[tuple[Any, str]]] = {}
        self.started = 0  # processes started so far (benchmarks and tests read it)

    def acquire(self, resources: Resources, trial: str, attempt: int) -> tuple[Any, str]:
        """An idle actor with these resources, or a new one; returns (actor, its name)."""
        if self.reuse and self.idle.get(resources):
            return self.idle[resources].pop()
        self.started += 1
        # A pooled actor serves many trials: it is named by its place in the pool. One per trial keeps
        # the trial's name, so the dashboard shows which trial holds which GPU either way (trial_started
        # journals the actor's name and the task is named after the trial).
        name = f"trainer-{self.started}" if self.reuse else (f"trial-{trial}" if attempt == 1 else f"trial-{trial}-{attempt}")
        return start_actor(name, resources, self.namespace), name

    def release(self, actor: Any, name: str, resources: Resources, healthy: bool) -> None:
        """Back to the pool after a completed trial; killed after anything else."""
        if self.reuse and healthy:
            self.idle.setdefault(resources, []).append((actor, name))
        else:
            stop(actor)

    def close(self) -> None:
        for actors in self.idle.values():
            for actor, _ in actors:
                stop(actor)
        self.idle.clear()


class TrialRunner:
    """Runs submitted jobs, at most `concurrency` at a time, journaling every step through `record`.

    `record(event, **fields) -> record` appends to the journal and folds the event into `state` (the
    runner reads attempts and statuses from it); `on_point(name)` is called at points that are not journal events (crash tests)."""

    # Back-off before restarting a died or hung attempt: a lost node is only marked dead after missed
    # heartbeats, and a retry scheduled before that lands on it again.
    BACKOFF_S, BACKOFF_MAX_S = 5.0, 30.0

    def __init__(self, *, record: Callable[..., dict], state: SweepState, sweep_dir: Path, concurrency: int,
                 max_attempts: int, required: tuple[str, ...] = (), stop_rule: StopRule | None = None,
                 namespace: str | None = None, reuse_actors: bool = True,
                 on_point: Callable[[str], None] | None = None) -> None:
        self.record, self.state, self.dir = record, state, Path(sweep_dir)
        self.concurrency, self.max_attempts, self.required = concurrency, max_attempts, tuple(required)
        self.stop_rule = stop_rule or DivergenceBound()
        self.on_point = on_point or (lambda name: None)
        self.pool = ActorPool(namespace, reuse_actors)
        self.running: dict[Any, _Attempt] = {}  # streaming generator -> attempt
        self.queue: list[tuple[float, Job]] = []  # (earliest start, job), in submission order

    # ----------------------------------------------------------------------------- what callers see

    def submit(self, job: Job) -> None:
        """Queue a trial. One already final in the journal, queued or running is not queued again, so a
        caller may submit every trial the journal holds as unfinished (a resumed sweep, a ladder rung)."""
        if self.state.trial(job.trial).status.is_final or job.trial in self._in_hand():
            return
        self.queue.append((0.0, job))

    def _in_hand(self) -> set[str]:
        return {job.trial for _, job in self.queue} | {a.job.trial for a in self.running.values()}

    def recover(self, job: Job, reason: str) -> Ended | None:
        """Submit a trial a stopped controller left running: re-queued as a died attempt (or failed when
        it used all its attempts), with no back-off: its process went with the controller, not with a
        node that Ray has yet to mark dead."""
        return self._requeue_or_fail(job, reason, backoff=False)

    def free_slots(self) -> int:
        """Slots neither running nor promised to a queued trial."""
        return self.concurrency - len(self.running) - len(self.queue)

    def busy(self) -> bool:
        return bool(self.running or self.queue)

    def running_trials(self) -> list[str]:
        return sorted(a.job.trial for a in self.running.values())

    def pending_mixtures(self) -> list[dict[str, float]]:
        """Mixtures of trials running or queued (a strategy's pending points)."""
        return [a.job.mixture for a in self.running.values()] + [job.mixture for _, job in self.queue]

    def poll(self, timeout_s: float = 1.0) -> list[Ended]:
        """Start what may start, wait up to `timeout_s` for messages, take every one already waiting,
        enforce deadlines; return the trials that ended."""
        ended: list[Ended] = []
        ended += self._start_queued()
        if not self.running:
            if self.queue:  # only retries waiting out their back-off
                time.sleep(min(0.2, timeout_s))
            return ended
        ready, rest = ray.wait(list(self.running), num_returns=1, timeout=timeout_s)
        if ready and rest:  # take everything already waiting, so one ask fills many slots
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        for gen in ready:
            if gen in self.running:  # not ended by an earlier message of this batch
                ended += self._advance(gen)
        ended += self._check_deadlines()
        return ended

    def close(self) -> None:
        """Stop every actor, running or pooled (results already journaled are kept)."""
        for attempt in self.running.values():
            stop(attempt.actor)
        self.running.clear()
        self.pool.close()

    # ------------------------------------------------------------------------------- the life cycle

    def _start_queued(self) -> list[Ended]:
        ended, now, waiting = [], time.time(), []
        for not_before, job in self.queue:
            if len(self.running) >= self.concurrency or now < not_before:
                waiting.append((not_before, job))
                continue
            out = self._start(job)
            if out is not None:
                ended.append(out)
        self.queue = waiting
        return ended

    def _start(self, job: Job) -> Ended | None:
        t = self.state.trial(job.trial)
        if t.attempts >= self.max_attempts:  # re-queued by a controller that stopped before failing it
            return self._failed(job, f"no attempts left ({t.attempts} of {self.max_attempts})", retryable=True)
        attempt = t.attempts + 1
        trial_dir(self.dir, job.trial).mkdir(parents=True, exist_ok=True)
        actor, name = self.pool.acquire(job.resources, job.trial, attempt)
        self.record("trial_started", trial=job.trial, attempt=attempt, actor=name)
        # The task carries the trial's name, so the dashboard's task list says which trial an actor runs.
        gen = actor.run.options(name=f"trial-{job.trial}").remote(job.request, job.data)
        now = time.time()
        self.running[gen] = _Attempt(job, actor, name, now, now + (job.timeout_s or math.inf))
        return None

    def _advance(self, gen: Any) -> list[Ended]:
        """Take the next message a trial streamed: placement, progress, its result, or its failure."""
        run = self.running[gen]
        try:
            message = message_from_json(ray.get(next(gen)))
        except StopIteration:
            return [self._end_failed(gen, "the trainer ended without a result")]
        except Exception as err:
            if died(err):
                self._drop(gen, healthy=False)
                out = self._requeue_or_fail(run.job, failure_reason(err))
                return [out] if out else []
            return [self._end_failed(gen, failure_reason(err))]
        if isinstance(message, TrialResult):
            return [self._complete(gen, message)]
        if isinstance(message, Placement):
            self.record("trial_placed", trial=run.job.trial, node_id=message.node_id, pid=message.pid, gpus=message.gpus)
            return []
        record = self.record("trial_progress", trial=run.job.trial, step=message.step, tokens=message.tokens,
                             losses=message.losses, **({"weights": message.weights} if message.weights else {}),
                             elapsed_s=round(message.elapsed_s, 3),
                             **({"loss_stderr": message.loss_stderr} if message.loss_stderr else {}),
                             **({"tokens_per_s": round(message.tokens_per_s, 1)} if message.tokens_per_s else {}))
        with open(trial_dir(self.dir, run.job.trial) / "progress.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        reason = self.stop_rule.check(message)
        return [self._end_failed(gen, reason)] if reason else []

    def _complete(self, gen: Any, result: TrialResult) -> Ended:
        run = self.running[gen]
        missing = [d for d in self.required if d not in result.losses]
        if missing or not result.is_finite():
            return self._end_failed(gen, f"invalid result: missing {missing}" if missing else f"non-finite losses {result.losses}")
        # The actor yielded its last message; it goes back to the pool while its generator winds down.
        self._drop(gen, healthy=True)
        job = run.job
        body = {"trial": job.trial, "mixture": job.mixture, **job.result_fields, **result.to_json()}
        body.pop("kind")
        write_json_atomic(trial_dir(self.dir, job.trial) / "result.json", body)
        self.on_point("result_written")  # crash tests: a result the journal has not seen
        artifacts = {k: result.info[k] for k in ARTIFACTS if k in result.info}
        self.record("trial_completed", trial=job.trial, losses=result.losses, loss_stderr=result.loss_stderr,
                    tokens=result.tokens, steps=result.steps,
                    wall_s=round(time.time() - run.started, 3), **({"artifacts": artifacts} if artifacts else {}))
        return Ended(job.trial, job.mixture, result=result, artifacts=artifacts)

    def _check_deadlines(self) -> list[Ended]:
        ended, now = [], time.time()
        for gen, run in list(self.running.items()):
            if now > run.deadline:
                self._drop(gen, healthy=False)
                out = self._requeue_or_fail(run.job, f"hung: no result after {now - run.started:.0f} s "
                                                     f"(timeout {run.job.timeout_s:.0f} s)")
                if out:
                    ended.append(out)
        return ended

    def _requeue_or_fail(self, job: Job, reason: str, backoff: bool = True) -> Ended | None:
        """An attempt died or hung: queue the trial again (any node) unless it used all its attempts."""
        attempts = self.state.trial(job.trial).attempts
        if attempts < self.max_attempts:
            self.record("trial_requeued", trial=job.trial, attempt=attempts, reason=reason)
            wait = min(self.BACKOFF_MAX_S, self.BACKOFF_S * attempts) if backoff else 0.0
            self.queue.append((time.time() + wait, job))
            return None
        return self._failed(job, f"{reason} (attempt {attempts} of {self.max_attempts})", retryable=True)

    def _end_failed(self, gen: Any, reason: str) -> Ended:
        job = self.running[gen].job
        self._drop(gen, healthy=False)
        return self._failed(job, reason)

    def _failed(self, job: Job, reason: str, retryable: bool = False) -> Ended:
        """Journal the failure; `retryable`: every attempt died or hung (the machine failed, not the mixture)."""
        self.record("trial_failed", trial=job.trial, reason=reason, **({"retryable": True} if retryable else {}))
        return Ended(job.trial, job.mixture, reason=reason)

    def _drop(self, gen: Any, healthy: bool) -> None:
        run = self.running.pop(gen)
        self.pool.release(run.actor, run.name, run.job.resources, healthy)


def failure_reason(err: BaseException) -> str:
    """One line saying why a trial failed (the user's exception, not Ray's wrapping of it)."""
    cause = getattr(err, "cause", None) or err
    if died(err):
        return f"actor died: {str(err).strip().splitlines()[0][:300]}"
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1][:300] if text else ''}"


class FaultHook:
    """Fault injection for crash tests: MIXSWEEP_FAULT_KILL_AFTER=<point>:<n> SIGKILLs this process the
    n-th time <point> is passed: a journal event (e.g. trial_completed:2, between a result and the next
    ask) or `result_written` (after a trial's result.json, before its `trial_completed`: the window resume
    closes by adopting the result)."""

    def __init__(self, setting: str | None = None) -> None:
        setting = os.environ.get("MIXSWEEP_FAULT_KILL_AFTER") if setting is None else setting
        point, _, n = (setting or "").partition(":")
        self.point, self.left = point or None, int(n or 1)

    def __call__(self, point: str) -> None:
        if self.point == point:
            self.left -= 1
            if self.left == 0:
                os.kill(os.getpid(), signal.SIGKILL)
