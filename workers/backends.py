"""Trainers other than the proxy model, reporting through the same Progress / TrialResult path.

- synthetic: analytic per-domain losses with a known optimum, for testing orchestration in seconds.
- python: a user callable `module:function(mixture, report, seed) -> {domain: loss}`.
"""

from __future__ import annotations

import math
import pkgutil
import time
from typing import Any, Callable, Mapping

import numpy as np

from workers.protocol import Progress, TrialRequest, TrialResult, config_hash


def default_optimum(domains: list[str]) -> dict[str, float]:
    """A fixed, clearly non-uniform optimum (weights proportional to 1, 2, ..., k)."""
    raw = np.arange(1, len(domains) + 1, dtype=float)
    return dict(zip(domains, (raw / raw.sum()).tolist()))


def synthetic_losses(mixture: Mapping[str, float], optimum: Mapping[str, float]) -> dict[str, float]:
    """Per-domain loss L_d(w) = c_d + 4 |w - w*|^2 + 0.5 (w*_d - w_d).

    Each domain gains from more of its own data (the linear term: the trade-off real domains show),
    and the linear terms sum to zero on the simplex, so the mean of the losses is minimised exactly at
    w* (with value mean(c)). c_d = 2 + 0.1 d gives domains distinct loss levels.
    """
    names = list(optimum)
    w = np.array([mixture[d] for d in names])
    opt = np.array([optimum[d] for d in names])
    quad = 4.0 * float(np.sum((w - opt) ** 2))
    return {d: 2.0 + 0.1 * i + quad + 0.5 * (opt[i] - w[i]) for i, d in enumerate(names)}


def synthetic_optimum(config: Mapping, domains: list[str]) -> dict[str, float]:
    """The optimum for a trial trained at `config["preset"]`: `optimum_at_scale[preset]` when given
    (an optimum that moves with model size), else `optimum`, else the default one."""
    at_scale = (config.get("optimum_at_scale") or {}).get(config.get("preset"))
    return at_scale or config.get("optimum") or default_optimum(domains)


def scale_gain(preset: str) -> float:
    """Loss reduction (nats) of `preset` over `debug`: 0.1 per decade of non-embedding parameters."""
    from workers.presets import PRESETS

    return 0.1 * math.log10(PRESETS[preset].non_embedding_params() / PRESETS["debug"].non_embedding_params())


def run_synthetic(mixture: Mapping[str, float], config: Mapping, seed: int, report: Callable[[Progress], None]) -> TrialResult:
    """Stream `progress_events` evaluations over `duration_s` seconds, converging to the analytic loss."""
    domains = list(mixture)
    final = synthetic_losses(mixture, synthetic_optimum(config, domains))
    if config.get("preset"):  # a larger model reaches lower losses (scale ladders)
        final = {d: v - scale_gain(config["preset"]) for d, v in final.items()}
    rng = np.random.default_rng(int(config_hash(mixture, seed), 16))
    final = {d: v + float(rng.normal(0.0, config.get("noise", 0.0))) for d, v in final.items()}
    n, duration = int(config.get("progress_events", 4)), float(config.get("duration_s", 0.0))
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        time.sleep(duration / n)
        decay = math.exp(-3.0 * i / n) - math.exp(-3.0)  # reaches the final loss at the last event
        losses = {d: v + decay for d, v in final.items()}
        report(Progress(step=i, tokens=i * 1000, losses=losses, elapsed_s=time.perf_counter() - t0))
    stderr = {d: float(config.get("noise", 0.0)) for d in domains}
    return TrialResult(losses=final, loss_stderr=stderr, tokens=n * 1000, steps=n, wall_s=time.perf_counter() - t0)


def run_synthetic_trial(request: TrialRequest, data: Any, report: Callable[[Progress], None]) -> TrialResult:
    """The `synthetic` entry of workers/trainers.py: losses of a model of the request's preset (scale ladders)."""
    config = {**request.trainer, **({"preset": request.preset} if request.preset else {})}
    return run_synthetic(request.mixture, config, request.trainer_seed, report)


def run_python_trial(request: TrialRequest, data: Any, report: Callable[[Progress], None]) -> TrialResult:
    """The `python` entry of workers/trainers.py."""
    return run_python(request.mixture, request.trainer["callable"], request.trainer_seed, report)


def run_python(mixture: Mapping[str, float], ref: str, seed: int, report: Callable[[Progress], None]) -> TrialResult:
    """Call the user's function; it may call `report(step=, tokens=, losses=)` any number of times."""
    fn = pkgutil.resolve_name(ref)  # the stdlib resolves `module:function`, dotted attributes included
    t0 = time.perf_counter()

    def user_report(step: int, tokens: int, losses: Mapping[str, float]) -> None:
        report(Progress(step=int(step), tokens=int(tokens), losses={k: float(v) for k, v in losses.items()},
                        elapsed_s=time.perf_counter() - t0))

    out = fn(dict(mixture), user_report, seed)
    if not isinstance(out, Mapping) or not out:
        raise TypeError(f"{ref} must return a mapping domain -> loss, got {type(out).__name__}")
    return TrialResult(losses={k: float(v) for k, v in out.items()}, wall_s=time.perf_counter() - t0)
