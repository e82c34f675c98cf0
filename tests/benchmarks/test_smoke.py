"""Every benchmark runs its `--smoke` mode to the end and prints its figures, so none can rot (DESIGN.md
section 7): each script is run as a user runs it (`python benchmarks/X.py --smoke`, its own process, from
the repository root), and what it prints is checked against what its figures must say."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
NUMBER = r"-?\d[\d,]*\.?\d*"


def numbers(line: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(NUMBER, line)]


def table_rows(out: str, first_cell: str) -> list[list[str]]:
    """Cells of the markdown rows whose first cell is `first_cell`."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]
    return [r for r in rows if r[0] == first_cell]


def check_data_memory(out: str) -> None:
    ratios = {line.split()[0]: numbers(line.split("anonymous")[1])[0] for line in out.splitlines() if "10N/N:" in line}
    assert set(ratios) == {"mmap", "in-memory"}
    assert ratios["mmap"] <= 1.2  # what a trial owns does not grow with the corpus
    assert re.search(r"at 10N, mmap vs in-memory: peak RSS x[\d.]+, peak anonymous x[\d.]+", out)


def check_doremi_overhead(out: str) -> None:
    plain = re.search(r"plain trial \(baseline\): ([\d,]+) tokens/s", out)
    doremi = re.search(r"DoReMi proxy trial: +([\d,]+) tokens/s", out)
    ratio = re.search(r"ratio DoReMi / plain wall time: ([\d.]+)x; averaged weights \{'easy': ([\d.e-]+), 'hard': ([\d.e-]+)\}", out)
    assert plain and doremi and ratio, out
    assert float(ratio.group(1)) > 0 and math.isclose(float(ratio.group(2)) + float(ratio.group(3)), 1.0, abs_tol=1e-6)


def check_objective_constrained(out: str) -> None:
    rows = {line.split()[0]: numbers(line.split(None, 1)[1]) for line in out.splitlines()
            if line.split() and line.split()[0] in ("mean", "worst_excess", "mean_max_excess_0.01")}
    assert set(rows) == {"mean", "worst_excess", "mean_max_excess_0.01"}, out
    assert all(r[-5] > 0 and r[-4] > 0 for r in rows.values())  # ask s, recommend s
    assert rows["worst_excess"][-3] < 0.1  # scored against the reference run: an excess, not a raw loss
    assert rows["mean_max_excess_0.01"][-2] <= 0.01  # the constrained pick keeps (nearly) within its limit
    assert re.search(r"baseline \(mean\): ask [\d.]+ s, recommend [\d.]+ s", out)


def check_multifidelity(out: str) -> None:
    rows = {r[0]: r for r in (table_rows(out, "target only (gp)") + table_rows(out, "multi-fidelity (mfgp)"))}
    assert set(rows) == {"target only (gp)", "multi-fidelity (mfgp)"}, out
    assert numbers(rows["target only (gp)"][1])[0] == 30  # 3 trials at the target, cost 10 each
    assert 10 <= numbers(rows["multi-fidelity (mfgp)"][1])[0] <= 24  # within its budget (0.8 x 30)
    assert re.search(r"debug:\d+ 1m:0", rows["target only (gp)"][4]) is None  # the baseline trains at the target only
    assert re.search(r"debug:([1-9]\d*) 1m:\d+", rows["multi-fidelity (mfgp)"][4]), rows  # the candidate uses the cheap one
    assert all(numbers(r[2])[0] >= 0 and numbers(r[3])[0] >= 0 for r in rows.values())
    assert re.search(r"ratio multi-fidelity / target only: cost 0\.\d+x, regret recommended [\d.]+x, best observed [\d.]+x", out)


def check_orchestration(out: str) -> None:
    lines = [line for line in out.splitlines() if ": busy fraction " in line]
    assert lines, out
    for line in lines:
        m = re.search(r"busy fraction ([\d.]+), in trainer ([\d.]+), steady-state in trainer ([\d.]+) \(turnaround [\d.]+ s\) "
                      r"\((\d+) of (\d+) trials completed, (\d+) failed; peak in flight (\d+) of (\d+)\)", line)
        assert m, line
        busy, trainer, steady, done, trials, failed, peak, conc = (float(g) for g in m.groups())
        assert 0 < trainer <= busy <= 1.0 and 0 < steady <= 1.0 and done == trials == 8 and failed == 0 and peak == conc == 4
    ratio = next(line for line in out.splitlines() if line.startswith("ratio pooled / one process per trial:"))
    from orchestrator.spec import ResourcesSpec

    if "reuse_actors" in ResourcesSpec.model_fields:  # both modes ran, side by side
        assert len(lines) == 2 and re.search(r"busy [\d.]+x, in trainer [\d.]+x", ratio)
    else:
        assert len(lines) == 1 and "n/a" in ratio


