"""The proxy model: a Llama-style decoder built from a `transformers` config, from scratch.

Presets are named by their non-embedding parameter count (the count that scaling laws use);
`debug` trains in seconds on a CPU and is the one tests, the demo and benchmarks share.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from workers.presets import PRESETS, Preset


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
        use_cache=False,  # training only: no key/value cache object built on every forward
    )
    return LlamaForCausalLM(config)


def preset_json(name: str) -> dict:
    return {"name": name, **asdict(PRESETS[name])}
