"""`mixsweep recommend`: fit a strategy to a runs table and answer without training anything.

    mixsweep recommend --runs RUNS [--objective mean|loss.<d>|weighted:<d>=<x>,...|worst|worst:excess]
                       [--constraints max_excess=<x>,loss.<d><=<x>,...] [--strategy NAME] [--options JSON]
                       [--at-params P] [--at-tokens D] [--target SPEC] [--propose N] [--predict CANDIDATES] --out FILE

- no --propose/--predict: the recommended mixture with predicted per-domain losses and std (JSON);
- --propose N: the next N mixtures to run (JSON, or a runs table when FILE ends in .csv/.parquet);
- --predict CANDIDATES: CANDIDATES' rows, in their order, with `predicted` (the objective, nats/token)
  and `predicted_std` columns added (CSV, Parquet or JSON records, by FILE's extension).

Every table's runs are told to the strategy in row order, so the answer is deterministic given --seed.

--target SPEC caps the answer at a spec's production run (orchestrator/target.py: data.max_epochs x
declared available tokens / target.tokens); the recommendation then carries the unconstrained optimum
beside it (`target` block), as a sweep's recommendation.json does.

A table of several scales (`scale.params`, `scale.tokens` columns with more than one value) is fitted
by the `gp` strategy over mixture and scale (orchestrator/scale_model.py: `ScaleGP`), which recommends
and predicts at --at-params/--at-tokens (default: the largest of each in the table), with a std that
grows beyond the largest scale. A table of one scale is fitted as before, and the scale flags may only
repeat its scale.
Bad input, and a strategy that cannot answer from a table (mde, mixmin and doremi need a sweep's trials;
token_prior needs token counts; fixed needs `--options '{"weights": {...}}'`), raise `RunsTableError`
(one line, with the fix). The default strategy is `gp`: per-domain GPs composed by
the objective rank held-out runs best at 64 runs (docs/benchmarks.md, "Surrogate fidelity").
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pandas as pd
import typer
from pydantic import ValidationError

from orchestrator.objective import Objective
from orchestrator.runs import (
    LOSS,
    MAX_COUNT,
    PARAMS,
    TOKENS,
    RunsTable,
    RunsTableError,
    read_frame,
    read_runs,
    require_runs,
    runs_frame,
    weights_from_frame,
    write_frame,
)
from orchestrator.strategies.configs import CONFIGS
from orchestrator.strategies.contract import Outcome

if TYPE_CHECKING:  # the strategies import torch and BoTorch: loaded when a command fits one, not for `--help`
    from orchestrator.strategies import Strategy

DEFAULT_STRATEGY = "gp"
# Offline nothing waits on the answer, so the GP's hyperparameters are fitted for longer than in a
# sweep (where `ask` must be fast): 200 instead of 50 L-BFGS steps, measured in docs/benchmarks.md.
OFFLINE_OPTIONS: dict[str, dict[str, Any]] = {"gp": {"fit_maxiter": 200}}


def parse_objective(text: str, loss_domains: tuple[str, ...], constraints: str = "") -> Objective:
    """`mean` | `loss.<d>` | `weighted:<d>=<x>,...` | `worst` | `worst:excess` over the table's loss
    domains, with `constraints` `max_excess=<x>,loss.<d><=<x>,...` (see `parse_constraints`)."""
    base = _parse_kind(text, loss_domains)
    max_excess, max_loss = parse_constraints(constraints, loss_domains)
    if not (max_excess is not None or max_loss):
        return base
    extra = ", ".join(([f"each domain <= reference + {max_excess:g}"] if max_excess is not None else [])
                      + [f"{d} <= {v:g}" for d, v in max_loss.items()])
    return replace(base, description=f"{base.description} s.t. {extra}", max_excess=max_excess, max_loss=max_loss,
                   reference={})


def parse_constraints(text: str, loss_domains: tuple[str, ...]) -> tuple[float | None, dict[str, float]]:
    """`max_excess=<x>` (no domain more than x nats above the uniform run) and `loss.<d><=<x>` caps,
    comma-separated; returns (max_excess, {domain: cap})."""
    max_excess, caps = None, {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, value = part.partition("<=") if "<=" in part else part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not np.isfinite(number):
            raise RunsTableError(f"--constraints: {part!r} is not max_excess=<x> or loss.<domain><=<x>; "
                                 "e.g. max_excess=0.02,loss.code<=3.2")
        if name.strip() == "max_excess" and sep == "=" and number >= 0:
            max_excess = number
        elif sep == "<=" and name.strip().startswith(LOSS):
            caps[_known(name.strip()[len(LOSS):], loss_domains)] = number
        else:
            raise RunsTableError(f"--constraints: {part!r}: use max_excess=<x >= 0> or loss.<domain><=<x>")
    return max_excess, caps


def _parse_kind(text: str, loss_domains: tuple[str, ...]) -> Objective:
    text = text.strip()
    if text in ("worst", "worst:excess"):
        excess = text == "worst:excess"
        what = "worst excess loss over the uniform run" if excess else "worst per-domain loss"
        return Objective({d: 1.0 for d in loss_domains}, what, kind="worst", excess=excess)
    if text == "mean":
        return Objective({d: 1.0 / len(loss_domains) for d in loss_domains}, "mean of per-domain losses")
    if text.startswith(LOSS):
        _known(text[len(LOSS):], loss_domains)
        return Objective({text[len(LOSS):]: 1.0}, f"loss on {text[len(LOSS):]}")
    if text.startswith("weighted:"):
        weights = {}
        for part in filter(None, text[len("weighted:"):].split(",")):
            name, _, value = part.partition("=")
            try:
                number = float(value)
            except ValueError:
                raise RunsTableError(f"--objective: {part!r} is not <domain>=<number>; e.g. weighted:code=2,web=1") from None
            weights[_known(name.strip().removeprefix(LOSS), loss_domains)] = number
        total = sum(weights.values())
        if not weights or any(w < 0 or not np.isfinite(w) for w in weights.values()) or total <= 0:
            raise RunsTableError("--objective: weighted needs finite weights >= 0 with a positive sum; e.g. weighted:code=2,web=1")
        return Objective({d: w / total for d, w in weights.items() if w > 0}, "weighted " + text[len("weighted:"):])
    raise RunsTableError(f"--objective {text!r}: use mean, loss.<domain>, weighted:<domain>=<x>,..., worst or worst:excess")


def _known(domain: str, loss_domains: tuple[str, ...]) -> str:
    if domain not in loss_domains:
        raise RunsTableError(f"--objective names domain {domain!r}, which has no loss column; "
                             f"use one of {', '.join(loss_domains)}")
    return domain


def fit_strategy(table: RunsTable, objective: Objective, kind: str, seed: int = 0,
                 options: dict[str, Any] | None = None, at_params: float | None = None,
                 at_tokens: float | None = None) -> Strategy:
    """A strategy told every run of the table, in row order; RunsTableError if it cannot be used.
    `options` (the strategy's Config fields) go over OFFLINE_OPTIONS for the kind. A table of several
    scales gives a `gp` over mixture and scale answering at `at_params` non-embedding parameters and
    `at_tokens` training tokens (`target_scale`)."""
    from orchestrator.strategies import STRATEGIES, build_strategy
    from orchestrator.strategies.base import Predictive

    if kind not in STRATEGIES:
        raise RunsTableError(f"--strategy {kind!r} is unknown; use one of {', '.join(sorted(STRATEGIES))}")
    needs = STRATEGIES[kind].requirements
    if needs.sweep_only:
        raise RunsTableError(f"--strategy {kind} {needs.sweep_only}; run a sweep with it (`mixsweep run` with "
                             f"strategy.kind: {kind}), or fit another --strategy to the table (e.g. {DEFAULT_STRATEGY})")
    if needs.domain_tokens:
        raise RunsTableError(f"--strategy {kind} needs the tokens per domain, which a runs table does not hold; give the "
                             "mixture yourself: --strategy fixed --options '{\"weights\": {\"<domain>\": <share>, ...}}'")
    scale = target_scale(table, at_params, at_tokens)
    if scale is not None:
        refuse_at_scale(table, objective, kind)
    if objective.needs_reference:  # the table's uniform run, within its rounding (a strategy's own test is exact)
        objective = reference_objective(table, objective)
    try:
        if scale is None:
            strategy = build_strategy(kind, {**OFFLINE_OPTIONS.get(kind, {}), **(options or {})}, table.domains, objective, seed)
        else:
            strategy = scale_strategy(table, objective, kind, seed, options, scale)
    except ValidationError as err:
        raise RunsTableError(f"--strategy {kind}: {_option_error(err)}; {_options_hint(kind, table.domains)}") from None
    except ValueError as err:  # a strategy's own check (fixed: weights for other domains)
        raise RunsTableError(f"--strategy {kind}: {str(err).splitlines()[0]}") from None
    needed = strategy.min_runs() if isinstance(strategy, Predictive) else 1
    require_runs(table, needed, f"strategy {kind}")
    for mixture, losses in zip(table.mixtures(), table.loss_dicts()):
        strategy.tell(Outcome(mixture, losses))
    return strategy


def target_scale(table: RunsTable, at_params: float | None = None, at_tokens: float | None = None):
    """The scale (orchestrator.scale_model.Scale) to answer at: None for a table of one scale (answered as
    ever), else `at_params`/`at_tokens`, by default the largest of each scale column that varies in the
    table; a column that does not vary is no input. One-line RunsTableError for a flag the table cannot
    answer (no such column, a single value it does not repeat, a count out of range)."""
    from orchestrator.scale_model import Scale

    chosen: dict[str, float | None] = {}
    for flag, col, values, at in (("--at-params", PARAMS, table.params, at_params), ("--at-tokens", TOKENS, table.tokens, at_tokens)):
        if at is not None and not (np.isfinite(at) and 1 <= at <= MAX_COUNT):
            raise RunsTableError(f"{flag} {at:g}: give a count between 1 and {MAX_COUNT:g} (e.g. 6e8)")
        if at is not None and values is None:
            raise RunsTableError(f"{flag}: the runs table has no {col} column; add each run's {col} or drop {flag}")
        distinct = np.unique(values) if values is not None else np.array([])
        if len(distinct) == 1 and at is not None and not np.isclose(at, distinct[0], rtol=1e-9):
            raise RunsTableError(f"{flag} {at:g}: every run of the table has {col} = {distinct[0]:g}, so it says nothing of "
                                 f"another; add runs at other values of {col} or drop {flag}")
        chosen[col] = (at if at is not None else float(distinct.max())) if len(distinct) > 1 else None
    if all(v is None for v in chosen.values()):
        return None
    if None not in chosen.values() and (at_params is None) != (at_tokens is None):
        raise RunsTableError("the runs differ in both scale.params and scale.tokens; give --at-params and --at-tokens "
                             "together (or neither: the largest of each in the table)")
    return Scale(params=chosen[PARAMS], tokens=chosen[TOKENS])


def refuse_at_scale(table: RunsTable, objective: Objective, kind: str) -> None:
    """One-line RunsTableError for what a table of several scales cannot be asked: another strategy than
    `gp`, or an objective measured against a reference run (which would be of one scale)."""
    if kind != DEFAULT_STRATEGY:
        raise RunsTableError(f"--strategy {kind}: the runs table holds {len(table.scales())} scales (scale.params/scale.tokens), "
                             f"which only --strategy {DEFAULT_STRATEGY} models (over mixture and scale); use it, or give "
                             "the runs of one scale")
    if objective.constrained or objective.needs_reference:
        raise RunsTableError("--constraints and worst:excess are measured against runs of one scale; the runs table holds "
                             f"{len(table.scales())} scales: drop them, or give the runs of one scale")


def scale_strategy(table: RunsTable, objective: Objective, kind: str, seed: int, options: dict[str, Any] | None, scale) -> Strategy:
    """The `gp` strategy over mixture and scale (orchestrator/scale_model.py: ScaleGP) for a table of
    several scales, answering at `scale`."""
    from orchestrator.scale_model import ScaleGP

    config = ScaleGP.Config(**{**OFFLINE_OPTIONS[kind], **(options or {})})
    return ScaleGP(config, table.domains, objective, seed, table.params if scale.params is not None else None,
                   table.tokens if scale.tokens is not None else None, scale)


def scale_context(table: RunsTable, scale) -> dict[str, Any]:
    """What the answer's JSON says of the scale it is at, and how far beyond the table's largest."""
    largest = {k: float(v.max()) for k, v in (("params", table.params), ("tokens", table.tokens)) if v is not None}
    beyond = {k: v / largest[k] for k, v in scale.to_json().items() if v > largest[k] * (1 + 1e-9)}
    return {"scale": {"at": scale.to_json(), "largest_in_table": largest, "scales_in_table": len(table.scales()),
                      **({"extrapolation": {k: f"{x:.3g}x the largest in the table" for k, x in beyond.items()}} if beyond else {})}}


def _option_error(err: ValidationError) -> str:
    """A pydantic error as one line: the first failing option and why."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "options"
    return f"option {where}: {first['msg']}"


def _options_hint(kind: str, domains: tuple[str, ...]) -> str:
    example = {"weights": {d: round(1.0 / len(domains), 3) for d in domains}} if kind == "fixed" else {"<option>": "<value>"}
    return f"give strategy options as JSON, e.g. --options '{json.dumps(example)}' (docs/strategies.md lists them)"


def parse_options(text: str) -> dict[str, Any]:
    """--options: a JSON object of strategy options (the spec's `strategy.options`)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise RunsTableError(f"--options is not JSON ({err.msg} at character {err.pos}); e.g. --options '{{\"prior\": \"uniform\"}}'") from None
    if not isinstance(value, dict):
        raise RunsTableError("--options must be a JSON object of strategy options, e.g. --options '{\"prior\": \"uniform\"}'")
    return value


def reference_objective(table: RunsTable, objective: Objective) -> Objective:
    """`objective` measured against the table's run at the uniform mixture (weights within 0.002:
    tables round their weights); one-line RunsTableError when the table has none."""
    off = np.abs(table.weights - 1.0 / len(table.domains)).max(axis=1)
    if off.min() > 2e-3:
        raise RunsTableError("worst:excess and max_excess are measured against a run at the uniform mixture, "
                             "which the runs table lacks; add that run (weight.<d> = 1/k each) or drop them")
    return objective.with_reference(table.loss_dicts()[int(np.argmin(off))])


def predict_candidates(strategy: Strategy, candidates: pd.DataFrame, source: str) -> pd.DataFrame:
    """CANDIDATES' rows in their order with `predicted` and `predicted_std` (objective, nats/token)."""
    from orchestrator.strategies import STRATEGIES
    from orchestrator.strategies.base import Predictive

    if not isinstance(strategy, Predictive):
        models = ", ".join(sorted(k for k, c in STRATEGIES.items() if issubclass(c, Predictive)))
        raise RunsTableError(f"--predict needs a strategy with a surrogate; strategy {strategy.kind} has none; use one of {models}")
    domains, W = weights_from_frame(candidates, source)
    if set(domains) != set(strategy.domains):
        missing, extra = sorted(set(strategy.domains) - set(domains)), sorted(set(domains) - set(strategy.domains))
        raise RunsTableError(f"{source}: weight columns must match the runs table's domains"
                             f"{'; missing ' + str(missing) if missing else ''}{'; unknown ' + str(extra) if extra else ''}")
    W = W[:, [domains.index(d) for d in strategy.domains]]
    mean, std, loss_domains = strategy.predict_losses(W)
    out = candidates.copy()
    out["predicted"], out["predicted_std"] = strategy.objective.compose(mean, std, loss_domains)
    if strategy.objective.constrained:
        out["predicted_violation"] = strategy.objective.violation(mean, loss_domains)
    return out


