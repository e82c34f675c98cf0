"""The CLI's error boundary (orchestrator/cli.py run_command/main): every failure is exactly one line on
stderr, `error: ...`, with exit code 2 (usage or input), 130 (interrupted) or 1 (internal error, with a
hint to rerun with --debug); a traceback only with --debug or MIXSWEEP_DEBUG=1.

In-process through `run_command` (a subprocess pays seconds of imports per call); two real `mixsweep`
processes check the console script itself. No Ray. Nothing is written outside the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import cli
from orchestrator.cli import run_command

SPEC = {"name": "hostile", "domains": {d: {} for d in ("a", "b", "c")}, "trainer": {"kind": "synthetic"},
        "strategy": {"kind": "sobol"}, "budget": {"trials": 4, "concurrency": 2}, "seed": 0}
MIX = {"a": 0.5, "b": 0.3, "c": 0.2}
ORIGINAL_ENV = dict(os.environ)  # before the fixture points HOME at a tmp dir


pytestmark = pytest.mark.usefixtures("confined")  # tests/conftest.py


def _fails(capsys, argv: list[str], code: int = 2) -> str:
    """Run argv; assert the exit code and exactly one `error:` line on stderr, no traceback; return it."""
    rc = run_command(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert rc == code, f"exit {rc}, stderr {err!r}"
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: ") and lines[0][7:].strip(), err
    return lines[0]


def _sweep(tmp_path: Path, spec: str | None = "frozen", journal: str | None = "events") -> Path:
    """A small finished-looking sweep directory (frozen spec, journal with one completed trial)."""
    d = tmp_path / "sweep"
    (d / "trials").mkdir(parents=True)
    if spec == "frozen":
        (d / "spec.yaml").write_text(yaml.safe_dump({"mixsweep_version": "0.1.0", "spec_digest": "x", **SPEC}))
    elif spec is not None:
        (d / "spec.yaml").write_text(spec)
    if journal == "events":
        losses = {"a": 2.0, "b": 2.1, "c": 2.2}
        events = [{"event": "sweep_started", "name": "hostile", "domains": ["a", "b", "c"], "budget": 4, "concurrency": 2},
                  {"event": "trial_proposed", "trial": "t000000000001", "mixture": MIX},
                  {"event": "trial_started", "trial": "t000000000001", "attempt": 1},
                  {"event": "trial_completed", "trial": "t000000000001", "losses": losses, "objective": 2.1}]
        journal = "".join(json.dumps({"seq": i, "time": 1.0 + i, **e}) + "\n" for i, e in enumerate(events))
    if journal is not None:
        (d / "journal.jsonl").write_text(journal)
    return d


# ------------------------------------------------------------------------------------ usage errors
USAGE = [  # (id, argv, substrings)
    ("bare", [], ["no command given", "mixsweep --help"]),
    ("unknown-option", ["--bogus"], ["No such option: --bogus"]),
    ("unknown-command", ["launch"], ["No such command 'launch'"]),
    ("run-no-spec", ["run"], ["Missing argument", "mixsweep run --help"]),
    ("validate-no-spec", ["validate"], ["Missing argument"]),
    ("status-no-dir", ["status"], ["Missing argument"]),
    ("resume-no-dir", ["resume"], ["Missing argument"]),
    ("report-no-dir", ["report"], ["Missing argument"]),
    ("export-no-format", ["export", "somewhere"], ["Missing option '--format'"]),
    ("ladder-no-preset", ["ladder", "somewhere"], ["Missing option '--preset'"]),
    ("submit-no-address", ["submit", "s.yaml"], ["Missing option"]),
    ("recommend-propose-0", ["recommend", "--runs", "r.csv", "--propose", "0"], ["--propose", "greater than or equal to 1"]),
    ("run-unknown-option", ["run", "s.yaml", "--fast"], ["No such option: --fast"]),
    ("status-extra-arg", ["status", "a", "b"], ["unexpected extra argument"]),
    ("ladder-top-0", ["ladder", "d", "--preset", "1m", "--top", "0"], ["--top"]),
    ("validate-bad-bool", ["validate", "s.yaml", "--data=maybe"], ["does not take a value"]),
]


@pytest.mark.parametrize("argv,expected", [pytest.param(a, x, id=i) for i, a, x in USAGE])
def test_a_usage_error_is_one_line_and_exit_2(capsys, argv: list[str], expected: list[str]) -> None:
    line = _fails(capsys, argv)
    for part in expected:
        assert part in line, f"{part!r} not in {line!r}"


def test_help_exits_0_without_an_error(capsys) -> None:
    assert run_command(["--help"]) == 0
    out = capsys.readouterr()
    assert "run" in out.out and "--debug" in out.out and out.err == ""


def test_debug_anywhere_shows_the_traceback(capsys) -> None:
    from typer._click.exceptions import UsageError

    with pytest.raises(UsageError):
        run_command(["launch", "--debug"])


def test_mixsweep_debug_env_shows_the_traceback(capsys, monkeypatch) -> None:
    from orchestrator.spec import SpecError

    monkeypatch.setenv("MIXSWEEP_DEBUG", "1")
    with pytest.raises(SpecError):
        run_command(["validate", "missing.yaml"])


# ------------------------------------------------------------------------------------ input errors
def test_a_hostile_spec_is_one_line(capsys, tmp_path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(SPEC) + "budget: {trials: 5}\n")
    assert "'budget' appears twice" in _fails(capsys, ["validate", str(spec)])


def test_a_missing_spec_is_one_line(capsys, tmp_path) -> None:
    assert "not found" in _fails(capsys, ["run", str(tmp_path / "nope.yaml"), "--dir", str(tmp_path / "d")])
    assert not (tmp_path / "d").exists()


def test_resume_without_a_frozen_spec_is_one_line(capsys, tmp_path) -> None:
    d = _sweep(tmp_path, spec=None)
    assert "no spec.yaml" in _fails(capsys, ["resume", str(d)])


@pytest.mark.parametrize("text,expected", [
    ("domains: [a\n", "not valid YAML"),
    ("name: x\nname: y\n", "'name' appears twice"),
    ("- a\n- b\n", "not a YAML mapping"),
    (yaml.safe_dump({**SPEC, "budget": {"trials": True}}), "`budget.trials`"),
])
def test_resume_with_an_invalid_frozen_spec_is_one_line(capsys, tmp_path, text: str, expected: str) -> None:
    d = _sweep(tmp_path, spec=text)
    line = _fails(capsys, ["resume", str(d)])
    assert "frozen spec" in line and expected in line


@pytest.mark.parametrize("command", ["status", "report", "resume", "export"])
def test_a_directory_without_a_journal_is_one_line(capsys, tmp_path, command: str) -> None:
    argv = [command, str(tmp_path)] + (["--format", "json"] if command == "export" else [])
    assert "not a sweep directory" in _fails(capsys, argv)


@pytest.mark.parametrize("command", ["status", "report"])
def test_an_empty_journal_is_one_line(capsys, tmp_path, command: str) -> None:
    d = _sweep(tmp_path, journal="")
    assert "is empty" in _fails(capsys, [command, str(d)])


@pytest.mark.parametrize("uri", ["foo://bucket/sweep", "nosuch+scheme://x/y"])
@pytest.mark.parametrize("command", ["status", "report"])
def test_an_unknown_uri_scheme_is_one_line(capsys, command: str, uri: str) -> None:
    assert "cannot use this location" in _fails(capsys, [command, uri])


def test_a_read_only_sweep_directory_is_one_line(capsys, tmp_path, monkeypatch) -> None:
    # Tests may run as root, where chmod does not stop writes: the refusal is simulated where it happens.
    import orchestrator.report as report

    def refuse(sweep_dir):
        raise PermissionError(13, "Permission denied", str(Path(sweep_dir) / "report"))

    monkeypatch.setattr(report, "write_report", refuse)
    line = _fails(capsys, ["report", str(_sweep(tmp_path))])
    assert "Permission denied" in line and "report" in line and "permissions" in line


def test_a_report_path_that_is_a_file_is_one_line(capsys, tmp_path) -> None:
    d = _sweep(tmp_path)
    (d / "report").write_text("in the way")
    _fails(capsys, ["report", str(d)])


def test_a_hostile_runs_table_is_one_line(capsys, tmp_path) -> None:
    runs = tmp_path / "r.csv"
    runs.write_text("weight.a,weight.b,loss.a,loss.a\n0.5,0.5,2,3\n")
    assert "appears twice" in _fails(capsys, ["recommend", "--runs", str(runs), "--out", str(tmp_path / "rec.json")])
    assert not (tmp_path / "rec.json").exists()


# ------------------------------------------------------------------------------- internal errors
def test_an_internal_error_is_one_line_exit_1_with_the_debug_hint(capsys, tmp_path, monkeypatch) -> None:
    import orchestrator.spec as spec_module

    def broken(path):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(spec_module, "load_spec", broken)
    monkeypatch.setattr(cli, "load_spec", broken)
    line = _fails(capsys, ["validate", "x.yaml"], code=1)
    assert "internal error (ZeroDivisionError: division by zero)" in line and "--debug" in line


def test_an_interrupt_outside_a_sweep_is_one_line_exit_130(capsys, monkeypatch) -> None:
    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_spec", interrupted)
    assert "interrupted" in _fails(capsys, ["validate", "x.yaml"], code=130)


def test_main_exits_with_the_code(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["launch"])
    assert exc.value.code == 2 and capsys.readouterr().err.startswith("error: ")


# ------------------------------------------------------------------------- the console script itself
def test_the_mixsweep_script_prints_one_line_for_usage_errors(tmp_path) -> None:
    tmp_path = tmp_path / "script"
    tmp_path.mkdir()
    script = Path(sys.executable).parent / "mixsweep"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "orchestrator.cli"]
    # The real HOME: a fresh one makes matplotlib and friends rebuild their caches (tens of seconds).
    env = {k: v for k, v in os.environ.items() if k != "MIXSWEEP_DEBUG"}
    env["HOME"] = ORIGINAL_ENV.get("HOME", env["HOME"])
    proc = subprocess.run(cmd + ["--bogus"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: No such option"), proc.stderr
    assert sorted(os.listdir(tmp_path)) == []
