"""Per-domain validation loss with its standard error."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F


def windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """Non-overlapping windows [n, seq_len + 1] covering the held-out tokens (stride seq_len)."""
    n = (len(tokens) - 1) // seq_len
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return np.asarray(tokens)[idx].astype(np.int64)


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: Mapping[str, np.ndarray], seq_len: int, batch_size: int,
             device: torch.device, autocast_dtype: torch.dtype | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Mean next-token loss (nats/token) on each domain's held-out tokens, and its standard error.

    The standard error is over windows (tokens within a window are correlated, windows much less so).
    """
    was_training = model.training
    model.eval()
    losses, stderr = {}, {}
    for name, tokens in val.items():
        w = torch.from_numpy(windows(tokens, seq_len))
        per_window = []
        for chunk in w.split(batch_size):
            chunk = chunk.to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(input_ids=chunk[:, :-1]).logits
            nll = F.cross_entropy(logits.float().transpose(1, 2), chunk[:, 1:], reduction="none")
            per_window.append(nll.mean(dim=1).cpu())
        pw = torch.cat(per_window).double().numpy()
        losses[name] = float(pw.mean())
        stderr[name] = float(pw.std(ddof=1) / np.sqrt(len(pw))) if len(pw) > 1 else 0.0
    model.train(was_training)
    return losses, stderr
