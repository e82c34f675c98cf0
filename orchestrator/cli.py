"""`mixsweep`: run | resume | submit | logs | validate | status | report | recommend | export.

User errors (spec, data, sweep directory, journal) print one line, `error: ...`, and exit 2 with no
traceback; anything already computed stays on disk.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.journal import JournalError, load
from orchestrator.spec import SpecError, load_frozen_spec, load_spec
from orchestrator.storage import SweepStore
from orchestrator.sweepdir import JOURNAL

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find the data mixture for an LM pre-training run with proxy sweeps on Ray.")
console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """Bad input: shown as one line."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from orchestrator.bench import BenchError
    from orchestrator.controller import SweepDirExists
    from orchestrator.export import ExportError
    from orchestrator.ladder import LadderError
    from orchestrator.lock import SweepLocked
    from orchestrator.resume import SpecChanged
    from orchestrator.runs import RunsTableError
    from orchestrator.storage import StorageError
    from orchestrator.submit import SubmitError
    from workers.corpus import CorpusError
    from workers.data import DataError

    return (SpecError, JournalError, UserError, DataError, CorpusError, SweepDirExists, SweepLocked, SpecChanged, SubmitError, RunsTableError, LadderError, ExportError, BenchError,
            StorageError)


@app.command()
def validate(spec: Path = typer.Argument(..., help="Sweep spec (YAML)."),
             data: bool = typer.Option(True, help="Also read and tokenise the data (cached), checking every domain.")) -> None:
    """Check a spec (and its data) without running anything."""
    s = load_spec(spec)
    from orchestrator.requests import data_request, trainer_backend
    from workers.trainers import TOKEN_SHARDS

    if data and trainer_backend(s).reads_data == TOKEN_SHARDS:
        from workers.data import prepare_domains
        from workers.model import PRESETS

        from orchestrator.mixture import token_caps
        from workers.data import DataError

        tokens, vocab = prepare_domains(data_request(s), s.proxy.seq_len or PRESETS[s.proxy.preset].seq_len, log=lambda m: None)
        try:  # the same caps, and the same one-line error, as `mixsweep run`
            caps = token_caps({d: t.train_tokens for d, t in tokens.items()}, s.largest_trial_tokens(), s.data.max_epochs)
        except ValueError as err:
            raise DataError(str(err)) from None
        for name, t in tokens.items():
            capped = f", weight cap {caps[name]:.3f}" if caps[name] < 1 else ""
            console.print(f"  {name}: {t.train_tokens:,} training tokens, {t.val_tokens:,} held out{capped} ({t.location})", soft_wrap=True)
    console.print(f"[green]ok[/green]: {spec} ({len(s.domains)} domains, strategy {s.strategy.kind}, "
                  f"{s.budget.trials} trials, {s.budget.concurrency} at a time{_fidelities_said(s)})", soft_wrap=True)


def _fidelities_said(s) -> str:
    """`; fidelities debug (cost 1), 1m (cost 8), target 1m, cost budget 64` for a multi-fidelity spec, else ''."""
    if not s.fidelities:
        return ""
    levels = ", ".join(f"{f.name} (cost {s.fidelity_cost(f.name):g})" for f in s.fidelities)
    budget = f", cost budget {s.budget.cost:g}" if s.budget.cost is not None else ""
    return f"; fidelities {levels}, target {s.target_fidelity}{budget}"


@app.command()
def run(spec: Path = typer.Argument(..., help="Sweep spec (YAML)."),
        dir: Optional[str] = typer.Option(None, "--dir", help="Sweep directory (default: the spec's `dir`, else runs/<name>)."),
        address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)."),
        quiet: bool = typer.Option(False, "--quiet", help="No live table; one line per finished trial.")) -> None:
    """Run a sweep to its budget and print the recommended mixture."""
    s = load_spec(spec)
    sweep_dir = dir or s.sweep_dir()
    if SweepStore(sweep_dir).exists(JOURNAL):
        raise UserError(f"sweep directory {sweep_dir} already holds a sweep; `mixsweep resume {sweep_dir}` continues it, or pass another --dir")
    _drive(s, sweep_dir, address, quiet, resume=False)


