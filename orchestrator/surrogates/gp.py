"""Per-domain Gaussian processes on the simplex (BoTorch), through the Hellinger embedding.

One independent GP per evaluated domain, fitted together as one batched multi-output `SingleTaskGP`
(BoTorch's default RBF kernel with ARD and dimension-scaled lengthscale priors, `Standardize` on each
domain's losses, noise inferred under a prior set for a sweep's runs: `noise_likelihood`). Fitted with each row's noise variance (`Yvar`, from replicated
mixtures: orchestrator/surrogates/noise.py), the noise is that instead (BoTorch's fixed-noise likelihood):
replicates measure it, where inference confounds it with roughness the kernel cannot follow.

Why the embedding: the mixture enters the kernel as sqrt(w), which maps the simplex onto the positive
orthant of the unit sphere; Euclidean distance there is the Hellinger distance between the mixtures
(times sqrt 2). Small weights then count: going from 0 to 1% of a domain moves a mixture as far as
going from 25% to 35%, which matches how losses respond (a domain's first tokens matter most).
Measured on the 512 RegMix runs (64-run fits, docs/strategies.md): Spearman 0.97 with sqrt(w) against
0.92 with raw w (pile_cc) and 0.97 against 0.91 (mean of 13 losses).

Fitting: L-BFGS-B on the summed marginal log-likelihood, stopped after `maxiter` steps. Full
convergence takes 700-1000 steps on these ill-conditioned lengthscales for no better ranking (50 steps
rank as well, measured), and BoTorch's retry-from-random-init fallback is skipped on purpose: it draws
from torch's global RNG, and strategies must be deterministic.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms import Standardize
from botorch.models.transforms.input import InputTransform
from botorch.optim.closures import get_loss_closure_with_grads
from botorch.optim.fit import fit_gpytorch_mll_scipy
from gpytorch.constraints import GreaterThan
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import LogNormalPrior

from orchestrator.surrogates.base import Surrogate, check_xy, single_threaded
from orchestrator.surrogates.noise import FixedNoise

DTYPE = torch.float64

# Prior on each domain's noise variance, in units of the variance of the sweep's losses (Standardize):
# LogNormal(NOISE_PRIOR_LOC, 1), median noise sd exp(-0.5) = 61% of the losses' sd. BoTorch's default,
# LogNormal(-4, 1) (median 13%), fits a random design: over the 512 RegMix runs the run-to-run noise is
# 6-17% of each domain's spread (log variance ratio -5.6 to -3.5, median -4.3). A sweep's runs crowd
# around good mixtures, so their spread shrinks and noise is a larger share: log ratio -4.2 to -0.8
# (medians -1.4 and -2.3) in two bench sweeps. Under the default prior the GP took much of the noise
# for signal (inferred noise 0.17-0.21 of the truth in 4 of 6 synthetic draws at a 50% share; this
# prior: 0.65-1.05, and 1.0-1.2 at a 10% share), and its optimum chased lucky runs. On 20 saved
# bench sweeps each, recommendations worse than the sweep's best run by more than 0.005 nats went
# from 2 to 0 (`gp`) and from 3 to 1 (`bayesopt`); locs -2 to 0 measured alike (docs/benchmarks.md,
# "A noise prior for a sweep's runs").
NOISE_PRIOR_LOC = -1.0
# BoTorch's floor on inferred noise (MIN_INFERRED_NOISE_LEVEL).
MIN_NOISE = 1e-4


def noise_likelihood(outputs: int) -> GaussianLikelihood:
    """The inferred-noise likelihood of a GP with `outputs` independent outputs: BoTorch's
    (`get_gaussian_likelihood_with_lognormal_prior`, which has no argument for the prior) with the
    prior centred at NOISE_PRIOR_LOC."""
    prior = LogNormalPrior(loc=NOISE_PRIOR_LOC, scale=1.0)
    return GaussianLikelihood(noise_prior=prior, batch_shape=torch.Size([outputs]) if outputs > 1 else torch.Size(),
                              noise_constraint=GreaterThan(MIN_NOISE, transform=None, initial_value=prior.mode))


class HellingerEmbedding(InputTransform):
    """w (..., k) on the simplex -> sqrt(w) (..., k), a point on the unit sphere."""

    def __init__(self) -> None:
        super().__init__()
        self.transform_on_train = self.transform_on_eval = self.transform_on_fantasize = True

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        # The tiny offset keeps the gradient finite at w = 0 (for gradient-based acquisition).
        return torch.sqrt(X.clamp_min(0.0) + 1e-10)

    def equals(self, other: InputTransform) -> bool:
        return isinstance(other, HellingerEmbedding)


def build_model(X: torch.Tensor, Y: torch.Tensor, Yvar: torch.Tensor | None = None) -> SingleTaskGP:
    """Batched independent GPs: X (n, k) mixtures, Y (n, m) losses -> one model with m outputs; with
    Yvar (n, m), each observation's noise variance is fixed to it (Standardize rescales it with Y);
    without, inferred under `noise_likelihood`'s prior."""
    with warnings.catch_warnings():
        # BoTorch warns that inputs are not min-max scaled: the embedding puts them in [0, 1] already.
        warnings.simplefilter("ignore")
        return SingleTaskGP(X, Y, train_Yvar=Yvar, likelihood=None if Yvar is not None else noise_likelihood(Y.shape[-1]),
                            input_transform=HellingerEmbedding(),
                            outcome_transform=Standardize(m=Y.shape[-1]))


