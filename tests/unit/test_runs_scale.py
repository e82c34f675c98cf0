"""Runs of several sizes in one table: `scale.params`/`scale.tokens` are read as hostile input, `recommend`
answers at the requested scale with a std that grows beyond the largest, and one scale behaves as before."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from orchestrator.export import export
from orchestrator.journal import Journal
from orchestrator.objective import Objective
from orchestrator.recommend import fit_strategy, recommend_command
from orchestrator.runs import RunsTableError, read_runs, validate_runs

DOMAINS = ("a", "b", "c")
SMALL, LARGE = 1e6, 6e7


def truth(W: np.ndarray, params: float) -> np.ndarray:
    """Per-domain losses (n, 3): the level falls 0.4 nats per decade of size, the optimum moves from
    domain a towards c with size."""
    t = np.log10(params / SMALL) / np.log10(LARGE / SMALL)
    opt = (1 - t) * np.array([0.6, 0.3, 0.1]) + t * np.array([0.1, 0.3, 0.6])
    base = 3.0 - 0.4 * np.log10(params / SMALL)
    sq = ((W - opt) ** 2).sum(axis=1, keepdims=True)
    return base + np.array([1.0, 0.6, 0.8]) * sq


def frame(n_small: int = 24, n_large: int = 8, seed: int = 0, tokens: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(3), n_small + n_large)
    P = np.r_[np.full(n_small, SMALL), np.full(n_large, LARGE)]
    L = np.vstack([truth(W[i:i + 1], p) for i, p in enumerate(P)])
    out = pd.DataFrame({**{f"weight.{d}": W[:, i] for i, d in enumerate(DOMAINS)},
                        **{f"loss.{d}": L[:, i] for i, d in enumerate(DOMAINS)}, "scale.params": P, "run": range(len(P))})
    if tokens:
        out["scale.tokens"] = 20 * P
    return out


def test_scale_columns_are_read_kept_out_of_extra_and_follow_dropped_rows():
    f = frame(4, 2, tokens=True)
    f.loc[1, "loss.b"] = np.nan  # a diverged run is dropped, its scale with it
    with pytest.warns(UserWarning, match="dropped 1 of 6"):
        table = validate_runs(f)
    assert table.params.tolist() == [SMALL] * 3 + [LARGE] * 2 and table.tokens.tolist() == [20 * SMALL] * 3 + [20 * LARGE] * 2
    assert list(table.extra.columns) == ["run"] and table.multi_scale and len(table.scales()) == 2
    part = table.subset([3, 0])
    assert part.params.tolist() == [LARGE, SMALL] and part.extra["run"].tolist() == [4, 0] and part.multi_scale
    plain = validate_runs(f.drop(columns=["scale.params", "scale.tokens"]).drop(index=1))
    assert plain.params is None and plain.tokens is None and not plain.multi_scale and plain.scales().shape == (1, 0)
    empty = f.assign(**{"scale.tokens": np.nan}).drop(index=1)  # a header over empty cells: no column
    assert validate_runs(empty).tokens is None


@pytest.mark.parametrize("column, value, needle", [
    ("scale.params", -5.0, "row 2 has scale.params = -5.0; a count must be finite and between 1 and 1e+18"),
    ("scale.params", 0.0, "row 2 has scale.params = 0.0"),
    ("scale.tokens", np.inf, "row 2 has scale.tokens = inf"),
    ("scale.tokens", 1e300, "row 2 has scale.tokens = 1e+300"),
    ("scale.params", np.nan, "row 2 has no scale.params (1 rows empty); give it on every row or drop the column"),
    ("scale.params", "60M", "column scale.params holds non-numeric value '60M' (row 2)"),
    ("scale.param", 6e7, "column 'scale.param' is no scale column; use scale.params"),
])
def test_a_bad_scale_value_is_one_line_naming_row_and_column(column, value, needle):
    f = frame(4, 2, tokens=True)
    f[column] = f.get(column, pd.Series([6e7] * len(f))).astype(object)
    f.loc[1, column] = value
    with pytest.raises(RunsTableError) as err:
        validate_runs(f)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_one_scale_with_scale_columns_answers_exactly_as_without_them(tmp_path):
    f = frame(20, 0)
    f.to_csv(tmp_path / "with.csv", index=False)
    f.drop(columns=["scale.params"]).to_csv(tmp_path / "without.csv", index=False)
    cands = pd.DataFrame({f"weight.{d}": w for d, w in zip(DOMAINS, np.random.default_rng(3).dirichlet(np.ones(3), 20).T)})
    cands.to_csv(tmp_path / "cands.csv", index=False)
    for name, extra in (("with", {"at_params": SMALL}), ("without", {})):
        recommend_command(runs=tmp_path / f"{name}.csv", out=tmp_path / f"{name}.json", objective="mean", strategy="gp",
                          propose=None, predict=tmp_path / "cands.csv", seed=0, options='{"fit_maxiter": 50}', **extra)
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("with", "without"))
    assert {k: v for k, v in a.items() if k != "runs"} == {k: v for k, v in b.items() if k != "runs"}
    assert "scale" not in a and len(a["rows"]) == 20
    with pytest.raises(RunsTableError, match="every run of the table has scale.params = 1e.06, so it says nothing of another"):
        fit_strategy(read_runs(tmp_path / "with.csv"), Objective({"a": 1.0}, "a"), "gp", at_params=LARGE)
    with pytest.raises(RunsTableError, match="no scale.tokens column"):
        fit_strategy(read_runs(tmp_path / "with.csv"), Objective({"a": 1.0}, "a"), "gp", at_tokens=1e9)


def test_several_scales_predict_the_requested_scale_and_grow_uncertain_beyond_the_largest():
    table = validate_runs(frame(24, 8))
    mean_objective = Objective({d: 1 / 3 for d in DOMAINS}, "mean")
    at_large = fit_strategy(table, mean_objective, "gp", options={"fit_maxiter": 50})  # default: the largest scale
    W = np.random.default_rng(1).dirichlet(np.ones(3), 40)
    mean, std, _ = at_large.predict_losses(W)
    assert np.abs(mean - truth(W, LARGE)).mean() < 0.06  # the large scale's level and shape, from 8 large runs
    blind = fit_strategy(table.subset(np.flatnonzero(table.params == SMALL)), mean_objective, "gp", options={"fit_maxiter": 50})
    assert np.abs(mean - truth(W, LARGE)).mean() < 0.1 * np.abs(blind.predict_losses(W)[0] - truth(W, LARGE)).mean()
    beyond = fit_strategy(table, mean_objective, "gp", options={"fit_maxiter": 50}, at_params=10 * LARGE)
    mean10, std10, _ = beyond.predict_losses(W)
    assert (std10 > std).all() and (mean10.mean(axis=1) < mean.mean(axis=1)).all()  # the trend continues, less certain
    rec = at_large.recommend()
    assert np.abs(rec.mixture.as_array() - truth_optimum(LARGE)).max() < 0.2
    assert any("surrogate: gp over mixture and scale" in n for n in rec.notes)


def truth_optimum(params: float) -> np.ndarray:
    W = np.random.default_rng(0).dirichlet(np.ones(3), 4000)
    return W[np.argmin(truth(W, params).mean(axis=1))]


def test_cli_answers_at_a_scale_and_refuses_what_a_multi_scale_table_cannot_do(tmp_path):
    frame(24, 8).to_csv(tmp_path / "runs.csv", index=False)
    pd.DataFrame({"id": [7, 3], **{f"weight.{d}": [1 / 3, [0.1, 0.3, 0.6][i]] for i, d in enumerate(DOMAINS)}}) \
        .to_csv(tmp_path / "cands.csv", index=False)
    common = dict(runs=tmp_path / "runs.csv", objective="mean", strategy="gp", propose=None, seed=0,
                  options='{"fit_maxiter": 50}', at_tokens=None)
    recommend_command(out=tmp_path / "p.json", predict=tmp_path / "cands.csv", at_params=6e8, **common)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["scale"] == {"at": {"params": 6e8}, "largest_in_table": {"params": LARGE}, "scales_in_table": 2,
                            "extrapolation": {"params": "10x the largest in the table"}}
    assert [r["id"] for r in doc["rows"]] == [7, 3] and all(r["predicted_std"] > 0 for r in doc["rows"])
    cases = [({"strategy": "regmix"}, "only --strategy gp models"),
             ({"propose": 2}, "--propose: the runs table holds 2 scales"),
             ({"objective": "worst:excess"}, "worst:excess are measured against runs of one scale"),
             ({"at_params": -1.0}, "--at-params -1: give a count between 1 and 1e+18")]
    for change, needle in cases:
        args = {**common, "out": tmp_path / "x.json", "predict": None, "at_params": None, **change}
        with pytest.raises(RunsTableError) as err:
            recommend_command(**args)
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_export_writes_each_run_with_the_scale_of_its_preset(tmp_path):
    """Sweep trials at the spec's preset, ladder trials at theirs; tokens from the proxy trainer's budget."""
    d = tmp_path / "sweep"
    d.mkdir()
    (d / "spec.yaml").write_text(yaml.safe_dump({"name": "s", "domains": {x: {"demo": "math"} for x in DOMAINS},
                                                 "proxy": {"preset": "debug", "tokens_per_param": 10}}))
    rows = [("t000000000001", None, {"a": 0.5, "b": 0.3, "c": 0.2}), ("t000000000002", None, {"a": 0.2, "b": 0.3, "c": 0.5}),
            ("t000000000001-1m", "1m", {"a": 0.5, "b": 0.3, "c": 0.2})]
    with Journal(d / "journal.jsonl") as j:
        j.append("sweep_started", name="s", domains=list(DOMAINS), budget=2, concurrency=1, objective="mean")
        for tid, preset, mixture in rows:
            j.append("trial_proposed", trial=tid, mixture=mixture, **({"preset": preset, "role": "top1"} if preset else {}))
            j.append("trial_started", trial=tid, attempt=1)
            j.append("trial_completed", trial=tid, losses={x: 2.0 for x in DOMAINS}, objective=2.0, wall_s=1.0)
    table = read_runs(export(d, "runs"))
    assert table.params.tolist() == [106496, 106496, 1048576] and table.tokens.tolist() == [1064960, 1064960, 10485760]
    assert table.extra["preset"].tolist() == ["debug", "debug", "1m"] and table.multi_scale
