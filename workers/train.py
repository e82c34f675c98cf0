"""train_proxy: train one proxy model on one mixture and report per-domain validation losses.

A plain function (no Ray): the actor wraps it, tests call it directly.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from workers.protocol import Progress, TrialRequest, TrialResult
from workers.data import MixtureSampler
from workers.evaluate import evaluate
from workers.model import PRESETS, build_model
from workers.throughput import ThroughputMeter, flops_per_token

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "debug"
    tokens: int = 262_144  # training (target) tokens, rounded down to whole batches
    eval_every_tokens: int = 65_536
    seq_len: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    seed: int = 0
    checkpoint_every_tokens: int | None = None
    compile: bool = False  # torch.compile the training forward/backward (eager where compiling fails)
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 elsewhere; "bf16" or "fp32" force it

    @classmethod
    def from_spec(cls, proxy, seed: int) -> "TrainConfig":
        return cls(preset=proxy.preset, tokens=proxy.training_tokens(), eval_every_tokens=proxy.eval_every_tokens,
                   seq_len=proxy.seq_len, batch_size=proxy.batch_size, learning_rate=proxy.learning_rate, seed=seed,
                   checkpoint_every_tokens=proxy.checkpoint_every_tokens, compile=proxy.compile)

    def resolved(self) -> tuple[int, int, float]:
        p = PRESETS[self.preset]
        return self.seq_len or p.seq_len, self.batch_size or p.batch_size, self.learning_rate or p.learning_rate


def lr_at(step: int, n_steps: int, peak: float, warmup_fraction: float) -> float:
    """Linear warmup then cosine decay to 10% of peak."""
    warmup = max(1, int(n_steps * warmup_fraction))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, n_steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device given, else the GPU Ray assigned this trial (CUDA_VISIBLE_DEVICES), else the CPU.

    With a fractional `resources.gpus`, several trials see the same GPU as cuda:0 and share it."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """bf16 autocast on CUDA (weights and optimiser state stay fp32); None (fp32) on CPU unless forced,
    because CPUs without bf16 matrix units run autocast slower than fp32."""
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision {precision!r}: use auto, bf16 or fp32")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return torch.bfloat16 if precision == "bf16" else None


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with one fused kernel over all parameters (CUDA and CPU kernels exist in torch >= 2.4)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay, fused=True)


def compile_or_eager(model: torch.nn.Module, example: torch.Tensor, amp: torch.dtype | None) -> Callable:
    """torch.compile(model), compiled now on `example` (forward and backward), or `model` itself with a
    one-line warning when compiling fails (no C++ compiler, an unsupported op). Leaves no gradients.

    The compiled module shares the model's parameters; checkpoints and evaluation use `model`, so
    state-dict keys do not change with the flag."""
    try:
        compiled = torch.compile(model)
        with torch.autocast(example.device.type, dtype=amp, enabled=amp is not None):
            logits = compiled(input_ids=example).logits
        logits.float().mean().backward()
        return compiled
    except Exception as err:  # any compiler failure: training eagerly is always possible
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        log.warning("proxy.compile: torch.compile failed (%s: %s); training eagerly", type(err).__name__, reason)
        torch._dynamo.reset()  # drop the half-built graphs
        return model
    finally:
        model.zero_grad(set_to_none=True)


def train_proxy(config: TrainConfig, mixture: Mapping[str, float], train: Mapping[str, np.ndarray],
                val: Mapping[str, np.ndarray], vocab_size: int,
                on_eval: Callable[[Progress], None] = lambda p: None,
                device: str | torch.device | None = None, checkpoint_dir: str | Path | None = None,
                token_logprobs_to: str | None = None, online=None, final_weights_to: str | None = None) -> TrialResult:
    """Train a fresh proxy on `mixture` for `config.tokens` tokens; evaluate every domain periodically.

    Args:
        mixture: domain -> weight (sums to 1).
        train / val: domain -> 1-D token arrays (val is held out, never trained on).
        on_eval: called with a Progress after each evaluation, while training goes on.
        checkpoint_dir: where `checkpoint.pt` is written every `config.checkpoint_every_tokens`; if one
            is there already, training resumes from it and ends with the same losses as an
            uninterrupted run (batches depend only on (seed, step); see MixtureSampler.batch).
        token_logprobs_to: path or URI; when set (expert trials of MDE / MixMin), the final model's
            per-token log-probabilities on every validation set are written there as .npz.
        online: an online mixer (workers/online.py, e.g. DoReMi) that sees every batch's per-token losses,
            updates its domain weights and returns the loss to minimise; its weights go out with each
            Progress, its state into checkpoints, and its summary into `info["online"]`.
        final_weights_to: path or URI; when set (DoReMi's reference run), the final model's weights are
            written there (Checkpointer.write_weights) and named in `info["final_weights"]`.
    Returns the final evaluation as a TrialResult (losses in nats/token).
    """
    t0 = time.perf_counter()
    device = pick_device(device)
    amp = autocast_dtype(device, config.precision)
    torch.manual_seed(config.seed)
    seq_len, batch_size, peak_lr = config.resolved()
    sampler = MixtureSampler(train, mixture, seq_len, batch_size, config.tokens, config.seed)
    model = build_model(PRESETS[config.preset], vocab_size, seq_len).to(device)
    opt = make_optimizer(model, peak_lr, config.weight_decay)
    tokens_per_step = batch_size * seq_len
    eval_every = max(1, config.eval_every_tokens // tokens_per_step)
    ckpt = Checkpointer(checkpoint_dir, config.checkpoint_every_tokens, tokens_per_step)
    ckpt.online = online
    start, losses, stderr = ckpt.restore(model, opt)
    if online is not None:
        on_eval = online.reporting(on_eval)
        if start and online.resample:  # batches after a resume follow the restored weights
            sampler.set_weights(online.weights, start)
    forward = model
    if config.compile:
        forward = compile_or_eager(model, _to(sampler.batch(start)[0], device)[:, :-1], amp)
    meter = ThroughputMeter(device, flops_per_token(PRESETS[config.preset], vocab_size, seq_len))
    meter.resume()
    trained_since = start  # first step of the stretch the meter is timing
    for step in range(start, sampler.n_steps):
        batch, domain_ids = sampler.batch(step)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, sampler.n_steps, peak_lr, config.warmup_fraction)
        x = _to(batch, device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = forward(input_ids=x[:, :-1]).logits
        if online is None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
        else:  # the mixer weighs the per-token losses (and may re-mix the steps still to come)
            loss = online.loss(x, domain_ids, F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:], reduction="none"))
            if online.resample:
                sampler.set_weights(online.weights, step + 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)  # one kernel per op on CPU too
        opt.step()
        done = step + 1
        if done % eval_every == 0 or done == sampler.n_steps:
            meter.pause((done - trained_since) * tokens_per_step)
            losses, stderr = evaluate(model, val, seq_len, batch_size, device, amp)
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"diverged: non-finite validation loss at step {done} ({losses})")
            on_eval(Progress(step=done, tokens=done * tokens_per_step, losses=losses, elapsed_s=time.perf_counter() - t0,
                             loss_stderr=stderr, tokens_per_s=meter.current().tokens_per_s))
            meter.resume()
            trained_since = done
        ckpt.maybe_save(done, model, opt, losses, stderr)
    info = {"device": str(device), "sequences_per_domain": sampler.counts, "resumed_from_step": start,
            "compiled": forward is not model, "autocast": str(amp).removeprefix("torch.") if amp else None,
            "throughput": meter.current().to_json()}
    if token_logprobs_to:
        from workers.files import write_arrays
        from workers.token_logprobs import token_logprobs

        write_arrays(token_logprobs_to, token_logprobs(model, val, seq_len, batch_size, device, amp))
        info["token_logprobs"] = token_logprobs_to
    if online is not None:
        info["online"] = online.summary()
    if final_weights_to:
        Checkpointer.write_weights(final_weights_to, model)
        info["final_weights"] = final_weights_to
    return TrialResult(losses=losses, loss_stderr=stderr, tokens=sampler.tokens, steps=sampler.n_steps,
                       wall_s=time.perf_counter() - t0, info=info)


# ------------------------------------------------------------------------- the proxy trainer's backend


def run_trial(request: TrialRequest, data: Mapping[str, Any], report: Callable[[Progress], None]) -> TrialResult:
    """One proxy trial (the `proxy` entry of workers/trainers.py): open the data the orchestrator
    prepared (`workers.data.data_payload`) and train on it."""
    from workers.data import open_domains

    torch.set_num_threads(max(1, int(request.cpus)))
    train_config = dict(request.train_config or {})
    config = TrainConfig(**{**train_config, "seed": train_config.get("seed", request.seed) + request.seed_offset})
    # The data payload names the shards; they are memory-mapped here (copied to this node once for a URI).
    opened = open_domains(data)
    train = {d: t.train for d, t in opened.items()}
    val = {d: t.val for d, t in opened.items()}
    # Held-out sets (spec `eval_domains`) are evaluated like domains but never sampled for training.
    val.update({d: t.val for d, t in open_domains(data, "eval_domains").items()})
    # Per-trial options the strategy asked for (a Proposal's options; part of the trial id). Files go to
    # the trial's directory, a path or URI that every node reaches.
    options = request.options
    logprobs_to = f"{request.trial_dir}/token_logprobs.npz" if options.get("token_logprobs") else None
    weights_to = f"{request.trial_dir}/final_weights.pt" if options.get("save_final_weights") else None
    online = None
    if "online" in options:
        from workers.online import build_online

        online = build_online(options["online"], list(train), config.preset, int(request.vocab_size), config.resolved()[0])
    return train_proxy(config, request.mixture, train, val, int(request.vocab_size), report, device=request.device,
                       checkpoint_dir=request.trial_dir, token_logprobs_to=logprobs_to, online=online,
                       final_weights_to=weights_to)


# What the trial's budget, evaluation and model are decides its losses; how often it saves itself and
# whether it is compiled do not (left out of the trial id).
_NOT_IN_ID = ("checkpoint_every_tokens", "compile")


def id_fields(trainer: Mapping[str, Any], proxy: Mapping[str, Any], tokenizer: Mapping[str, Any]) -> dict[str, Any]:
    """What besides the mixture and seed determines a proxy trial's outcome: the proxy settings (the
    budget in tokens), the model's shape and the tokenizer."""
    from workers.model import preset_json

    settings = {k: v for k, v in proxy.items() if k not in _NOT_IN_ID}
    return {**trainer, "proxy": settings, "model": preset_json(settings["preset"]), "tokenizer": dict(tokenizer)}


