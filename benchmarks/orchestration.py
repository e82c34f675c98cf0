"""Orchestration benchmark: how much of the workers' time the real Controller keeps inside trials.

Runs the `synthetic` trainer (sleeps, streams analytic losses) through the real `Controller` on a
local multi-node `ray.cluster_utils.Cluster` whose worker nodes declare GPUs, and prints:

1. journal   `Journal.append` in-process: µs and bytes per event, fsync'd vs flush-only (baseline),
             plus the other per-progress-event work the controller does (progress.jsonl, state fold).
2. live      concurrency 2..64, one real actor process per trial, `resources: {gpus: 1, cpus: 0.01}`:
             utilisation = sum(time inside the trainer) / (concurrency x sweep wall), the per-trial
             slot overhead (actor start, result handling, refill) taken from the journal, the
             controller's own cost per event, and utilisation extrapolated to 60-s trials.
3. progress  many progress events per trial, short trials: events/s the controller absorbs, against
             the journal's fsync ceiling from (1).
4. scale     a 1,000-trial sweep at concurrency 256 (256 declared GPUs) with compressed durations.
             256 live actor processes do not fit on a 2-core machine, so two simulations, both driving
             the real Controller (journal, state, metrics, strategy, strategy.json, trial dirs):
             (a) `ray-hosted`: trials are real Ray streaming generators in real ray.wait, hosted as
                 threads in 4 threaded actors that each hold one node's 64 GPUs (no per-trial actor
                 process: actor start/kill cost is what (2) measures);
             (b) `in-process`: Ray's wait/get replaced by in-process generators and a 0-s trainer, so
                 the wall is the controller's own bookkeeping alone: its saturation throughput.
             Each runs as-is and as a `what-if` of three cheap controller fixes, applied here by
             patching this process only: drain every ready generator per ray.wait; fsync only
             status-changing journal events; write strategy.json at most every 5 s.
5. asks      strategy proposal time: sobol by how many points were asked before; bayesopt (Ax) asked
             offline with synthetic results at 16/64/256 observations (ask(1); ask(1) with 64 pending
             at the first count; ask(q) there with --bayesopt-q).

Run with `--skip journal,progress,scale,asks --concurrency 8,64 --duration 60` to measure 60-s trials
directly (about 5 minutes). Nothing under orchestrator/ is changed; sweep dirs go to a temp dir.

Usage: .venv/bin/python benchmarks/orchestration.py [--quick] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orchestrator.controller as controller_mod
import orchestrator.journal as journal_mod
from orchestrator.controller import Controller
from orchestrator.dispatch import Placement
from orchestrator.journal import Journal, read_events
from orchestrator.mixture import Mixture
from orchestrator.spec import parse_spec
from orchestrator.state import SweepState

DOMAINS = ("a", "b", "c")
TRIAL_S = 60.0  # the trial length, for extrapolation
WHATIF_STRATEGY_S = 5.0  # what-if: strategy.json at most this often (resume re-tells from the journal anyway)


# --------------------------------------------------------------------------------------- helpers

class Timers:
    """Accumulated seconds and counts per key."""

    def __init__(self) -> None:
        self.s: dict[str, float] = defaultdict(float)
        self.n: Counter = Counter()

    def add(self, key: str, seconds: float) -> None:
        self.s[key] += seconds
        self.n[key] += 1

    @contextlib.contextmanager
    def __call__(self, key: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(key, time.perf_counter() - t0)

    def mean_ms(self, key: str) -> float:
        return 1e3 * self.s[key] / self.n[key] if self.n[key] else float("nan")


class TimedController(Controller):
    """The real Controller, with its loop's steps timed (no behaviour changed)."""

    def __init__(self, *args, strategy_every_s: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.timers, self.records, self.last_event = Timers(), 0, ""
        self.strategy_every_s, self._saved_at = strategy_every_s, -float("inf")  # what-if: throttle strategy.json
        self.asks: list[tuple[int, float]] = []  # (n asked, seconds) per strategy.ask
        ask = self.strategy.ask

        def timed_ask(n, pending):
            t0 = time.perf_counter()
            out = ask(n, pending)
            self.asks.append((n, time.perf_counter() - t0))
            return out

        self.strategy.ask = timed_ask

    def _record(self, event, **fields):
        if not getattr(self, "_wrapped", False):  # journal and metrics exist once the loop starts
            self._wrapped = True
            for owner, attr, key in ((self.journal, "append", "journal.append"), (self.metrics, "update", "metrics.update")):
                setattr(owner, attr, self._timed(getattr(owner, attr), key))
        self.records, self.last_event = self.records + 1, event
        with self.timers(f"record:{event}"):
            return super()._record(event, **fields)

    def _timed(self, fn, key: str):
        def wrapper(*args, **kwargs):
            with self.timers(key):
                return fn(*args, **kwargs)

        return wrapper

    def _advance(self, gen) -> None:
        before, t0 = self.records, time.perf_counter()
        super()._advance(gen)
        self.timers.add(f"advance:{self.last_event if self.records != before else 'none'}", time.perf_counter() - t0)

    def _fill(self) -> None:
        with self.timers("fill"):
            super()._fill()

    def _save_strategy(self) -> None:
        if time.perf_counter() - self._saved_at < self.strategy_every_s:
            return
        self._saved_at = time.perf_counter()
        with self.timers("save_strategy"):
            super()._save_strategy()


class TimedRay:
    """Stands in for `ray` inside orchestrator.controller: times wait/get; `drain` is the what-if of
    collecting every generator that is already ready after the first, in the same loop turn."""

    def __init__(self, timers: Timers, drain: bool = False) -> None:
        import ray

        self._ray, self.timers, self.drain = ray, timers, drain

    def wait(self, refs, num_returns=1, timeout=None):
        with self.timers("ray.wait (incl. idle)"):
            ready, rest = self._ray.wait(refs, num_returns=num_returns, timeout=timeout)
            if self.drain and ready and rest:
                more, rest = self._ray.wait(rest, num_returns=len(rest), timeout=0)
                ready = ready + more
        return ready, rest

    def get(self, ref):
        with self.timers("ray.get"):
            return self._ray.get(ref)

    def __getattr__(self, name):
        return getattr(self._ray, name)


@contextlib.contextmanager
def patched(module, **attrs):
    """Set module attributes for the duration (only in this benchmark process)."""
    old = {k: getattr(module, k) for k in attrs}
    for k, v in attrs.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


def make_spec(name: str, concurrency: int, trials: int, duration_s: float, events: int, strategy: str = "sobol"):
    return parse_spec({
        "name": name, "domains": {d: {} for d in DOMAINS},
        "trainer": {"kind": "synthetic", "duration_s": duration_s, "progress_events": events, "noise": 0.0},
        "strategy": {"kind": strategy}, "budget": {"trials": trials, "concurrency": concurrency, "max_attempts": 1},
        "resources": {"gpus": 1, "cpus": 0.01},
    })


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def pct(xs, q: float) -> float:
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


def table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


# --------------------------------------------------------------------------------- 1. journal

class _NoFsync:
    """`os` for orchestrator.journal with fsync a no-op: the flush-only baseline."""

    fsync = staticmethod(lambda fd: None)

    def __getattr__(self, name):
        return getattr(os, name)


class StatusOnlyFsyncJournal(Journal):
    """What-if: fsync only the events that change a trial's status; progress and placement lines are
    flushed (a crash may lose the last few of them, which resume does not need: it re-queues the trial)."""

    def append(self, event, **fields):
        if event in ("trial_progress", "trial_placed"):
            with patched(journal_mod, os=_NoFsync()):
                return super().append(event, **fields)
        return super().append(event, **fields)


def bench_journal(n: int, root: Path) -> dict:
    """Append n trial_progress-shaped events, fsync'd and flush-only, each timed on its own."""
    fields = {"trial": "t" + "0123456789abcdef", "step": 123, "tokens": 123000,
              "losses": {d: 2.0 + 0.123456789 * i for i, d in enumerate(DOMAINS)}, "elapsed_s": 12.345}
    out = {}
    for mode in ("fsync", "flush-only"):
        path = root / f"journal-{mode}.jsonl"
        ctx = patched(journal_mod, os=_NoFsync()) if mode == "flush-only" else contextlib.nullcontext()
        per = []
        with ctx, Journal(path) as j:
            for _ in range(n):
                t0 = time.perf_counter()
                j.append("trial_progress", **fields)
                per.append(time.perf_counter() - t0)
        out[mode] = {"us_mean": 1e6 * statistics.fmean(per), "us_p50": 1e6 * pct(per, 50), "us_p99": 1e6 * pct(per, 99),
                     "bytes_per_event": path.stat().st_size / n}
    # What else the controller does per progress event: append to progress.jsonl (open/close) and fold.
    record = {"seq": 1, "time": time.time(), "event": "trial_progress", **fields}
    t0 = time.perf_counter()
    for _ in range(n):
        with open(root / "progress.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
    out["progress_jsonl_us"] = 1e6 * (time.perf_counter() - t0) / n
    state = SweepState()
    state.apply({"seq": 0, "event": "trial_proposed", "trial": fields["trial"], "mixture": {d: 1 / 3 for d in DOMAINS}})
    t0 = time.perf_counter()
    for _ in range(n):
        state.apply(record)
    out["state_apply_us"] = 1e6 * (time.perf_counter() - t0) / n
    return out


def report_journal(j: dict, n: int) -> None:
    base = j["flush-only"]["us_mean"]
    rows = [[m, j[m]["us_mean"], j[m]["us_p50"], j[m]["us_p99"], j[m]["bytes_per_event"], j[m]["us_mean"] / base,
             1e6 / j[m]["us_mean"]] for m in ("fsync", "flush-only")]
    table(f"journal: Journal.append of {n} trial_progress events, in-process (baseline: flush-only append)",
          ["mode", "µs/event mean", "p50", "p99", "bytes/event", "x baseline", "events/s ceiling"], rows)
    print(f"other per-progress work in the controller: progress.jsonl open+append {j['progress_jsonl_us']:.1f} µs, "
          f"SweepState.apply {j['state_apply_us']:.2f} µs")


# ------------------------------------------------------------------------------------ 2. live

@contextlib.contextmanager
def local_cluster(nodes: int, gpus_per_node: int, cpus_per_node: int):
    """Head without GPUs plus `nodes` worker nodes declaring GPUs (as tests/integration does)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=cpus_per_node, num_gpus=gpus_per_node)
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def timed_launch(timers: Timers):
    real_launch, real_stop = controller_mod.launch, controller_mod.stop

    def launch(*a, **k):
        with timers("launch"):
            return real_launch(*a, **k)

    def stop(actor):
        with timers("stop (ray.kill)"):
            return real_stop(actor)

    return {"launch": launch, "stop": stop}


def run_sweep(spec, sweep_dir: Path, whatif: bool = False, extra_patches: dict | None = None, on_event=None) -> dict:
    """Run the real controller once with timers; return the raw figures. `whatif`: the cheap fixes
    proposed in the report (drain ready generators per ray.wait; fsync status events only; write
    strategy.json at most every WHATIF_STRATEGY_S)."""
    ctl = TimedController(spec, sweep_dir, on_event=on_event, log=lambda s: None,
                          strategy_every_s=WHATIF_STRATEGY_S if whatif else 0.0)
    patches = {"ray": TimedRay(ctl.timers, whatif), **timed_launch(ctl.timers), **(extra_patches or {})}
    if whatif:
        patches["Journal"] = StatusOnlyFsyncJournal
    rss0, cpu0, load0 = rss_mb(), cpu_s(), load()
    t0 = time.perf_counter()
    with patched(controller_mod, **patches):
        ctl.run()
    wall = time.perf_counter() - t0
    if whatif:  # the throttled fix writes strategy.json once more at the end (outside the timing)
        ctl.strategy_every_s = 0.0
        ctl._save_strategy()
    return {"ctl": ctl, "wall": wall, "driver_cpu_s": cpu_s() - cpu0, "rss_mb": rss_mb(), "rss_growth_mb": rss_mb() - rss0,
            "load_before": load0, "load_after": load()}


def journal_breakdown(sweep_dir: Path) -> dict:
    """Per trial, from the journal and result.json: start latency (started -> placed), trainer time,
    result latency (placed + trainer -> completed) and refill gap (completed -> next started)."""
    events = list(read_events(sweep_dir / "journal.jsonl"))
    at: dict[str, dict[str, float]] = defaultdict(dict)
    for e in events:
        if "trial" in e:
            at[e["trial"]].setdefault(e["event"], e["time"])
    trainer = {t: json.loads((sweep_dir / "trials" / t / "result.json").read_text())["wall_s"] for t in at
               if (sweep_dir / "trials" / t / "result.json").exists()}
    placed = sorted((v["trial_started"], v["trial_placed"]) for v in at.values() if "trial_placed" in v)
    start = [b - a for a, b in placed]  # in start order: the first `concurrency` are the first wave
    result = [at[t]["trial_completed"] - at[t]["trial_placed"] - w for t, w in trainer.items()]
    gaps, pending = [], None
    for e in events:
        if e["event"] == "trial_completed":
            pending = pending if pending is not None else e["time"]
        elif e["event"] == "trial_started" and pending is not None:
            gaps.append(e["time"] - pending)
            pending = None
    progress = [e["time"] for e in events if e["event"] == "trial_progress"]
    return {"trainer": list(trainer.values()), "start": start, "result": result, "gap": gaps, "progress_times": progress,
            "journal_bytes": (sweep_dir / "journal.jsonl").stat().st_size, "journal_events": len(events)}


def controller_costs(t: Timers, trials: int) -> dict:
    """The controller's own time per message kind and per trial (ms), from the timers."""
    fill_per_trial = 1e3 * t.s["fill"] / max(trials, 1)
    per_kind = {k: t.mean_ms(f"advance:{k}") for k in ("trial_placed", "trial_progress", "trial_completed")}
    return {"fill_ms_per_trial": fill_per_trial, **{f"{k}_ms": v for k, v in per_kind.items()},
            "launch_ms": t.mean_ms("launch"), "kill_ms": t.mean_ms("stop (ray.kill)"), "ray_get_ms": t.mean_ms("ray.get"),
            "save_strategy_ms": t.mean_ms("save_strategy"), "journal_append_ms": t.mean_ms("journal.append"),
            "metrics_update_ms": t.mean_ms("metrics.update"),
            "busy_s": t.s["fill"] + sum(t.s[k] for k in t.s if k.startswith("advance:"))}


def live_point(c: int, waves: int, duration: float, events: int, root: Path) -> dict:
    trials = c * waves
    spec = make_spec(f"live{c}", c, trials, duration, events)
    raw = run_sweep(spec, root / f"live-{c}")
    b = journal_breakdown(root / f"live-{c}")
    work = sum(b["trainer"])
    util = work / (c * raw["wall"])
    slot_overhead = (c * raw["wall"] - work) / trials  # slot-seconds not spent in a trainer, per trial
    decomp = statistics.fmean(b["start"]) + statistics.fmean(b["result"]) + (statistics.fmean(b["gap"]) if b["gap"] else 0.0)
    costs = controller_costs(raw["ctl"].timers, trials)
    messages = trials * (events + 2)
    return {"concurrency": c, "trials": trials, "duration_s": duration, "wall_s": raw["wall"], "trainer_s": work,
            "utilisation": util, "slot_overhead_s": slot_overhead, "decomposed_overhead_s": decomp,
            "start_mean_s": statistics.fmean(b["start"]), "start_p90_s": pct(b["start"], 90),
            "start_wave1_s": statistics.fmean(b["start"][:c]),
            "start_later_s": statistics.fmean(b["start"][c:]) if len(b["start"]) > c else float("nan"),
            "result_mean_s": statistics.fmean(b["result"]), "gap_mean_s": statistics.fmean(b["gap"]) if b["gap"] else 0.0,
            "util_60s_extrapolated": TRIAL_S / (TRIAL_S + slot_overhead),
            # Past the first wave, starts are staggered as in a long sweep: that slot overhead alone.
            "util_60s_steady": TRIAL_S / (TRIAL_S + statistics.fmean(b["start"][c:] or b["start"])
                                          + statistics.fmean(b["result"]) + (statistics.fmean(b["gap"]) if b["gap"] else 0.0)),
            "controller_ms_per_trial": 1e3 * costs["busy_s"] / trials,
            "driver_cpu_ms_per_message": 1e3 * raw["driver_cpu_s"] / messages, "costs": costs,
            "rss_mb": raw["rss_mb"], "load": f"{raw['load_before']} -> {raw['load_after']}"}


def report_live(points: list[dict]) -> None:
    rows = [[p["concurrency"], p["trials"], p["duration_s"], p["wall_s"], p["utilisation"],
             p["slot_overhead_s"], p["start_wave1_s"], p["start_later_s"], p["start_p90_s"], p["start_mean_s"] + p["result_mean_s"],
             p["gap_mean_s"], p["util_60s_extrapolated"], p["util_60s_steady"], p["load"]] for p in points]
    table("live: real Controller, one actor per trial, gpus: 1 each on declared-GPU worker nodes "
          "(baseline: ideal utilisation 1.0)",
          ["conc", "trials", "trial s", "wall s", "util (x ideal)", "overhead s/trial", "actor start s: wave 1",
           "later waves", "p90 (all)", "started->completed minus trainer s", "refill s", "util @60 s (extrap.)", "util @60 s steady", "load 1/5/15 before -> after"], rows)
    rows = [[p["concurrency"], p["costs"]["fill_ms_per_trial"], p["costs"]["launch_ms"], p["costs"]["trial_placed_ms"],
             p["costs"]["trial_progress_ms"], p["costs"]["trial_completed_ms"], p["costs"]["kill_ms"],
             p["controller_ms_per_trial"], p["driver_cpu_ms_per_message"], p["rss_mb"]] for p in points]
    table("live: controller cost (ms, wall time inside the controller's own steps)",
          ["conc", "fill/trial (ask+journal+launch)", "launch", "placed msg", "progress msg",
           "result msg (journal, tell, strategy.json)", "ray.kill", "controller ms/trial", "driver CPU ms/message", "driver RSS MB"], rows)
    print("overhead s/trial = (concurrency x wall - sum of trainer time) / trials; util @60 s = 60 / (60 + overhead); 'steady' uses "
          "later-wave starts + result + refill instead (staggered starts, as deep in a long sweep). "
          "actor start = trial_started -> trial_placed in the journal; refill = trial_completed -> next trial_started.")


# -------------------------------------------------------------------------------- 3. progress

def progress_point(c: int, events: int, duration: float, root: Path, whatif: bool = False) -> dict:
    label = f"progress-{c}-{events}" + ("-whatif" if whatif else "")
    raw = run_sweep(make_spec(label, c, c, duration, events), root / label, whatif=whatif)
    b = journal_breakdown(root / label)
    times = b["progress_times"]
    span = max(times) - min(times)
    n = len(times)
    costs = controller_costs(raw["ctl"].timers, c)
    return {"concurrency": c, "events_per_trial": events, "duration_s": duration, "offered_per_s": c * events / duration,
            "absorbed_per_s": n / span if span > 0 else float("inf"), "events": n, "span_s": span,
            "wall_s": raw["wall"], "progress_msg_ms": costs["trial_progress_ms"], "whatif": whatif,
            "driver_cpu_ms_per_event": 1e3 * raw["driver_cpu_s"] / n, "load": f"{raw['load_before']} -> {raw['load_after']}"}


def report_progress(points: list[dict], fsync_us: float) -> None:
    ceiling = 1e6 / fsync_us
    rows = [[p["concurrency"], p["events_per_trial"], "what-if" if p["whatif"] else "as-is", p["offered_per_s"],
             p["absorbed_per_s"], p["absorbed_per_s"] / ceiling, p["progress_msg_ms"], p["driver_cpu_ms_per_event"],
             p["wall_s"], p["load"]] for p in points]
    table(f"progress: events/s absorbed (baseline: the fsync'd journal alone, {ceiling:.0f} events/s)",
          ["conc", "events/trial", "loop", "offered/s", "absorbed/s", "x journal ceiling", "ms/progress msg",
           "driver CPU ms/event", "wall s", "load"], rows)


# ----------------------------------------------------------------------------------- 4. scale

class _Slot:
    def __init__(self, host: int) -> None:
        self.host, self.live = host, True


def ray_hosted_patches(hosts: list, per_host: int) -> dict:
    """launch/stop that run each trial as a streaming call on a threaded host actor (a GPU slot)."""
    used = [0] * len(hosts)

    def launch(name, payload, data_ref, where):
        i = min(range(len(hosts)), key=used.__getitem__)
        assert used[i] < per_host, "more trials than declared GPUs"
        used[i] += 1
        return _Slot(i), hosts[i].run.remote(payload, data_ref)

    def stop(slot):
        if slot.live:
            slot.live, used[slot.host] = False, used[slot.host] - 1

    return {"launch": launch, "stop": stop}


def scale_ray_hosted(trials: int, gpus: int, nodes: int, duration: float, events: int, root: Path, whatif: bool) -> dict:
    import ray

    from orchestrator.dispatch import remote_actor_class

    per = gpus // nodes
    hosts = [remote_actor_class().options(num_gpus=per, num_cpus=0.01, max_concurrency=per + 4).remote() for _ in range(nodes)]
    ray.get([h.node.remote() for h in hosts])  # all hosts up (they hold all declared GPUs) before the clock starts
    label = f"ray-hosted {'what-if' if whatif else 'as-is'}"
    try:
        raw = run_sweep(make_spec("scale", gpus, trials, duration, events), root / label, whatif=whatif,
                        extra_patches=ray_hosted_patches(hosts, per))
    finally:
        for h in hosts:
            ray.kill(h)
    return summarise_scale(label, raw, root / label, trials, gpus, events)


def fake_ray_patches(timers: Timers) -> dict:
    """In-process stand-ins: a trial is a list of the messages the synthetic trainer streams (0 s)."""
    from workers.backends import run_synthetic

    class FakeRay(TimedRay):
        def wait(self, refs, num_returns=1, timeout=None):
            return refs[:1], refs[1:]

        def get(self, x):
            return x

    def launch(name, payload, data_ref, where):
        msgs = [{"kind": "placed", "node_id": "sim", "pid": 0, "gpus": [0]}]
        result = run_synthetic(payload["mixture"], payload["trainer"], payload["seed"], lambda p: msgs.append(p.to_json()))
        return None, iter(msgs + [result.to_json()])

    return {"ray": FakeRay(timers), "launch": launch, "stop": lambda a: None,
            "placement": lambda resources, *rest: Placement(resources.cpus, resources.gpus)}


def scale_in_process(trials: int, concurrency: int, events: int, root: Path, whatif: bool) -> dict:
    label = f"in-process {'what-if' if whatif else 'as-is'}"
    spec = make_spec("scale", concurrency, trials, 0.0, events)
    stamps: list[float] = []

    def on_event(record, state):
        if record["event"] == "trial_completed":
            stamps.append(time.perf_counter())

    ctl = TimedController(spec, root / label, on_event=on_event, log=lambda s: None,
                          strategy_every_s=WHATIF_STRATEGY_S if whatif else 0.0)
    rss0, cpu0, load0 = rss_mb(), cpu_s(), load()
    t0 = time.perf_counter()
    patches = fake_ray_patches(ctl.timers)
    if whatif:
        patches["Journal"] = StatusOnlyFsyncJournal
    with patched(controller_mod, **patches):
        ctl.run()
    wall = time.perf_counter() - t0
    if whatif:
        ctl.strategy_every_s = 0.0
        ctl._save_strategy()
    raw = {"ctl": ctl, "wall": wall, "driver_cpu_s": cpu_s() - cpu0, "rss_mb": rss_mb(),
           "rss_growth_mb": rss_mb() - rss0, "load_before": load0, "load_after": load()}
    out = summarise_scale(label, raw, root / label, trials, concurrency, events)
    bins = [t0] + stamps[99::100]
    out["ms_per_trial_by_100"] = [1e3 * (b - a) / 100 for a, b in itertools.pairwise(bins)]
    return out


def summarise_scale(label: str, raw: dict, sweep_dir: Path, trials: int, concurrency: int, events: int) -> dict:
    events_list = list(read_events(sweep_dir / "journal.jsonl"))
    asks = [sec for _, sec in raw["ctl"].asks]
    done = [t for t in raw["ctl"].state.completed]
    trainer = [json.loads((sweep_dir / "trials" / t.id / "result.json").read_text())["wall_s"] for t in done]
    costs = controller_costs(raw["ctl"].timers, trials)
    return {"label": label, "trials": trials, "completed": len(done), "concurrency": concurrency, "wall_s": raw["wall"],
            "trials_per_s": len(done) / raw["wall"], "utilisation": sum(trainer) / (concurrency * raw["wall"]),
            "trainer_mean_s": statistics.fmean(trainer) if trainer else 0.0,
            "ask_ms_first": 1e3 * asks[0], "ask_ms_mean_rest": 1e3 * statistics.fmean(asks[1:]) if len(asks) > 1 else 0.0,
            "ask_ms_max_rest": 1e3 * max(asks[1:]) if len(asks) > 1 else 0.0, "asks": len(asks),
            "ask_n_mean_rest": statistics.fmean(n for n, _ in raw["ctl"].asks[1:]) if len(asks) > 1 else 0.0,
            "journal_kb": (sweep_dir / "journal.jsonl").stat().st_size / 1024, "journal_events": len(events_list),
            "strategy_json_kb": (sweep_dir / "strategy.json").stat().st_size / 1024,
            "save_strategy_ms": costs["save_strategy_ms"], "strategy_writes": raw["ctl"].timers.n["save_strategy"],
            "controller_ms_per_trial": 1e3 * costs["busy_s"] / trials,
            "progress_msg_ms": costs["trial_progress_ms"], "result_msg_ms": costs["trial_completed_ms"],
            "journal_append_ms": costs["journal_append_ms"], "metrics_update_ms": costs["metrics_update_ms"],
            "fill_ms_per_trial": costs["fill_ms_per_trial"], "driver_cpu_ms_per_trial": 1e3 * raw["driver_cpu_s"] / trials,
            "rss_mb": raw["rss_mb"], "rss_growth_mb": raw["rss_growth_mb"], "events_per_trial": events,
            "load": f"{raw['load_before']} -> {raw['load_after']}"}


def report_scale(points: list[dict], duration: float) -> None:
    rows = [[p["label"], p["completed"], p["concurrency"], p["wall_s"], p["trials_per_s"],
             "n/a (0-s trials)" if p["label"].startswith("in-process") else p["utilisation"],
             p["controller_ms_per_trial"], p["driver_cpu_ms_per_trial"], p["fill_ms_per_trial"], p["progress_msg_ms"],
             p["result_msg_ms"], p["journal_append_ms"], p["metrics_update_ms"],
             f"{p['strategy_writes']} x {p['save_strategy_ms']:.3g}", p["load"]] for p in points]
    table(f"scale: 1,000-trial sweep, concurrency 256 (256 declared GPUs), sobol; ray-hosted trials {duration:g} s, "
          "in-process trials 0 s (baseline: ideal utilisation 1.0)",
          ["run", "done", "conc", "wall s", "trials/s", "util", "controller ms/trial", "driver CPU ms/trial",
           "fill ms/trial", "ms/progress msg", "ms/result msg", "journal.append ms", "metrics.update ms",
           "strategy.json writes x ms", "load"], rows)
    rows = [[p["label"], p["asks"], p["ask_ms_first"], p["ask_n_mean_rest"], p["ask_ms_mean_rest"], p["ask_ms_max_rest"], p["journal_kb"],
             p["journal_kb"] * 1024 / p["trials"], p["journal_events"], p["strategy_json_kb"], p["rss_mb"],
             p["rss_growth_mb"]] for p in points]
    table("scale: proposal time, journal and memory",
          ["run", "asks", "first ask ms (n=256)", "later asks: mean n", "ms mean", "ms max", "journal KB", "journal B/trial",
           "journal events", "strategy.json KB", "controller RSS MB", "RSS growth MB"], rows)
    for p in points:
        cap = p["trials_per_s"] if p["label"].startswith("in-process") else 1e3 / p["controller_ms_per_trial"]
        print(f"{p['label']}: controller capacity ~{cap:.0f} trials/s at {p['events_per_trial']} progress events/trial; "
              f"demand at 256 x 60-s trials is {256 / TRIAL_S:.1f} trials/s -> saturates at ~{cap * TRIAL_S:.0f} "
              f"concurrent 60-s trials")
        if "ms_per_trial_by_100" in p:
            print("  controller ms/trial per 100 trials: " + ", ".join(f"{x:.1f}" for x in p["ms_per_trial_by_100"]))


# ------------------------------------------------------------------------------------ 5. asks

def bench_sobol(asked_before: list[int]) -> list[list]:
    from orchestrator.objective import Objective
    from orchestrator.spec import ObjectiveSpec
    from orchestrator.strategies import build_strategy

    rows = []
    for k in asked_before:
        s = build_strategy("sobol", {}, DOMAINS, Objective.from_spec(ObjectiveSpec(), DOMAINS), 0)
        s.asked = k
        t0 = time.perf_counter()
        s.ask(1, [])
        rows.append(["sobol", k, 1, 0, 1e3 * (time.perf_counter() - t0)])
    return rows


def bench_bayesopt(observations: list[int], batch_q: int, pending: int) -> list[list]:
    """Tell synthetic results up to each count, then time ask(1) (Ax's GP fit + acquisition). As in a
    live sweep, Ax's own Sobol initialisation is asked and told first, so every timed ask is a GP ask.
    ask(batch_q) and ask(1) with `pending` running mixtures are timed at the first count."""
    import warnings

    from orchestrator.objective import Objective
    from orchestrator.spec import ObjectiveSpec
    from orchestrator.strategies import build_strategy
    from workers.backends import default_optimum, synthetic_losses

    warnings.filterwarnings("ignore")  # BoTorch's numerical chatter (jitter, restarts) is not a figure
    rng = np.random.default_rng(0)
    optimum = default_optimum(list(DOMAINS))
    s = build_strategy("bayesopt", {}, DOMAINS, Objective.from_spec(ObjectiveSpec(), DOMAINS), 0)
    tell_s: list[float] = []

    def tell(m: Mixture) -> None:
        losses = {d: v + float(rng.normal(0, 0.01)) for d, v in synthetic_losses(m.as_dict(), optimum).items()}
        t0 = time.perf_counter()
        s.tell(m, losses, {d: 0.01 for d in DOMAINS})
        tell_s.append(time.perf_counter() - t0)

    def timed_ask(q: int, running: list[Mixture]) -> list:
        n_obs, t0 = len(s.observations), time.perf_counter()
        props = s.ask(q, running)
        row = ["bayesopt", n_obs, q, len(running), 1e3 * (time.perf_counter() - t0)]
        for m in props:
            tell(m)
        return row

    for m in s.ask(len(DOMAINS) + 1, []):  # Ax's Sobol initialisation, as in a live sweep
        tell(m)
    rows = []
    for i, target in enumerate(observations):
        while len(s.observations) < target:
            tell(Mixture.from_array(DOMAINS, rng.dirichlet(np.ones(len(DOMAINS)))))
        rows.append(timed_ask(1, []))
        if i == 0 and batch_q > 1:
            rows.append(timed_ask(batch_q, []))
        if i == 0 and pending:
            running = [Mixture.from_array(DOMAINS, rng.dirichlet(np.ones(len(DOMAINS)))) for _ in range(pending)]
            rows.append(timed_ask(1, running))
            for m in running:  # end them without a result, so later asks see no pending and no extra data
                s.tell_failed(m, "benchmark: pending only")
    rows.append(["bayesopt tell (attach+complete)", len(s.observations), "-", 0, 1e3 * statistics.fmean(tell_s)])
    return rows


def report_asks(rows: list[list]) -> None:
    out = []
    for r in rows:
        per = r[4] / r[2] if isinstance(r[2], int) else r[4]
        # Controller capacity if every completion triggers one ask of this cost (ask(1) per finished trial).
        ceiling = f"{TRIAL_S * 1e3 / per:.3g}" if r[2] == 1 and r[3] == 0 else "-"
        out.append(r + [per, ceiling])
    table("asks: proposal time per ask (baseline: sobol ask(1) with 0 asked before); 'conc. ceiling' = the "
          "concurrency at which 60-s trials finish faster than ask(1) can answer",
          ["strategy", "observations / asked before", "q", "pending", "ms per ask", "ms per proposal",
           "conc. ceiling @60 s"], out)


# ------------------------------------------------------------------------------------- main

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run (~2-3 min): fewer points, smaller sweeps")
    p.add_argument("--concurrency", default=None, help="live concurrencies, comma-separated (default 2,8,32,64)")
    p.add_argument("--duration", type=float, default=None, help="live trial length in seconds (default 8)")
    p.add_argument("--waves", type=int, default=2, help="live trials = waves x concurrency")
    p.add_argument("--journal-events", type=int, default=None, help="events in the journal benchmark (default 5000)")
    p.add_argument("--scale-trials", type=int, default=None, help="trials in the scale simulation (default 1000)")
    p.add_argument("--scale-duration", type=float, default=4.0, help="compressed trial length for ray-hosted scale (s)")
    p.add_argument("--bayesopt-at", default=None, help="observation counts for bayesopt asks (default 16,64,256)")
    p.add_argument("--bayesopt-q", type=int, default=1, help="also time bayesopt ask(q) at the first count (q > 1)")
    p.add_argument("--bayesopt-pending", type=int, default=None, help="running mixtures for one ask(1) (default 64; quick 0)")
    p.add_argument("--skip", default="", help="sections to skip: journal,live,progress,scale,asks")
    p.add_argument("--json", type=Path, help="also write all figures here")
    p.add_argument("--dir", type=Path, help="where sweep directories go (default: a temporary directory)")
    return p.parse_args()


def main() -> None:
    a = parse_args()
    conc = [int(x) for x in (a.concurrency or ("2,8" if a.quick else "2,8,32,64")).split(",")]
    duration = a.duration or (3.0 if a.quick else 8.0)
    n_journal = a.journal_events or (1000 if a.quick else 5000)
    scale_trials = a.scale_trials or (300 if a.quick else 1000)
    bo_at = [int(x) for x in (a.bayesopt_at or ("16,64" if a.quick else "16,64,256")).split(",")]
    skip = set(filter(None, a.skip.split(",")))
    root = a.dir or Path(tempfile.mkdtemp(prefix="mixsweep-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, no GPU (GPUs are Ray declarations); "
          f"python {platform.python_version()}; load {load()}; sweep dirs in {root}")
    results: dict = {"load_start": os.getloadavg(), "cores": os.cpu_count(), "argv": sys.argv[1:]}
    t_all = time.perf_counter()
    import botorch.utils.sampling  # noqa: F401  (what sobol's first ask imports: once per controller process)

    results["botorch_import_s"] = time.perf_counter() - t_all
    print(f"warm-up: importing botorch (sobol's first ask pays it once per controller) took {results['botorch_import_s']:.1f} s; "
          "excluded from the figures below")
    if "journal" not in skip:
        results["journal"] = bench_journal(n_journal, root)
        report_journal(results["journal"], n_journal)
    if not {"live", "progress", "scale"} <= skip:
        with local_cluster(nodes=4, gpus_per_node=64, cpus_per_node=2):
            if "live" not in skip:
                results["live"] = [live_point(c, a.waves, duration, 4, root) for c in conc]
                report_live(results["live"])
            if "progress" not in skip:
                cfg = [(4, 300, 1.0), (4, 300, 1.0, True)] if a.quick else [(8, 1000, 2.0), (32, 250, 2.0), (32, 250, 2.0, True)]
                results["progress"] = [progress_point(c, e, d, root, *rest) for c, e, d, *rest in cfg]
                fsync_us = results.get("journal", {}).get("fsync", {}).get("us_mean", 1000.0)
                report_progress(results["progress"], fsync_us)
            if "scale" not in skip:
                results["scale"] = [scale_ray_hosted(scale_trials, 256, 4, a.scale_duration, 4, root, w) for w in (False, True)]
                # In-process, but with Ray up so the controller's ray.util.metrics gauges are real.
                results["scale"] += [scale_in_process(scale_trials, 256, 4, root, w) for w in (False, True)]
                report_scale(results["scale"], a.scale_duration)
    if "asks" not in skip:
        rows = bench_sobol([0, 1000, 10000, 100000]) + bench_bayesopt(bo_at, a.bayesopt_q, a.bayesopt_pending if a.bayesopt_pending is not None else 0 if a.quick else 64)
        results["asks"] = rows
        report_asks(rows)
    results["total_s"] = time.perf_counter() - t_all
    results["load_end"] = os.getloadavg()
    print(f"\ntotal {results['total_s']:.0f} s; load at end {load()}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    if a.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
