"""`mixsweep bench`: replay a runs table as a benchmark of strategies, before any GPU is spent.

    mixsweep bench --runs TABLE --strategies gp,bayesopt,sobol --objective mean|loss.<d>|worst
                   --budget 32 --concurrency 4 --seeds 5 [--noise SD] [--out DIR]

Each (strategy, seed) is a real sweep: the real controller on the embedded Ray, with the replay
trainer (workers/replay.py) answering every trial from the table's simulator plus the table's own
noise. Only the benchmark sees the simulator's noiseless truth, to score what each sweep chose:

- regret of the recommendation: truth objective at the recommended mixture minus the optimum of the
  truth objective on the simplex (nats/token);
- regret of the best observed run: the run a user would pick by its (noisy) observed objective, scored
  by the truth; and the same after the first 8/16/32 completed trials (regret per unit of compute);
- controller time per ask (the journal's `proposal_s`) and the sweep's wall time.

Sweep directories are kept under DIR/sweeps/<strategy>-s<seed>: a finished one is read, never run
again, and an interrupted one is resumed, so re-running the same command only does what is missing.

Multi-fidelity (`--fidelity PRESET=TABLE:COST`, repeated, and `--cost C`): every sweep may train at each
preset, answered by that preset's table, at that cost; `--runs` is the table of the target (the
costliest fidelity), whose simulator scores every recommendation. A strategy that does not choose
fidelities (`gp`) trains everything at the target; `mfgp` chooses per trial. Best observed runs and
their regret are the target's runs only; `cost` is what the sweep spent, in the fidelities' unit.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import typer

from orchestrator.journal import load, read_events
from orchestrator.objective import Objective
from orchestrator.replay_table import replay_model
from orchestrator.runs import LOSS, RunsTableError
from orchestrator.spec import ObjectiveSpec, SweepSpec, parse_spec
from orchestrator.sweepdir import JOURNAL
from workers.replay import ReplayModel

# Trials after which regret is reported (those within the budget).
CHECKPOINTS = (8, 16, 32, 64, 128)
# CPUs each replay trial asks Ray for: a replay trial is a numpy prediction, so many share a core
# and `--concurrency` is not capped by the machine's CPU count.
REPLAY_TRIAL_CPUS = 0.05
# CPUs each sweep's controller task asks Ray for (see run_bench).
SWEEP_TASK_CPUS = 0.5


class BenchError(ValueError):
    """A bench argument problem, as one line naming the flag and the fix."""


@dataclass
class SweepScore:
    """What one (strategy, seed) sweep achieved, scored by the simulator's truth (nats/token)."""

    strategy: str
    seed: int
    regret_recommended: float
    regret_best_observed: float
    regret_at: dict[int, float]  # completed trials -> regret of the best observed run among them
    curve: list[float]  # regret of the best observed run after 1, 2, ... completed trials
    source: str  # the recommendation's source: model, in-sample or observed
    ask_s: float  # mean controller time per ask, seconds
    ask_max_s: float
    wall_s: float  # sweep_started -> sweep_finished, seconds
    trials: int  # completed trials (at the target fidelity in a multi-fidelity sweep)
    cost: float = 0.0  # cost spent (multi-fidelity sweeps; 0 otherwise)
    trials_by_fidelity: str = ""  # e.g. "1m:40 60m:9" (multi-fidelity sweeps)


@dataclass(frozen=True)
class Problem:
    """The objective on the simulator, and its optimum on the simplex."""

    model: ReplayModel
    objective: Objective
    objective_spec: dict
    optimum: np.ndarray  # (k,)
    best: float  # truth objective at the optimum, nats/token

    def value(self, W: np.ndarray) -> np.ndarray:
        """Truth objective at mixtures W (n, k) over the model's domains, (n,)."""
        return self.objective.values(self.model.truth(W), self.model.loss_domains)

    def regret(self, mixture: dict[str, float]) -> float:
        w = np.array([[mixture[d] for d in self.model.domains]])
        return max(float(self.value(w)[0]) - self.best, 0.0)


def objective_spec(text: str, domains: tuple[str, ...], loss_domains: tuple[str, ...]) -> dict:
    """`mean` | `loss.<d>` | `worst` as a spec objective over the table's evaluated domains."""
    text = text.strip()
    read = None if set(loss_domains) == set(domains) else list(loss_domains)
    if text in ("mean", "worst"):
        return {"kind": text, **({"domains": read} if read else {})}
    if text.startswith(LOSS) and text[len(LOSS):] in loss_domains:
        return {"kind": "target", "domain": text[len(LOSS):]}
    raise BenchError(f"--objective {text!r}: use mean, worst or loss.<domain> with a domain of {', '.join(loss_domains)}")


