"""The sweep spec: a typed tree of configs loaded from YAML.

Every model forbids unknown keys, and every error a user can make is reported as one line that names
the field (dotted path) and the fix; `load_spec` raises `SpecError` carrying that line, and the CLI
prints it without a traceback. Checks that need the data itself (files exist, enough tokens for the
validation split) live in `workers.data.prepare_domains`, which raises the same kind of one-line error.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workers.presets import PRESETS

# Checked with `fullmatch`: `match` with `$` accepts a trailing newline ("books\n"), which later
# breaks Ax parameter names and file names.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class SpecError(ValueError):
    """A spec problem, as one line: the field, what is wrong, and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        # pydantic's lax mode reads `trials: true` as 1 trial; a boolean where a number is expected is
        # always a mistake, so it is refused (bools stay valid where the field is a bool). A model
        # validator, not a field one: pydantic allows no before-validator on a discriminator (`kind`).
        for name, value in data.items() if isinstance(data, dict) else ():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if field is not None and bool_where_number(value, field.annotation):
                raise ValueError(f"{_FIELD}{name}{_FIELD}{_bool_message(value)}")
        return data


# Marks the field a model-level validator blames, so `_first_error` can name its dotted path.
_FIELD = "\x00"


def _bool_message(value: Any) -> str:
    shown = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
    return f"{shown} holds a boolean where a number is expected; write a number"


def _accepts(annotation: Any) -> list[Any]:
    """The concrete types an annotation admits (unions and Annotated flattened; None dropped)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _accepts(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [t for a in typing.get_args(annotation) for t in _accepts(a)]
    return [] if annotation is type(None) else [annotation]


def bool_where_number(value: Any, annotation: Any) -> bool:
    """True when `value` holds a bool where `annotation` expects an int or float (also inside dicts,
    lists and tuples, e.g. `weights: {code: true}`)."""
    accepted = _accepts(annotation)
    if isinstance(value, bool):
        return bool not in accepted and any(t in (int, float) for t in accepted)
    for t in accepted:
        origin, args = typing.get_origin(t), typing.get_args(t)
        if isinstance(value, dict) and origin is dict and len(args) == 2:
            if any(bool_where_number(x, args[1]) for x in value.values()):
                return True
        elif isinstance(value, (list, tuple)) and origin in (list, tuple) and args:
            item_types = args if origin is tuple and ... not in args else (args[0],) * len(value)
            if any(bool_where_number(x, a) for x, a in zip(value, item_types)):
                return True
    return False


class DomainSpec(_Strict):
    """Where a domain's text comes from: one of `demo` or `path` (none only for trainers that read no data)."""

    demo: str | None = Field(None, description="Built-in demo corpus name (books, code, math, legal, forum).")
    path: str | list[str] | None = Field(None, description="File path(s) or glob(s): .txt/.md/.py text, .jsonl, .parquet; "
                                         "for hf_disk, the directory written by `save_to_disk`.")
    format: Literal["auto", "text", "jsonl", "parquet", "hf_disk", "hf_files"] = Field(
        "auto", description="File format; auto = by extension. hf_disk: `datasets.load_from_disk(path)`; "
                            "hf_files: `datasets.load_dataset(parquet|json|csv|text, data_files=path)`.")
    text_column: str = Field("text", description="Field holding the text in JSONL / Parquet rows and dataset columns.")
    split: str = Field("train", description="hf_disk / hf_files: the split to read when the dataset has several.")
    max_bytes: int | None = Field(None, gt=0, description="Read at most this many bytes of text (UTF-8).")

    @model_validator(mode="after")
    def _one_source(self) -> "DomainSpec":
        if self.demo is not None and self.path is not None:
            raise ValueError("give one of `demo: NAME` or `path: FILE_OR_GLOB`, not both")
        if self.format == "hf_disk" and len(self.paths()) != 1:
            raise ValueError("format hf_disk needs `path:` to one directory written by Dataset.save_to_disk")
        if self.demo is not None:
            from workers.corpus import DEMO_DOMAINS

            if self.demo not in DEMO_DOMAINS:
                raise ValueError(f"unknown demo corpus {self.demo!r}; use one of {', '.join(DEMO_DOMAINS)}")
        return self

    def paths(self) -> list[str]:
        if self.path is None:
            return []
        return [self.path] if isinstance(self.path, str) else list(self.path)


class TokenizerSpec(_Strict):
    """`bytes` (vocabulary 256 + end-of-document) or a local Hugging Face tokenizer."""

    kind: Literal["bytes", "huggingface"] = "bytes"
    path: str | None = Field(None, description="tokenizer.json file or a directory saved by save_pretrained.")

    @model_validator(mode="after")
    def _path_exists(self) -> "TokenizerSpec":
        if self.kind == "huggingface":
            if not self.path:
                raise ValueError("kind huggingface needs `path:` to a tokenizer.json or a saved tokenizer directory")
            if not Path(self.path).expanduser().exists():
                raise ValueError(f"tokenizer path {self.path!r} does not exist; point `path` at a local tokenizer")
        elif self.path is not None:
            raise ValueError("path is only for kind huggingface; remove it or set `kind: huggingface`")
        return self