def fit_model(model: SingleTaskGP, maxiter: int) -> None:
    """Maximise the summed marginal log-likelihood of all outputs with at most `maxiter` L-BFGS-B steps."""
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    mll.train()
    params = {n: p for n, p in mll.named_parameters() if p.requires_grad}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "stopped at maxiter" is the intended outcome
        fit_gpytorch_mll_scipy(mll, parameters=params, closure=get_loss_closure_with_grads(mll, parameters=params),
                               options={"maxiter": maxiter})
    mll.eval()


def posterior_mean_std(model: SingleTaskGP, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marginal posterior mean and std (noise excluded) of every output at the rows of X: (n, m) each."""
    # Chunks of 256 rows: a t-batch per row would make gpytorch recompute the training covariance
    # for every row, and one chunk of all rows would form an (n, n) joint covariance per domain.
    means, stds = [], []
    with torch.no_grad(), single_threaded():
        for chunk in torch.tensor(X, dtype=DTYPE).split(256):
            post = model.posterior(chunk)
            means.append(post.mean)
            stds.append(post.variance.clamp_min(0).sqrt())
    return torch.cat(means).numpy(), torch.cat(stds).numpy()


class GPSurrogate(Surrogate, FixedNoise):
    """Independent GP per domain on the Hellinger embedding; std is the posterior std of the mean
    loss (noise excluded), nats/token. `fit(X, Y, Yvar)`: the noise fixed to Yvar rather than inferred."""

    name = "gp"

    def __init__(self, maxiter: int = 50) -> None:
        self.maxiter = maxiter
        self.model: SingleTaskGP | None = None

    @staticmethod
    def min_runs(k: int) -> int:
        return 3

    def fit(self, X: np.ndarray, Y: np.ndarray, Yvar: np.ndarray | None = None) -> "GPSurrogate":
        X, Y = check_xy(X, Y)
        if Yvar is not None:
            Yvar = np.asarray(Yvar, dtype=float)
            if Yvar.shape != Y.shape or not (np.isfinite(Yvar).all() and (Yvar > 0).all()):
                raise ValueError(f"Yvar must be positive and finite, shaped as Y {Y.shape}; got {Yvar.shape}")
        with single_threaded():
            self.model = build_model(torch.tensor(X, dtype=DTYPE), torch.tensor(Y, dtype=DTYPE),
                                     None if Yvar is None else torch.tensor(Yvar, dtype=DTYPE))
            fit_model(self.model, self.maxiter)
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.model is None:
            raise RuntimeError("fit the surrogate before predict")
        return posterior_mean_std(self.model, np.atleast_2d(X))