def problem(runs: Path, objective_text: str, cache_dir: str, log: Callable[[str], None]) -> Problem:
    """Fit (or load) the table's simulator and find the optimum of the objective on it."""
    from orchestrator.runs import read_runs

    table = read_runs(runs)  # in its own domain order, which the sweeps keep
    domains = table.domains
    model = replay_model(runs, domains, cache_dir, log=log)
    ospec = objective_spec(objective_text, domains, model.loss_domains)
    objective = Objective.from_spec(ObjectiveSpec(**ospec), domains)
    fun = lambda W: objective.values(model.truth(W), model.loss_domains)  # noqa: E731
    # Start the search from the table's best runs too: the optimum is at least as good as any of them.
    order = np.argsort(fun(table.weights))[:4]
    from orchestrator.optimize import Bounds, minimize_on_simplex  # scipy: not for every CLI start

    w, best = minimize_on_simplex(fun, Bounds.of(domains), np.random.default_rng(0), centres=table.weights[order])
    return Problem(model, objective, ospec, w, best)


@dataclass(frozen=True)
class BenchFidelity:
    """`--fidelity PRESET=TABLE:COST`: trials at `preset` are answered by `table` and cost `cost`."""

    preset: str
    table: Path
    cost: float


def parse_fidelity(text: str) -> BenchFidelity:
    """`PRESET=TABLE:COST` -> BenchFidelity; BenchError (one line) naming the flag and the fix."""
    from workers.presets import PRESETS

    preset, eq, rest = text.partition("=")
    table, colon, cost = rest.rpartition(":")
    how = "use --fidelity PRESET=TABLE:COST, e.g. --fidelity 1m=runs_1m.csv:1"
    if not eq or not colon or not table:
        raise BenchError(f"--fidelity {text!r}: {how}")
    if preset.strip() not in PRESETS:
        raise BenchError(f"--fidelity {text!r}: unknown preset {preset.strip()!r}; use one of {', '.join(PRESETS)}")
    try:
        value = float(cost)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise BenchError(f"--fidelity {text!r}: the cost must be a positive number; {how}")
    if not Path(table).expanduser().is_file():
        raise BenchError(f"--fidelity {text!r}: runs table {table!r} not found")
    return BenchFidelity(preset.strip(), Path(table).expanduser().resolve(), value)


def target_fidelity(fidelities: list[BenchFidelity]) -> BenchFidelity:
    """The costliest fidelity: its table is the truth every recommendation is scored on."""
    return max(fidelities, key=lambda f: f.cost)


def replay_options(strategy: str) -> dict[str, str]:
    """Strategy options the replay trainer calls for: it reads no data, so a strategy centred on the
    data's token counts by default (regmix's `prior: tokens`) is centred on the uniform mixture instead
    (docs/bench.md). {} for every other strategy."""
    from orchestrator.strategies.configs import CONFIGS

    prior = CONFIGS[strategy].model_fields.get("prior") if strategy in CONFIGS else None
    return {"prior": "uniform"} if prior is not None and prior.default == "tokens" else {}


def sweep_spec(runs: Path, strategy: str, seed: int, prob: Problem, budget: int, concurrency: int,
               noise: float | None, cache_dir: str, fidelities: list[BenchFidelity] | None = None,
               cost: float | None = None) -> SweepSpec:
    multi = {}
    if fidelities:
        multi = {"proxy": {"preset": target_fidelity(fidelities).preset},
                 "fidelities": [{"name": f.preset, "preset": f.preset, "cost": f.cost, "runs": str(f.table)} for f in fidelities]}
    return parse_spec({
        "name": f"bench-{strategy}-s{seed}",
        "domains": {d: {} for d in prob.model.domains},
        "trainer": {"kind": "replay", "runs": str(runs), **({"noise": noise} if noise is not None else {})},
        "objective": prob.objective_spec,
        "strategy": {"kind": strategy, **({"options": opts} if (opts := replay_options(strategy)) else {})},
        "budget": {"trials": budget, "concurrency": concurrency, **({"cost": cost} if cost is not None else {})},
        "resources": {"cpus": REPLAY_TRIAL_CPUS, "gpus": 0},
        "data": {"cache_dir": cache_dir},
        "seed": seed,
        **multi,
    })