class ProxySpec(_Strict):
    """The proxy model and how much it trains per trial."""

    preset: str = Field("debug", description="Model size preset: " + ", ".join(PRESETS))
    tokens_per_trial: int | None = Field(
        None, gt=0, description="Training tokens per trial (exact; rounded down to whole batches). Default: `tokens_per_param` × the preset's non-embedding parameters.")
    tokens_per_param: float = Field(
        20.0, gt=0, le=10_000, description="Training tokens per non-embedding parameter when `tokens_per_trial` is not given (20: Chinchilla's compute-optimal ratio).")
    eval_every_tokens: int = Field(65_536, gt=0, description="Evaluate every domain after this many training tokens.")
    val_tokens_per_domain: int = Field(16_384, gt=0, description="Held-out validation tokens per domain.")
    seq_len: int | None = Field(None, gt=1, description="Sequence length in tokens (default: the preset's).")
    batch_size: int | None = Field(None, gt=0, description="Sequences per step (default: the preset's).")
    learning_rate: float | None = Field(None, gt=0, lt=1, description="Peak learning rate (default: the preset's).")
    checkpoint_every_tokens: int | None = Field(
        None, gt=0, description="Checkpoint into the trial directory this often, so a retried trial resumes (default: never).")
    compile: bool = Field(False, description="torch.compile the proxy (falls back to eager, with a one-line warning, where compiling fails).")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; use one of {', '.join(PRESETS)}")
        return v

    def training_tokens(self, preset: str | None = None) -> int:
        """Training tokens per trial: `tokens_per_trial` if given, else `tokens_per_param` × the non-embedding
        parameters of `preset` (default: this spec's). Non-embedding, so the budget follows from the spec
        alone, whatever the tokenizer's vocabulary."""
        if self.tokens_per_trial is not None:
            return self.tokens_per_trial
        return int(round(self.tokens_per_param * PRESETS[preset or self.preset].non_embedding_params()))


class ProxyTrainerSpec(_Strict):
    kind: Literal["proxy"] = "proxy"


class SyntheticTrainerSpec(_Strict):
    """Analytic per-domain losses with a known optimum: for testing orchestration in seconds."""

    kind: Literal["synthetic"]
    optimum: dict[str, float] | None = Field(None, description="The optimal mixture (default: a fixed, non-uniform one).")
    noise: float = Field(0.01, ge=0, description="Standard deviation of the loss noise, in nats.")
    duration_s: float = Field(0.5, ge=0, description="Wall time of one trial, in seconds.")
    progress_events: int = Field(4, ge=1, description="Progress events streamed per trial.")
    optimum_at_scale: dict[str, dict[str, float]] | None = Field(
        None, description="Preset -> optimal mixture at that model size (replaces `optimum` for trials trained at "
        "that preset): an optimum that moves with scale, for testing a ladder.")


class PythonTrainerSpec(_Strict):
    """Any callable `module:function(mixture, report, seed) -> {domain: loss}`."""

    kind: Literal["python"]
    callable: str = Field(..., description="`module:function`, importable on every Ray node.")

    @field_validator("callable")
    @classmethod
    def _module_function(cls, v: str) -> str:
        if not re.fullmatch(r"[\w.]+:[\w.]+", v):
            raise ValueError(f"{v!r} is not `module:function`; e.g. `mypkg.train:run_trial`")
        return v


class CommandTrainerSpec(_Strict):
    """A team's own training program, run once per trial; it prints JSON progress lines (workers/command.py)."""

    kind: Literal["command"]
    command: str = Field(..., description="Command template, split like a shell would; {mixture_path}, {seed} and {trial} are substituted.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables for the program (strings).")
    cwd: str | None = Field(None, description="Working directory on the trial's node (default: the trial actor's).")
    timeout_s: float | None = Field(None, gt=0, description="Kill the program and its children after this many seconds.")

    @field_validator("command")
    @classmethod
    def _template(cls, v: str) -> str:
        from workers.command import check_template

        check_template(v)  # raises ValueError naming the bad placeholder or quote
        return v


class ReplayTrainerSpec(_Strict):
    """A runs table as the trainer (workers/replay.py): each trial answers with a GP fitted to every row
    of the table plus the table's own run-to-run noise. For benchmarking strategies without a GPU."""

    kind: Literal["replay"]
    runs: str = Field(..., description="Runs table (CSV/Parquet, weight.<domain> and loss.<domain> columns) "
                      "whose weight columns are the spec's domains.")
    noise: float | None = Field(None, ge=0, description="Loss noise sd (nats) of every answer; default: the table's own, "
                                "estimated per domain by the fit; 0: noiseless.")
    duration_s: float = Field(0.0, ge=0, description="Wall time of one trial, in seconds.")
    progress_events: int = Field(4, ge=1, le=1000, description="Progress events streamed per trial.")

    @field_validator("runs")
    @classmethod
    def _table_exists(cls, v: str) -> str:
        return existing_table(v)


