"""Every strategy's options, as pydantic models, and the kinds they belong to.

This module imports pydantic alone, so that validating a spec (orchestrator/spec.py, `mixsweep
validate`) never loads torch, BoTorch or Ax: the strategies themselves (orchestrator/strategies/*)
import their configs from here, and `CONFIGS` is the list of kinds the spec accepts. A test keeps the
two registries equal (tests/unit/test_strategies.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StrategyConfig(BaseModel):
    """Base of every strategy's options (`strategy.options` in the spec); extra keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ------------------------------------------------------------------------------ model strategies

class BoundedConfig(StrategyConfig):
    """Options shared by model-based strategies: where mixtures may go, and the initial design."""

    min_weight: float = Field(0.0, ge=0.0, lt=0.5, description="Floor on every domain's weight.")
    bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Per-domain [lower, upper] weights, e.g. {code: [0.05, 0.3]}.")
    initial_trials: int | None = Field(None, ge=1, description="Space-filling trials before the model takes over.")

    @model_validator(mode="after")
    def _ordered(self) -> "BoundedConfig":
        for d, (lo, hi) in self.bounds.items():
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"`strategy.options.bounds.{d}`: need 0 <= lower <= upper <= 1, got [{lo}, {hi}]")
        return self


class GPConfig(BoundedConfig):
    fit_maxiter: int = Field(50, ge=5, le=2000, description="L-BFGS-B steps when fitting the GPs' hyperparameters.")
    mc_samples: int = Field(128, ge=16, le=4096, description="Quasi-MC samples of the acquisition function.")
    candidates: int = Field(1024, ge=64, le=65536, description="Sobol candidates over the whole bounded simplex.")
    local_candidates: int = Field(256, ge=0, le=16384, description="Candidates around each of the best mixtures.")
    screen: int = Field(64, ge=4, le=4096, description="Candidates kept (by predicted mean and by mean - 2 std) for qLogNEI.")


class MultiFidelityConfig(GPConfig):
    """`mfgp`: gp over mixture and scale, choosing each trial's fidelity (docs/strategies.md, "Multi-fidelity")."""

    threshold: float = Field(1.0, gt=0, le=100, description="A cheaper fidelity is trained at the chosen mixture while the "
                             "model's std of the objective there exceeds this many times its run-to-run noise sd.")
    cheap_share: float = Field(0.25, gt=0, le=1, description="Most of budget.cost the cheaper fidelities may spend "
                               "(the rest goes to the target fidelity).")
    scale_mean: Literal["trend", "constant"] = Field(
        "trend", description="A least-squares trend in log scale per domain under the GP (orchestrator/scale_model.py), or a constant mean.")


class RegMixConfig(BoundedConfig):
    prior: Literal["tokens", "uniform"] = Field(
        "tokens", description="Swarm centre: token shares of the prepared data (tokens) or uniform.")
    temperature: float = Field(0.5, gt=0, le=1, description="Prior = token share ** temperature, renormalised.")
    max_ratio: float = Field(15.0, gt=1, description="Reject swarm samples with a domain above this multiple of its prior share.")
    zero_below: float = Field(2e-4, ge=0, lt=0.01, description="Weights below this are set to 0.")
    simulations: int = Field(20_000, ge=100, le=1_000_000, description="Simulated mixtures scored per proposal.")
    top_k: int = Field(128, ge=1, description="Proposal = mean of the top_k simulated mixtures.")
    n_estimators: int = Field(1000, ge=10, description="LightGBM trees per domain.")
    learning_rate: float = Field(0.01, gt=0, le=1, description="LightGBM learning rate.")


class MixingLawConfig(BoundedConfig):
    starts: int = Field(8, ge=1, le=256, description="Random starts of the L-BFGS fit per domain.")
    huber_delta: float = Field(0.02, gt=0, description="Huber loss threshold, nats/token.")


class BiMixConfig(BoundedConfig):
    eps: float = Field(1e-3, gt=0, lt=0.1, description="Added to each weight before the power law (keeps w=0 finite).")


class BayesOptConfig(StrategyConfig):
    initial_trials: int | None = Field(
        None, ge=1, description="Trials before the GP takes over (default: min(domains + 1, 10) with mixsweep, domains + 1 otherwise)."
    )
    method: Literal["mixsweep", "fast", "quality"] = Field(
        "mixsweep", description="Ax's model: mixsweep (gp's per-domain GP on sqrt(w) inside Ax) | fast | quality (Ax's own).")


# ------------------------------------------------------------------------- experts and DoReMi

class ExpertConfig(StrategyConfig):
    seed_mixtures: int = Field(4, ge=0, description="MDE: real mixture runs (Sobol) before the regression proposes.")
    candidates: int = Field(4000, ge=100, description="MDE: random mixtures scored per proposal.")
    ridge: float = Field(1e-3, ge=0, description="MDE: ridge penalty of the per-domain regression.")
    eta: float = Field(1.0, gt=0, description="MixMin: exponentiated-gradient step size.")
    max_steps: int = Field(100, ge=1, description="MixMin: at most this many steps.")
    tol: float = Field(1e-4, gt=0, description="MixMin: stop when max |gradient| is below this.")
    holdout: float = Field(0.2, ge=0, lt=1, description="MixMin: share of validation tokens held out to report on.")


class DoReMiConfig(StrategyConfig):
    reference: Literal["uniform", "token_prior"] = Field(
        "uniform", description="Reference mixture: uniform, or each domain's share of the training tokens.")
    eta: float = Field(1.0, gt=0, description="Step size of the exponentiated-gradient update, per nat of excess loss (paper: 1).")
    smoothing: float = Field(1e-3, ge=0, le=1, description="Share c of uniform mixed into the weights after every step (paper: 1e-3).")
    resample: bool = Field(False, description="Draw the proxy's batches at the current weights instead of reweighting its loss (the paper reweights).")


# ---------------------------------------------------------------------------------- baselines

class SobolConfig(StrategyConfig):
    min_weight: float = Field(0.0, ge=0.0, lt=0.5, description="Floor on every weight (then renormalised).")


class FixedConfig(StrategyConfig):
    weights: dict[str, float] = Field(..., description="The mixture: domain -> weight (renormalised to sum to 1).")

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return v


class TokenPriorConfig(StrategyConfig):
    temperature: float = Field(1.0, gt=0, le=1, description="Weights = token share ** temperature, renormalised (RegMix uses 0.5).")


# Strategy kind -> its options. orchestrator.strategies.STRATEGIES maps the same kinds to the classes.
CONFIGS: dict[str, type[StrategyConfig]] = {
    "gp": GPConfig,
    "mfgp": MultiFidelityConfig,
    "bayesopt": BayesOptConfig,
    "regmix": RegMixConfig,
    "mixing_law": MixingLawConfig,
    "bimix": BiMixConfig,
    "mde": ExpertConfig,
    "mixmin": ExpertConfig,
    "doremi": DoReMiConfig,
    "sobol": SobolConfig,
    "uniform": StrategyConfig,
    "fixed": FixedConfig,
    "token_prior": TokenPriorConfig,
}
