"""The replay trainer: a runs table as a trainer, so strategies can be benchmarked on real past runs
without a GPU (`trainer: {kind: replay, runs: TABLE}`, `mixsweep bench`).

The simulator: per evaluated domain, a Gaussian process fitted to every row of the table (Matern 5/2
with ARD lengthscales on the Hellinger embedding sqrt(w), a constant mean, the losses standardised,
the noise inferred). Its posterior mean is the noiseless "truth" L_j(w); its inferred noise is the
table's own run-to-run noise, and every trial's answer is truth plus that noise, drawn from a
Generator seeded by the trial (so a retried or resumed trial answers the same, a replicate does not).

Why Matern 5/2 and not the RBF kernel of the `gp` strategy's surrogate: a simulator of the exact
family one strategy models would flatter that strategy; Matern is rougher and fits the RegMix tables
at least as well (docs/benchmarks.md, "Replay").

Fitting (BoTorch, once per table, done by the controller and cached by content) and prediction are
apart: trials receive the fitted arrays (`ReplayModel.to_payload`, ~0.1 MB for 512 runs) and predict
with numpy alone, so a replay trial imports neither torch nor BoTorch and starts in milliseconds.
`ReplayModel.truth` is for benchmarks; strategies only ever see the noisy trial results.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from workers.protocol import Progress, TrialRequest, TrialResult

SQRT5 = math.sqrt(5.0)
# L-BFGS-B steps when fitting the simulator's hyperparameters: a one-off per table, so it is fitted
# to convergence rather than for speed (the strategies' own GPs stop at 50).
FIT_MAXITER = 200
# Bumped whenever the model or its fit changes, so cached fits of an older simulator are not reused.
MODEL_VERSION = 1


@dataclass(frozen=True)
class ReplayModel:
    """Fitted per-domain GPs of a runs table: everything needed to predict with numpy.

    Shapes: n runs, k training domains, m loss domains. Losses in nats/token.
    """

    domains: tuple[str, ...]  # training domains: the mixture's axes (k)
    loss_domains: tuple[str, ...]  # evaluated domains (m)
    Z: np.ndarray  # (n, k) the table's mixtures, embedded (sqrt w)
    alpha: np.ndarray  # (m, n) (K + noise I)^-1 (y - c), standardised units
    lengthscale: np.ndarray  # (m, k)
    outputscale: np.ndarray  # (m,)
    constant: np.ndarray  # (m,) the GP's constant mean, standardised units
    y_mean: np.ndarray  # (m,) the standardisation, nats/token
    y_std: np.ndarray  # (m,)
    noise_sd: np.ndarray  # (m,) run-to-run noise, nats/token

    def truth(self, W: np.ndarray) -> np.ndarray:
        """Noiseless per-domain losses (n, m) at mixtures W (n, k) over `domains`, nats/token."""
        Z = np.sqrt(np.clip(np.atleast_2d(np.asarray(W, dtype=float)), 0.0, None))
        out = np.empty((len(Z), len(self.loss_domains)))
        for j in range(len(self.loss_domains)):
            K = self.outputscale[j] * matern52(Z / self.lengthscale[j], self.Z / self.lengthscale[j])
            out[:, j] = (self.constant[j] + K @ self.alpha[j]) * self.y_std[j] + self.y_mean[j]
        return out

    def to_payload(self) -> dict[str, Any]:
        """Plain arrays and lists (what a trial receives, and what the cache file holds)."""
        return {"domains": list(self.domains), "loss_domains": list(self.loss_domains),
                **{f: getattr(self, f) for f in _ARRAYS}}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "ReplayModel":
        return cls(tuple(str(d) for d in payload["domains"]), tuple(str(d) for d in payload["loss_domains"]),
                   **{f: np.asarray(payload[f], dtype=float) for f in _ARRAYS})

    def save(self, path: Path) -> None:
        """An .npz file (no pickle), written to a temporary name and moved into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, domains=np.array(self.domains), loss_domains=np.array(self.loss_domains),
                 **{f: getattr(self, f) for f in _ARRAYS})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "ReplayModel":
        with np.load(path, allow_pickle=False) as f:
            return cls.from_payload({k: f[k] for k in f.files})


_ARRAYS = ("Z", "alpha", "lengthscale", "outputscale", "constant", "y_mean", "y_std", "noise_sd")


