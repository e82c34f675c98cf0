"""The trainer registry: every kind of trainer a spec can name (`trainer.kind`), and what the orchestrator
must know about it without running it.

A trainer is one module with a `run_trial(request, data, report) -> TrialResult` function (and, where
the defaults below do not fit, its own `id_fields` and `timeout`), plus one entry in `TRAINERS`.
Entries name their functions as `module:function` strings, imported at the first call, so looking a
backend up imports nothing heavy (a replay trial never imports torch).

    kind        module                      reads                   honours options
    proxy       workers/train.py            token shards            token_logprobs, save_final_weights, online, replicate
    synthetic   workers/backends.py         -                       replicate
    python      workers/backends.py         -                       replicate
    command     workers/command.py          -                       replicate
    replay      workers/replay.py           the fitted simulator    replicate
"""

from __future__ import annotations

import functools
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from workers.protocol import Progress, TrialRequest, TrialResult

# What a trainer reads besides its request (`Backend.reads_data`), prepared once by the orchestrator:
TOKEN_SHARDS = "token_shards"  # the domains' token shards (workers.data.data_payload), memory-mapped by the trial
REPLAY_MODEL = "replay_model"  # a runs table's fitted simulator (workers.replay.ReplayModel.to_payload)

Report = Callable[[Progress], None]


def trainer_fields(trainer: Mapping[str, Any], proxy: Mapping[str, Any], tokenizer: Mapping[str, Any]) -> dict[str, Any]:
    """The default identity of a trial besides its mixture and seed: the trainer's own config."""
    return dict(trainer)


def no_timeout(trainer: Mapping[str, Any], tokens: int) -> float | None:
    """The default attempt timeout: none (a callable's or a program's cost is unknown)."""
    return None


def duration_timeout(trainer: Mapping[str, Any], tokens: int) -> float:
    """Simulated trainers: 10x their `duration_s` plus a minute."""
    return 10.0 * float(trainer.get("duration_s", 0.0)) + 60.0


@dataclass(frozen=True)
class Backend:
    """How one kind of trainer runs a trial, and what the orchestrator needs to know about it.

    run(request, data, report) -> TrialResult: trains the trial; `report(Progress)` may be called any
        number of times, from any thread; `data` is what `reads_data` names (None when nothing).
    id_fields(trainer, proxy, tokenizer) -> dict: what besides the mixture and the seed determines the
        outcome (hashed into the trial id). `trainer` is the spec's trainer section, `proxy` its proxy
        section with the token budget resolved into `tokens_per_trial`, `tokenizer` its tokenizer
        section, all as plain JSON.
    timeout(trainer, tokens) -> seconds or None: wall time after which an attempt counts as hung, when
        the spec sets none; `tokens` is the proxy's training tokens per trial.
    reads_data: TOKEN_SHARDS, REPLAY_MODEL or None.
    options: the trial options (a Proposal's options) the trainer honours.
    """

    run: Callable[[TrialRequest, Any, Report], TrialResult]
    id_fields: Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], dict[str, Any]] = trainer_fields
    timeout: Callable[[Mapping[str, Any], int], float | None] = no_timeout
    reads_data: str | None = None
    options: frozenset[str] = frozenset({"replicate"})


def lazy(ref: str) -> Callable:
    """The function `module:function`, imported at its first call."""
    target = functools.cache(lambda: pkgutil.resolve_name(ref))

    def call(*args: Any, **kwargs: Any) -> Any:
        return target()(*args, **kwargs)

    call.__name__ = call.__qualname__ = ref
    return call


TRAINERS: dict[str, Backend] = {
    "proxy": Backend(lazy("workers.train:run_trial"), id_fields=lazy("workers.train:id_fields"),
                     timeout=lazy("workers.train:timeout"), reads_data=TOKEN_SHARDS,
                     options=frozenset({"token_logprobs", "save_final_weights", "online", "replicate"})),
    "synthetic": Backend(lazy("workers.backends:run_synthetic_trial"), timeout=duration_timeout),
    "python": Backend(lazy("workers.backends:run_python_trial")),
    "command": Backend(lazy("workers.command:run_trial")),
    "replay": Backend(lazy("workers.replay:run_trial"), id_fields=lazy("workers.replay:id_fields"),
                      timeout=duration_timeout, reads_data=REPLAY_MODEL),
}


class UnknownTrainer(ValueError):
    """A trainer kind no backend is registered for."""


def backend_for(kind: str) -> Backend:
    """The registered backend of trainer `kind`; UnknownTrainer (one line) names the known kinds."""
    try:
        return TRAINERS[kind]
    except KeyError:
        raise UnknownTrainer(f"trainer kind {kind!r} is unknown; use one of {', '.join(TRAINERS)}") from None
