"""The proxy model: a Llama-style decoder built from a `transformers` config, from scratch.

Presets are named by their non-embedding parameter count (the count that scaling laws use);
`debug` trains in seconds on a CPU and is the one tests, the demo and benchmarks share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


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


def build_model(preset: Preset, vocab_size: int, seq_len: int) -> torch.nn.Module:
    """A freshly initialised LlamaForCausalLM of the preset's shape (tied embeddings, SDPA attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=preset.d_model,
        intermediate_size=preset.d_ff,
        num_hidden_layers=preset.n_layers,
        num_attention_heads=preset.n_heads,
        num_key_value_heads=preset.n_heads,
        max_position_embeddings=seq_len,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def preset_json(name: str) -> dict:
    return {"name": name, **asdict(PRESETS[name])}
