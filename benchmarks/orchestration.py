"""Orchestration benchmark: the fraction of worker time the real Controller keeps inside trials.

Runs sweeps of the `synthetic` trainer (it sleeps `--duration` seconds and streams analytic losses)
through the public `Controller(spec, dir).run()` on a local multi-node `ray.cluster_utils.Cluster`: a
head without GPUs and `--nodes` worker nodes that declare GPUs (Ray resource declarations; no GPU is
needed). Every trial asks for `{gpus: 1, cpus: 0.01}`, so `--concurrency` trials fit at once; a sweep
runs `--waves` x concurrency trials.

The figures come from the sweep's journal alone (`orchestrator.journal.read_events`; each record's
`time` is the controller's wall clock, in seconds, to the millisecond):

  busy        per worker slot, the time a trial held it (trial_started -> trial_completed / failed /
              requeued), summed over the trials, over concurrency x the sweep's wall time
              (sweep_started -> sweep_finished); the ideal is 1.0
  in trainer  the same from trial_placed (the trial's process is up and its trainer starts) to its end:
              what is left once actor start-up counts as overhead
  actor start trial_started -> trial_placed, mean over the first wave and over the later ones
  turnaround  later waves: from the end of the trial whose slot a trial fills to its trainer's start
              (result handling, the ask, actor start); steady-state in trainer = mean trial / (mean
              trial + mean turnaround), the fraction once the one-time first-wave start-up is behind
  overhead    (concurrency x wall - time in trainer) / trials, slot-seconds lost per trial, and the
              in-trainer fraction that overhead would leave to 60-s trials: 60 / (60 + overhead)

When the spec has `resources.reuse_actors` (long-lived pooled trainer actors), both modes run in the
same process on the same cluster: `reuse_actors: false` (one process per trial, the baseline) first,
then `true`, and the ratios pooled / baseline are printed. Without that field only the current mode
runs, and the script says so. Sweep dirs go to a temporary directory unless --dir is given.

Usage:
  .venv/bin/python benchmarks/orchestration.py                       # concurrency 64, 60-s trials, 4 nodes
  .venv/bin/python benchmarks/orchestration.py --concurrency 8 --duration 5
  .venv/bin/python benchmarks/orchestration.py --smoke               # seconds: concurrency 4, 1-s trials
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.controller import Controller  # noqa: E402
from orchestrator.journal import read_events  # noqa: E402
from orchestrator.spec import ResourcesSpec, parse_spec  # noqa: E402
from orchestrator.sweepdir import JOURNAL  # noqa: E402

DOMAINS = ("a", "b", "c")
TRIAL_S = 60.0  # the trial length the goal names, for the extrapolated figure
ENDS = ("trial_completed", "trial_failed", "trial_requeued")  # events that free a worker slot


def pooled_actors_exist() -> bool:
    """True when the spec has `resources.reuse_actors` (pooled trainer actors)."""
    return "reuse_actors" in ResourcesSpec.model_fields


def make_spec(name: str, concurrency: int, trials: int, duration_s: float, events: int, reuse: bool | None):
    """A sobol sweep of the synthetic trainer, one declared GPU per trial; `reuse` None: the spec's default."""
    resources = {"gpus": 1, "cpus": 0.01, **({} if reuse is None else {"reuse_actors": reuse})}
    return parse_spec({
        "name": name, "domains": {d: {} for d in DOMAINS},
        "trainer": {"kind": "synthetic", "duration_s": duration_s, "progress_events": events, "noise": 0.0},
        "strategy": {"kind": "sobol"}, "budget": {"trials": trials, "concurrency": concurrency, "max_attempts": 1},
        "resources": resources,
    })


