"""Per-token log-probabilities of a trained proxy on every validation set (for MDE and MixMin).

Experts are ordinary trials at the vertices of the simplex; when the strategy asks for it, the trainer
also runs this on its final model and writes `token_logprobs.npz` beside the trial's result. The
windows are exactly those of `evaluate` (stride seq_len), so the mean of -logprob over a domain's
array is that domain's reported validation loss.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from workers.evaluate import windows


@torch.no_grad()
def token_logprobs(model: torch.nn.Module, val: Mapping[str, np.ndarray], seq_len: int, batch_size: int,
                   device: torch.device, autocast_dtype: torch.dtype | None = None) -> dict[str, np.ndarray]:
    """domain -> float32 array [n_windows * seq_len] of log p(x_t | x_<t), in nats."""
    was_training = model.training
    model.eval()
    out = {}
    for name, tokens in val.items():
        parts = []
        for chunk in torch.from_numpy(windows(tokens, seq_len)).split(batch_size):
            chunk = chunk.to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(input_ids=chunk[:, :-1]).logits
            nll = F.cross_entropy(logits.float().transpose(1, 2), chunk[:, 1:], reduction="none")
            parts.append((-nll).reshape(-1).cpu())
        out[name] = torch.cat(parts).numpy().astype(np.float32)
    model.train(was_training)
    return out
