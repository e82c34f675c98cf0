"""Scale-aware surrogate: per-domain GPs on (sqrt(w), s), s the run's scale (model size, training tokens).

Why: the scale ladder re-trains a few mixtures at larger presets, and a runs table may hold runs of
several sizes; a scale-blind GP cannot use them, so its recommendation is the small-scale optimum.
Adding the scale as input lets the few large-scale points move the prediction at that scale.

What: the same batched independent GPs as orchestrator/surrogates/gp.py (BoTorch `SingleTaskGP`, RBF
with ARD so each scale column has its own lengthscale, `Standardize`, same L-BFGS-B fit), with an input
transform that embeds only the first k columns (the mixture, sqrt(w)) and passes the scale columns
through. Scale columns, log-scaled onto the range of proxy runs: s = (log10(non-embedding params) - 6) / 3
(1M -> 0, 1B -> 1) and t = (log10(training tokens) - 8) / 3 (100M -> 0, 100B -> 1).

Trend (`mean="trend"`, the default): per domain, a least-squares line in the scale columns is fitted
first and the GP models the residuals, i.e. how each mixture departs from the trend and how that
changes with scale. A loss falls roughly linearly in log size over a few decades; with a constant mean
(`mean="constant"`, the first version) the offset between scales (1.4 nats of pile_cc from 1M to 60M on
RegMix's runs) is left to the kernel, whose scale lengthscale then serves the level more than the
mixture, and beyond the largest scale the prediction drifts back to the average of all runs. Measured
in docs/benchmarks.md ("Scale transfer"). The predicted std adds the trend's least-squares standard
error at the scale asked (with the residual variance of all runs: conservative, as the mixtures' own
spread counts as noise there) to the GP's: beyond the largest scale both grow, the trend's linearly in
log size and the GP's as its correlation with the data decays. Extrapolation is said, not hidden
(tests/unit/test_runs_scale.py); whether the trend stays linear beyond the table is an assumption no
table of two sizes can check.

Assumes: losses vary smoothly in log scale, and the larger-scale points are few, so the model mostly
learns an offset per domain plus how the optimum shifts along the mixtures seen at the larger scale;
far from those mixtures the larger-scale prediction is the small-scale shape plus that offset, with a
wider std.

`ScaleGP` is the `gp` strategy on this model, answering at one target scale: what `mixsweep recommend`
fits to a runs table of several scales (recommend and --predict; proposing needs a choice of scale too).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms import Standardize
from botorch.models.transforms.input import InputTransform
from pydantic import Field

from orchestrator.mixture import Mixture
from orchestrator.strategies.configs import GPConfig
from orchestrator.strategies.gp import GP
from orchestrator.surrogates.base import Surrogate, check_xy, single_threaded
from orchestrator.surrogates.gp import DTYPE, fit_model, posterior_mean_std


def scale_coordinate(params: float) -> float:
    """Non-embedding parameter count -> the model's scale input (log10, 1M -> 0, 1B -> 1)."""
    if params <= 0:
        raise ValueError(f"non-embedding parameter count must be positive, got {params}")
    return (float(np.log10(params)) - 6.0) / 3.0


def token_coordinate(tokens: float) -> float:
    """Training tokens -> the model's token input (log10, 100M -> 0, 100B -> 1)."""
    if tokens <= 0:
        raise ValueError(f"training token count must be positive, got {tokens}")
    return (float(np.log10(tokens)) - 8.0) / 3.0


@dataclass(frozen=True)
class Scale:
    """A run's scale: non-embedding parameters and training tokens (None: not an input of the model)."""

    params: float | None = None
    tokens: float | None = None

    def to_json(self) -> dict[str, float]:
        return {k: float(v) for k, v in (("params", self.params), ("tokens", self.tokens)) if v is not None}

    def describe(self) -> str:
        return ", ".join(f"{k}={v:.3g}" for k, v in self.to_json().items())


