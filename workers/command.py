"""The command trainer: a team's own training program, run once per trial as a subprocess.

Spec section (`trainer:`)::

    trainer:
      kind: command
      command: "torchrun --nproc-per-node 8 train.py --mixture {mixture_path} --seed {seed}"
      env: {WANDB_MODE: offline}   # extra environment variables (strings); optional
      cwd: /opt/team/train         # working directory; optional (default: the trial actor's)
      timeout_s: 7200              # kill the program and its children after this long; optional

The command is split like a shell would split it (`shlex.split`), then each word is formatted with
`{mixture_path}`, `{seed}` and `{trial}`, so a substituted path stays one argument whatever it holds.
No shell runs: for pipes or `&&`, write `bash -c '...'`; literal braces are written `{{` and `}}`.

What the program receives:

- `{mixture_path}` and `MIXSWEEP_MIXTURE_PATH`: a JSON file `{"domain": weight, ...}`, weights >= 0
  summing to 1. The same JSON is in `MIXSWEEP_MIXTURE`.
- `MIXSWEEP_SEED` (`{seed}`) and `MIXSWEEP_TRIAL` (`{trial}`, the trial id, e.g. for run names).
- Everything in the trial actor's environment, notably `CUDA_VISIBLE_DEVICES` for the GPUs Ray gave
  the trial, and `PYTHONUNBUFFERED=1` unless `env` overrides it.

What it writes on stdout, one JSON object per line (flush after each; with torchrun, rank 0 only):

- progress, any number of times: `{"step": 100, "tokens": 409600, "losses": {"books": 3.1, ...}}`
  (losses in nats/token on each domain's held-out text; step and tokens counted from the start).
- final, exactly once, last: `{"final": true, "losses": {...}}`, optionally with `"loss_stderr":
  {...}` (standard error of each loss, nats/token), `"tokens"`, `"steps"` and `"info": {...}`
  (kept in the trial's result).

Any other stdout line, and every stderr line (prefixed `[stderr] `), goes to `command.log` in the
trial directory when there is one, and to the actor's own output, which the Ray dashboard shows under
the trial actor's logs. A line that is a JSON object with `losses` or `final` but does not follow the
protocol fails the trial: a mistyped progress line is a bug to hear about, not a line to drop.

The trial fails when the program exits non-zero (the message carries its last stderr line), runs
past `timeout_s`, or exits 0 without a final line.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping

from workers.protocol import Progress, TrialRequest, TrialResult

PLACEHOLDERS = ("mixture_path", "seed", "trial")
LOG_NAME = "command.log"
MIXTURE_NAME = "mixture.json"
_STDERR_TAIL = 20  # lines of stderr kept in memory for the failure message
EXIT_GRACE_S = 5.0  # after the program exits, how long its leftovers may hold stdout open (seconds)
_POLL_S = 0.1  # how often the watchdog looks at the program (seconds)


class CommandError(RuntimeError):
    """The training program failed: non-zero exit, timeout, bad protocol line or no final line."""


def check_template(command: str) -> list[str]:
    """Split a command template into words and check its placeholders; raises ValueError (one line).

    Called by the spec's validator, so a typo such as `{mixture}` is caught before any trial runs.
    """
    try:
        words = shlex.split(command)
    except ValueError as err:  # e.g. an unclosed quote
        raise ValueError(f"cannot split the command like a shell would ({err}); check its quotes") from None
    if not words:
        raise ValueError("the command is empty; give the program to run, e.g. `python train.py --mixture {mixture_path}`")
    for word in words:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(word) if f is not None]
        except ValueError as err:
            raise ValueError(f"bad braces in {word!r} ({err}); write literal braces as {{{{ and }}}}") from None
        unknown = [f for f in fields if f not in PLACEHOLDERS]
        if unknown:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{unknown[0]}}} in the command; use {known}")
    return words


def build_argv(command: str, values: Mapping[str, str]) -> list[str]:
    """The program's argv: the template split into words, each word formatted with `values`."""
    return [word.format(**values) for word in check_template(command)]