TrainerSpec = Annotated[Union[ProxyTrainerSpec, SyntheticTrainerSpec, PythonTrainerSpec, CommandTrainerSpec, ReplayTrainerSpec],
                        Field(discriminator="kind")]


class ConstraintsSpec(_Strict):
    """Limits every recommended mixture must meet on its per-domain losses (nats/token)."""

    max_excess: float | None = Field(
        None, ge=0, description="No objective domain's loss more than this above its loss in the reference run.")
    max_loss: dict[str, float] | None = Field(None, description="Per-domain caps on the loss: domain -> nats/token.")


class ObjectiveSpec(_Strict):
    """How per-domain losses become one number to minimise (per-domain losses are always kept)."""

    kind: Literal["mean", "weighted", "target", "worst"] = "mean"
    weights: dict[str, float] | None = Field(None, description="kind weighted: domain -> non-negative weight.")
    domain: str | None = Field(None, description="kind target: the one domain whose loss is minimised.")
    excess: bool = Field(False, description="kind worst: the worst loss above the reference run's (DoReMi's excess loss).")
    domains: list[str] | None = Field(
        None, description="kind mean or worst: the evaluated domains it reads (default: the training domains), e.g. the "
        "loss columns of a replayed runs table or eval_domains.")
    reference: dict[str, float] | None = Field(
        None, description="The reference mixture for `excess` and `constraints.max_excess` (default: uniform).")
    constraints: ConstraintsSpec | None = Field(None, description="Limits on per-domain losses (docs/spec.md).")

    @model_validator(mode="after")
    def _fields_for_kind(self) -> "ObjectiveSpec":
        if self.kind == "weighted":
            if not self.weights:
                raise ValueError("kind weighted needs `weights: {domain: weight}`")
            if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
                raise ValueError("weights must be >= 0 with a positive sum")
        if self.kind == "target" and not self.domain:
            raise ValueError("kind target needs `domain: NAME`")
        if self.weights is not None and self.kind != "weighted":
            raise ValueError("weights are only for kind weighted; remove them or set `kind: weighted`")
        if self.domain is not None and self.kind != "target":
            raise ValueError("domain is only for kind target; remove it or set `kind: target`")
        if self.domains is not None and self.kind not in ("mean", "worst"):
            raise ValueError("domains is only for kind mean or worst; remove it (kind weighted names its domains in `weights`)")
        if self.domains is not None and (not self.domains or len(set(self.domains)) != len(self.domains)):
            raise ValueError("`objective.domains`: give distinct domain names, at least one")
        if self.excess and self.kind != "worst":
            raise ValueError("excess is only for kind worst; remove it or set `kind: worst`")
        if self.reference is not None and not (self.excess or (self.constraints and self.constraints.max_excess is not None)):
            raise ValueError("reference is only used by `excess: true` or `constraints.max_excess`; remove it")
        return self


class StrategySpec(_Strict):
    """What to try next. Options are checked by the strategy's own config model."""

    kind: str = Field("gp", description="Strategy kind (docs/strategies.md); the default wins `mixsweep bench` (docs/decisions.md).")
    options: dict[str, Any] = Field(default_factory=dict, description="Strategy-specific options.")
    seed_runs: str | None = Field(None, description="A runs table (CSV/Parquet) of earlier runs told to the strategy before it proposes.")

    @field_validator("seed_runs")
    @classmethod
    def _runs_exist(cls, v: str | None) -> str | None:
        return None if v is None else existing_table(v)

    @model_validator(mode="after")
    def _known(self) -> "StrategySpec":
        from orchestrator.strategies.configs import CONFIGS  # pydantic only: validating imports no torch

        if self.kind not in CONFIGS:
            raise ValueError(f"unknown strategy {self.kind!r}; use one of {', '.join(sorted(CONFIGS))}")
        fields = CONFIGS[self.kind].model_fields
        for key, value in self.options.items():  # strategy configs are not _Strict: the same bool check here
            if key in fields and bool_where_number(value, fields[key].annotation):
                raise ValueError(f"`strategy.options.{key}`: {_bool_message(value)}")
        try:
            CONFIGS[self.kind](**self.options)
        except ValidationError as err:
            raise ValueError(_first_error(err, prefix="strategy.options")) from None
        return self


class ReplicatesSpec(_Strict):
    """Seeds per mixture: every mixture, or only the best ones, trained more than once so that the surrogate
    sees each mixture's run-to-run noise (docs/spec.md, "Replicates")."""

    seeds: int = Field(1, ge=1, le=16, description="Runs per replicated mixture, the first included (1: no replicates).")
    top_k: int | None = Field(None, ge=1, le=1000, description="Replicate only the k best mixtures by objective, once the sweep's "
                              "own trials are done (default: every mixture as it is proposed).")


