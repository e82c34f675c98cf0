"""Proxy model presets, named by non-embedding parameter count (the count scaling laws use).

Kept apart from model.py so that reading a spec never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    seq_len: int  # tokens per training sequence
    batch_size: int  # sequences per optimiser step
    learning_rate: float  # peak, after warmup

    def non_embedding_params(self) -> int:
        """Attention (4 d^2) + SwiGLU MLP (3 d d_ff) per layer; norms are negligible."""
        return self.n_layers * (4 * self.d_model**2 + 3 * self.d_model * self.d_ff)


PRESETS: dict[str, Preset] = {
    "debug": Preset(d_model=64, n_layers=2, n_heads=4, d_ff=192, seq_len=128, batch_size=8, learning_rate=3e-3),
    "1m": Preset(d_model=128, n_layers=4, n_heads=4, d_ff=512, seq_len=256, batch_size=32, learning_rate=2e-3),
    "25m": Preset(d_model=512, n_layers=8, n_heads=8, d_ff=1376, seq_len=1024, batch_size=32, learning_rate=1e-3),
    "60m": Preset(d_model=768, n_layers=8, n_heads=12, d_ff=2304, seq_len=1024, batch_size=32, learning_rate=8e-4),
    "150m": Preset(d_model=1024, n_layers=12, n_heads=16, d_ff=2816, seq_len=1024, batch_size=32, learning_rate=6e-4),
}
