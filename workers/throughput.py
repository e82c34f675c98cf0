"""Training throughput: tokens per second and model FLOPs utilisation (MFU).

MFU is the FLOP/s the model's arithmetic needs at the measured tokens/s, divided by the device's peak
dense bf16 FLOP/s. It counts the model's FLOPs, not the hardware's (no recomputation), so it compares
across implementations. On devices missing from the peak table (every CPU) MFU is unknown (None):
a guessed peak would be a made-up number.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from workers.presets import Preset

# Peak dense (no sparsity) bf16 tensor-core FLOP/s from the vendors' data sheets. Matched against
# torch.cuda.get_device_name() in this order, so the specific names come before the general ones.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),  # same GH100 compute as H100 SXM, more and faster memory
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("A100", 312e12),
    ("L4", 121e12),
)


def peak_bf16_flops(device: torch.device) -> float | None:
    """Peak dense bf16 FLOP/s of `device`, or None when it is not in the table (CPUs, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def flops_per_token(preset: Preset, vocab_size: int, seq_len: int) -> int:
    """Training FLOPs per token (forward + backward), PaLM's formula (Chowdhery et al. 2022, "PaLM:
    Scaling Language Modeling with Pathways", Appendix B): 6N + 12·L·H·Q·T.

    N: parameters that take part in matrix multiplies, i.e. the non-embedding parameters plus the
    output projection (vocab × d_model; tied to the input embedding, whose lookup costs no FLOPs).
    L layers, H heads, Q head dimension, T sequence length (tokens): the attention scores and their
    weighted sum, which N does not count.
    """
    n = preset.non_embedding_params() + vocab_size * preset.d_model
    head_dim = preset.d_model // preset.n_heads
    return 6 * n + 12 * preset.n_layers * preset.n_heads * head_dim * seq_len


def mfu(tokens_per_s: float, flops_per_token: int, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1]: achieved model FLOP/s over the device's peak; None if the peak is unknown."""
    return tokens_per_s * flops_per_token / peak_flops if peak_flops else None


@dataclass(frozen=True)
class Throughput:
    """What a trial reports about its speed; `mfu` is None where the device's peak is unknown."""

    tokens_per_s: float
    flops_per_token: int
    peak_flops: float | None
    mfu: float | None
    train_s: float  # seconds spent training (the time evaluations take is excluded)

    def to_json(self) -> dict:
        return asdict(self)


class ThroughputMeter:
    """Times training steps only: `pause()` before an evaluation, `resume()` after it.

    On a GPU the clock is read after a synchronisation, once per pause, so kernels still queued count
    against the steps that launched them; the steps themselves never wait for the host.
    """

    def __init__(self, device: torch.device, flops_per_token: int) -> None:
        self.device, self.flops = device, flops_per_token
        self.peak = peak_bf16_flops(device)
        self.train_s, self.tokens = 0.0, 0
        self._since: float | None = None

    def resume(self) -> None:
        self._since = time.perf_counter()

    def pause(self, tokens: int) -> None:
        """Close the current stretch of training, during which `tokens` training tokens were consumed."""
        if self._since is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_s += time.perf_counter() - self._since
        self.tokens += tokens
        self._since = None

    def current(self) -> Throughput:
        rate = self.tokens / self.train_s if self.train_s > 0 else 0.0
        return Throughput(tokens_per_s=rate, flops_per_token=self.flops, peak_flops=self.peak, mfu=mfu(rate, self.flops, self.peak),
                          train_s=self.train_s)