class BudgetSpec(_Strict):
    trials: int = Field(16, ge=1, le=100_000, description="Trials to run in total (failed ones count).")
    concurrency: int = Field(2, ge=1, le=4096, description="Trials in flight at once.")
    max_attempts: int = Field(3, ge=1, le=100, description="Starts per trial when its actor dies or hangs (a trainer that raises is not retried).")
    trial_timeout_s: float | None = Field(
        None, gt=0, description="Wall time per attempt before a trial counts as hung (default: derived from the token budget).")
    max_loss: float | None = Field(
        None, gt=0, description="A streamed loss above this (nats/token) ends the trial as diverged (default: 2 ln(vocab) for the proxy).")
    cost: float | None = Field(
        None, gt=0, description="Multi-fidelity sweeps: the total cost to spend, in the units of `fidelities[].cost`; the sweep "
                                "ends when the next trial would exceed it (`trials` still caps the count).")
    replicates: ReplicatesSpec = Field(default_factory=ReplicatesSpec, description="Seeds per mixture (docs/spec.md).")
    weight_precision: float = Field(
        1e-3, ge=0, le=0.5, description="A proposal whose weights all lie within this of a trial already run or in flight "
                                        "(max |w - w'|) is that trial: it is told the known result, spends no budget, and the "
                                        "strategy is asked again. 0: only identical mixtures (docs/spec.md).")


class ResourcesSpec(_Strict):
    """What each trial actor asks Ray for. GPUs are used when the cluster has them, else CPU."""

    gpus: float = Field(0.0, ge=0, description="GPUs per trial (fractions share a GPU).")
    cpus: float = Field(1.0, gt=0, description="CPUs per trial.")
    reuse_actors: bool = Field(True, description="Keep trainer processes between trials (a fresh one only after a "
                               "failure): actor start-up leaves the critical path. false: one process per trial.")


class DataSpec(_Strict):
    cache_dir: str = Field("~/.cache/mixsweep", description="Where demo corpora and token caches are kept (a local path, on every node).")
    shard_dir: str | None = Field(
        None, description="Where token shards are kept: a path or URI (s3://, gs://, file://) every node can reach "
                          "(default <cache_dir>/shards). Nodes copy URI shards into their cache_dir once.")
    ray_data_min_bytes: int = Field(256 << 20, ge=0, description="Domains with at least this many source bytes are "
                                    "tokenised by Ray Data across the cluster; smaller ones in the controller.")
    max_epochs: float = Field(4.0, gt=0, description="Most passes a trial may make over a domain's training tokens; "
                              "caps its weight at max_epochs * tokens / proxy.tokens_per_trial.")


class LadderSpec(_Strict):
    """Scale ladder: after the sweep, re-train its best mixtures and the baselines at larger presets."""

    presets: list[str] = Field(..., description="Model presets, smallest first; the first is the sweep's `proxy.preset`.")
    top_k: int = Field(3, ge=1, le=100, description="Best completed sweep trials (by objective) re-trained at each larger preset.")
    baselines: list[Literal["uniform", "token_prior"]] = Field(
        default_factory=lambda: ["uniform", "token_prior"], description="Baseline mixtures re-trained beside them (token_prior needs data).")
    scale_model: bool = Field(False, description="After each rung, fit a GP with model size as an input on every run and journal its "
                              "recommendation at that rung's size (docs/report.md).")

    @field_validator("presets")
    @classmethod
    def _ordered_presets(cls, v: list[str]) -> list[str]:
        for p in v:
            if p not in PRESETS:
                raise ValueError(f"`ladder.presets`: unknown preset {p!r}; use names from {', '.join(PRESETS)}")
        if len(v) < 2:
            raise ValueError("`ladder.presets`: a ladder needs at least 2 presets, e.g. [debug, 1m]")
        sizes = [PRESETS[p].non_embedding_params() for p in v]
        if any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"`ladder.presets`: {v} must grow in model size, smallest first (order: {', '.join(PRESETS)})")
        return v