def timeout(trainer: Mapping[str, Any], tokens: int) -> float:
    """The token budget at a floor of 500 tokens/s (a slow CPU on the debug preset does ~20k), plus 10
    minutes for start-up and evaluation."""
    return tokens / 500.0 + 600.0


def _to(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host batch to device; pinned on CUDA so the copy is asynchronous and the step never waits for it."""
    x = torch.from_numpy(batch)
    return x.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else x


class Checkpointer:
    """Model + optimiser + step in `<dir>/checkpoint.pt`, written whole (a path or a pyarrow URI, so a
    retry on another node finds it when the sweep directory is on shared storage)."""

    online = None  # an online mixer whose state (weights, running average) is saved with the model

    def __init__(self, directory: str | Path | None, every_tokens: int | None, tokens_per_step: int) -> None:
        self.location = f"{str(directory).rstrip('/')}/checkpoint.pt" if directory and every_tokens else None
        self.every = max(1, (every_tokens or 0) // tokens_per_step)

    def restore(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, dict, dict]:
        """(first step to run, last losses, last stderr); step 0 when there is no checkpoint."""
        from workers.files import read_bytes

        blob = read_bytes(self.location) if self.location else None
        if blob is None:
            return 0, {}, {}
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)  # never unpickle from a sweep dir
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if self.online is not None and "online" in state:
            self.online.load_state_dict(state["online"])
        return state["step"], state["losses"], state["stderr"]

    def maybe_save(self, step: int, model, opt, losses: dict, stderr: dict) -> None:
        from workers.files import write_bytes

        if self.location is None or step % self.every:
            return
        buf = io.BytesIO()
        torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "losses": losses, "stderr": stderr,
                    **({"online": self.online.state_dict()} if self.online is not None else {})}, buf)
        write_bytes(self.location, buf.getvalue())

    @staticmethod
    def write_weights(location: str, model: torch.nn.Module) -> None:
        """The model's weights alone (no optimiser), whole, at a path or URI (another node may read them)."""
        from workers.files import write_bytes

        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
        write_bytes(str(location), buf.getvalue())

    @staticmethod
    def read_weights(location: str) -> dict[str, torch.Tensor] | None:
        """Weights written by `write_weights`, on the CPU; None if there is no file."""
        from workers.files import read_bytes

        blob = read_bytes(str(location))
        if blob is None:
            return None
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)  # never unpickle from a sweep dir
