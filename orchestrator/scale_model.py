"""Scale-aware surrogate: per-domain GPs on (sqrt(w), s), s from the preset's model size.

Why: the scale ladder re-trains a few mixtures at larger presets; a scale-blind GP fitted on the small
sweep cannot use them, so its recommendation is the small-scale optimum. Adding the model size as one
more input lets the few large-scale points move the prediction at that scale.

What: the same batched independent GPs as orchestrator/surrogates/gp.py (BoTorch `SingleTaskGP`, RBF
with ARD so the scale column has its own lengthscale, `Standardize`, same L-BFGS-B fit), with an input
transform that embeds only the first k columns (the mixture, sqrt(w)) and passes the last column through.
The scale column is s = (log10(non-embedding params) - 6) / 3: 1M params -> 0, 1B -> 1, the range of
the proxy presets, so it sits on the same [0, 1] footing as sqrt(w).

Assumes: losses vary smoothly in log model size, and the larger-scale points are few (top-k plus
baselines per rung), so the model mostly learns a scale offset plus how the optimum shifts along the
re-trained mixtures; far from those mixtures the larger-scale prediction falls back to the small-scale
shape plus that offset, with a wider std.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms import Standardize
from botorch.models.transforms.input import InputTransform

from orchestrator.surrogates.base import check_xy, single_threaded
from orchestrator.surrogates.gp import DTYPE, fit_model, posterior_mean_std


def scale_coordinate(params: float) -> float:
    """Non-embedding parameter count -> the model's scale input (log10, 1M -> 0, 1B -> 1)."""
    if params <= 0:
        raise ValueError(f"non-embedding parameter count must be positive, got {params}")
    return (float(np.log10(params)) - 6.0) / 3.0


class PartialHellingerEmbedding(InputTransform):
    """(..., k+1) [w, s] -> [sqrt(w), s]: embeds the k mixture columns, passes the scale through."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.transform_on_train = self.transform_on_eval = self.transform_on_fantasize = True

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        w, rest = X[..., : self.k], X[..., self.k:]
        # Same tiny offset as HellingerEmbedding: finite gradient at w = 0.
        return torch.cat([torch.sqrt(w.clamp_min(0.0) + 1e-10), rest], dim=-1)

    def equals(self, other: InputTransform) -> bool:
        return isinstance(other, PartialHellingerEmbedding) and other.k == self.k


class ScaleAwareGP:
    """Fit on mixtures W (n, k), parameter counts P (n,), losses Y (n, m); predict at one scale."""

    def __init__(self, maxiter: int = 50) -> None:
        self.maxiter = maxiter
        self.model: SingleTaskGP | None = None
        self.k = 0

    @staticmethod
    def min_runs(n_scales: int) -> int:
        return 4

    def fit(self, W: np.ndarray, params: np.ndarray, Y: np.ndarray) -> "ScaleAwareGP":
        W, Y = check_xy(W, Y)
        s = np.array([scale_coordinate(p) for p in np.asarray(params, dtype=float)])
        if len(s) != len(W):
            raise ValueError(f"{len(s)} parameter counts for {len(W)} mixtures")
        if len(W) < self.min_runs(len(set(s))):
            raise ValueError(f"the scale-aware model needs at least {self.min_runs(0)} runs, got {len(W)}")
        self.k = W.shape[1]
        X = torch.tensor(np.column_stack([W, s]), dtype=DTYPE)
        with single_threaded(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # inputs are in [0, 1] already (see module docstring)
            self.model = SingleTaskGP(X, torch.tensor(Y, dtype=DTYPE),
                                      input_transform=PartialHellingerEmbedding(self.k),
                                      outcome_transform=Standardize(m=Y.shape[-1]))
            fit_model(self.model, self.maxiter)
        return self

    def predict(self, W: np.ndarray, params: float) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std (noise excluded) of each domain's loss at `params` parameters."""
        if self.model is None:
            raise RuntimeError("fit the scale-aware model before predict")
        W = np.atleast_2d(np.asarray(W, dtype=float))
        return posterior_mean_std(self.model, np.column_stack([W, np.full(len(W), scale_coordinate(params))]))