@app.command()
def resume(dir: str = typer.Argument(..., help="Sweep directory (path or URI) of a stopped sweep."),
           spec: Optional[Path] = typer.Option(None, "--spec", help="A changed spec (only a larger budget, concurrency, retries and timeouts may change)."),
           address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)."),
           quiet: bool = typer.Option(False, "--quiet", help="No live table; one line per finished trial.")) -> None:
    """Continue a stopped sweep (crash, SIGKILL, lost head): finished trials are kept, never re-trained."""
    local = _local(dir)
    s = load_spec(spec) if spec else load_frozen_spec(local)
    if spec:  # a change resume refuses is said before Ray starts (Controller.resume checks it again)
        from orchestrator.resume import check_resumable
        from orchestrator.sweepdir import read_frozen_spec

        frozen = read_frozen_spec(local, missing_ok=True)
        if frozen is not None:
            check_resumable(frozen, s.model_dump(mode="json"))
    _drive(s, dir, address, quiet, resume=True)


def _drive(s, sweep_dir: str, address: str | None, quiet: bool, resume: bool) -> None:
    from orchestrator.controller import Controller
    from orchestrator.live import SweepView
    from orchestrator.report import write_report

    address = address or os.environ.get("RAY_ADDRESS")
    dashboard = _init_ray(address)
    console.print(f"sweep [bold]{s.name}[/bold] -> {sweep_dir}   Ray dashboard: {dashboard or 'off'}", soft_wrap=True)
    with SweepView(s, console, live=not quiet and console.is_terminal) as view:
        controller = Controller(s, sweep_dir, on_event=view.update, log=view.log, cpu_fallback=address is None)
        rec = controller.resume() if resume else controller.run()
    paths = write_report(controller.dir)
    controller.store.push(force=True)
    if rec is None:
        raise UserError(f"no trial completed; see `mixsweep status {sweep_dir}` for the reasons")
    console.print(recommendation_table(rec.to_json(), s.objective.kind))
    console.print(f"report: {paths['html']}  recommendation: {paths.get('recommendation')}", soft_wrap=True)


@app.command()
def submit(spec: Path = typer.Argument(..., help="Sweep spec (YAML)."),
           address: str = typer.Option(..., "--address", help="The cluster's dashboard, e.g. http://HEAD:8265."),
           dir: str = typer.Option(..., "--dir", help="Absolute path or URI of the sweep directory, writable by the head."),
           package: bool = typer.Option(False, "--package", help="Ship this package's code with the job (for images without mixsweep)."),
           resume: bool = typer.Option(False, "--resume", help="Continue the sweep in --dir instead of starting one."),
           follow: bool = typer.Option(False, "--follow", help="Stream the controller's output until the job ends.")) -> None:
    """Submit the sweep as a Ray Job; prints the job id and the dashboard URL, and returns."""
    from orchestrator.submit import follow_logs, submit as submit_job

    s = load_spec(spec)
    job_id, url = submit_job(s, spec, address, dir, package=package, resume=resume,
                             say=lambda line: err_console.print(line, highlight=False, soft_wrap=True))
    console.print(f"submitted job {job_id}\ndashboard: {url}\nstatus:    mixsweep status {dir}\nlogs:      mixsweep logs {job_id} --address {address}",
                  highlight=False, soft_wrap=True)
    if follow:
        console.print(f"job {job_id}: {follow_logs(address, job_id, lambda t: print(t, end=''))}")


@app.command()
def logs(job_id: str = typer.Argument(..., help="Job id printed by `mixsweep submit`."),
         address: str = typer.Option(..., "--address", help="The cluster's dashboard, e.g. http://HEAD:8265.")) -> None:
    """Stream a submitted sweep's controller output (through the Jobs API) until the job ends."""
    from orchestrator.submit import follow_logs

    status = follow_logs(address, job_id, lambda t: print(t, end="", flush=True))
    console.print(f"job {job_id}: {status}")


