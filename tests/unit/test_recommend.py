"""`mixsweep recommend` on a runs table: recommendation, proposals, and candidates scored in their order."""

import json

import numpy as np
import pandas as pd
import pytest
import typer
from scipy.stats import spearmanr
from typer.testing import CliRunner

from orchestrator.recommend import recommend_command
from orchestrator.runs import RunsTableError, read_runs
from orchestrator.strategies import STRATEGIES

DOMAINS = ("web", "code", "math", "books")
ALPHA, B = np.array([0.3, 0.5, 0.2, 0.4]), np.array([0.3, 0.5, 0.2, 0.6])


def losses(W: np.ndarray) -> np.ndarray:
    return 2.0 + B * (W + 0.02) ** (-ALPHA)


def _table(tmp_path, n: int = 24, name: str = "runs.csv", seed: int = 0):
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(4), size=n)
    L = losses(W) + rng.normal(0, 0.005, W.shape)
    frame = pd.DataFrame({**{f"weight.{d}": W[:, i] for i, d in enumerate(DOMAINS)},
                          **{f"loss.{d}": L[:, i] for i, d in enumerate(DOMAINS)}})
    path = tmp_path / name
    frame.to_csv(path, index=False) if name.endswith(".csv") else frame.to_parquet(path)
    return path


def run(runs, out, objective="mean", strategy="gp", propose=None, predict=None, options=""):
    return recommend_command(runs=runs, out=out, objective=objective, strategy=strategy, propose=propose,
                             predict=predict, seed=0, options=options)


def test_recommendation_predicts_every_domain_and_beats_most_runs(tmp_path):
    runs = _table(tmp_path, name="runs.parquet")
    run(runs, tmp_path / "rec.json")
    rec = json.loads((tmp_path / "rec.json").read_text())
    w = np.array([rec["mixture"][d] for d in DOMAINS])
    assert abs(w.sum() - 1) < 1e-5 and w.min() >= 0
    assert set(rec["predicted_losses"]) == set(DOMAINS) and rec["source"] == "model" and rec["runs_used"] == 24
    truth = losses(w).mean()
    assert truth < np.quantile(losses(read_runs(runs).weights).mean(axis=1), 0.1)  # better than 90% of the runs
    assert abs(rec["objective"] - truth) < 0.03


def test_predict_writes_candidates_back_in_their_order(tmp_path):
    runs = _table(tmp_path)
    rng = np.random.default_rng(5)
    W = rng.dirichlet(np.ones(4), size=30)
    cands = pd.DataFrame({"id": rng.permutation(30), **{f"weight.{d}": W[:, i] for i, d in enumerate(reversed(DOMAINS))}})
    cands.to_csv(tmp_path / "cands.csv", index=False)
    run(runs, tmp_path / "scored.csv", objective="loss.code", predict=tmp_path / "cands.csv")
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert list(scored["id"]) == list(cands["id"])  # same rows, same order, other columns kept
    truth = losses(W[:, ::-1])[:, DOMAINS.index("code")]  # the candidate columns were in reverse order
    assert spearmanr(scored["predicted"], truth).statistic > 0.9
    assert (scored["predicted_std"] > 0).all()


def test_propose_writes_the_next_mixtures_to_run(tmp_path):
    runs = _table(tmp_path)
    run(runs, tmp_path / "next.csv", propose=3, strategy="mixing_law")
    table = pd.read_csv(tmp_path / "next.csv")
    W = table[[f"weight.{d}" for d in DOMAINS]].to_numpy()
    assert W.shape == (3, 4) and np.allclose(W.sum(axis=1), 1, atol=1e-5)
    assert len({tuple(r) for r in W.round(6)}) == 3
    run(runs, tmp_path / "next.json", propose=2)
    assert len(json.loads((tmp_path / "next.json").read_text())["proposals"]) == 2