@contextlib.contextmanager
def local_cluster(nodes: int, gpus_per_node: int, cpus_per_node: int):
    """A head without GPUs plus `nodes` worker nodes declaring GPUs; this process joins it as the driver."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=cpus_per_node, num_gpus=gpus_per_node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def slot_figures(events: list[dict], concurrency: int) -> dict:
    """Busy and in-trainer fractions, actor start and overhead (seconds), from a finished sweep's journal."""
    t0 = next(e["time"] for e in events if e["event"] == "sweep_started")
    t1 = next((e["time"] for e in events if e["event"] == "sweep_finished"), max(e["time"] for e in events))
    wall = t1 - t0
    started: dict[str, float] = {}
    placed: dict[str, float] = {}
    busy = trainer = 0.0
    starts: list[float] = []  # started -> placed, in start order
    placed_order: list[float] = []  # placed times, in start order
    ends: list[float] = []  # end times, in end order
    in_trial: list[float] = []  # placed -> end, per attempt
    intervals: list[tuple[float, float]] = []
    counts = {"trial_completed": 0, "trial_failed": 0, "trial_requeued": 0}
    for e in events:
        kind, tid = e["event"], e.get("trial")
        if kind == "trial_started":
            started[tid] = e["time"]
        elif kind == "trial_placed" and tid in started:
            placed[tid] = e["time"]
            starts.append(e["time"] - started[tid])
            placed_order.append(e["time"])
        elif kind in ENDS and tid in started:
            begin = started.pop(tid)
            busy += e["time"] - begin
            spent = e["time"] - placed.pop(tid, e["time"])  # never placed: no time in its trainer
            trainer += spent
            in_trial.append(spent)
            ends.append(e["time"])
            intervals.append((begin, e["time"]))
            counts[kind] += 1
    attempts = len(intervals)
    wave1, later = starts[:concurrency], starts[concurrency:]
    overhead = (concurrency * wall - trainer) / attempts if attempts else math.nan
    # Steady state: the k-th trial of the later waves fills the slot the k-th ended trial freed; its
    # turnaround is from that end to its own trainer's start (result handling, ask, actor start).
    turnaround = [p - e for p, e in zip(placed_order[concurrency:], ends)]
    mean_trial = statistics.fmean(in_trial) if in_trial else math.nan
    mean_turn = statistics.fmean(turnaround) if turnaround else math.nan
    return {"wall_s": wall, "attempts": attempts, "completed": counts["trial_completed"],
            "failed": counts["trial_failed"], "requeued": counts["trial_requeued"],
            "busy": busy / (concurrency * wall), "in_trainer": trainer / (concurrency * wall),
            "start_wave1_s": statistics.fmean(wave1) if wave1 else math.nan,
            "start_later_s": statistics.fmean(later) if later else math.nan,
            "overhead_s": overhead, "in_trainer_at_60s": TRIAL_S / (TRIAL_S + overhead),
            "turnaround_s": mean_turn, "steady": mean_trial / (mean_trial + mean_turn),
            "peak_in_flight": peak(intervals)}


def peak(intervals: list[tuple[float, float]]) -> int:
    """Most trials holding a slot at once."""
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda x: (x[0], x[1]))
    level = best = 0
    for _, step in edges:
        level += step
        best = max(best, level)
    return best


def run_mode(label: str, reuse: bool | None, args: argparse.Namespace, root: Path) -> dict:
    """One sweep through the public Controller; its figures from its journal."""
    trials = args.waves * args.concurrency
    spec = make_spec(f"orch-{label.split()[0]}", args.concurrency, trials, args.duration, args.events, reuse)
    sweep_dir = root / label.replace(" ", "-")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    Controller(spec, sweep_dir, log=lambda line: None).run()
    run_s = time.perf_counter() - t0
    figures = slot_figures(list(read_events(sweep_dir / JOURNAL)), args.concurrency)
    return {"mode": label, "reuse_actors": reuse, "trials": trials, "run_s": run_s,
            "load": f"{load0:.1f} -> {os.getloadavg()[0]:.1f}", **figures}