def run_sweep(spec: SweepSpec, sweep_dir: Path, log: Callable[[str], None]) -> None:
    """Run the sweep, resume it if it was interrupted, or leave it be if it finished."""
    from orchestrator.controller import Controller

    journal = sweep_dir / JOURNAL
    if journal.is_file() and any(e["event"] == "sweep_finished" for e in read_events(journal)):
        log(f"{sweep_dir.name}: finished before, read from disk")
        return
    controller = Controller(spec, sweep_dir, log=lambda m: None)
    controller.resume() if journal.is_file() else controller.run()


def score(strategy: str, seed: int, sweep_dir: Path, prob: Problem) -> SweepScore:
    """Score a finished sweep from its journal alone. The observed objective of every run is the
    sweep state's (one scale, measured against the reference run where the objective has one)."""
    events, state = load(sweep_dir / JOURNAL, objective=prob.objective)
    done = sorted((t for t in state.completed if t.measures_mixture and t.objective is not None and state.at_target(t)),
                  key=lambda t: t.completed_seq)
    recs = [e for e in events if e["event"] == "recommended"]
    if not done or not recs:
        raise BenchError(f"{sweep_dir}: no completed trial or no recommendation; see `mixsweep status {sweep_dir}`")
    curve, best_seen, best_mix = [], math.inf, None
    for t in done:  # in completion order
        if t.objective < best_seen:
            best_seen, best_mix = t.objective, t.mixture
        curve.append(prob.regret(best_mix))
    asks = _ask_times(events)
    times = {e["event"]: e["time"] for e in events if e["event"] in ("sweep_started", "sweep_finished")}
    rec = recs[-1]
    return SweepScore(strategy=strategy, seed=seed, regret_recommended=prob.regret(rec["mixture"]),
                      regret_best_observed=curve[-1], regret_at={n: curve[n - 1] for n in CHECKPOINTS if n <= len(curve)},
                      curve=curve, source=rec.get("source", ""), ask_s=float(np.mean(asks)) if asks else 0.0,
                      ask_max_s=max(asks, default=0.0), wall_s=times.get("sweep_finished", 0.0) - times.get("sweep_started", 0.0),
                      trials=len(done), cost=state.cost_spent,
                      trials_by_fidelity=" ".join(f"{f}:{sum(t.fidelity == f for t in state.completed)}" for f in state.fidelities))


def _ask_times(events: list[dict]) -> list[float]:
    """Seconds of each `ask`: the proposals of one ask are journaled together with its one `proposal_s`."""
    out, last = [], None
    for e in events:
        if e["event"] == "trial_proposed":
            if e.get("proposal_s") != last:
                out.append(float(e.get("proposal_s") or 0.0))
            last = e.get("proposal_s")
        else:
            last = None if e["event"] != "trial_reused" else last
    return out


def summary_rows(scores: list[SweepScore], baseline: str = "sobol") -> list[dict]:
    """Per strategy: mean and sd over seeds of each figure, and ratios to the baseline's mean regret."""
    by: dict[str, list[SweepScore]] = {}
    for s in scores:
        by.setdefault(s.strategy, []).append(s)
    base = by.get(baseline)
    base_rec = float(np.mean([s.regret_recommended for s in base])) if base else None
    rows = []
    for name, ss in by.items():
        rec = np.array([s.regret_recommended for s in ss])
        obs = np.array([s.regret_best_observed for s in ss])
        row = {"strategy": name, "seeds": len(ss), "regret_recommended": rec.mean(), "regret_recommended_sd": rec.std(),
               "regret_best_observed": obs.mean(), "regret_best_observed_sd": obs.std(),
               "rec_within_observed": int(np.sum(rec <= obs + 0.005)),
               "ask_s": float(np.mean([s.ask_s for s in ss])), "ask_max_s": max(s.ask_max_s for s in ss),
               "wall_s": float(np.mean([s.wall_s for s in ss])), "cost": float(np.mean([s.cost for s in ss]))}
        for n in CHECKPOINTS:
            vals = [s.regret_at[n] for s in ss if n in s.regret_at]
            if len(vals) == len(ss):
                row[f"regret_at_{n}"] = float(np.mean(vals))
        if base_rec:
            row["x_" + baseline] = row["regret_recommended"] / base_rec
        rows.append(row)
    return sorted(rows, key=lambda r: r["regret_recommended"])