def recommend_command(
    runs: Path = typer.Option(..., "--runs", help="Runs table (CSV or Parquet): weight.<domain> and loss.<domain> columns."),
    out: Path = typer.Option(..., "--out", help="Output file: .json, or .csv/.parquet for --propose/--predict tables."),
    objective: str = typer.Option("mean", "--objective", help="mean | loss.<domain> | weighted:<domain>=<x>,... | worst | worst:excess"),
    constraints: str = typer.Option("", "--constraints", help="max_excess=<x> (over the uniform run), loss.<domain><=<x>; comma-separated."),
    strategy: str = typer.Option(DEFAULT_STRATEGY, "--strategy", help="Strategy to fit: " + ", ".join(sorted(CONFIGS))),
    options: str = typer.Option("", "--options", help="Strategy options as JSON (the spec's strategy.options), e.g. "
                                "'{\"weights\": {\"web\": 0.7, \"code\": 0.3}}' for --strategy fixed."),
    propose: Optional[int] = typer.Option(None, "--propose", min=1, help="Write the next N mixtures to run."),
    predict: Optional[Path] = typer.Option(None, "--predict", help="Table of candidate mixtures (weight.* columns) to score."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the strategy (candidate sampling)."),
    at_params: Optional[float] = typer.Option(None, "--at-params", help="A table of several scales: answer at this many "
                                              "non-embedding parameters (default: the largest scale.params in the table)."),
    at_tokens: Optional[float] = typer.Option(None, "--at-tokens", help="A table of several scales: answer at this many "
                                              "training tokens (default: the largest scale.tokens in the table)."),
    target: Optional[Path] = typer.Option(None, "--target", help="A sweep spec whose `target:` (tokens, available_tokens for "
                                          "every domain) and data.max_epochs cap the answer at the production run; the "
                                          "recommendation then also gives the unconstrained optimum (docs/spec.md, target)."),
) -> None:
    """Fit a strategy to past runs: recommend a mixture, propose the next runs, or score candidates."""
    if propose is not None and predict is not None:
        raise RunsTableError("give one of --propose N or --predict CANDIDATES, not both")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = read_runs(runs)
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    constraints = constraints if isinstance(constraints, str) else ""  # called as a function: typer's default object
    options = options if isinstance(options, str) else ""
    at_params, at_tokens = (v if isinstance(v, (int, float)) else None for v in (at_params, at_tokens))
    scale = target_scale(table, at_params, at_tokens)
    if scale is not None and propose is not None:
        raise RunsTableError(f"--propose: the runs table holds {len(table.scales())} scales, and choosing the next runs would "
                             "need a scale for each; propose from the runs of one scale, or recommend/--predict at a scale")
    target = target if isinstance(target, Path) else None
    if target is not None and scale is not None:
        raise RunsTableError("--target: the runs table holds several scales; cap the runs of one scale, or drop --target")
    capping = target_caps_of(target, table) if target is not None else None  # checked before anything is fitted
    fitted = fit_strategy(table, parse_objective(objective, table.loss_domains, constraints), strategy, seed,
                          parse_options(options), at_params, at_tokens)
    capped = capped_strategy(fitted, *capping, target) if capping is not None else None
    context = {"runs": str(runs), "runs_used": len(table), "strategy": strategy, "objective_spec": objective,
               **({"constraints": constraints} if constraints else {}), **({"options": parse_options(options)} if options else {}),
               **(scale_context(table, scale) if scale is not None else {}), **({"target_spec": str(target)} if target else {})}
    try:
        _answer(fitted, out, context, propose, predict, capped, seed)
    except RunsTableError:
        raise
    except ValueError as err:  # what the strategy cannot do with this table, in its own words
        raise RunsTableError(f"--strategy {strategy}: {str(err).splitlines()[0]}") from None


def target_caps_of(path: Path, table: RunsTable):
    """--target: the spec's target caps (orchestrator/target.py) and their minimum with none (a runs table
    has no proxy caps). A runs table holds no token counts, so every domain's available tokens must be
    declared; one-line errors otherwise."""
    from orchestrator.spec import SpecError, load_spec
    from orchestrator.target import combined_caps, target_caps

    spec = load_spec(path)
    if set(spec.domain_names) != set(table.domains):
        raise RunsTableError(f"--target {path}: its domains {list(spec.domain_names)} must be the table's weight columns {list(table.domains)}")
    t = target_caps(spec, None, no_data="a runs table holds no token counts")
    if t is None:
        raise SpecError(f"--target {path}: the spec has no `target.tokens`; add `target: {{tokens: N, available_tokens: {{...}}}}`")
    return t, combined_caps(None, t)


def capped_strategy(fitted: Strategy, t, caps: dict[str, float], path: Path):
    """Set the target caps on the fitted strategy; returns (TargetCaps, the bounds without them)."""
    from orchestrator.spec import SpecError

    free = fitted.bounds
    try:
        fitted.set_caps(caps)
    except ValueError as err:  # the strategy's floor or bounds above a cap
        raise SpecError(f"--target {path}: {str(err).splitlines()[0]}") from None
    return t, free


def _answer(fitted: Strategy, out: Path, context: dict[str, Any], propose: int | None, predict: Path | None,
            capped=None, seed: int = 0) -> None:
    """Write the recommendation, the proposals or the scored candidates to `out`; with `capped` (--target:
    TargetCaps and the bounds without them) the recommendation honours the target caps and carries the
    unconstrained optimum beside it, as a sweep's recommendation.json does."""
    if predict is not None:
        frame = predict_candidates(fitted, read_frame(predict), f"candidates {predict.name}")
        _write_table_or_json(frame, out, context)
        typer.echo(f"scored {len(frame)} candidates -> {out}")
    elif propose is not None:
        mixtures = [p.mixture for p in fitted.ask(propose, [])]  # a runs table's strategy asks for no trainer options
        _write_table_or_json(runs_frame(mixtures), out, context, key="proposals",
                             records=[m.as_dict() for m in mixtures])
        typer.echo(f"proposed {len(mixtures)} mixtures -> {out}")
    else:
        rec = fitted.recommend()
        body = rec.to_json()
        if capped is not None:
            from orchestrator.target import feasible_or_best_inside, optima

            t, free = capped
            rec = feasible_or_best_inside(fitted, rec, fitted.caps or {}) or rec
            body = {**rec.to_json(), "target": optima(fitted, rec, t, fitted.caps or {}, free, seed)}
            typer.echo(f"target run: {body['target']['summary']}")
        _write_json(out, {**context, **body})
        typer.echo(f"recommended mixture ({rec.source}; predicted objective {rec.objective:.4f}) -> {out}")


def _write_table_or_json(frame: pd.DataFrame, out: Path, context: dict[str, Any], key: str = "rows",
                         records: list | None = None) -> None:
    if out.suffix in (".csv", ".parquet", ".pq"):
        write_frame(frame, out)
    else:
        _write_json(out, {**context, key: records if records is not None else json.loads(frame.to_json(orient="records"))})


def _write_json(out: Path, payload: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    tmp.replace(out)


__all__ = ["DEFAULT_STRATEGY", "fit_strategy", "parse_objective", "parse_options", "predict_candidates", "recommend_command",
           "target_scale"]