def test_bad_requests_are_one_line_errors(tmp_path):
    runs = _table(tmp_path, n=5)
    cases = [
        (dict(strategy="mixing_law"), "needs at least 6"),
        (dict(strategy="bayesopt", options='{"initial_trials": 6}'), "needs at least 6"),  # Ax models after its initial design
        (dict(strategy="hyperband"), "unknown; use one of"),
        (dict(objective="loss.poetry"), "'poetry', which has no loss column"),
        (dict(strategy="sobol", predict=runs), "needs a strategy with a surrogate"),
        (dict(strategy="fixed"), "--strategy fixed"),
    ]
    for kwargs, words in cases:
        with pytest.raises(RunsTableError, match=words) as err:
            run(runs, tmp_path / "x.json", **kwargs)
        assert "\n" not in str(err.value)
    pd.DataFrame({"weight.web": [1.0], "weight.code": [0.0]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(RunsTableError, match=r"missing \['books', 'math'\]"):
        run(_table(tmp_path, name="r2.csv"), tmp_path / "x.csv", predict=tmp_path / "c.csv")


def test_command_registers_with_typer(tmp_path):
    app = typer.Typer()
    app.command("recommend")(recommend_command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["recommend", "--runs", str(_table(tmp_path)), "--out", str(tmp_path / "r.json"),
                                      "--objective", "weighted:web=2,math=1", "--strategy", "bimix"])
    assert result.exit_code == 0, result.output
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["objective_spec"] == "weighted:web=2,math=1" and rec["strategy"] == "bimix"


def _candidates(tmp_path, n: int = 20, seed: int = 5):
    W = np.random.default_rng(seed).dirichlet(np.ones(4), size=n)
    pd.DataFrame({f"weight.{d}": W[:, i] for i, d in enumerate(DOMAINS)}).to_csv(tmp_path / "cands.csv", index=False)
    return W, tmp_path / "cands.csv"


def test_bayesopt_offline_recommends_and_predicts_with_its_gp(tmp_path):
    runs = _table(tmp_path, n=14)
    run(runs, tmp_path / "rec.json", strategy="bayesopt")
    rec = json.loads((tmp_path / "rec.json").read_text())
    # Ax's GP fitted to the attached runs (it used to stay at its centre node and fall back to the best run)
    assert rec["source"] in ("model", "in-sample") and not any("unavailable" in n for n in rec["notes"])
    assert any(n.startswith("surrogate: Ax GP") for n in rec["notes"])
    assert all(v > 0 for v in rec["predicted_std"].values())
    W, cands = _candidates(tmp_path)
    run(runs, tmp_path / "scored.csv", strategy="bayesopt", predict=cands)
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert spearmanr(scored["predicted"], losses(W).mean(axis=1)).statistic > 0.8
    assert (scored["predicted_std"] > 0).all()


def test_regmix_proposes_several_mixtures_without_token_counts(tmp_path):
    # Offline there are no token counts: the swarm is centred on the table's mean mixture (documented).
    run(_table(tmp_path), tmp_path / "next.csv", strategy="regmix", propose=3,
        options='{"n_estimators": 50, "simulations": 500}')
    W = pd.read_csv(tmp_path / "next.csv")[[f"weight.{d}" for d in DOMAINS]].to_numpy()
    assert W.shape == (3, 4) and np.allclose(W.sum(axis=1), 1, atol=1e-5) and len({tuple(r) for r in W.round(6)}) == 3


def test_fixed_takes_its_mixture_from_options(tmp_path):
    runs = _table(tmp_path)
    table = pd.read_csv(runs)
    row = table.iloc[7]
    weights = {d: float(row[f"weight.{d}"]) for d in DOMAINS}
    run(runs, tmp_path / "rec.json", strategy="fixed", options=json.dumps({"weights": weights}))
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["source"] == "observed" and rec["mixture"] == pytest.approx(weights, abs=1e-6)
    assert rec["predicted_losses"] == pytest.approx({d: float(row[f"loss.{d}"]) for d in DOMAINS})
    run(runs, tmp_path / "next.json", strategy="fixed", propose=2, options=json.dumps({"weights": weights}))
    assert json.loads((tmp_path / "next.json").read_text())["proposals"] == [pytest.approx(weights, abs=1e-6)]
    for options, words in [("{not json", "--options is not JSON"), ("[1]", "must be a JSON object"),
                           ("", "option weights: Field required; give strategy options as JSON"),
                           ('{"weights": {"web": 1}}', "no weight for")]:
        with pytest.raises(RunsTableError, match=words) as err:
            run(runs, tmp_path / "x.json", strategy="fixed", options=options)
        assert "\n" not in str(err.value)


# What `recommend` answers per strategy offline: "ok", or words of its one-line RunsTableError.
SWEEP_ONLY = "a runs table does not hold; run a sweep with it"
NO_MODEL = "--predict needs a strategy with a surrogate"
OFFLINE = {
    "bayesopt": ("ok", "ok", "ok"), "gp": ("ok", "ok", "ok"), "regmix": ("ok", "ok", "ok"),
    "mixing_law": ("ok", "ok", "ok"), "bimix": ("ok", "ok", "ok"),
    "mde": (SWEEP_ONLY,) * 3, "mfgp": (SWEEP_ONLY,) * 3, "mixmin": (SWEEP_ONLY,) * 3, "doremi": ("runs table cannot replay",) * 3,
    "sobol": ("ok", "ok", NO_MODEL), "uniform": ("ok", "ok", NO_MODEL), "fixed": ("ok", "ok", NO_MODEL),
    "token_prior": ("needs the tokens per domain",) * 3,
}
LIGHT = {"regmix": {"n_estimators": 50, "simulations": 500}, "fixed": {"weights": {"web": 0.25, "code": 0.25, "math": 0.25, "books": 0.25}}}


def test_every_registered_strategy_has_an_offline_answer():
    assert set(OFFLINE) == set(STRATEGIES)  # a new or deleted strategy must be listed here


@pytest.mark.parametrize("kind", sorted(OFFLINE))
def test_offline_recommend_works_or_says_why_in_one_line(tmp_path, kind):
    runs = _table(tmp_path, n=14)
    table = pd.read_csv(runs)
    table.loc[0, [f"weight.{d}" for d in DOMAINS]] = 0.25  # a run at the uniform mixture (uniform, fixed)
    table.to_csv(runs, index=False)
    W, cands = _candidates(tmp_path, n=5)
    options = json.dumps(LIGHT.get(kind, {}))
    for mode, expected in zip(("recommend", "propose", "predict"), OFFLINE[kind]):
        out = tmp_path / f"{mode}.json"
        kwargs = {"propose": {"propose": 3}, "predict": {"predict": cands}}.get(mode, {})
        if expected != "ok":
            with pytest.raises(RunsTableError, match=expected) as err:
                run(runs, out, strategy=kind, options=options, **kwargs)
            assert "\n" not in str(err.value) and kind in str(err.value), (mode, str(err.value))
            continue
        run(runs, out, strategy=kind, options=options, **kwargs)
        answer = json.loads(out.read_text())
        if mode == "recommend":
            w = np.array([answer["mixture"][d] for d in DOMAINS])
            assert abs(w.sum() - 1) < 1e-5 and np.isfinite(answer["objective"]) and answer["source"] in ("model", "in-sample", "observed")
        elif mode == "propose":
            assert 1 <= len(answer["proposals"]) <= 3
            assert all(abs(sum(p.values()) - 1) < 1e-5 for p in answer["proposals"])  # weights rounded to 1e-6
        else:
            assert len(answer["rows"]) == 5 and all(np.isfinite(r["predicted"]) for r in answer["rows"])