@app.command()
def status(dir: str = typer.Argument(..., help="Sweep directory (path or URI)."),
           as_json: bool = typer.Option(False, "--json", help="Print the state as JSON.")) -> None:
    """What a sweep has done so far, read from its journal."""
    events, state = load(_local(dir) / JOURNAL, warn := [])
    for w in warn:
        err_console.print(f"warning: {w}")
    if not events:  # nothing to show is not an empty sweep: the journal was lost or the run never began
        raise UserError(f"{dir}: {JOURNAL} holds no event; restore it from a backup, or `mixsweep run` a new sweep in another --dir")
    summary = state.summary()
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    # Counted apart: repeats (proposals answered from an earlier trial, no budget spent, no row) and
    # replicates (re-runs the strategy asked for on purpose: trials with a row, budget spent).
    t = Table(title=f"{summary['name']}: {summary['completed']} completed, {summary['failed']} failed, "
                    f"{summary['running']} running of {summary['budget']}; "
                    f"repeats reused {summary['reused']} ({summary['reused_budget'] or 'no'} budget), replicates {summary['replicates']}"
                    + state.cost_line())
    for col in ("trial", "status", "attempts", "mixture", "objective", "note"):
        t.add_column(col)
    for tr in summary["trials"]:
        mix = " ".join(f"{k}={v:.2f}" for k, v in tr["mixture"].items())
        obj = f"{tr['objective']:.4f}" if tr["objective"] is not None else ""
        options = tr.get("options") or {}
        note = tr["reason"] or "; ".join(([f"replicate {options['replicate']}"] if options.get("replicate") else [])
                                         + ([f"at {options['fidelity']}"] if options.get("fidelity") else []))
        t.add_row(tr["id"], tr["status"], str(tr["attempts"]), mix, obj, note)
    t.caption = "; ".join(state.objective_notes()) or None
    console.print(t)
    if summary.get("ladder"):  # scale-ladder re-trainings (orchestrator/ladder.py)
        lt = Table(title="scale ladder")
        for col in ("trial", "preset", "role", "status", "objective"):
            lt.add_column(col)
        for tr in summary["ladder"]:
            obj = f"{tr['objective']:.4f}" if tr["objective"] is not None else (tr["reason"] or "")
            lt.add_row(tr["id"], tr["preset"], tr["role"] or "", tr["status"], obj)
        console.print(lt)


@app.command()
def report(dir: str = typer.Argument(..., help="Sweep directory (path or URI).")) -> None:
    """Write report/report.html (self-contained), its PNGs and recommendation.json from the sweep directory."""
    from orchestrator.report import write_report
    from orchestrator.storage import SweepStore

    from orchestrator.export import refresh_exports

    local = _local(dir)
    paths = write_report(local)
    refresh_exports(local, log=lambda m: err_console.print(m, highlight=False, soft_wrap=True))  # exports behind the journal
    SweepStore(dir).push(force=True)
    for name, p in paths.items():
        console.print(f"{name}: {p}")


@app.command()
def ladder(dir: str = typer.Argument(..., help="Sweep directory (path or URI) of a finished sweep."),
           preset: str = typer.Option(..., "--preset", help="The larger model preset to re-train at (e.g. 1m, 25m)."),
           top: int = typer.Option(3, "--top", min=1, help="How many of the sweep's best mixtures to re-train."),
           baselines: str = typer.Option("uniform,token_prior", "--baselines", help="Baselines re-trained beside them (comma-separated; '' for none)."),
           address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)."),
           scale_model: bool = typer.Option(False, "--scale-model", help="Also recommend a mixture at that preset from a GP with model size as an input.")) -> None:
    """Re-train a finished sweep's best mixtures and the baselines at a larger preset; report whether the winner held."""
    from orchestrator.controller import run_ladder_command
    from orchestrator.ladder import LadderError, check_rung, rung_verdict
    from orchestrator.report import write_report

    chosen = [b.strip() for b in baselines.split(",") if b.strip()]
    unknown = sorted(set(chosen) - {"uniform", "token_prior"})
    if unknown:
        raise LadderError(f"--baselines: unknown {unknown}; use uniform and/or token_prior")
    local = _local(dir)
    s = load_frozen_spec(local)
    check_rung(s.proxy.preset, preset)  # before starting Ray
    address = address or os.environ.get("RAY_ADDRESS")
    _init_ray(address)
    summary = run_ladder_command(s, dir, preset, top, chosen, log=lambda m: console.print(m, highlight=False),
                                 cpu_fallback=address is None, scale_model=scale_model)
    paths = write_report(local)
    SweepStore(dir).push(force=True)
    for rung in (summary or {}).get("rungs", []):
        if rung["preset"] != preset:
            continue
        rho, held = rung_verdict(rung)  # each with its bootstrap significance (interval, probability)
        console.print(f"ladder {s.proxy.preset} -> {preset}: Spearman {rho} over {rung['pairs']} mixtures; winner held: {held} "
                      f"(winner at {s.proxy.preset}: {rung['winner_base']}, at {preset}: {rung['winner']})", highlight=False, soft_wrap=True)
    console.print(f"report: {paths['html']}", soft_wrap=True)