class FidelitySpec(_Strict):
    """One fidelity a multi-fidelity sweep may train a trial at: a model preset and/or a token budget, and
    what one trial there costs."""

    name: str = Field(..., description="The fidelity's name (journaled with each trial; letters, digits or _, e.g. 1m).")
    preset: str | None = Field(None, description="Model preset (default: proxy.preset).")
    tokens_per_trial: int | None = Field(None, gt=0, description="Training tokens per trial (default: the proxy's rule at this preset).")
    cost: float | None = Field(None, gt=0, description="Cost of one trial, in any unit shared by all fidelities (e.g. GPU-hours); "
                               "default: training FLOPs, 6 x non-embedding parameters x tokens, in units of 1e15.")
    runs: str | None = Field(None, description="Replay trainer only: the runs table that answers trials at this fidelity "
                             "(default: trainer.runs).")

    @field_validator("name")
    @classmethod
    def _fidelity_name(cls, v: str) -> str:
        # Preset-like names (1m, 60m) are the natural ones; the name becomes a trial option, never a path.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_]{0,31}", v):
            raise ValueError(f"fidelity name {v!r} must be 1-32 letters, digits or _ (e.g. 1m, small)")
        return v

    @field_validator("preset")
    @classmethod
    def _fidelity_preset(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; use one of {', '.join(PRESETS)}")
        return v

    @field_validator("runs")
    @classmethod
    def _fidelity_table(cls, v: str | None) -> str | None:
        return None if v is None else existing_table(v)


class TargetSpec(_Strict):
    """The production run the mixture is for: its scale (the recommendation's) and its token budget (caps on
    how often it may repeat a domain: data.max_epochs applied at the target run, not at the proxy)."""

    fidelity: str | None = Field(None, description="Multi-fidelity sweeps: the fidelity whose runs are the sweep's best and "
                                 "the recommendation's scale when `params` is not given (default: the costliest).")
    params: float | None = Field(None, gt=0, description="Non-embedding parameters of the production run (the recommendation's "
                                 "scale in a multi-fidelity sweep; may lie beyond every fidelity).")
    tokens: float | None = Field(None, gt=0, description="Training tokens of the production run: with `available_tokens` it caps "
                                 "each domain's weight at data.max_epochs x available / tokens.")
    available_tokens: dict[str, float] | None = Field(
        None, description="Per training domain: tokens available to the production run (default: the prepared data's "
                          "training tokens; declare them for data the sweep only samples).")

    @model_validator(mode="after")
    def _tokens_for_caps(self) -> "TargetSpec":
        if self.available_tokens is not None:
            if self.tokens is None:
                raise ValueError("`target.available_tokens` needs `target.tokens` (the production run's training tokens)")
            bad = [d for d, n in self.available_tokens.items() if not (n >= 0)]
            if bad:
                raise ValueError(f"`target.available_tokens.{bad[0]}`: give a token count >= 0")
        return self


class SweepSpec(_Strict):
    name: str = Field("sweep", description="Sweep name (job and dashboard label).")
    domains: dict[str, DomainSpec]
    eval_domains: dict[str, DomainSpec] = Field(
        default_factory=dict, description="Held-out text sets every trial is evaluated on but never trains on (e.g. a downstream set); the objective may name them.")
    tokenizer: TokenizerSpec = TokenizerSpec()
    proxy: ProxySpec = ProxySpec()
    trainer: TrainerSpec = ProxyTrainerSpec()
    objective: ObjectiveSpec = ObjectiveSpec()
    strategy: StrategySpec = StrategySpec()
    budget: BudgetSpec = BudgetSpec()
    resources: ResourcesSpec = ResourcesSpec()
    data: DataSpec = DataSpec()
    ladder: LadderSpec | None = Field(None, description="Scale ladder run after the sweep (docs/report.md).")
    fidelities: list[FidelitySpec] | None = Field(
        None, description="Multi-fidelity sweep: the fidelities a trial may train at; the strategy picks one per trial "
                          "(docs/strategies.md, \"Multi-fidelity\").")
    target: TargetSpec | None = Field(None, description="The production run: its scale and token budget (docs/spec.md).")
    seed: int = Field(0, ge=0, description="Seeds the strategy and every trial.")
    dir: str | None = Field(None, description="Sweep directory (default runs/<name>).")

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _tokenizer_shorthand(cls, v: Any) -> Any:
        if v == "bytes":
            return {"kind": "bytes"}
        if isinstance(v, str):
            return {"kind": "huggingface", "path": v}
        return v

    @field_validator("name")
    @classmethod
    def _sweep_name(cls, v: str) -> str:
        # The name becomes a directory (runs/<name>) and a job id: no separators, no dot-dot.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", v) or ".." in v:
            raise ValueError(f"{v!r} must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit")
        return v

    @field_validator("domains")
    @classmethod
    def _domain_names(cls, v: dict[str, DomainSpec]) -> dict[str, DomainSpec]:
        if len(v) < 2:
            raise ValueError("a mixture needs at least 2 domains")
        for name in v:
            if not _NAME.fullmatch(name):
                raise ValueError(f"domain name {name!r} must be a letter then letters, digits or _")
        return v

    @field_validator("eval_domains")
    @classmethod
    def _eval_domain_names(cls, v: dict[str, DomainSpec]) -> dict[str, DomainSpec]:
        for name, d in v.items():
            if not _NAME.fullmatch(name):
                raise ValueError(f"`eval_domains.{name}`: name must be a letter then letters, digits or _")
            if d.demo is None and d.path is None:
                raise ValueError(f"`eval_domains.{name}`: no data; give `path:` (text, JSONL or Parquet) or `demo:`")
        return v

    @model_validator(mode="after")
    def _objective_domains(self) -> "SweepSpec":
        clash = sorted(set(self.eval_domains) & set(self.domains))
        if clash:
            raise ValueError(f"`eval_domains.{clash[0]}`: also a training domain; rename it (losses are keyed by name)")
        if self.eval_domains and self.trainer.kind != "proxy":
            raise ValueError("`eval_domains`: only the proxy trainer evaluates held-out text sets; remove them or use `trainer: {kind: proxy}`")
        named = (set(self.objective.weights or {}) | ({self.objective.domain} if self.objective.domain else set())
                 | set(self.objective.domains or []))
        known = set(self.domains) | set(self.eval_domains)
        if isinstance(self.trainer, ReplayTrainerSpec):  # a replayed table may evaluate other sets too
            known |= set(replay_loss_columns(self.trainer.runs))
        unknown = sorted(named - known)
        if unknown:
            raise ValueError(f"`objective`: names unknown domain(s) {unknown}; use one of {sorted(known)}")
        self._check_objective_extras(known)
        trainer = self.trainer
        if trainer.kind == "proxy":
            for name, d in self.domains.items():
                if d.demo is None and d.path is None:
                    raise ValueError(f"`domains.{name}`: no data; the proxy trainer needs `path:` or `demo:`")
        if isinstance(trainer, SyntheticTrainerSpec) and trainer.optimum is not None:
            opt = trainer.optimum
            if set(opt) != set(self.domains) or min(opt.values()) < 0 or sum(opt.values()) <= 0:
                raise ValueError("`trainer.optimum`: must give every domain a weight >= 0, with a positive sum")
        if isinstance(trainer, SyntheticTrainerSpec):
            for preset, opt in (trainer.optimum_at_scale or {}).items():
                if preset not in PRESETS:
                    raise ValueError(f"`trainer.optimum_at_scale`: unknown preset {preset!r}; use names from {', '.join(PRESETS)}")
                if set(opt) != set(self.domains) or min(opt.values()) < 0 or sum(opt.values()) <= 0:
                    raise ValueError(f"`trainer.optimum_at_scale.{preset}`: must give every domain a weight >= 0, with a positive sum")
        self._check_target()
        if self.ladder is not None and self.ladder.presets[0] != self.proxy.preset:
            raise ValueError(f"`ladder.presets`: the first rung must be the sweep's proxy.preset {self.proxy.preset!r}, "
                             f"e.g. [{self.proxy.preset}, ...]")
        return self

    def _check_target(self) -> None:
        """Fidelities have distinct names and a replay table only under the replay trainer; the target names
        a fidelity and known domains; a cost budget needs fidelities."""
        fids = self.fidelities or []
        if self.fidelities is not None:
            if len(fids) < 2:
                raise ValueError("`fidelities`: a multi-fidelity sweep needs at least 2, e.g. [{name: small, preset: 1m}, {name: large, preset: 60m}]")
            names = [f.name for f in fids]
            if len(set(names)) != len(names):
                raise ValueError(f"`fidelities`: names must be distinct, got {names}")
            for f in fids:
                if f.runs is not None and self.trainer.kind != "replay":
                    raise ValueError(f"`fidelities.{f.name}.runs`: only the replay trainer answers from a runs table; remove it")
            if len({self.fidelity_params(f.name) for f in fids}) < 2 and len({self.fidelity_tokens(f.name) for f in fids}) < 2 \
                    and len({f.runs for f in fids}) < 2:
                raise ValueError("`fidelities`: they all train the same model on the same tokens; give them different presets or tokens_per_trial")
        t = self.target
        if t is not None and t.fidelity is not None and t.fidelity not in {f.name for f in fids}:
            raise ValueError(f"`target.fidelity`: {t.fidelity!r} is not a fidelity; use one of {[f.name for f in fids] or 'the names under fidelities:'}")
        for d in (t.available_tokens or {}) if t is not None else {}:
            if d not in self.domains:
                raise ValueError(f"`target.available_tokens.{d}`: unknown domain; use one of {sorted(self.domains)}")
        if self.budget.cost is not None and not fids:
            raise ValueError("`budget.cost`: a cost budget is for multi-fidelity sweeps; add `fidelities:` or use budget.trials")

    def fidelity(self, name: str | None) -> FidelitySpec | None:
        """The named fidelity (None for None: the sweep's own proxy)."""
        return None if name is None else next(f for f in self.fidelities or [] if f.name == name)

    def fidelity_params(self, name: str | None) -> int:
        """Non-embedding parameters of a trial at fidelity `name` (None: the proxy's)."""
        f = self.fidelity(name)
        return PRESETS[(f.preset if f is not None else None) or self.proxy.preset].non_embedding_params()

    def fidelity_tokens(self, name: str | None) -> int:
        """Training tokens of a trial at fidelity `name` (None: the proxy's)."""
        f = self.fidelity(name)
        if f is not None and f.tokens_per_trial is not None:
            return f.tokens_per_trial
        return self.proxy.training_tokens((f.preset if f is not None else None) or self.proxy.preset)

    def fidelity_cost(self, name: str | None) -> float:
        """Cost of one trial at fidelity `name`: declared, else 6 N D FLOPs in units of 1e15."""
        f = self.fidelity(name)
        if f is not None and f.cost is not None:
            return f.cost
        return 6.0 * self.fidelity_params(name) * self.fidelity_tokens(name) / 1e15

    def largest_trial_tokens(self) -> int:
        """Training tokens of the largest trial the sweep may run: the proxy's, or in a multi-fidelity sweep
        the largest fidelity's (a data cap must hold at every fidelity a strategy may pick)."""
        return max([self.proxy.training_tokens(), *(self.fidelity_tokens(f.name) for f in self.fidelities or [])])

    @property
    def target_fidelity(self) -> str | None:
        """The fidelity whose runs count as the sweep's (None: a single-fidelity sweep)."""
        if not self.fidelities:
            return None
        if self.target is not None and self.target.fidelity is not None:
            return self.target.fidelity
        return max(self.fidelities, key=lambda f: (self.fidelity_cost(f.name), self.fidelity_params(f.name))).name

    def _check_objective_extras(self, known: set[str]) -> None:
        """Constraint caps, the reference mixture and strategy bounds name known domains."""
        o = self.objective
        for d in (o.constraints.max_loss or {}) if o.constraints else {}:
            if d not in known:
                raise ValueError(f"`objective.constraints.max_loss.{d}`: unknown domain; use one of {sorted(known)}")
        if o.reference is not None:
            bad = sorted(set(o.reference) - set(self.domains))
            if bad or min(o.reference.values(), default=-1) < 0 or sum(o.reference.values()) <= 0:
                raise ValueError(f"`objective.reference`: give training domains of {sorted(self.domains)} weights >= 0 "
                                 "with a positive sum" + (f" (unknown {bad})" if bad else ""))
        bounds = self.strategy.options.get("bounds")
        for d in bounds if isinstance(bounds, dict) else {}:
            if d not in self.domains:
                raise ValueError(f"`strategy.options.bounds.{d}`: unknown domain; use one of {sorted(self.domains)}")
        problem = mixture_space_problem(self.domain_names, **self._space_options())
        if problem:
            raise ValueError(problem)

    def _space_options(self) -> dict[str, Any]:
        """The strategy's floor and per-domain bounds (configs without them: none)."""
        from orchestrator.strategies.configs import CONFIGS

        config = CONFIGS[self.strategy.kind](**self.strategy.options)
        return {"min_weight": float(getattr(config, "min_weight", 0.0) or 0.0),
                "bounds": dict(getattr(config, "bounds", None) or {})}

    @property
    def domain_names(self) -> tuple[str, ...]:
        return tuple(self.domains)

    def sweep_dir(self) -> str:
        return self.dir or f"runs/{self.name}"

    def digest(self) -> str:
        """Hash of the spec's content (not its formatting), for the frozen copy in the sweep dir."""
        # Domain order is part of the sweep (search axes, default optimum), so it is hashed too.
        blob = json.dumps([list(self.domains), self.model_dump(mode="json")], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def mixture_space_problem(domains: tuple[str, ...], min_weight: float = 0.0,
                          bounds: dict[str, tuple[float, float]] | None = None) -> str | None:
    """One line naming the fields and the fix when no mixture meets the floor and the bounds, else None.

    Checked when the spec is validated, so `validate`, `run` and `resume` refuse an empty space before
    anything is journaled (a strategy would otherwise fail, or propose weights off its floor, mid-sweep).
    The data's caps are intersected later, when the data is prepared (ModelStrategy.set_caps).
    """
    k, eps = len(domains), 1e-9
    if k * min_weight > 1 + eps:
        return (f"`strategy.options.min_weight`: {min_weight:g} for each of {k} domains sums to {k * min_weight:.3f} > 1; "
                f"lower it to at most {1 / k:.4f}")
    lower = {d: min_weight for d in domains}
    upper = {d: 1.0 for d in domains}
    for d, (lo, hi) in (bounds or {}).items():
        lower[d], upper[d] = max(min_weight, float(lo)), float(hi)
        if lower[d] > hi + eps:
            return (f"`strategy.options.bounds.{d}`: upper bound {hi:g} is below the floor {lower[d]:g} "
                    "(its lower bound or min_weight); raise the upper bound or lower min_weight")
    if sum(lower.values()) > 1 + eps:
        return (f"`strategy.options.bounds`: the lower bounds (at least min_weight {min_weight:g} each) sum to "
                f"{sum(lower.values()):.3f} > 1; lower them so they sum to at most 1")
    if sum(upper.values()) < 1 - eps:
        return (f"`strategy.options.bounds`: the upper bounds sum to {sum(upper.values()):.3f} < 1, so no mixture reaches 1; "
                "raise them (or leave a domain unbounded) so they sum to at least 1")
    return None


def replay_loss_columns(path: str) -> list[str]:
    """The evaluated domains of a runs table (its `loss.<d>` columns), read from the header only."""
    from orchestrator.runs import LOSS, RunsTableError, read_frame

    try:
        frame = read_frame(Path(path).expanduser())
    except RunsTableError as err:
        raise ValueError(f"`trainer.runs`: {err}") from None
    return [c[len(LOSS):] for c in frame.columns if isinstance(c, str) and c.startswith(LOSS)]


_FIXES = {
    "extra_forbidden": "remove it or check the spelling",
    "missing": "add it",
    "greater_than": "raise it",
    "greater_than_equal": "raise it",
    "less_than": "lower it",
    "less_than_equal": "lower it",
    "literal_error": "use one of the listed values",
    "union_tag_not_found": "add `kind:` (proxy, synthetic, python, command or replay)",
    "union_tag_invalid": "use one of the listed kinds",
    "finite_number": "give a finite number",
}


def existing_table(path: str) -> str:
    """`path` when a file is there; else the one error every `runs:` field gives."""
    if not Path(path).expanduser().is_file():
        raise ValueError(f"runs table {path!r} not found; give a CSV or Parquet file with weight.<domain> and loss.<domain> columns")
    return path


def _first_error(err: ValidationError, prefix: str = "") -> str:
    """Turn pydantic's first error into one line: `field`: problem; fix."""
    e = err.errors()[0]
    msg = e["msg"].removeprefix("Value error, ")
    if msg.startswith("`"):  # a validator already named the field
        return _one_line(msg)
    parts = [prefix] if prefix else []
    loc = list(e["loc"])
    if msg.startswith(_FIELD):  # a model validator blamed one of its fields
        _, field, msg = msg.split(_FIELD, 2)
        loc.append(field)
    if len(loc) > 1 and loc[0] == "trainer" and loc[1] in ("proxy", "synthetic", "python", "command", "replay"):
        del loc[1]  # the discriminated union puts the trainer kind in the path; users never wrote it
    parts += [str(p) for p in loc]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    fix = _FIXES.get(e["type"])
    where = f"`{'.'.join(parts)}`" if parts else "spec"
    return _one_line(f"{where}: {msg}" + (f"; {fix}" if fix and fix not in msg else ""))


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def parse_spec(raw: Any) -> SweepSpec:
    """Validate a parsed YAML document; raises SpecError with one line."""
    if not isinstance(raw, dict):
        raise SpecError("spec: the file must hold a YAML mapping (domains:, proxy:, strategy:, ...)")
    odd = [k for k in raw if not isinstance(k, str)]
    if odd:
        raise SpecError(f"spec: top-level key {odd[0]!r} is not a name; use section names such as domains:, proxy:")
    try:
        return SweepSpec(**raw)
    except ValidationError as err:
        raise SpecError(_first_error(err)) from None


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping. PyYAML keeps the last one silently,
    so a domain or `budget:` written twice would change the sweep without a word."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may override keys: that is its purpose
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
        return super().construct_mapping(node, deep)


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(f"key {key!r} appears twice (lines {first} and {again})")
        self.key, self.first, self.again = key, first, again


def read_yaml(path: str | Path, what: str = "spec") -> Any:
    """A YAML file's document, duplicate keys refused; SpecError with one line naming the file, the line
    and the fix. `what` names the file's role in the message ("spec", "frozen spec")."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{what} {p}: not UTF-8 text; save the file as UTF-8") from None
    except OSError as err:
        raise SpecError(f"{what} {p}: cannot be read ({err.strerror or type(err).__name__})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except DuplicateKey as err:
        raise SpecError(f"{what} {p}: key {err.key!r} appears twice (line {err.first} and line {err.again}); "
                        "keep one (YAML would silently use the last)") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{what} {p}: not valid YAML{where}; fix the syntax") from None


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a YAML spec file; raises SpecError with one line."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {str(p)!r} not found; pass the path to a sweep YAML (see examples/)")
    return parse_spec(read_yaml(p))


# Keys the controller adds to the frozen spec.yaml of a sweep directory (not spec fields).
FROZEN_EXTRAS = ("mixsweep_version", "spec_digest")


def load_frozen_spec(sweep_dir: str | Path, missing_ok: bool = False) -> SweepSpec | None:
    """The spec a sweep ran with, from `<sweep_dir>/spec.yaml` (read by sweepdir.read_frozen_spec); None
    when it is missing and `missing_ok`. SpecError with one line naming the file and the fix when it is
    missing (without `missing_ok`), unreadable or no longer valid."""
    from orchestrator.sweepdir import SPEC, read_frozen_spec

    raw = read_frozen_spec(sweep_dir, missing_ok)
    if raw is None:
        return None
    p = Path(sweep_dir) / SPEC
    try:
        return parse_spec({k: v for k, v in raw.items() if k not in FROZEN_EXTRAS})
    except SpecError as err:
        raise SpecError(f"frozen spec {p}: {err}; restore it from the spec the sweep ran with") from None