def check_replay_bench(out: str) -> None:
    lines = [line for line in out.splitlines() if "recommended" in line]
    assert {line.split()[0] for line in lines} == {"gp", "sobol"}
    assert "1.00x Sobol" in next(line for line in lines if line.split()[0] == "sobol")


def check_report_cost(out: str) -> None:
    row = next(line for line in out.splitlines() if line.split() and line.split()[0] == "6")
    n, sobol, gp, ratio = numbers(row)
    assert sobol > 0 and gp > 0 and ratio > 0


def check_scale_transfer(out: str) -> None:
    arms = {r[0][:4].strip(): r for r in (table_rows_starting(out, "(a)") + table_rows_starting(out, "(b)")
                                          + table_rows_starting(out, "(c0)") + table_rows_starting(out, "(c)"))}
    assert set(arms) == {"(a)", "(b)", "(c0)", "(c)"}, out
    for row in arms.values():
        cells = [numbers(c) for c in row[1:]]
        assert len(cells) == 2 and all(len(c) == 2 and -1 <= c[0] <= 1 and 0 <= c[1] <= 1 for c in cells), row
    # The smoke's large size has its own optimum: fitted with the large runs, (c) ranks them well.
    assert all(numbers(c)[0] >= 0.7 for c in arms["(c)"][1:]), arms["(c)"]
    for arm in ("c0", "c"):
        assert re.search(rf"ratio \({arm}\) / better of \(a\), \(b\): loss.pile_cc [\d.]+x \(rank error [\d.]+x; vs \([ab]\) per draw "
                         r"[-+][\d.]+ ± [\d.]+, ahead in \d+/\d+\), "
                         r"(beats both|does NOT beat both); mean [\d.]+x", out), out
        cal = re.search(rf"calibration \({arm}\) at .*: loss.pile_cc ([\d.]+), mean ([\d.]+)", out)
        assert cal and all(0 <= float(x) <= 1 for x in cal.groups()), out
    widen = re.search(r"extrapolation \(c\): mean predicted std at .*: loss.pile_cc ([\d.]+)x, mean ([\d.]+)x", out)
    assert widen and all(float(x) > 1 for x in widen.groups()), out  # wider beyond the largest scale