def matern52(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The Matern 5/2 correlation (n, p) between rows of a (n, k) and b (p, k), already divided by the
    lengthscales (gpytorch's MaternKernel, nu=2.5, without the output scale)."""
    # Squared distances as |a|^2 + |b|^2 - 2ab: one matrix product, no (n, p, k) array.
    r2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    r = np.sqrt(np.clip(r2, 0.0, None))
    return (1.0 + SQRT5 * r + 5.0 / 3.0 * r**2) * np.exp(-SQRT5 * r)


def fit_replay(W: np.ndarray, L: np.ndarray, domains: tuple[str, ...], loss_domains: tuple[str, ...],
               maxiter: int = FIT_MAXITER) -> ReplayModel:
    """Fit the simulator to a table's mixtures W (n, k) and finite losses L (n, m), nats/token."""
    import torch
    from botorch.optim.closures import get_loss_closure_with_grads
    from botorch.optim.fit import fit_gpytorch_mll_scipy
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Standardize
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
    from gpytorch.mlls import ExactMarginalLogLikelihood

    n, m = L.shape
    X = torch.tensor(np.sqrt(np.clip(W, 0.0, None)), dtype=torch.float64)
    Y = torch.tensor(L, dtype=torch.float64)
    batch = torch.Size([m])
    # BoTorch's dimension-scaled lengthscale prior (Hvarfner et al. 2024) keeps 17 ARD lengthscales
    # identifiable from a few hundred runs; without it the fit drifts to singular kernels.
    kernel = get_covar_module_with_dim_scaled_prior(X.shape[-1], batch_shape=batch, use_rbf_kernel=False)
    model = SingleTaskGP(X, Y, covar_module=kernel, outcome_transform=Standardize(m=m))
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    mll.train()
    params = {name: p for name, p in mll.named_parameters() if p.requires_grad}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "stopped at maxiter" is an accepted outcome
        # One deterministic L-BFGS-B run: BoTorch's retry-from-random-init fallback draws from torch's
        # global RNG, and the simulator must be the same wherever it is fitted.
        fit_gpytorch_mll_scipy(mll, parameters=params, closure=get_loss_closure_with_grads(mll, parameters=params),
                               options={"maxiter": maxiter})
    mll.eval()
    with torch.no_grad():
        y_mean = model.outcome_transform.means.reshape(m).numpy()
        y_std = model.outcome_transform.stdvs.reshape(m).numpy()
        lengthscale = kernel.lengthscale.reshape(m, -1).numpy()
        outputscale = np.ones(m)  # no scale kernel: the outcomes are standardised
        constant = model.mean_module.constant.reshape(m).numpy()
        noise = model.likelihood.noise.reshape(m).numpy()  # variance, standardised units
    Ys = (L - y_mean) / y_std
    alpha = np.empty((m, n))
    Z = X.numpy()
    for j in range(m):
        K = outputscale[j] * matern52(Z / lengthscale[j], Z / lengthscale[j])
        alpha[j] = np.linalg.solve(K + noise[j] * np.eye(n), Ys[:, j] - constant[j])
    return ReplayModel(tuple(domains), tuple(loss_domains), Z, alpha, lengthscale, outputscale, constant,
                       y_mean, y_std, np.sqrt(noise) * y_std)


def table_digest(path: str | Path) -> str:
    """Content hash of a runs-table file (part of replay trial ids: another table, other trials)."""
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()[:16]


def id_fields(trainer: Mapping[str, Any], proxy: Mapping[str, Any], tokenizer: Mapping[str, Any]) -> dict[str, Any]:
    """The `replay` entry's trial identity: the trainer config with the table's content, not its path
    (the same table moved elsewhere answers the same)."""
    return {**trainer, "runs": table_digest(trainer["runs"])}


def run_trial(request: TrialRequest, data: Mapping[str, Any], report: Callable[[Progress], None]) -> TrialResult:
    """The `replay` entry of workers/trainers.py; `data` is the fitted simulator (`ReplayModel.to_payload`)."""
    return run_replay(request.mixture, request.trainer, ReplayModel.from_payload(data), request.trial,
                      request.trainer_seed, report)


def trial_rng(trial: str, seed: int) -> np.random.Generator:
    """The noise Generator of one trial: the same trial (id and seed) always draws the same noise."""
    digest = hashlib.sha256(f"{trial}:{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def run_replay(mixture: Mapping[str, float], config: Mapping[str, Any], model: ReplayModel, trial: str,
               seed: int, report: Callable[[Progress], None]) -> TrialResult:
    """One simulated trial: `progress_events` evaluations shaped like a loss curve over `duration_s`,
    ending at truth + noise (sd: the table's per-domain estimate, or `noise` when the spec sets it)."""
    w = np.array([[float(mixture[d]) for d in model.domains]])
    truth = model.truth(w)[0]
    sd = model.noise_sd if config.get("noise") is None else np.full(len(truth), float(config["noise"]))
    final = truth + trial_rng(trial, seed).normal(0.0, 1.0, len(truth)) * sd
    n, duration = int(config.get("progress_events", 4)), float(config.get("duration_s", 0.0))
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        time.sleep(duration / n)
        # A power-law approach to the final loss (0.5 nats above it at the first of n evaluations).
        gap = 0.5 * ((n / i) ** 0.5 - 1.0) / max(n**0.5 - 1.0, 1e-9)
        report(Progress(step=i, tokens=i, losses=dict(zip(model.loss_domains, map(float, final + gap))),
                        elapsed_s=time.perf_counter() - t0))
    return TrialResult(losses=dict(zip(model.loss_domains, map(float, final))),
                       loss_stderr=dict(zip(model.loss_domains, map(float, sd))), tokens=n, steps=n,
                       wall_s=time.perf_counter() - t0)