@app.command("export")
def export_(dir: str = typer.Argument(..., help="Sweep directory (path or URI)."),
            format: str = typer.Option(..., "--format", help="json | yaml | megatron | hf | runs"),
            out: Optional[Path] = typer.Option(None, "--out", help="Output file (default: report/<mixture.json, mixture.yaml, megatron_blend.txt, interleave.py, runs.csv>)."),
            paths: Optional[str] = typer.Option(None, "--paths", help="megatron: domain=PATH,... (data prefixes; default: the spec's single-file paths).")) -> None:
    """Write the recommended mixture for the production run (JSON, YAML, Megatron blend, HF interleave) or the runs table."""
    from orchestrator.export import export

    local = _local(dir)
    written = export(local, format, out=out, paths=paths, spec=load_frozen_spec(local) if format == "megatron" else None)
    if out is None:
        SweepStore(dir).push(force=True)
    console.print(f"{format}: {written}", soft_wrap=True, highlight=False)


def _register_recommend() -> None:
    from orchestrator.recommend import recommend_command

    app.command("recommend", help="Fit a strategy to a runs table (CSV/Parquet) and recommend, propose or predict; runs of several "
                "sizes (scale.params/scale.tokens) are answered at --at-params/--at-tokens; trains nothing.")(recommend_command)


_register_recommend()


def _register_bench() -> None:
    from orchestrator.bench import bench_command

    app.command("bench", help="Replay a runs table as a benchmark of strategies: real sweeps, regret against the table's simulator.")(bench_command)


_register_bench()


def recommendation_table(rec: dict, objective_kind: str) -> Table:
    t = Table(title=f"Recommended mixture ({rec['source']}, from {rec['trials_used']} trials)")
    t.add_column("domain")
    t.add_column("weight", justify="right")
    t.add_column("predicted loss (nats/token)", justify="right")
    for d, w in rec["mixture"].items():
        loss = rec["predicted_losses"].get(d)
        std = rec.get("predicted_std", {}).get(d)
        cell = "" if loss is None else f"{loss:.4f}" + (f" ± {std:.4f}" if std else "")
        t.add_row(d, f"{w:.3f}", cell)
    t.add_row(f"[bold]objective ({objective_kind})[/bold]", "", f"[bold]{rec['objective']:.4f}[/bold]")
    return t


def _local(dir: str) -> Path:
    """The sweep directory as a local path (pulled into the local mirror when it is a URI)."""
    from orchestrator.storage import SweepStore

    from orchestrator.resume import check_not_orphaned

    local = SweepStore(dir).pull()
    journal = local / JOURNAL
    empty = not journal.exists() or not journal.read_bytes().strip()
    if empty:
        check_not_orphaned(local, [], dir)  # finished results beside it: say so, they must not be lost
    if not journal.exists():
        raise UserError(f"{dir} is not a sweep directory (no {JOURNAL}); pass the --dir a sweep ran in")
    if empty:  # every reader would fail on it, each its own way
        raise UserError(f"{dir}: {JOURNAL} is empty (no event); restore it from a backup, or `mixsweep run` a new sweep in another --dir")
    return local


def _init_ray(address: str | None) -> str | None:
    """Join the given cluster, else start an embedded local Ray; returns the dashboard URL."""
    import ray

    # The embedded dashboard listens on 127.0.0.1 only; Ray's token authentication stays on.
    # address="local" always starts a new Ray: a plain ray.init() would join any cluster a stray
    # `ray start` left on this machine (and die with it).
    if not address:
        _loopback_node_ip()
    ctx = ray.init(address=address or "local", logging_level=logging.WARNING, log_to_driver=False,
                   include_dashboard=None if address else True, **({} if address else {"dashboard_host": "127.0.0.1"}))
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url and not url.startswith("http") else url


