"""mixsweep's per-domain GP and acquisition search inside Ax's generation strategy (used by `bayesopt`).

Ax keeps its parameterisation of the simplex, the unit cube u in [0,1]^(k-1) mapped by stick-breaking
(`orchestrator.mixture.cube_to_simplex`), and what a user of Ax sees: the Client, its trials and
indices, its Sobol initialisation, its acquisition function (qLogNoisyExpectedImprovement on the
scalarised per-domain objective, running trials pending), `get_best_parameterization`. What changes
is what its modular BoTorch generator (`Generators.BOTORCH_MODULAR`) fits and how it searches:

- `CubeToHellinger`, an input transform, maps Ax's cube to the Hellinger embedding of the mixture,
  sqrt(w) (k coordinates), inside the model: the kernel sees what `gp`'s kernel sees
  (orchestrator/surrogates/gp.py says why sqrt(w));
- `MixtureGP` (the `SurrogateSpec`'s model class) is `gp`'s model on those inputs: one independent
  RBF-ARD GP per domain (BoTorch's defaults), the noise inferred rather than taken from the trials'
  stderr (one evaluation's error, blind to run-to-run variation), fitted with `gp`'s bounded
  L-BFGS-B (`surrogates.gp.fit_model`, registered with Ax's `fit_botorch_model` dispatcher) instead
  of Ax's fit to convergence with random restarts;
- `SimplexCandidates` (the generator's `acquisition_class`) maximises Ax's acquisition function over
  `gp`'s screened candidate mixtures instead of Ax's multi-start L-BFGS-B on the cube: the same regret
  within the seeds' spread, at a fraction of the time per ask (docs/decisions.md has the figures).

Measured with `mixsweep bench` (docs/benchmarks.md, "Replay bench"; docs/decisions.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ax.generators.torch.botorch_modular.acquisition import Acquisition
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import InputTransform
from botorch.utils.datasets import SupervisedDataset

from orchestrator.surrogates.gp import fit_model, noise_likelihood

# L-BFGS-B steps of a fit (GPConfig.fit_maxiter's default: 50 rank held-out runs as well as full
# convergence, surrogates/gp.py).
FIT_MAXITER = 50


class CubeToHellinger(InputTransform):
    """u (..., k-1) in Ax's unit cube -> sqrt(w) (..., k): stick-breaking with Beta(1, k-1-i) inverse
    CDFs (the torch twin of `orchestrator.mixture.cube_to_simplex`), then the Hellinger embedding.
    Differentiable (Ax's gradient-based acquisition search, were it used, runs through it)."""

    def __init__(self) -> None:
        super().__init__()
        self.transform_on_train = self.transform_on_eval = self.transform_on_fantasize = True

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        u = X.clamp(0.0, 1.0)
        k = u.shape[-1] + 1
        rest = torch.ones_like(u[..., 0])
        weights = []
        for i in range(k - 1):
            # 1 - (1 - u)^(1/(k-1-i)), with the root taken in log space: finite gradients as u -> 1.
            x = -torch.expm1(torch.log1p(-u[..., i].clamp_max(1.0 - 1e-12)) / (k - 1 - i))
            weights.append(rest * x)
            rest = rest * (1.0 - x)
        weights.append(rest)
        # The tiny offset keeps the gradient of the root finite at w = 0 (as surrogates.gp.HellingerEmbedding).
        return torch.sqrt(torch.stack(weights, dim=-1).clamp_min(0.0) + 1e-10)

    def equals(self, other: InputTransform) -> bool:
        return isinstance(other, CubeToHellinger)


class MixtureGP(SingleTaskGP):
    """`gp`'s per-domain GP (BoTorch's SingleTaskGP with its default RBF-ARD kernel and lengthscale
    priors, one output per domain) with the noise always inferred, under `gp`'s noise prior
    (`surrogates.gp.noise_likelihood`), for Ax's modular BoTorch generator.

    Shapes: train_X (n, k-1) in Ax's cube, train_Y (n, m) losses of m domains (standardised by Ax);
    the input transform (`CubeToHellinger`, set by the ModelConfig) makes the kernel's inputs (n, k)."""

    def __init__(self, train_X: torch.Tensor, train_Y: torch.Tensor, fit_maxiter: int = FIT_MAXITER,
                 input_transform: InputTransform | None = None, outcome_transform: Any = None) -> None:
        # Ax reads the constructor's argument names to see what it may pass, so they are spelled out.
        super().__init__(train_X, train_Y, likelihood=noise_likelihood(train_Y.shape[-1]),
                         input_transform=input_transform, outcome_transform=outcome_transform)
        self.fit_maxiter = fit_maxiter

    @classmethod
    def construct_inputs(cls, training_data: SupervisedDataset, fit_maxiter: int = FIT_MAXITER) -> dict[str, Any]:
        """Ax's dataset -> constructor arguments. The trials' stderr (`Yvar`) is left out: as in `gp`,
        the GP infers the noise, which includes the run-to-run variation a stderr of one evaluation
        does not see."""
        return {"train_X": training_data.X, "train_Y": training_data.Y, "fit_maxiter": fit_maxiter}


class SimplexCandidates(Acquisition):
    """`gp`'s acquisition search inside Ax: Ax's acquisition function (qLogNEI on the scalarised
    objective, running trials pending) maximised over a discrete set of mixtures, as `gp` does
    (orchestrator/strategies/gp.py says why), instead of multi-start L-BFGS-B on Ax's cube.

    The set: Sobol points over the simplex and Dirichlet clouds around the 3 observed mixtures the
    model predicts best (`optimize.candidates`), then a cloud around the set's best predicted point;
    kept: the `screen` with the best predicted objective and the best upper confidence bound (mean +
    2 std, Ax maximises), half each. Options (Ax's `acquisition_options`): `candidates`,
    `local_candidates`, `screen`, `seed`."""

    def optimize(self, n: int, search_space_digest: Any, *args: Any, candidate_set: torch.Tensor | None = None,
                 sampling_strategy: Any = None, **kwargs: Any):
        if candidate_set is None and sampling_strategy is None:
            candidate_set = self.screened_candidates()
        return super().optimize(n, search_space_digest, *args, candidate_set=candidate_set,
                                sampling_strategy=sampling_strategy, **kwargs)

    def screened_candidates(self) -> torch.Tensor:
        """The candidates (c, k-1) in Ax's cube."""
        from orchestrator.mixture import cube_to_simplex, simplex_to_cube
        from orchestrator.optimize import Bounds, candidates

        opts = {**SEARCH, **self.options}
        X_observed = none_or_empty(self.X_observed)
        pending = none_or_empty(self.X_pending)
        k = len(self.search_space_digest.feature_names) + 1
        rng = np.random.default_rng([int(opts["seed"]), len(X_observed), len(pending)])
        bounds = Bounds.of(tuple(map(str, range(k))))
        observed = cube_to_simplex(X_observed.cpu().numpy())
        best = observed[np.argsort(-self.objective_mean_std(X_observed)[0], kind="stable")[:3]]
        pool = candidates(bounds, rng, int(opts["candidates"]), best, int(opts["local_candidates"]))
        mean, std = self.objective_mean_std(self._cube(simplex_to_cube(pool)))
        near = candidates(bounds, rng, 0, pool[np.argmax(mean)], int(opts["local_candidates"]))
        near_mean, near_std = self.objective_mean_std(self._cube(simplex_to_cube(near)))
        pool, mean, std = np.vstack([pool, near]), np.concatenate([mean, near_mean]), np.concatenate([std, near_std])
        half = int(opts["screen"]) // 2
        keep = np.unique(np.concatenate([np.argsort(-mean, kind="stable")[:half],
                                         np.argsort(-(mean + 2.0 * std), kind="stable")[:half]]))
        return self._cube(simplex_to_cube(pool[keep]))

    def _cube(self, U: np.ndarray) -> torch.Tensor:
        return torch.tensor(U, dtype=self.dtype, device=self.device)

    def objective_mean_std(self, X: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the scalarised objective Ax maximises (outcomes as Ax transformed them),
        marginally at each row of X (n, k-1): (n,) each. Outcomes are independent GPs, so the
        variances add with the squared weights."""
        weights = self._objective_weights  # (m,) or, in newer Ax, (objectives, m): one objective here
        weights = weights.reshape(-1, weights.shape[-1])[0]
        means, variances = [], []
        with torch.no_grad():
            for chunk in X.split(256):  # joint covariance of a chunk only (surrogates.gp.posterior_mean_std)
                post = self._model.posterior(chunk)
                means.append(post.mean @ weights)
                variances.append(post.variance.clamp_min(0) @ weights**2)
        return torch.cat(means).cpu().numpy(), torch.cat(variances).sqrt().cpu().numpy()


def none_or_empty(X: torch.Tensor | None) -> torch.Tensor:
    return X if X is not None else torch.empty(0, 0)


# gp's defaults (GPConfig: candidates, local_candidates, screen).
SEARCH = {"candidates": 1024, "local_candidates": 256, "screen": 64, "seed": 0}


def _register_fit() -> None:
    """Ax fits a GPyTorch model with `fit_gpytorch_mll` (to convergence, retrying from random
    initialisations drawn from torch's global RNG); a MixtureGP is fitted as `gp` fits its model."""
    from ax.generators.torch.botorch_modular.utils import fit_botorch_model

    @fit_botorch_model.register(MixtureGP)
    def _fit_mixture_gp(model: MixtureGP, mll_class: Any = None, mll_options: dict[str, Any] | None = None) -> None:
        fit_model(model, model.fit_maxiter)


_register_fit()


def generation_strategy(seed: int, initial_trials: int, fit_maxiter: int = FIT_MAXITER):
    """Ax's generation strategy for `bayesopt`: Sobol until `initial_trials` trials exist (trials
    attached before, such as the reference run and a runs table, count), then the modular BoTorch
    generator with MixtureGP on CubeToHellinger and qLogNoisyExpectedImprovement."""
    from ax.api.utils.generation_strategy_dispatch import choose_generation_strategy
    from ax.api.utils.structs import GenerationStrategyDispatchStruct
    from ax.generators.torch.botorch_modular.surrogate import ModelConfig
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement

    model = ModelConfig(botorch_model_class=MixtureGP, model_options={"fit_maxiter": fit_maxiter},
                        input_transform_classes=[CubeToHellinger], name="mixsweep gp")
    strategy = choose_generation_strategy(
        struct=GenerationStrategyDispatchStruct(
            method="custom",
            initialization_budget=initial_trials,
            initialization_random_seed=seed,
            initialize_with_center=False,  # the reference mixture is attached as the first trial instead
            use_existing_trials_for_initialization=True,
        ),
        model_config=model,
        botorch_acqf_class=qLogNoisyExpectedImprovement,
    )
    for spec in strategy.nodes_by_name["MBM"].generator_specs:
        spec.generator_kwargs["acquisition_class"] = SimplexCandidates
        spec.generator_kwargs["acquisition_options"] = {**spec.generator_kwargs.get("acquisition_options", {}), "seed": seed}
    return strategy