def write_outputs(out: Path, scores: list[SweepScore], rows: list[dict], prob: Problem) -> dict[str, Path]:
    """results.csv (one row per sweep), summary.csv (one per strategy) and regret.png (regret vs trials)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.csv", "summary": out / "summary.csv", "plot": out / "regret.png"}
    per_sweep = [{k: v for k, v in asdict(s).items() if k not in ("curve", "regret_at")}
                 | {f"regret_at_{n}": v for n, v in s.regret_at.items()} for s in scores]
    for path, rows_ in ((paths["results"], per_sweep), (paths["summary"], rows)):
        keys = list(dict.fromkeys(k for r in rows_ for k in r))
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows_)
    _plot(paths["plot"], scores, prob)
    return paths


def _plot(path: Path, scores: list[SweepScore], prob: Problem) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name in dict.fromkeys(s.strategy for s in scores):
        curves = [s.curve for s in scores if s.strategy == name]
        n = min(map(len, curves))
        mean = np.mean([c[:n] for c in curves], axis=0)
        ax.plot(np.arange(1, n + 1), mean, label=name)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("completed trials")
    ax.set_ylabel("regret of the best observed run (nats/token)")
    ax.set_title(f"{prob.objective.description}: mean over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check_arguments(runs: Path, strategies: list[str], objective_text: str,
                    fidelities: list[BenchFidelity] | None = None) -> None:
    """BenchError / RunsTableError (one line) for an unknown strategy, a missing or bad table, or an
    objective naming a domain the table has no loss column for."""
    from orchestrator.runs import read_runs
    from orchestrator.strategies import STRATEGIES

    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise BenchError(f"--strategies: unknown {unknown}; use names from {', '.join(sorted(STRATEGIES))}")
    if not runs.is_file():
        raise RunsTableError(f"--runs {str(runs)!r} not found; pass a CSV or Parquet runs table")
    table = read_runs(runs)
    objective_spec(objective_text, table.domains, table.loss_domains)
    if fidelities:
        if len({f.preset for f in fidelities}) != len(fidelities) or len(fidelities) < 2:
            raise BenchError("--fidelity: give at least two, with distinct presets")
        if target_fidelity(fidelities).table != runs.expanduser().resolve():
            raise BenchError(f"--runs: must be the table of the costliest fidelity ({target_fidelity(fidelities).table}), "
                             "whose simulator scores the recommendations")
        for f in fidelities:
            other = read_runs(f.table)
            if set(other.domains) != set(table.domains):
                raise BenchError(f"--fidelity {f.preset}: its table's weight columns must be those of --runs")


def run_bench(runs: Path, strategies: list[str], objective_text: str, budget: int, concurrency: int, seeds: int,
              out: Path, noise: float | None = None, cache_dir: str = "~/.cache/mixsweep", parallel: int = 2,
              log: Callable[[str], None] = print, fidelities: list[BenchFidelity] | None = None,
              cost: float | None = None) -> tuple[Problem, list[SweepScore]]:
    """Every (strategy, seed) sweep on the replay of `runs`, scored. Ray must be initialised."""
    import ray

    check_arguments(runs, strategies, objective_text, fidelities)
    prob = problem(runs, objective_text, cache_dir, log)
    log(f"simulator optimum of {prob.objective.description}: {prob.best:.4f} nats/token")
    jobs = [(strategy, seed) for strategy in strategies for seed in range(seeds)]
    # Sweeps are independent: `parallel` controllers run at once as Ray tasks (each single-threaded in
    # its asks), the rest queue. Each task asks for only a share of a CPU, so its trial actors still fit.
    sweep = ray.remote(num_cpus=SWEEP_TASK_CPUS, max_retries=0)(sweep_task)
    pending, scores = {}, []
    for strategy, seed in jobs:
        sweep_dir = (out / "sweeps" / f"{strategy}-s{seed}").resolve()
        spec = sweep_spec(runs.resolve(), strategy, seed, prob, budget, concurrency, noise, cache_dir, fidelities, cost)
        if len(pending) >= parallel:
            scores += _collect(pending, prob, log, wait_for=1)
        pending[sweep.remote(spec.model_dump(mode="json"), str(sweep_dir))] = (strategy, seed, sweep_dir)
    scores += _collect(pending, prob, log, wait_for=len(pending))
    return prob, sorted(scores, key=lambda s: jobs.index((s.strategy, s.seed)))


def sweep_task(spec_json: dict, sweep_dir: str) -> None:
    """One sweep, as the body of a Ray task (the spec as JSON: plain data crosses processes)."""
    run_sweep(parse_spec(spec_json), Path(sweep_dir), log=lambda m: None)


def _collect(pending: dict, prob: Problem, log: Callable[[str], None], wait_for: int) -> list[SweepScore]:
    """Wait for `wait_for` sweeps to end and score them (a sweep that raised ends the bench, one line)."""
    import ray

    done, _ = ray.wait(list(pending), num_returns=wait_for)
    scores = []
    for ref in done:
        strategy, seed, sweep_dir = pending.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            from orchestrator.runner import failure_reason as _reason

            raise BenchError(f"{strategy} seed {seed}: the sweep failed ({_reason(err)}); its directory is {sweep_dir}") from None
        s = score(strategy, seed, sweep_dir, prob)
        log(f"{strategy} seed {seed}: regret {s.regret_recommended:.4f} recommended ({s.source}), "
            f"{s.regret_best_observed:.4f} best observed; {s.wall_s:.0f} s"
            + (f"; cost {s.cost:g} ({s.trials_by_fidelity})" if s.trials_by_fidelity else ""))
        scores.append(s)
    return scores


def bench_command(
    runs: Path = typer.Option(..., "--runs", help="Runs table to replay (CSV/Parquet): weight.<domain> and loss.<domain> columns."),
    strategies: str = typer.Option("gp,bayesopt,sobol", "--strategies", help="Comma-separated strategies to compare."),
    objective: str = typer.Option("mean", "--objective", help="mean | loss.<domain> | worst (over the table's loss columns)."),
    budget: int = typer.Option(32, "--budget", min=1, help="Trials per sweep."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Trials in flight per sweep."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Sweeps per strategy (seeds 0..N-1: strategy and noise)."),
    noise: Optional[float] = typer.Option(None, "--noise", min=0.0, help="Loss noise sd (nats); default: the table's own."),
    out: Path = typer.Option(Path("runs/bench"), "--out", help="Where sweeps, results.csv, summary.csv and regret.png go."),
    cache_dir: str = typer.Option("~/.cache/mixsweep", "--cache-dir", help="Where the fitted simulator is cached."),
    parallel: int = typer.Option(2, "--parallel", min=1, help="Sweeps run at once (each controller mostly uses one core)."),
    fidelity: Optional[list[str]] = typer.Option(None, "--fidelity", help="Multi-fidelity: PRESET=TABLE:COST, repeated (--runs is the costliest's table)."),
    cost: Optional[float] = typer.Option(None, "--cost", min=0.0, help="Multi-fidelity: the cost budget of each sweep, in the fidelities' unit."),
) -> None:
    """Replay a runs table as a benchmark: real sweeps of each strategy, scored by regret against the table's simulator."""
    from rich.console import Console

    from orchestrator.cli import _init_ray

    console = Console(width=max(Console().width, 150))  # the summary table has ten columns
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    fidelities = [parse_fidelity(f) for f in fidelity or []]
    if cost is not None and not fidelities:
        raise BenchError("--cost: a cost budget is for multi-fidelity benches; add --fidelity PRESET=TABLE:COST (twice or more)")
    check_arguments(runs, names, objective, fidelities)  # bad flags are one line before Ray starts or a model is fitted
    _init_ray(None)
    prob, scores = run_bench(runs, names, objective, budget, concurrency, seeds, out, noise, cache_dir, parallel,
                             log=lambda m: console.print(m, soft_wrap=True, highlight=False), fidelities=fidelities or None,
                             cost=cost)
    rows = summary_rows(scores)
    paths = write_outputs(out, scores, rows, prob)
    console.print(summary_table(rows, prob, budget, concurrency, seeds))
    console.print(f"winner: [bold]{rows[0]['strategy']}[/bold] (lowest mean regret of the recommendation)   "
                  f"results: {paths['results']}  summary: {paths['summary']}  plot: {paths['plot']}", soft_wrap=True)


def summary_table(rows: list[dict], prob: Problem, budget: int, concurrency: int, seeds: int):
    from rich.table import Table

    t = Table(title=f"Regret (nats/token) on the replay: {prob.objective.description}; "
                    f"{budget} trials, {concurrency} at a time, {seeds} seeds (mean ± sd)")
    checkpoints = [n for n in CHECKPOINTS if any(f"regret_at_{n}" in r for r in rows)]
    for col in ["strategy", "recommended", "best observed", *[f"@{n}" for n in checkpoints], "x sobol",
                "rec <= obs+0.005", "ask s (max)", "wall s"]:
        t.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        t.add_row(r["strategy"], f"{r['regret_recommended']:.4f} ± {r['regret_recommended_sd']:.4f}",
                  f"{r['regret_best_observed']:.4f} ± {r['regret_best_observed_sd']:.4f}",
                  *[f"{r[f'regret_at_{n}']:.4f}" if f"regret_at_{n}" in r else "" for n in checkpoints],
                  f"{r['x_sobol']:.2f}" if "x_sobol" in r else "", f"{r['rec_within_observed']}/{r['seeds']}",
                  f"{r['ask_s']:.2f} ({r['ask_max_s']:.2f})", f"{r['wall_s']:.0f}")
    return t
