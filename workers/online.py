"""Online mixing: domain weights that change while a proxy trains, and DoReMi's rule for changing them.

The trainer (workers/train.py `train_proxy(online=...)`) hands the mixer every batch: its tokens, each
sequence's domain and the proxy's per-token losses (with their graph). The mixer updates its weights and
returns the loss to minimise. With `resample` the trainer also draws the rest of the run's sequences at
the new weights (`MixtureSampler.set_weights`); otherwise the weights reweight the loss, as in DoReMi.

DoReMi (Xie et al. 2023, arXiv 2305.10429, Algorithm 1): with k domains and u = (1/k, ..., 1/k),

    lambda_t[i] = mean over the batch's tokens of domain i of max(loss_proxy - loss_ref, 0)   (0 if none)
    alpha'_t    = alpha_{t-1} * exp(eta * lambda_t)                  (exponentiated gradient ascent)
    alpha_t     = (1 - c) * alpha'_t / sum(alpha'_t) + c * u         (smoothing)
    objective   = sum_i alpha_t[i] * (mean proxy loss on the batch's tokens of domain i)

starting from alpha_0 = u; the proposal is the average of alpha_t over the run. The reference model
(trained at the reference mixture by an ordinary trial) only scores tokens; it is never updated.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from workers.protocol import Progress


class OnlineMixError(ValueError):
    """One-line problem with a trial's online-mixing options."""