class PartialHellingerEmbedding(InputTransform):
    """(..., k+c) [w, s] -> [sqrt(w), s]: embeds the k mixture columns, passes the scale columns through."""

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
    """Fit on mixtures W (n, k), scales (parameter counts and/or training tokens, (n,) each) and losses
    Y (n, m, nats/token); predict at one scale. Which scale inputs the model has is fixed by `fit`."""

    def __init__(self, maxiter: int = 50, mean: Literal["trend", "constant"] = "trend") -> None:
        if mean not in ("trend", "constant"):
            raise ValueError(f"mean must be 'trend' or 'constant', got {mean!r}")
        self.maxiter, self.mean = maxiter, mean
        self.model: SingleTaskGP | None = None
        self.k = 0
        self.inputs: tuple[bool, bool] = (False, False)  # (params, tokens) given to fit
        # The trend: coefficients (1+c, m) over [1, scale columns], pinv(A'A) (1+c, 1+c), residual variance (m,).
        self.beta, self.gram_inv, self.residual_var = np.zeros((1, 0)), np.zeros((1, 1)), np.zeros(0)

    @staticmethod
    def min_runs(n_scales: int) -> int:
        return 4

    def fit(self, W: np.ndarray, params: np.ndarray | None, Y: np.ndarray, tokens: np.ndarray | None = None) -> "ScaleAwareGP":
        """Fit to mixtures W (n, k), each run's non-embedding parameters and/or training tokens ((n,) each;
        None: not an input) and its losses Y (n, m), nats/token. ValueError below `min_runs` runs."""
        W, Y = check_xy(W, Y)
        self.inputs = (params is not None, tokens is not None)
        S = self._coordinates(params, tokens, len(W))
        if len(W) < self.min_runs(len(np.unique(S, axis=0))):
            raise ValueError(f"the scale-aware model needs at least {self.min_runs(0)} runs, got {len(W)}")
        self.k, m = W.shape[1], Y.shape[1]
        self._fit_trend(S, Y)
        X = torch.tensor(np.column_stack([W, S]), dtype=DTYPE)
        residual = Y - self._design(S) @ self.beta
        with single_threaded(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # inputs are in [0, 1] already (see module docstring)
            self.model = SingleTaskGP(X, torch.tensor(residual, dtype=DTYPE), input_transform=PartialHellingerEmbedding(self.k),
                                      outcome_transform=Standardize(m=m))
            fit_model(self.model, self.maxiter)
        return self

    def _fit_trend(self, S: np.ndarray, Y: np.ndarray) -> None:
        """Least-squares line of each domain's loss in the scale columns (zero for mean="constant")."""
        A = self._design(S)
        if self.mean == "constant":
            c = A.shape[1]
            self.beta, self.gram_inv, self.residual_var = np.zeros((c, Y.shape[1])), np.zeros((c, c)), np.zeros(Y.shape[1])
            return
        self.beta, *_ = np.linalg.lstsq(A, Y, rcond=None)
        dof = max(len(A) - np.linalg.matrix_rank(A), 1)
        self.residual_var = ((Y - A @ self.beta) ** 2).sum(axis=0) / dof
        self.gram_inv = np.linalg.pinv(A.T @ A)

    @staticmethod
    def _design(S: np.ndarray) -> np.ndarray:
        return np.column_stack([np.ones(len(S)), S])

    def predict(self, W: np.ndarray, params: float | None, tokens: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std (noise excluded) of each domain's loss (n, m), nats/token, at `params`
        parameters and `tokens` training tokens (give those the model was fitted with)."""
        if self.model is None:
            raise RuntimeError("fit the scale-aware model before predict")
        if (params is not None, tokens is not None) != self.inputs:
            raise ValueError(f"the model was fitted on scale inputs (params, tokens) given = {self.inputs}; predict with the same")
        W = np.atleast_2d(np.asarray(W, dtype=float))
        S = self._coordinates(None if params is None else np.full(len(W), params),
                              None if tokens is None else np.full(len(W), tokens), len(W))
        mean, std = posterior_mean_std(self.model, np.column_stack([W, S]))
        A = self._design(S)
        # The trend's standard error, squared, (n, m): a' (A'A)^+ a times each domain's residual variance.
        trend_var = np.einsum("ij,jk,ik->i", A, self.gram_inv, A)[:, None] * self.residual_var
        return mean + A @ self.beta, np.sqrt(std**2 + trend_var)

    def scale_inputs(self, params: float | None, tokens: float | None) -> np.ndarray:
        """The model's scale columns (c,) at one scale (give the inputs it was fitted with)."""
        return self._coordinates(None if params is None else np.array([params]), None if tokens is None else np.array([tokens]), 1)[0]

    def trend(self, S: np.ndarray) -> np.ndarray:
        """The least-squares trend (m,) at scale columns S (c,): what the GP's residuals are measured from."""
        return (self._design(S[None, :]) @ self.beta)[0]

    @staticmethod
    def _coordinates(params: np.ndarray | None, tokens: np.ndarray | None, n: int) -> np.ndarray:
        """The scale inputs (n, c): log-scaled params and/or tokens (module docstring)."""
        cols = [[f(v) for v in np.asarray(a, dtype=float)] for a, f in ((params, scale_coordinate), (tokens, token_coordinate))
                if a is not None]
        if not cols:
            raise ValueError("the scale-aware model needs parameter counts or token counts")
        S = np.array(cols, dtype=float).T
        if len(S) != n:
            raise ValueError(f"{len(S)} scales for {n} mixtures")
        return S


class ScaleGPConfig(GPConfig):
    scale_mean: Literal["trend", "constant"] = Field(
        "trend", description="Runs of several scales: a least-squares trend in log scale per domain under the GP, or a constant mean.")


class AtScale(Surrogate):
    """A `ScaleAwareGP` as a Surrogate of the mixture alone: fitted on runs of known scales (row i of
    the training data at params[i], tokens[i]), predicting at the scale `at`."""

    name = "gp over mixture and scale"

    def __init__(self, model: ScaleAwareGP, params: np.ndarray | None, tokens: np.ndarray | None, at: Scale) -> None:
        self.model, self.params, self.tokens, self.at = model, params, tokens, at

    @staticmethod
    def min_runs(k: int) -> int:
        return ScaleAwareGP.min_runs(0)

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "AtScale":
        n = len(X)
        if any(a is not None and len(a) != n for a in (self.params, self.tokens)):
            raise ValueError("every run needs its scale: the strategy was told other runs than it was given scales for")
        self.model.fit(X, self.params, Y, self.tokens)
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.model.predict(X, self.at.params, self.at.tokens)


class ScaleGP(GP):
    """The `gp` strategy over mixture and scale, answering at the scale `at`. Told the runs whose scales
    (`params`, `tokens`: (n,) each, None for a scale that is no input) it is given, in that order."""

    Config = ScaleGPConfig

    def __init__(self, config: ScaleGPConfig, domains: tuple[str, ...], objective, seed: int,
                 params: np.ndarray | None, tokens: np.ndarray | None, at: Scale) -> None:
        super().__init__(config, domains, objective, seed)
        self.params, self.tokens, self.at = params, tokens, at

    def make_surrogate(self) -> AtScale:
        return AtScale(ScaleAwareGP(self.config.fit_maxiter, self.config.scale_mean), self.params, self.tokens, self.at)

    def best_observed(self, count: int) -> np.ndarray:
        """The `count` observed mixtures predicted best at `at` (their observed objectives are of other
        scales, so they are not compared directly), (count, k)."""
        W = np.array([o.mixture.as_array() for o in self.observations])
        order = np.argsort(self.predicted_objective(W), kind="stable")
        return W[order[:count]]

    def propose(self, n: int, pending: list[Mixture], rng: np.random.Generator) -> list[Mixture]:
        raise ValueError("proposing runs from a table of several scales needs a choice of scale too, which a multi-fidelity "
                         "sweep makes (`fidelities:` and strategy mfgp); recommend or --predict at a scale, or propose from the runs of one scale")