def program_env(config: Mapping[str, Any], mixture: Mapping[str, float], mixture_path: Path, seed: int,
                trial: str) -> dict[str, str]:
    """The actor's environment plus the MIXSWEEP_* variables and the spec's `env` (which wins)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")  # a Python program on a pipe would otherwise buffer its progress
    env.update(MIXSWEEP_MIXTURE=json.dumps(dict(mixture)), MIXSWEEP_MIXTURE_PATH=str(mixture_path),
               MIXSWEEP_SEED=str(seed), MIXSWEEP_TRIAL=trial)
    env.update({str(k): str(v) for k, v in (config.get("env") or {}).items()})
    return env


def parse_line(line: str) -> dict[str, Any] | None:
    """Decode one stdout line: a protocol message (dict), or None for an ordinary log line.

    Raises CommandError for a line that is meant as a message (a JSON object with `losses` or
    `final`) but is malformed, naming what is wrong.
    """
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not ("losses" in obj or "final" in obj):
        return None  # someone else's JSON log line
    losses = obj.get("losses")
    if not isinstance(losses, dict) or not losses or not all(_is_number(v) for v in losses.values()):
        raise CommandError(f"bad progress line (losses must be a non-empty {{domain: number}}): {text[:200]}")
    if obj.get("final") is True:
        stderr = obj.get("loss_stderr", {})
        if not isinstance(stderr, dict) or not all(_is_number(v) for v in stderr.values()):
            raise CommandError(f"bad final line (loss_stderr must be {{domain: number}}): {text[:200]}")
        _check_final_extras(obj, text)
        return obj
    if "final" in obj:
        raise CommandError(f"bad final line (`final` must be true): {text[:200]}")
    if not all(isinstance(obj.get(k), int) and not isinstance(obj.get(k), bool) for k in ("step", "tokens")):
        raise CommandError(f"bad progress line (step and tokens must be integers): {text[:200]}")
    return obj


def _check_final_extras(obj: dict[str, Any], text: str) -> None:
    """The final line's optional fields: integer tokens and steps, an object for info."""
    for key in ("tokens", "steps"):
        if key in obj and not (isinstance(obj[key], int) and not isinstance(obj[key], bool)):
            raise CommandError(f"bad final line ({key} must be an integer): {text[:200]}")
    if "info" in obj and not isinstance(obj["info"], dict):
        raise CommandError(f"bad final line (info must be an object): {text[:200]}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _death_signal() -> Callable[[], None] | None:
    """A preexec_fn for the child: get SIGTERM when the actor dies (Linux only), so a killed trial never
    leaves a training program holding its GPUs. SIGTERM, not SIGKILL, lets torchrun stop its workers.

    libc is looked up here, in the parent: loading a library between fork and exec can deadlock.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()
    PR_SET_PDEATHSIG = 1

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the actor died before the signal was armed
            os._exit(1)

    return arm


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the program and everything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is gone (its pid may even be reused)
        pass


class _Log:
    """Where non-protocol output goes: command.log (if any) and the actor's own stdout, line by line."""

    def __init__(self, path: Path | None) -> None:
        self._fh = open(path, "a", encoding="utf-8", buffering=1) if path else None
        self._lock = threading.Lock()  # stdout and stderr are read by two threads

    def write(self, line: str) -> None:
        with self._lock:
            if self._fh:
                self._fh.write(line + "\n")
            print(line, flush=True)

    def header(self, text: str) -> None:
        """A line in command.log only, separating attempts of a retried trial."""
        if self._fh:
            self._fh.write(f"=== mixsweep: {text}\n")

    def close(self) -> None:
        if self._fh:
            self._fh.close()


def _drain_stderr(stream, tail: deque, log: _Log) -> None:
    """Read stderr until EOF, keeping its last lines for the failure message."""
    for raw in stream:
        line = raw.rstrip("\n")
        if line.strip():
            tail.append(line.strip())
        log.write("[stderr] " + line)


def run_trial(request: TrialRequest, data: Any, report: Callable[[Progress], None]) -> TrialResult:
    """The `command` entry of workers/trainers.py."""
    return run_command(request.mixture, request.trainer, request.trainer_seed, report, trial_dir=request.trial_dir,
                       trial=request.trial)


def run_command(mixture: Mapping[str, float], config: Mapping[str, Any], seed: int,
                report: Callable[[Progress], None], trial_dir: str | Path | None = None,
                trial: str = "") -> TrialResult:
    """Run the trial's program to completion, streaming each progress line to `report` as it arrives.

    Args:
        mixture: domain -> weight (sums to 1).
        config: the spec's `trainer` section: `command`, and optionally `env`, `cwd`, `timeout_s` (seconds).
        seed: the sweep's seed, passed on as `{seed}` / MIXSWEEP_SEED.
        report: called with each Progress (elapsed_s measured from the program's start, in seconds).
        trial_dir: where mixture.json and command.log are kept; None = a temporary directory, removed after.
        trial: the trial id, passed on as `{trial}` / MIXSWEEP_TRIAL.

    Returns the final line's losses as a TrialResult. Raises CommandError on failure.
    """
    if trial_dir is None:
        with tempfile.TemporaryDirectory(prefix="mixsweep-trial-") as tmp:
            return _run_in(Path(tmp), None, mixture, config, seed, report, trial)
    d = Path(trial_dir)
    d.mkdir(parents=True, exist_ok=True)
    return _run_in(d, d / LOG_NAME, mixture, config, seed, report, trial)


def _run_in(work: Path, log_path: Path | None, mixture: Mapping[str, float], config: Mapping[str, Any],
            seed: int, report: Callable[[Progress], None], trial: str) -> TrialResult:
    mixture_path = work / MIXTURE_NAME
    mixture_path.write_text(json.dumps(dict(mixture)))
    argv = build_argv(config["command"], {"mixture_path": str(mixture_path), "seed": str(seed), "trial": trial})
    env = program_env(config, mixture, mixture_path, seed, trial)
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", bufsize=1, env=env, cwd=config.get("cwd"), start_new_session=True,
                                preexec_fn=_death_signal())
    except (FileNotFoundError, PermissionError, NotADirectoryError) as err:
        raise CommandError(f"cannot start {argv[0]!r}: {err.strerror or err} (cwd {config.get('cwd') or os.getcwd()})") from None
    log = _Log(log_path)
    log.header(f"{time.strftime('%Y-%m-%d %H:%M:%S')} started {shlex.join(argv)}")  # one per attempt
    try:
        return _follow(proc, config, report, log, t0)
    finally:
        _kill_group(proc)  # no-op after a clean exit; stops stragglers after an error
        proc.wait()
        log.close()