def report(points: list[dict], args: argparse.Namespace) -> None:
    head = ["mode", "trials done", "wall s", "busy fraction", "in trainer", "actor start s: wave 1 / later",
            "overhead s/trial", "in trainer @60 s", "turnaround s (later waves)", "steady-state in trainer",
            "peak in flight", "load"]
    rows = [[p["mode"], f"{p['completed']}/{p['trials']}", f"{p['wall_s']:.1f}", f"{p['busy']:.3f}",
             f"{p['in_trainer']:.3f}", f"{p['start_wave1_s']:.2f} / {p['start_later_s']:.2f}", f"{p['overhead_s']:.2f}",
             f"{p['in_trainer_at_60s']:.3f}", f"{p['turnaround_s']:.2f}", f"{p['steady']:.3f}",
             str(p["peak_in_flight"]), p["load"]] for p in points]
    print(f"\nconcurrency {args.concurrency}, {args.duration:g}-s synthetic trials x {args.waves} waves, "
          f"{args.nodes} worker node(s) (baseline: the ideal fraction, 1.0)")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    for p in points:
        print(f"{p['mode']}: busy fraction {p['busy']:.3f}, in trainer {p['in_trainer']:.3f}, "
              f"steady-state in trainer {p['steady']:.3f} (turnaround {p['turnaround_s']:.2f} s) "
              f"({p['completed']} of {p['trials']} trials completed, {p['failed']} failed; "
              f"peak in flight {p['peak_in_flight']} of {args.concurrency})")
    if len(points) == 2:
        base, pooled = points
        print(f"ratio pooled / one process per trial: busy {pooled['busy'] / base['busy']:.2f}x, "
              f"in trainer {pooled['in_trainer'] / base['in_trainer']:.2f}x, "
              f"steady-state in trainer {pooled['steady'] / base['steady']:.2f}x, "
              f"wall {pooled['wall_s'] / base['wall_s']:.2f}x")
    else:
        print("ratio pooled / one process per trial: n/a (resources.reuse_actors does not exist yet: "
              "only the current mode ran)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=64, help="trials in flight, one declared GPU each (default 64)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds each synthetic trial sleeps (default 60)")
    p.add_argument("--waves", type=int, default=2, help="trials per sweep = waves x concurrency (default 2)")
    p.add_argument("--nodes", type=int, default=4, help="worker nodes declaring the GPUs (default 4)")
    p.add_argument("--cpus-per-node", type=int, default=2, help="CPUs each worker node declares (default 2)")
    p.add_argument("--events", type=int, default=4, help="progress events each trial streams (default 4)")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--dir", type=Path, help="keep the sweep directories here (default: a temporary directory, removed)")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: concurrency 4, 1-s trials, 2 waves, 1 worker node (overrides the sizes above)")
    args = p.parse_args()
    if args.smoke:
        args.concurrency, args.duration, args.waves, args.nodes, args.cpus_per_node = 4, 1.0, 2, 1, 1
    if min(args.concurrency, args.waves, args.nodes, args.events) < 1 or args.duration < 0:
        p.error("--concurrency, --waves, --nodes and --events must be at least 1, --duration at least 0")
    return args


def main() -> None:
    args = parse_args()
    pooled = pooled_actors_exist()
    modes = ([("one process per trial (baseline)", False), ("pooled actors", True)] if pooled
             else [("current (one process per trial)", None)])
    root = args.dir or Path(tempfile.mkdtemp(prefix="mixsweep-orch-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.1f}; sweep dirs in {root}")
    if not pooled:
        print("resources.reuse_actors is not in the spec yet: running the current mode only")
    t_all = time.perf_counter()
    gpus_per_node = math.ceil(args.concurrency / args.nodes)
    try:
        with local_cluster(args.nodes, gpus_per_node, args.cpus_per_node):
            points = [run_mode(label, reuse, args, root) for label, reuse in modes]
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    report(points, args)
    print(f"total {time.perf_counter() - t_all:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"argv": sys.argv[1:], "cores": os.cpu_count(), "points": points}, indent=1))


if __name__ == "__main__":
    main()
