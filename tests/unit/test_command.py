"""The command trainer runs a real subprocess per trial and streams its progress lines as they come."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator.trial import Progress
from workers.command import CommandError, build_argv, check_template, parse_line, run_command

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "command_trainer.py"
MIXTURE = {"books": 0.5, "code": 0.3, "math": 0.2}
PY = sys.executable


def script(tmp_path: Path, body: str, name: str = "prog.py") -> Path:
    """Write a small Python program for one test."""
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


def collect() -> tuple[list[tuple[float, Progress]], callable]:
    """A report callback that records each Progress with the monotonic time it arrived (seconds)."""
    seen: list[tuple[float, Progress]] = []
    return seen, lambda p: seen.append((time.monotonic(), p))


def test_example_program_streams_each_progress_line_before_it_exits(tmp_path):
    seen, report = collect()
    steps, sleep_s = 4, 0.3
    config = {"command": f"{PY} {EXAMPLE} --mixture {{mixture_path}} --seed {{seed}} --steps {steps} --sleep-s {sleep_s}"}
    result = run_command(MIXTURE, config, 7, report, trial_dir=tmp_path / "trial", trial="t123")
    ended = time.monotonic()

    assert [p.step for _, p in seen] == [1, 2, 3, 4]
    assert [p.tokens for _, p in seen] == [65536 * s for s in (1, 2, 3, 4)]
    # Streaming: the first line arrived while the program still had three sleeps to go.
    assert ended - seen[0][0] > (steps - 1) * sleep_s * 0.8
    assert all(set(p.losses) == set(MIXTURE) for _, p in seen)
    assert seen[-1][1].losses["books"] < seen[0][1].losses["books"]  # it "trains"
    assert 0 < seen[0][1].elapsed_s < seen[-1][1].elapsed_s <= result.wall_s
    assert set(result.losses) == set(MIXTURE) and result.loss_stderr == {d: 0.005 for d in MIXTURE}
    assert (result.tokens, result.steps) == (4 * 65536, 4)
    assert result.info == {"program": "examples/command_trainer.py"}
    trial = tmp_path / "trial"
    assert json.loads((trial / "mixture.json").read_text()) == MIXTURE
    log = (trial / "command.log").read_text()
    assert "training on 3 domains, seed 7, trial t123" in log and "[stderr] done" in log
    assert '"step"' not in log  # protocol lines are not log lines


def test_program_receives_mixture_seed_and_env_by_path_argument_and_variables(tmp_path):
    prog = script(tmp_path, """
        import json, os, sys
        path = sys.argv[1]
        info = {"arg_path": path, "file": json.load(open(path)), "env_mixture": json.loads(os.environ["MIXSWEEP_MIXTURE"]),
                "env_path": os.environ["MIXSWEEP_MIXTURE_PATH"], "seed_arg": sys.argv[2],
                "env_seed": os.environ["MIXSWEEP_SEED"], "trial": os.environ["MIXSWEEP_TRIAL"],
                "team": os.environ["TEAM_FLAG"], "cwd": os.getcwd(), "unbuffered": os.environ.get("PYTHONUNBUFFERED")}
        print(json.dumps({"final": True, "losses": {"books": 1.0}, "info": info}))
    """)
    workdir = tmp_path / "with space"
    workdir.mkdir()
    config = {"command": f"{PY} {prog} {{mixture_path}} {{seed}}", "env": {"TEAM_FLAG": "on"}, "cwd": str(workdir)}
    info = run_command(MIXTURE, config, 11, lambda p: None, trial="tabc").info  # no trial_dir: a temp dir

    assert info["file"] == info["env_mixture"] == MIXTURE
    assert info["arg_path"] == info["env_path"] and info["arg_path"].endswith("mixture.json")
    assert not os.path.exists(info["arg_path"])  # the temporary directory is gone afterwards
    assert (info["seed_arg"], info["env_seed"], info["trial"], info["team"]) == ("11", "11", "tabc", "on")
    assert info["cwd"] == str(workdir) and info["unbuffered"] == "1"


def test_nonzero_exit_raises_with_last_stderr_line_after_streaming_earlier_progress(tmp_path):
    prog = script(tmp_path, """
        import json, sys
        print(json.dumps({"step": 1, "tokens": 10, "losses": {"books": 2.5}}), flush=True)
        print("loading shard 3", file=sys.stderr)
        print("RuntimeError: CUDA out of memory", file=sys.stderr)
        sys.exit(3)
    """)
    seen, report = collect()
    with pytest.raises(CommandError, match=r"exited with status 3: RuntimeError: CUDA out of memory"):
        run_command(MIXTURE, {"command": f"{PY} {prog}"}, 0, report, trial_dir=tmp_path / "t")
    assert [p.losses for _, p in seen] == [{"books": 2.5}]
    assert "[stderr] loading shard 3" in (tmp_path / "t" / "command.log").read_text()


def test_clean_exit_without_final_line_fails_the_trial(tmp_path):
    prog = script(tmp_path, """
        import json
        print(json.dumps({"step": 1, "tokens": 10, "losses": {"books": 2.5}}))
        print("bye")
    """)
    with pytest.raises(CommandError, match="without a final line"):
        run_command(MIXTURE, {"command": f"{PY} {prog}"}, 0, lambda p: None)


def test_timeout_kills_the_program_and_the_processes_it_started(tmp_path):
    pid_file = tmp_path / "child.pid"
    prog = script(tmp_path, f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("started", flush=True)
        time.sleep(60)
    """)
    t0 = time.monotonic()
    with pytest.raises(CommandError, match=r"ran past timeout_s=1 s"):
        run_command(MIXTURE, {"command": f"{PY} {prog}", "timeout_s": 1.0}, 0, lambda p: None)
    assert time.monotonic() - t0 < 10
    assert wait_gone(int(pid_file.read_text()), 5.0), "the program's own child outlived the timeout"