class DoReMiMixer:
    """DoReMi's domain weights, updated every step from the proxy's excess loss over a reference model."""

    kind = "doremi"

    def __init__(self, domains: Sequence[str], reference: torch.nn.Module, eta: float = 1.0,
                 smoothing: float = 1e-3, resample: bool = False) -> None:
        """Args:
            domains: names in the sampler's order (domain ids index this list).
            reference: the reference model; its parameters are frozen here.
            eta: step size of the exponentiated-gradient ascent (per nat of excess loss).
            smoothing: c, the share of uniform mixed into the weights after every step (0..1).
            resample: draw batches at the weights rather than reweighting the loss.
        """
        self.domains = list(domains)
        self.reference = reference.eval().requires_grad_(False)
        self.eta, self.smoothing, self.resample = float(eta), float(smoothing), bool(resample)
        k = len(self.domains)
        self.alpha = np.full(k, 1.0 / k)
        self.alpha_sum = np.zeros(k)  # sum of alpha_t over the steps taken, for the average
        self.steps = 0
        self.last_excess = np.zeros(k)  # lambda of the latest step (nats per token)
        self.sequences = np.zeros(k, dtype=np.int64)  # windows seen per domain (kept across a resume)
        self._device: torch.device | None = None

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.domains, self.alpha.tolist()))

    def average(self) -> dict[str, float]:
        """The mean of alpha_t over the steps taken (DoReMi's answer); uniform before any step."""
        mean = self.alpha_sum / self.steps if self.steps else np.full(len(self.domains), 1.0 / len(self.domains))
        return dict(zip(self.domains, mean.tolist()))

    @torch.no_grad()
    def _reference_losses(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token losses [B, T] (nats) of the reference model on the batch's windows [B, T + 1]."""
        if self._device != tokens.device:
            self.reference.to(tokens.device)
            self._device = tokens.device
        cuda = tokens.device.type == "cuda"
        with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = self.reference(input_ids=tokens[:, :-1]).logits
        return F.cross_entropy(logits.float().transpose(1, 2), tokens[:, 1:], reduction="none")

    def excess(self, tokens: torch.Tensor, domain_ids: np.ndarray, token_losses: torch.Tensor) -> np.ndarray:
        """lambda [k]: per domain, the mean over its tokens in the batch of max(proxy - reference, 0)."""
        clipped = (token_losses.detach().float() - self._reference_losses(tokens)).clamp_min(0.0)
        per_sequence = clipped.mean(dim=1).double().cpu().numpy()  # all windows have T tokens: mean of means
        ids = np.asarray(domain_ids)
        self.sequences += np.bincount(ids, minlength=len(self.domains))
        # A domain without a window in this batch: 0 when batches follow the reference mixture (the
        # paper: the sum is empty); when they follow the weights, its last measured excess, or a
        # domain the weights have turned away from could never be measured again and weights collapse.
        lam = self.last_excess.copy() if self.resample else np.zeros(len(self.domains))
        for i in np.unique(ids):
            lam[i] = per_sequence[ids == i].mean()
        self.last_excess = lam
        return lam

    def update(self, lam: np.ndarray) -> None:
        """One exponentiated-gradient step on the excess losses `lam` [k] (nats), then smoothing."""
        log_alpha = np.log(self.alpha) + self.eta * np.asarray(lam, dtype=float)
        alpha = np.exp(log_alpha - log_alpha.max())  # shifted: exp never overflows
        k = len(self.domains)
        self.alpha = (1.0 - self.smoothing) * alpha / alpha.sum() + self.smoothing / k
        self.alpha_sum += self.alpha
        self.steps += 1

    def loss(self, tokens: torch.Tensor, domain_ids: np.ndarray, token_losses: torch.Tensor) -> torch.Tensor:
        """Update the weights on this batch, then the objective to minimise (a scalar with a graph).

        Args:
            tokens: the batch's windows [B, T + 1] (inputs [:, :-1], targets [:, 1:]).
            domain_ids: [B] index into `domains` of each window.
            token_losses: the proxy's per-token losses [B, T] (nats), not detached.
        """
        self.update(self.excess(tokens, domain_ids, token_losses))
        if self.resample:  # the weights act through the sampler; the batch already follows them
            return token_losses.mean()
        ids = np.asarray(domain_ids)
        counts = np.bincount(ids, minlength=len(self.domains))
        # sum_i alpha_i * mean over domain i's windows == sum over windows of alpha_d / n_d * window mean
        scale = torch.as_tensor(self.alpha[ids] / counts[ids], dtype=token_losses.dtype, device=token_losses.device)
        return (token_losses.mean(dim=1) * scale).sum()

    def reporting(self, on_eval: Callable[[Progress], None]) -> Callable[[Progress], None]:
        """`on_eval` with the current weights attached to every Progress (status and dashboards show them)."""
        return lambda p: on_eval(dataclasses.replace(p, weights=self.weights))

    def summary(self) -> dict[str, Any]:
        """What the trial returns in `TrialResult.info["online"]`: the averaged and the last weights."""
        return {"kind": self.kind, "average": self.average(), "final": self.weights, "steps": self.steps,
                "sequences": dict(zip(self.domains, self.sequences.tolist())), "eta": self.eta,
                "smoothing": self.smoothing, "resample": self.resample}

    def state_dict(self) -> dict[str, Any]:
        """Plain lists (torch.load(weights_only=True) reads them back from a checkpoint)."""
        return {"alpha": self.alpha.tolist(), "alpha_sum": self.alpha_sum.tolist(), "steps": self.steps,
                "last_excess": self.last_excess.tolist(), "sequences": self.sequences.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.alpha = np.asarray(state["alpha"], dtype=float)
        self.alpha_sum = np.asarray(state["alpha_sum"], dtype=float)
        self.steps = int(state["steps"])
        self.last_excess = np.asarray(state["last_excess"], dtype=float)
        self.sequences = np.asarray(state["sequences"], dtype=np.int64)


def build_online(options: Mapping[str, Any], domains: Sequence[str], preset: str, vocab_size: int,
                 seq_len: int) -> DoReMiMixer:
    """The mixer a trial's `online` options ask for, with its reference model loaded.

    options: {"kind": "doremi", "reference": path or URI of the reference trial's final weights,
    "eta": float, "smoothing": float, "resample": bool}. The reference has the proxy's architecture.
    """
    from workers.model import PRESETS, build_model
    from workers.train import Checkpointer

    if options.get("kind") != DoReMiMixer.kind:
        raise OnlineMixError(f"online mixing kind {options.get('kind')!r} is unknown; the trainer knows 'doremi'")
    location = options.get("reference")
    state = Checkpointer.read_weights(location) if location else None
    if state is None:
        raise OnlineMixError(f"doremi: no reference weights at {location!r}; the reference trial must finish first "
                             "(it writes final_weights.pt in its trial directory)")
    reference = build_model(PRESETS[preset], vocab_size, seq_len)
    reference.load_state_dict(state)
    return DoReMiMixer(domains, reference, eta=options.get("eta", 1.0), smoothing=options.get("smoothing", 1e-3),
                       resample=options.get("resample", False))
