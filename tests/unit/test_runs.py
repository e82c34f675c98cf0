"""The runs table: what it accepts, and one-line errors naming the fix for what it does not."""

import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.mixture import Mixture
from orchestrator.recommend import parse_objective
from orchestrator.runs import (
    SUM_TOLERANCE,
    RunsTableError,
    RunsTableWarning,
    read_runs,
    require_runs,
    runs_frame,
    validate_runs,
    write_frame,
)


def _frame(n: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(3), size=n)
    return pd.DataFrame({"run": [f"r{i}" for i in range(n)], "weight.web": W[:, 0], "weight.code": W[:, 1],
                         "weight.math": W[:, 2], "loss.web": 3 + W[:, 1], "loss.code": 2 + W[:, 0], "note": "x"})


def _error(frame: pd.DataFrame) -> str:
    with pytest.raises(RunsTableError) as err:
        validate_runs(frame)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_round_trips_and_keeps_other_columns(tmp_path, suffix):
    frame = _frame()
    path = write_frame(frame, tmp_path / f"runs{suffix}")
    table = read_runs(path)
    assert table.domains == ("web", "code", "math") and table.loss_domains == ("web", "code")
    np.testing.assert_allclose(table.weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(table.losses[:, 0], frame["loss.web"])
    assert list(table.extra.columns) == ["run", "note"] and list(table.extra["run"]) == list(frame["run"])


def test_rounded_weights_are_renormalised_within_the_stated_tolerance():
    frame = _frame()
    frame["weight.web"] += SUM_TOLERANCE / 2
    np.testing.assert_allclose(validate_runs(frame).weights.sum(axis=1), 1.0)


def test_weights_off_the_simplex_are_one_line_naming_row_and_fix():
    frame = _frame()
    frame.loc[2, "weight.web"] += 0.2
    msg = _error(frame)
    assert "row 3" in msg and "sum to" in msg and str(SUM_TOLERANCE) in msg and "renormalise" in msg


def test_missing_and_non_numeric_columns_are_named():
    assert "weight.<domain>" in _error(_frame().drop(columns=["weight.code", "weight.math"]))
    assert "loss.<domain>" in _error(_frame().drop(columns=["loss.web", "loss.code"]))
    frame = _frame().astype({"loss.code": object})
    frame.loc[4, "loss.code"] = "diverged?"
    msg = _error(frame)
    assert "loss.code" in msg and "'diverged?'" in msg and "row 5" in msg
    frame = _frame()
    frame.loc[1, "weight.math"] = -0.1
    assert "weight.math" in _error(frame) and ">= 0" in _error(frame)


def test_nan_and_infinite_losses_are_dropped_with_a_count():
    frame = _frame(n=8)
    frame.loc[1, "loss.web"] = math.nan
    frame.loc[5, "loss.code"] = math.inf
    with pytest.warns(RunsTableWarning, match="dropped 2 of 8 runs"):
        table = validate_runs(frame)
    assert len(table) == 6 and list(table.extra["run"]) == ["r0", "r2", "r3", "r4", "r6", "r7"]


def test_unreadable_files_and_too_few_runs_are_one_line(tmp_path):
    with pytest.raises(RunsTableError, match="not found"):
        read_runs(tmp_path / "nope.csv")
    (tmp_path / "runs.txt").write_text("a,b\n")
    with pytest.raises(RunsTableError, match="use .csv or .parquet"):
        read_runs(tmp_path / "runs.txt")
    with pytest.raises(RunsTableError, match="has 6 usable runs; strategy gp needs at least 10"):
        require_runs(validate_runs(_frame()), 10, "strategy gp")


def test_objective_must_name_loss_columns():
    domains = ("web", "code")
    assert parse_objective("mean", domains).coefficients == {"web": 0.5, "code": 0.5}
    assert parse_objective("loss.code", domains).coefficients == {"code": 1.0}
    assert parse_objective("weighted:web=3,code=1", domains).coefficients == {"web": 0.75, "code": 0.25}
    for bad, words in [("loss.math", "'math'"), ("weighted:math=1", "'math'"), ("weighted:web=x", "<domain>=<number>"),
                       ("median", "use mean")]:
        with pytest.raises(RunsTableError, match=words) as err:
            parse_objective(bad, domains)
        assert "\n" not in str(err.value)


def test_runs_frame_writes_mixtures_and_losses_back_as_a_table():
    m = [Mixture.from_dict({"a": 0.25, "b": 0.75}), Mixture.from_dict({"a": 1.0, "b": 0.0})]
    frame = runs_frame(m, [{"a": 2.0}, {"a": 3.0}])
    table = validate_runs(frame)
    assert table.mixtures() == m and table.loss_dicts() == [{"a": 2.0}, {"a": 3.0}]


# ------------------------------------------------------------------------ strict reading (issue #14)
HEADER = "weight.web,weight.code,loss.web,loss.code\n"


def test_a_repeated_csv_column_is_an_error_not_a_phantom_domain(tmp_path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text("weight.web,weight.code,loss.code,loss.code\n0.5,0.5,2.0,9.0\n")
    with pytest.raises(RunsTableError, match=r"column 'loss.code' appears twice"):
        read_runs(path)


def test_a_repeated_parquet_column_is_an_error(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = [pa.array([0.5]), pa.array([0.5]), pa.array([2.0]), pa.array([9.0])]
    pq.write_table(pa.table(cols, names=["weight.web", "weight.code", "loss.web", "loss.web"]), tmp_path / "r.parquet")
    with pytest.raises(RunsTableError, match=r"'loss.web' appears twice"):
        read_runs(tmp_path / "r.parquet")


def test_an_implausible_loss_is_dropped_like_a_nan(tmp_path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text(HEADER + "0.5,0.5,1e308,2.0\n0.4,0.6,3.0,2.5\n")
    with pytest.warns(RunsTableWarning, match="dropped 1 of 2 runs"):
        table = read_runs(path)
    assert table.losses.tolist() == [[3.0, 2.5]]


def test_a_negative_loss_is_refused(tmp_path) -> None:
    path = tmp_path / "runs.csv"
    path.write_text(HEADER + "0.5,0.5,-1.0,2.0\n")
    with pytest.raises(RunsTableError, match=r"loss.web = -1.0.*>= 0"):
        read_runs(path)


@pytest.mark.parametrize("content,expected", [
    (b"", "the file is empty"),
    (HEADER.encode(), "no runs"),
    (b"\x1f\x8b\x08garbage", "cannot be read"),
])
def test_empty_and_broken_files_are_one_line(tmp_path, content: bytes, expected: str) -> None:
    path = tmp_path / ("runs.csv.gz" if content.startswith(b"\x1f\x8b") else "runs.csv")
    path.write_bytes(content)
    with pytest.raises(RunsTableError) as exc:
        read_runs(path)
    assert expected in str(exc.value) and "\n" not in str(exc.value)
