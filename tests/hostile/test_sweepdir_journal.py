"""Hostile sweep directories: journals and results written by hand, read by every public reader.

Each case builds a finished-looking sweep (frozen spec, journal, three results) inside a nest of
directories, spoils it one way, runs one reader (replay, `status`, `export`, `report`, resume), and
checks three promises: the reader gives one line naming the problem (or does the right thing), no
file outside the sweep directory was written, and no finished result changed by a byte.
No Ray: resume is stopped before it would start trials, or fails before it needs them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator import __version__
from orchestrator.cli import _user_errors, app
from orchestrator.controller import Controller, SweepDirExists
from orchestrator.export import export
from orchestrator.journal import JournalError, replay
from orchestrator.report import write_report
from orchestrator.resume import ResultConflict
from orchestrator.spec import parse_spec
from orchestrator.sweepdir import BadTrialId, trial_dir

DOMAINS = ("a", "b", "c")
SPEC = {"name": "hostile", "domains": {d: {} for d in DOMAINS}, "trainer": {"kind": "synthetic"},
        "strategy": {"kind": "sobol"}, "budget": {"trials": 6, "concurrency": 2}, "seed": 0}
DONE = [(f"t00000000000{i}", m) for i, m in enumerate([{"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 0.2, "b": 0.5, "c": 0.3},
                                                         {"a": 0.3, "b": 0.2, "c": 0.5}], start=1)]
RUNNING = ("t0000000000aa", {"a": 0.4, "b": 0.4, "c": 0.2})


def _losses(m: dict) -> dict:
    return {d: 2.0 + (w - 1 / 3) ** 2 + 0.1 * i for i, (d, w) in enumerate(m.items())}


def _result(tid: str, mixture: dict, **change) -> dict:
    """A result.json as Controller._complete writes it."""
    return {"trial": tid, "mixture": mixture, "losses": _losses(mixture), "loss_stderr": {}, "tokens": 100, "steps": 4,
            "wall_s": 1.2, "info": {}, **change}


def _events(running: bool = True) -> list[dict]:
    """The journal of a sweep with three completed trials (and one running), as the controller writes it."""
    ev: list[dict] = [{"event": "sweep_started", "name": "hostile", "domains": list(DOMAINS), "budget": 6, "concurrency": 2,
                       "objective": "mean of per-domain losses"}]
    for tid, m in DONE:
        ev += [{"event": "trial_proposed", "trial": tid, "mixture": m}, {"event": "trial_started", "trial": tid, "attempt": 1},
               {"event": "trial_progress", "trial": tid, "step": 1, "tokens": 10, "losses": _losses(m)},
               {"event": "trial_completed", "trial": tid, "losses": _losses(m), "objective": sum(_losses(m).values()) / 3}]
    ev.append({"event": "recommended", "mixture": DONE[0][1], "predicted_losses": _losses(DONE[0][1]), "predicted_std": {},
               "objective": 2.1, "source": "observed", "trials_used": 3, "notes": []})
    if running:
        ev += [{"event": "trial_proposed", "trial": RUNNING[0], "mixture": RUNNING[1]},
               {"event": "trial_started", "trial": RUNNING[0], "attempt": 1}]
    return [{"seq": i, "time": 1.0 + i, **e} for i, e in enumerate(ev)]


class Sweep:
    """A sweep directory three levels down in tmp_path, and what it must not disturb."""

    def __init__(self, tmp_path: Path, events: list[dict] | None = None, lines: list[str] | None = None) -> None:
        self.root = tmp_path
        self.dir = tmp_path / "outer" / "parent" / "sweep"
        (self.dir / "trials").mkdir(parents=True)
        spec = parse_spec(SPEC)
        frozen = {"mixsweep_version": __version__, "spec_digest": spec.digest(), **spec.model_dump(mode="json")}
        (self.dir / "spec.yaml").write_text(yaml.safe_dump(frozen, sort_keys=False))
        for tid, m in DONE:
            (self.dir / "trials" / tid).mkdir()
            (self.dir / "trials" / tid / "result.json").write_text(json.dumps(_result(tid, m), indent=2, sort_keys=True))
        (tmp_path / "outer" / "bystander.txt").write_text("not the sweep's")
        if lines is None:
            lines = [json.dumps(e) for e in (events if events is not None else _events())]
        self.journal.write_text("".join(line + "\n" for line in lines))
        self.before = self.outside()
        self.results = self.result_bytes()

    @property
    def journal(self) -> Path:
        return self.dir / "journal.jsonl"

    def outside(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes() for p in self.root.rglob("*")
                if p.is_file() and self.dir not in p.parents}

    def result_bytes(self) -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted((self.dir / "trials").glob("*/result.json"))}

    def assert_contained(self) -> None:
        """Nothing written outside the sweep directory, no finished result changed."""
        assert self.outside() == self.before
        assert not (self.root.parent / f"{self.root.name}-escape").exists()
        for path, blob in self.results.items():
            assert Path(path).read_bytes() == blob, f"{path} changed"


def _spoil(kind: str, root: Path) -> tuple[list[str] | None, str]:
    """Journal lines spoiled one way, and what the one-line error must say."""
    ev = _events()
    dump = [json.dumps(e) for e in ev]
    escape = str(root.parent / f"{root.name}-escape")
    def with_line(i: int, **change) -> list[str]:
        out = list(dump)
        out[i] = json.dumps({**ev[i], **change})
        return out
    proposed = next(i for i, e in enumerate(ev) if e["event"] == "trial_proposed")
    completed = next(i for i, e in enumerate(ev) if e["event"] == "trial_completed")
    rec = next(i for i, e in enumerate(ev) if e["event"] == "recommended")
    cases = {
        "dotdot_id": (with_line(proposed, trial="../../../escape"), "is not t + 12 hex"),
        "absolute_id": (with_line(proposed, trial=escape), "is not t + 12 hex"),
        "id_with_slash": (with_line(proposed, trial="t000000000001/../../x"), "is not t + 12 hex"),
        "ladder_suffix_escape": (with_line(proposed, trial="t000000000001-../../x"), "is not t + 12 hex"),
        "id_not_a_string": (with_line(proposed, trial=["t000000000001"]), "is not t + 12 hex"),
        "unknown_mixture_domain": (with_line(proposed, mixture={"a": 0.5, "b": 0.3, "zz": 0.2}), "unknown domain(s) 'zz'"),
        "missing_mixture_domain": (with_line(proposed, mixture={"a": 0.5, "b": 0.5}), "not the frozen spec's"),
        "unknown_loss_domain": (with_line(completed, losses={"a": 2.0, "b": 2.0, "c": 2.0, "web": 1.0}), "unknown domain(s) 'web'"),
        "code_in_a_name": (with_line(rec, mixture={'a"""\nimport os\n"""': 0.5, "b": 0.3, "c": 0.2}), "unknown domain(s)"),
        "path_in_a_loss_name": (with_line(completed, losses={"../a": 2.0}), "unknown domain(s) '../a'"),
        "never_proposed": (with_line(completed, trial="t0000000000ff"), "which no earlier line proposed"),
        "seq_reused": (with_line(completed, seq=ev[completed - 1]["seq"]), "used by two different events"),
        "seq_not_int": (with_line(completed, seq="7"), "is not an integer"),
        "loss_not_a_number": (with_line(completed, losses={"a": "2.0", "b": 2.0, "c": 2.0}), "mapping of domain -> number"),
        "nan_completion": (with_line(completed, losses={"a": math.nan, "b": 2.0, "c": 2.0}), "non-finite losses"),
        "not_json_mid_file": ([*dump[:3], "{torn", *dump[3:]], "line 4 is not a journal event"),
        "completed_without_losses": ([*dump[:completed], json.dumps({k: v for k, v in ev[completed].items() if k != "losses"}),
                                      *dump[completed + 1:]], "has no 'losses'"),
        "sweep_domains_differ": (with_line(0, domains=["a", "b", "x"]), "unknown domain(s) 'x'"),
    }
    return cases[kind]


KINDS = ["dotdot_id", "absolute_id", "id_with_slash", "ladder_suffix_escape", "id_not_a_string", "unknown_mixture_domain",
         "missing_mixture_domain", "unknown_loss_domain", "code_in_a_name", "path_in_a_loss_name", "never_proposed",
         "seq_reused", "seq_not_int", "loss_not_a_number", "nan_completion", "not_json_mid_file", "completed_without_losses",
         "sweep_domains_differ"]


def _no_drive(self, vocab, opening, extra):
    """Controller._drive stand-in: record the opening event and stop (no Ray); what resume decided is on disk."""
    self._record_opening = (opening, extra)
    self.journal.close()
    self.lock.release()


def _resume(sweep: Sweep, monkeypatch) -> Controller:
    monkeypatch.setattr(Controller, "_drive", _no_drive)
    c = Controller(parse_spec(SPEC), sweep.dir, log=lambda m: None)
    c.resume()
    return c


def _run_reader(reader: str, sweep: Sweep, monkeypatch) -> None:
    if reader == "replay":
        replay(sweep.journal)
    elif reader == "status":
        result = CliRunner().invoke(app, ["status", str(sweep.dir), "--json"])
        if result.exception is not None:
            raise result.exception
    elif reader in ("export_json", "export_hf", "export_runs"):
        export(sweep.dir, reader.removeprefix("export_"))
    elif reader == "report":
        write_report(sweep.dir)
    else:
        _resume(sweep, monkeypatch)


READERS = ["replay", "status", "export_json", "export_hf", "export_runs", "report", "resume"]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_hostile_journal_is_one_line_naming_the_line_and_nothing_escapes(tmp_path, monkeypatch, kind, reader):
    lines, needle = _spoil(kind, tmp_path)
    sweep = Sweep(tmp_path, lines=lines)
    with pytest.raises(JournalError) as err:
        _run_reader(reader, sweep, monkeypatch)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and "journal.jsonl: line " in msg, msg
    assert isinstance(err.value, _user_errors())  # the CLI prints it as one `error:` line, exit 2
    sweep.assert_contained()
    assert not (sweep.dir / "controller.lock").exists()  # a refused resume lets go of the sweep


@pytest.mark.parametrize("spec_text, needle", [("domains: [a, b\n", "not a frozen spec"), ("- just\n- a list\n", "not a frozen spec"),
                                               ("name: x\n", "not a frozen spec")])
@pytest.mark.parametrize("reader", ["replay", "status", "report"])
def test_a_damaged_frozen_spec_is_one_line_not_a_free_pass_for_names(tmp_path, monkeypatch, spec_text, needle, reader):
    sweep = Sweep(tmp_path)
    (sweep.dir / "spec.yaml").write_text(spec_text)
    with pytest.raises(JournalError, match=needle):
        _run_reader(reader, sweep, monkeypatch)
    sweep.assert_contained()


def test_trial_dir_refuses_anything_but_a_trial_id(tmp_path):
    for bad in ["../x", "/etc", "t000000000001/..", "t00000000000", "T000000000001", "t000000000001-", "", "t000000000001-a/b"]:
        with pytest.raises(BadTrialId):
            trial_dir(tmp_path, bad)
    assert trial_dir(tmp_path, "t0123456789ab-25m") == tmp_path / "trials" / "t0123456789ab-25m"


# ------------------------------------------------------------------- odd but honest journals


def test_a_line_repeated_with_its_seq_is_told_to_the_strategy_once(tmp_path, monkeypatch):
    ev = _events()
    completed = next(i for i, e in enumerate(ev) if e["event"] == "trial_completed")
    lines = [json.dumps(e) for e in ev]
    lines.insert(completed + 1, lines[completed])
    sweep = Sweep(tmp_path, lines=lines)
    warn: list[str] = []
    assert len(replay(sweep.journal, warn).completed) == 3 and "repeats seq" in warn[0]
    c = _resume(sweep, monkeypatch)
    assert len(c.strategy.observations) == 3  # not 4: the repeated completion is one observation
    seqs = [json.loads(line)["seq"] for line in sweep.journal.read_text().splitlines()]
    assert seqs[-1] == max(seqs[:-1]) + 1  # the next event continues after the highest seq, none reused
    sweep.assert_contained()


def test_a_torn_last_line_is_dropped_by_resume_and_reported(tmp_path, monkeypatch):
    lines = [json.dumps(e) for e in _events()]
    sweep = Sweep(tmp_path, lines=lines)
    sweep.journal.write_text(sweep.journal.read_text() + '{"seq": 99, "event": "trial_pro')
    said: list[str] = []
    monkeypatch.setattr(Controller, "_drive", _no_drive)
    Controller(parse_spec(SPEC), sweep.dir, log=said.append).resume()
    assert any("cut by a crash" in s for s in said)
    lines = sweep.journal.read_text().splitlines()
    assert lines and all(json.loads(line) for line in lines)
    sweep.assert_contained()


def test_status_of_an_empty_journal_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    sweep = Sweep(tmp_path, lines=[])
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "status", str(sweep.dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("error:") and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "journal.jsonl is empty" in out.stderr
    sweep.assert_contained()


@pytest.mark.parametrize("journal", ["empty", "missing"])
def test_results_beside_an_empty_or_missing_journal_are_refused_not_retrained(tmp_path, monkeypatch, journal):
    sweep = Sweep(tmp_path, lines=[])
    if journal == "missing":
        sweep.journal.unlink()
    monkeypatch.setattr(Controller, "_drive", _no_drive)
    c = Controller(parse_spec(SPEC), sweep.dir, log=lambda m: None)
    with pytest.raises(ResultConflict, match=f"journal.jsonl is {journal} but trials/ holds 3 finished result"):
        c.resume()
    with pytest.raises(SweepDirExists, match="holds 3 finished trial result"):
        Controller(parse_spec(SPEC), sweep.dir, log=lambda m: None).run() if journal == "missing" else _run_into(sweep)
    sweep.assert_contained()
    assert not (sweep.dir / "controller.lock").exists()


def _run_into(sweep: Sweep) -> None:
    """`run` into a directory whose journal is empty: it holds a sweep (refused like any)."""
    try:
        Controller(parse_spec(SPEC), sweep.dir, log=lambda m: None).run()
    except SweepDirExists as err:
        raise SweepDirExists(f"{err} (holds 3 finished trial result)") from None


# ----------------------------------------------------------------- results the journal missed


def test_a_result_the_journal_missed_is_adopted_and_told_never_retrained(tmp_path, monkeypatch):
    sweep = Sweep(tmp_path)
    tdir = sweep.dir / "trials" / RUNNING[0]
    tdir.mkdir()
    (tdir / "result.json").write_text(json.dumps(_result(*RUNNING), indent=2, sort_keys=True))
    sweep.results = sweep.result_bytes()
    c = _resume(sweep, monkeypatch)
    events = [json.loads(line) for line in sweep.journal.read_text().splitlines()]
    adopted = [e for e in events if e["event"] == "trial_completed" and e.get("adopted")]
    assert [e["trial"] for e in adopted] == [RUNNING[0]] and adopted[0]["losses"] == _losses(RUNNING[1])
    assert c.state.trials[RUNNING[0]].status.value == "completed" and len(c.state.by_status(c.state.trials[RUNNING[0]].status)) == 4
    assert [o.mixture.as_dict() for o in c.strategy.observations][-1] == RUNNING[1]
    assert sum(e["event"] == "trial_started" and e["trial"] == RUNNING[0] for e in events) == 1
    sweep.assert_contained()


@pytest.mark.parametrize("spoil, needle", [
    (dict(mixture={"a": 0.1, "b": 0.1, "c": 0.8}), "is not the journal's"),
    (dict(trial="t000000000001"), "it names trial 't000000000001'"),
    (dict(losses={"a": math.nan, "b": 2.0, "c": 2.0}), "not finite numbers"),
    (dict(losses={"a": 2.0, "b": 2.0}), "miss ['c']"),
    (dict(losses={}), "not finite numbers"),
    (dict(losses={"a": "2", "b": 2.0, "c": 2.0}), "not finite numbers"),
    (dict(mixture={"a": 0.4, "b": 0.4}), "is not the journal's"),
    ("not json {", "not JSON"),
    ("[1, 2]", "not a result object"),
])
def test_a_result_that_is_not_the_journals_trial_stops_resume_and_is_kept(tmp_path, monkeypatch, spoil, needle):
    sweep = Sweep(tmp_path)
    tdir = sweep.dir / "trials" / RUNNING[0]
    tdir.mkdir()
    text = spoil if isinstance(spoil, str) else json.dumps({**_result(*RUNNING), **spoil}, allow_nan=True)
    (tdir / "result.json").write_text(text)
    sweep.results = sweep.result_bytes()
    journal = sweep.journal.read_bytes()
    with pytest.raises(ResultConflict) as err:
        _resume(sweep, monkeypatch)
    assert needle in str(err.value) and "\n" not in str(err.value) and f"trials/{RUNNING[0]}/result.json" in str(err.value)
    assert sweep.journal.read_bytes() == journal  # nothing journaled, nothing re-queued
    assert not (sweep.dir / "controller.lock").exists()
    sweep.assert_contained()