def table_rows_starting(out: str, prefix: str) -> list[list[str]]:
    """Cells of the markdown rows whose first cell starts with `prefix` followed by a space."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]
    return [r for r in rows if r[0].startswith(prefix + " ")]


def check_strategies_fidelity(out: str) -> None:
    base = table_rows(out, "loss.pile_cc")
    spearman = {r[1]: numbers(r[2])[0] for r in base}
    assert spearman["LightGBM on objective (baseline)"] > 0  # fitted on enough rows to split
    assert spearman["gp (per domain, composed)"] >= 0.9  # a smooth truth ranks well
    assert {r[1] for r in table_rows(out, "mean")} == set(spearman)


def check_strategies_latency(out: str) -> None:
    rows = {r[0]: r for name in ("gp", "bayesopt", "sobol") for r in table_rows(out, name)}
    assert set(rows) == {"gp", "bayesopt", "sobol"}, out
    assert rows["bayesopt"][3] == "1.000x"  # Ax is the baseline
    assert float(rows["gp"][1]) > 0 and float(rows["bayesopt"][1]) > 0  # a fit and an acquisition, timed


def check_strategies_problems(out: str) -> None:
    rows = table_rows(out, "quadratic") + table_rows(out, "transfer")
    assert len(rows) == 2
    for r in rows:
        assert float(r[4]) > 0 and float(r[5]) >= -1e-9  # no random mixture beats the optimum
    assert table_rows(out, "quadratic")[0][4] == "0.2222"  # 4 |uniform - (1,2,3)/6|^2


def check_strategies_real(out: str) -> None:
    rows = {name: table_rows(out, name) for name in ("gp", "mde", "sobol")}
    assert all(len(r) == 1 for r in rows.values()), out
    assert rows["sobol"][0][-1] == "1.00"
    assert all(float(c) >= 0 for r in rows.values() for c in r[0][1:-1])  # regret against the best seen
    trained = re.search(r"; (\d+) proxies trained, ([\d.]+) s each", out)
    assert trained and 4 <= int(trained.group(1)) <= 12  # runs at the same (mixture, seed) are trained once


def check_strategies_regret(out: str) -> None:
    for problem in ("quadratic, 3 domains", "transfer, 3 domains"):
        assert problem in out
    sobol = table_rows(out, "sobol")
    assert len(sobol) == 2 and all(r[2] == "1.00" for r in sobol)
    for name in ("gp", "uniform"):
        rows = table_rows(out, name)
        assert len(rows) == 2 and all(numbers(r[1])[0] >= 0 for r in rows), out


def check_trainer(out: str) -> None:
    rates = {m.group(1).strip(): float(m.group(2).replace(",", "")) for m in
             re.finditer(r"^  (baseline, packed|baseline|trainer) +([\d,]+) tokens/s .* x[\d.]+ vs baseline$", out, re.M)}
    assert set(rates) == {"baseline", "baseline, packed", "trainer"} and all(v > 0 for v in rates.values()), out
    assert re.search(r"debug +sampler +[\d,]+ tokens/s +trainer +[\d,]+ tokens/s +x[\d,]+", out)


CHECKS = {name.removeprefix("check_"): fn for name, fn in globals().items() if name.startswith("check_")}
SLOW = {"orchestration", "replay_bench", "multifidelity"}  # each starts Ray and runs real sweeps: over 20 s here
# Run order; the next script starts while one runs (two at a time), so the two that start Ray are kept apart.
ORDER = ["orchestration", "data_memory", "doremi_overhead", "objective_constrained", "report_cost", "replay_bench",
         "scale_transfer", "strategies_fidelity", "strategies_latency", "strategies_problems", "strategies_real",
         "strategies_regret", "multifidelity", "trainer"]
TIMEOUT_S = 300.0


def test_every_benchmark_script_has_a_smoke_check():
    assert sorted(p.stem for p in BENCHMARKS.glob("*.py")) == sorted(CHECKS) == sorted(ORDER)


class Smokes:
    """`python benchmarks/<script>.py --smoke` for the selected scripts, each in its own process group,
    the next one started while one runs (the machine has two cores; each smoke mostly uses one, with one
    torch/BLAS thread). Output goes to files, so a script waiting its turn to be read never blocks."""

    def __init__(self, order: list[str], root: Path) -> None:
        self.order, self.root, self.procs = order, root, {}

    def _start(self, script: str) -> None:
        if script in self.procs:
            return
        out, err = open(self.root / f"{script}.out", "w+"), open(self.root / f"{script}.err", "w+")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, str(BENCHMARKS / f"{script}.py"), "--smoke"], cwd=ROOT, env=env,
                                stdout=out, stderr=err, text=True, start_new_session=True)
        self.procs[script] = (proc, out, err, time.monotonic())

    def result(self, script: str) -> subprocess.CompletedProcess:
        i = self.order.index(script)
        for name in self.order[i:i + 2]:
            self._start(name)
        proc, out, err, started = self.procs[script]
        try:
            proc.wait(timeout=max(1.0, started + TIMEOUT_S - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's processes too
            proc.wait()
            err.seek(0)
            raise AssertionError(f"{script} --smoke did not finish in {TIMEOUT_S:.0f} s:\n{err.read()[-3000:]}") from None
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())

    def close(self) -> None:
        for proc, out, err, _ in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            out.close(), err.close()


@pytest.fixture(scope="module")
def smokes(request, tmp_path_factory):
    selected = {item.callspec.params["script"] for item in request.session.items
                if item.originalname == "test_benchmark_smoke_run_prints_its_figures"}
    runner = Smokes([s for s in ORDER if s in selected], tmp_path_factory.mktemp("smokes"))
    yield runner
    runner.close()


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in ORDER])
def test_benchmark_smoke_run_prints_its_figures(script, smokes):
    result = smokes.result(script)
    assert result.returncode == 0, result.stderr[-3000:]
    CHECKS[script](result.stdout)