def wait_gone(pid: int, within_s: float) -> bool:
    """True once `pid` has exited (a zombie counts as exited) within `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_program_is_stopped_when_the_trial_process_is_killed(tmp_path):
    """A trial actor killed by Ray must not leave its training program running (holding GPUs)."""
    pid_file = tmp_path / "prog.pid"
    prog = script(tmp_path, f"""
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    """)
    runner = script(tmp_path, f"""
        from workers.command import run_command
        run_command({{"a": 1.0}}, {{"command": {f"{PY} {prog}"!r}}}, 0, print)
    """, name="runner.py")
    actor = subprocess.Popen([PY, str(runner)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and actor.poll() is None, "the runner never started the program"
            time.sleep(0.05)
        os.kill(actor.pid, signal.SIGKILL)  # what a dead actor looks like to its children
        assert wait_gone(int(pid_file.read_text()), 5.0), "the program outlived the process that ran it"
    finally:
        actor.kill()
        actor.wait()


@pytest.mark.parametrize("line, why", [
    ('{"step": 1, "tokens": 5, "losses": "low"}', "losses must be"),
    ('{"step": 1, "tokens": 5, "losses": {}}', "losses must be"),
    ('{"step": "1", "tokens": 5, "losses": {"a": 1.0}}', "step and tokens must be integers"),
    ('{"final": "yes", "losses": {"a": 1.0}}', "`final` must be true"),
    ('{"final": true, "losses": {"a": 1.0}, "loss_stderr": [0.1]}', "loss_stderr"),
    ('{"final": true, "losses": {"a": 1.0}, "tokens": 1.5}', "tokens must be an integer"),
])
def test_malformed_protocol_lines_are_errors_not_log_lines(line, why):
    with pytest.raises(CommandError, match=why):
        parse_line(line)


@pytest.mark.parametrize("line", ["epoch 1 done", '{"step": 3, "loss": 2.1}', "{not json", "[1, 2]", ""])
def test_ordinary_output_including_other_json_is_a_log_line(line):
    assert parse_line(line) is None


def test_a_bad_line_mid_run_fails_the_trial_and_stops_the_program(tmp_path):
    prog = script(tmp_path, """
        import json, time
        print(json.dumps({"step": 1, "tokens": 5, "losses": {"a": "nan?"}}), flush=True)
        time.sleep(60)
    """)
    t0 = time.monotonic()
    with pytest.raises(CommandError, match="bad progress line"):
        run_command(MIXTURE, {"command": f"{PY} {prog}"}, 0, lambda p: None)
    assert time.monotonic() - t0 < 10


def test_two_final_lines_point_at_multiple_ranks(tmp_path):
    prog = script(tmp_path, """
        import json
        for rank in (0, 1):
            print(json.dumps({"final": True, "losses": {"a": 1.0}}))
    """)
    with pytest.raises(CommandError, match="rank 0"):
        run_command(MIXTURE, {"command": f"{PY} {prog}"}, 0, lambda p: None)


def test_missing_program_is_a_one_line_error(tmp_path):
    with pytest.raises(CommandError, match="cannot start 'no-such-trainer-binary'"):
        run_command(MIXTURE, {"command": "no-such-trainer-binary --mixture {mixture_path}"}, 0, lambda p: None)


def test_template_words_stay_whole_and_placeholders_are_checked():
    argv = build_argv("torchrun --nproc-per-node 8 train.py --mixture={mixture_path} --json '{{\"a\": 1}}'",
                      {"mixture_path": "/runs/my sweep/mixture.json", "seed": "0", "trial": "t1"})
    assert argv == ["torchrun", "--nproc-per-node", "8", "train.py", "--mixture=/runs/my sweep/mixture.json",
                    "--json", '{"a": 1}']
    with pytest.raises(ValueError, match=r"unknown placeholder \{mixture\}"):
        check_template("python train.py --mixture {mixture}")
    with pytest.raises(ValueError, match="quotes"):
        check_template("python train.py --name 'unclosed")
    with pytest.raises(ValueError, match="empty"):
        check_template("   ")


def test_a_leftover_process_holding_stdout_does_not_hang_the_trial(tmp_path, monkeypatch):
    """The program exits 0, but something it started keeps the pipe open: the result still comes."""
    import workers.command

    monkeypatch.setattr(workers.command, "EXIT_GRACE_S", 0.5)
    prog = script(tmp_path, """
        import json, subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # inherits stdout
        print(json.dumps({"final": True, "losses": {"a": 1.5}}), flush=True)
    """)
    t0 = time.monotonic()
    result = run_command(MIXTURE, {"command": f"{PY} {prog}"}, 0, lambda p: None)
    assert result.losses == {"a": 1.5}
    assert time.monotonic() - t0 < 10


def test_the_example_spec_command_runs_from_the_repository_root(tmp_path, monkeypatch):
    """examples/command.yaml's trainer section, as the actor would hand it over, trains and reports."""
    import yaml

    trainer = yaml.safe_load((ROOT / "examples" / "command.yaml").read_text())["trainer"]
    assert trainer["kind"] == "command"
    monkeypatch.chdir(ROOT)  # the actor's working directory when the driver runs from the repository
    seen, report = collect()
    result = run_command(MIXTURE, trainer, 0, report, trial_dir=tmp_path)
    assert len(seen) == 4 and set(result.losses) == set(MIXTURE)


def test_undecodable_output_is_kept_not_fatal_and_each_attempt_is_marked_in_the_log(tmp_path):
    prog = script(tmp_path, """
        import json, sys
        sys.stdout.buffer.write(b"loss \\xff\\xfe garbled\\n")
        sys.stdout.flush()
        print(json.dumps({"final": True, "losses": {"a": 1.25}}))
    """)
    for _ in range(2):  # a retried trial runs again in the same trial directory
        assert run_command(MIXTURE, {"command": f"{PY} {prog}"}, 0, lambda p: None, trial_dir=tmp_path / "t").losses == {"a": 1.25}
    log = (tmp_path / "t" / "command.log").read_text()
    assert log.count("=== mixsweep: ") == 2 and log.count("loss \ufffd\ufffd garbled") == 2