def _follow(proc: subprocess.Popen, config: Mapping[str, Any], report: Callable[[Progress], None], log: _Log,
            t0: float) -> TrialResult:
    """Follow the program until it exits; return its result or raise CommandError."""
    tail: deque = deque(maxlen=_STDERR_TAIL)
    reader = threading.Thread(target=_drain_stderr, args=(proc.stderr, tail, log), daemon=True)
    reader.start()
    timed_out, stdout_closed = threading.Event(), threading.Event()
    timeout_s = config.get("timeout_s")
    threading.Thread(target=_watchdog, args=(proc, timeout_s, timed_out, stdout_closed), daemon=True).start()
    try:
        final, last = _read_stdout(proc, report, log, t0)
    finally:
        stdout_closed.set()
    code = proc.wait()
    reader.join(timeout=5.0)
    return _outcome(code, final, last, tail, timed_out.is_set(), timeout_s, time.perf_counter() - t0)


def _read_stdout(proc: subprocess.Popen, report: Callable[[Progress], None], log: _Log,
                 t0: float) -> tuple[dict | None, dict | None]:
    """Report each progress line as it arrives, log the others; returns (final line, last progress line)."""
    final, last = None, None
    for raw in proc.stdout:
        msg = parse_line(raw)
        if msg is None:
            log.write(raw.rstrip("\n"))
        elif msg.get("final") is True:
            if final is not None:
                raise CommandError("the program printed two final lines; print progress from one process (rank 0) only")
            final = msg
        else:
            last = msg
            report(Progress(step=msg["step"], tokens=msg["tokens"], elapsed_s=time.perf_counter() - t0,
                            losses={k: float(v) for k, v in msg["losses"].items()}))
    return final, last


def _watchdog(proc: subprocess.Popen, timeout_s: float | None, timed_out: threading.Event,
              stdout_closed: threading.Event) -> None:
    """Kill the program's process group when it runs past `timeout_s` (seconds), or when it has exited
    but something it started still holds stdout open after EXIT_GRACE_S (the trial would hang on it)."""
    deadline = time.monotonic() + float(timeout_s) if timeout_s else float("inf")
    while True:
        exited = proc.poll() is not None
        if exited and stdout_closed.is_set():
            return
        if time.monotonic() > deadline:
            timed_out.set()
            return _kill_group(proc)
        if exited:
            if not stdout_closed.wait(EXIT_GRACE_S):
                _kill_group(proc)
            return
        time.sleep(_POLL_S)


def _outcome(code: int, final: dict | None, last: dict | None, tail: deque, timed_out: bool,
             timeout_s: float | None, wall_s: float) -> TrialResult:
    """Turn the exit status and the final line into a TrialResult, or a CommandError saying why not."""
    said = f": {tail[-1][:300]}" if tail else " (no stderr)"
    if timed_out:
        raise CommandError(f"the program ran past timeout_s={timeout_s:g} s and was killed{said}")
    if code != 0:
        how = f"was killed by signal {_signal_name(-code)}" if code < 0 else f"exited with status {code}"
        raise CommandError(f"the program {how}{said}")
    if final is None:
        raise CommandError('the program exited 0 without a final line {"final": true, "losses": {...}}')
    losses = {k: float(v) for k, v in final["losses"].items()}
    return TrialResult(
        losses=losses,
        loss_stderr={k: float(v) for k, v in final.get("loss_stderr", {}).items()},
        tokens=int(final.get("tokens", last["tokens"] if last else 0)),
        steps=int(final.get("steps", last["step"] if last else 0)),
        wall_s=wall_s,
        info=dict(final.get("info") or {}),
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