def _loopback_node_ip() -> None:
    """Make the embedded Ray's node IP 127.0.0.1, so its dashboard agent serves `/metrics` (per-domain
    trial losses, no token) and its HTTP/gRPC ports on loopback only.

    Ray 2.60 has no bind-address option for the metrics endpoint: it binds to loopback exactly when the
    node IP is loopback, and ray.init(_node_ip_address="127.0.0.1") is rewritten to the machine's
    address. The only switch is RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (read once, at import), set here
    as the constant it becomes; it only changes how this process picks its node IP."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


# ----------------------------------------------------------------------------- error boundary

EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 1, 130
DEBUG_FLAG = "--debug"


@app.callback()
def _global_options(debug: bool = typer.Option(False, DEBUG_FLAG, help="Show the traceback of an error (also: MIXSWEEP_DEBUG=1); "
                                                "may be given anywhere on the command line.")) -> None:
    """Find the data mixture for an LM pre-training run with proxy sweeps on Ray."""


def _split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """argv without --debug (accepted anywhere before a `--`), and whether it or MIXSWEEP_DEBUG=1 asks
    for tracebacks. Read before typer parses, so that a usage error can show its traceback too."""
    end = argv.index("--") if "--" in argv else len(argv)
    debug = DEBUG_FLAG in argv[:end] or os.environ.get("MIXSWEEP_DEBUG", "") not in ("", "0")
    return [a for i, a in enumerate(argv) if i >= end or a != DEBUG_FLAG], debug


def _say(line: str) -> None:
    """The one line on stderr (newlines in a message escaped: exactly one line, always)."""
    text = " ".join(str(line).split("\n")).strip() if "\n" in str(line) else str(line)
    sys.stderr.write(text.replace("\r", " ") + "\n")
    sys.stderr.flush()


def _usage_line(err: Exception) -> str:
    """A click usage error as one line naming the command and where to look."""
    from typer._click import exceptions as click_exc

    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx is not None else "mixsweep"
    if isinstance(err, click_exc.NoArgsIsHelpError):
        return f"error: no command given; run `{command} --help` for the commands"
    message = err.format_message().strip().rstrip(".")
    return f"error: {message}; see `{command} --help`"


def _os_line(err: OSError) -> str:
    what = err.strerror or type(err).__name__
    where = f" {err.filename}" if err.filename else ""
    fix = "; check the path and its permissions" if isinstance(err, (PermissionError, FileNotFoundError, IsADirectoryError)) else ""
    return f"error: cannot access{where}: {what}{fix}"


def run_command(argv: list[str]) -> int:
    """Run one `mixsweep` command line; returns the exit code. Every failure is one line on stderr,
    `error: ...`: 2 for bad usage or input (spec, data, sweep directory, files), 130 when interrupted,
    1 for an internal error (a bug: rerun with --debug for the traceback). Tracebacks only with --debug."""
    from typer._click import exceptions as click_exc  # typer vendors its own click: catch its classes
    from typer.exceptions import Abort, Exit

    argv, debug = _split_debug(argv)
    try:
        result = app(args=argv, prog_name="mixsweep", standalone_mode=False)
        if result == EXIT_INTERRUPTED:  # typer turns a KeyboardInterrupt into this code, silently
            _say("error: interrupted; anything finished is kept in the sweep directory")
        return result if isinstance(result, int) else 0
    except Exit as err:  # --help, typer.Exit(code)
        return err.exit_code
    except _user_errors() as err:
        _raise_if(debug)
        _say(f"error: {err}")
    except click_exc.NoArgsIsHelpError as err:
        print(err.format_message())  # bare `mixsweep`: the help on stdout, the error on stderr
        _say(_usage_line(err))
    except click_exc.ClickException as err:
        _raise_if(debug)
        _say(_usage_line(err) if isinstance(err, click_exc.UsageError) else f"error: {err.format_message()}")
        return err.exit_code if not isinstance(err, click_exc.UsageError) else EXIT_USAGE
    except (KeyboardInterrupt, Abort) as err:
        _raise_if(debug)
        _say(f"error: {err}" if str(err) else "error: interrupted; anything finished is kept in the sweep directory")
        return EXIT_INTERRUPTED
    except OSError as err:  # read-only or missing directories, full disks, unreachable storage
        _raise_if(debug)
        _say(_os_line(err))
    except Exception as err:  # a bug: say so in one line, and how to see more
        _raise_if(debug)
        first = (str(err).strip().splitlines() or [""])[0][:300]
        _say(f"error: internal error ({type(err).__name__}: {first}); rerun with --debug (or MIXSWEEP_DEBUG=1) "
             "for the traceback, and report it")
        return EXIT_INTERNAL
    except BaseException as err:  # after Exception: only what is not an Exception gets here
        if not _interrupted(err):  # SystemExit and the like keep their meaning
            raise
        _raise_if(debug)
        _say(f"error: {err}")
        return EXIT_INTERRUPTED
    return EXIT_USAGE


def _interrupted(err: BaseException) -> bool:
    """Whether err is the controller's SweepInterrupted (SIGINT/SIGTERM during run or resume). Checked
    through sys.modules: importing the controller (and Ray) just to name the class would slow every command."""
    controller = sys.modules.get("orchestrator.controller")
    return controller is not None and isinstance(err, controller.SweepInterrupted)


def _raise_if(debug: bool) -> None:
    """With --debug, let the exception being handled propagate with its traceback."""
    if debug:
        raise


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_command(sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    main()
