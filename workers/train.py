"""train_proxy: train one proxy model on one mixture and report per-domain validation losses.

A plain function (no Ray): the actor wraps it, tests call it directly.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from orchestrator.trial import Progress, TrialResult
from workers.data import MixtureSampler
from workers.evaluate import evaluate
from workers.model import PRESETS, build_model


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

    @classmethod
    def from_spec(cls, proxy, seed: int) -> "TrainConfig":
        return cls(preset=proxy.preset, tokens=proxy.tokens_per_trial, eval_every_tokens=proxy.eval_every_tokens,
                   seq_len=proxy.seq_len, batch_size=proxy.batch_size, learning_rate=proxy.learning_rate, seed=seed,
                   checkpoint_every_tokens=proxy.checkpoint_every_tokens)

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
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = torch.bfloat16 if device.type == "cuda" else None
    torch.manual_seed(config.seed)
    seq_len, batch_size, peak_lr = config.resolved()
    sampler = MixtureSampler(train, mixture, seq_len, batch_size, config.tokens, config.seed)
    model = build_model(PRESETS[config.preset], vocab_size, seq_len).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.95), weight_decay=config.weight_decay,
                            fused=device.type == "cuda")
    tokens_per_step = batch_size * seq_len
    eval_every = max(1, config.eval_every_tokens // tokens_per_step)
    ckpt = Checkpointer(checkpoint_dir, config.checkpoint_every_tokens, tokens_per_step)
    ckpt.online = online
    start, losses, stderr = ckpt.restore(model, opt)
    if online is not None:
        on_eval = online.reporting(on_eval)
        if start and online.resample:  # batches after a resume follow the restored weights
            sampler.set_weights(online.weights, start)
    for step in range(start, sampler.n_steps):
        batch, domain_ids = sampler.batch(step)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, sampler.n_steps, peak_lr, config.warmup_fraction)
        x = torch.from_numpy(batch).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = model(input_ids=x[:, :-1]).logits
        if online is None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1))
        else:  # the mixer weighs the per-token losses (and may re-mix the steps still to come)
            loss = online.loss(x, domain_ids, F.cross_entropy(logits.float().transpose(1, 2), x[:, 1:], reduction="none"))
            if online.resample:
                sampler.set_weights(online.weights, step + 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        if done % eval_every == 0 or done == sampler.n_steps:
            losses, stderr = evaluate(model, val, seq_len, batch_size, device, amp)
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"diverged: non-finite validation loss at step {done} ({losses})")
            on_eval(Progress(step=done, tokens=done * tokens_per_step, losses=losses, elapsed_s=time.perf_counter() - t0))
        ckpt.maybe_save(done, model, opt, losses, stderr)
    info = {"device": str(device), "sequences_per_domain": sampler.counts, "resumed_from_step": start}
    if token_logprobs_to:
        from orchestrator.storage import write_arrays
        from workers.experts import token_logprobs

        write_arrays(token_logprobs_to, token_logprobs(model, val, seq_len, batch_size, device, amp))
        info["token_logprobs"] = token_logprobs_to
    if online is not None:
        info["online"] = online.summary()
    if final_weights_to:
        Checkpointer.write_weights(final_weights_to, model)
        info["final_weights"] = final_weights_to
    return TrialResult(losses=losses, loss_stderr=stderr, tokens=sampler.tokens, steps=sampler.n_steps,
                       wall_s=time.perf_counter() - t0, info=info)


class Checkpointer:
    """Model + optimiser + step in `<dir>/checkpoint.pt`, written whole (a path or a pyarrow URI, so a
    retry on another node finds it when the sweep directory is on shared storage)."""

    online = None  # an online mixer whose state (weights, running average) is saved with the model

    def __init__(self, directory: str | Path | None, every_tokens: int | None, tokens_per_step: int) -> None:
        self.location = f"{str(directory).rstrip('/')}/checkpoint.pt" if directory and every_tokens else None
        self.every = max(1, (every_tokens or 0) // tokens_per_step)

    def restore(self, model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, dict, dict]:
        """(first step to run, last losses, last stderr); step 0 when there is no checkpoint."""
        from orchestrator.storage import read_bytes

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
        from orchestrator.storage import write_bytes

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
        from orchestrator.storage import write_bytes

        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
        write_bytes(str(location), buf.getvalue())

    @staticmethod
    def read_weights(location: str) -> dict[str, torch.Tensor] | None:
        """Weights written by `write_weights`, on the CPU; None if there is no file."""
        from orchestrator.storage import read_bytes

        blob = read_bytes(str(location))
        if blob is None:
            return None
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)  # never unpickle from a sweep dir
