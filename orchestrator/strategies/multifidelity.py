"""`mfgp`: cost-aware multi-fidelity Bayesian optimisation of the mixture.

A mixture chosen on a 1M-parameter proxy is used in a run hundreds of times larger, and a run at a
larger proxy costs ~60x more. `mfgp` trains each trial at one of the spec's `fidelities` (presets and/or
token budgets, each with a cost) and chooses both the mixture and the fidelity:

- Model: the scale-aware GP (orchestrator/scale_model.py): per-domain GPs over (sqrt(w), log size) on
  the residuals of a least-squares trend in log size, fitted on every run of every fidelity. Its
  prediction at the target scale (the production run's size when the spec gives `target.params`,
  else the target fidelity's) is what every decision and the recommendation read.
- Mixture: gp's qLogNoisyExpectedImprovement on the objective *at the target scale* (the scale inputs
  fixed there: `FixedFeatureAcquisitionFunction`), among gp's screened simplex candidates. The trend
  is the same for every mixture at one scale, so for a linear objective it changes no choice; `worst`
  and constraints read it (an MC objective on the residuals plus the trend).
- Fidelity, per chosen mixture (the rule of MF-GP-UCB, Kandasamy et al. 2016, with a noise-scaled
  threshold): the cheapest fidelity at which the model's std of the objective at that mixture still
  exceeds `threshold` times that fidelity's run-to-run noise sd, else the target. A cheap run is
  worth its cost while the model is unsure what the cheap run would say; once it knows (nearby cheap
  runs), only a run at the target can tell what is left: how the mixture's loss changes with scale.
  The cheaper fidelities spend at most `cheap_share` of `budget.cost`, so a rugged 17-domain simplex
  cannot keep the sweep at the cheap fidelity forever.
- The initial design (gp's: the reference mixture, the objective's tilt, Sobol points) runs at the
  cheapest fidelity.

Why this rule and not BoTorch's qMultiFidelityKnowledgeGradient / qMultiFidelityMaxValueEntropy:
both need a fantasy model or max-value samples over a joint (mixture, fidelity) search, seconds to
minutes per ask in 17+ dimensions under a simplex constraint, and a cost model in the same units; the
controller asks synchronously with workers idle. This rule reuses gp's fast acquisition and adds one
posterior evaluation per fidelity. Measured against 60M-only gp on the two-scale RegMix replay in
docs/benchmarks.md ("Multi-fidelity"). The scale ladder is the special case of a fixed schedule (all
trials at the small preset, then the top-k at the larger ones).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from orchestrator.mixture import Mixture
from orchestrator.scale_model import AtScale, Scale, ScaleAwareGP, ScaleGP
from orchestrator.strategies.base import Recommendation
from orchestrator.strategies.configs import MultiFidelityConfig
from orchestrator.strategies.contract import FidelityPlan, Proposal, Requirements
from orchestrator.surrogates.base import single_threaded
from orchestrator.surrogates.noise import pool_replicates
from orchestrator.surrogates.gp import DTYPE, posterior_mean_std


class MultiFidelityGP(ScaleGP):
    """gp over mixture and scale that chooses each trial's fidelity (module docstring)."""

    kind = "mfgp"
    Config = MultiFidelityConfig
    requirements = Requirements(
        reference_run=True, multi_fidelity=True,
        sweep_only="chooses the fidelity of each trial as a sweep goes (offline, `mixsweep recommend --runs T --at-params P` "
                   "fits its model to runs of several sizes), which a runs table does not hold")

    def __init__(self, config: MultiFidelityConfig, domains: tuple[str, ...], objective, seed: int) -> None:
        super().__init__(config, domains, objective, seed, None, None, Scale())

    # -- the fidelities -----------------------------------------------------------------------------
    @property
    def plan(self) -> FidelityPlan:
        if self.fidelities is None:
            raise ValueError("mfgp needs the sweep's fidelities (`fidelities:` in the spec)")
        return self.fidelities

    def _inputs(self) -> tuple[bool, bool]:
        """Which scale inputs the model takes: parameters and/or tokens, those that differ between fidelities."""
        levels = self.plan.levels
        return len({f.params for f in levels}) > 1, len({f.tokens for f in levels}) > 1

    def _at(self, name: str | None = None) -> Scale:
        """The scale the model answers at: a fidelity's, or (None) the recommendation's target scale."""
        use_params, use_tokens = self._inputs()
        level = self.plan.level(name)
        params = self.plan.at_params if name is None else level.params
        return Scale(params if use_params else None, self.plan.level(None).tokens if name is None and use_tokens
                     else (level.tokens if use_tokens else None))

    def _rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
        """The training rows: mixtures X (n, k), their scales (n, 2: params, tokens) and losses Y (n, m).
        Replicates are pooled per (mixture, fidelity) (surrogates/noise.py): one mixture at two fidelities
        is two functions' values, not two runs of one."""
        X, Y, loss_domains = self.observed_data()
        S = np.array([[f.params, f.tokens] for f in (self.plan.level(o.fidelity) for o in self.observations)], dtype=float)
        pooled = pool_replicates(np.column_stack([X, S]), Y)
        if pooled is None:
            return X, S, Y, loss_domains
        k = X.shape[1]
        return pooled.X[:, :k], pooled.X[:, k:], pooled.Y, loss_domains

    def training_data(self) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        X, _, Y, loss_domains = self._rows()
        return X, Y, loss_domains

    def training_noise(self) -> None:
        return None  # the scale-aware GP infers its noise (a replicated mixture's rows are its mean)

    def make_surrogate(self) -> AtScale:
        use_params, use_tokens = self._inputs()
        S = self._rows()[1] if self.observations else np.zeros((0, 2))
        return AtScale(ScaleAwareGP(self.config.fit_maxiter, self.config.scale_mean), S[:, 0] if use_params else None,
                       S[:, 1] if use_tokens else None, self._at())

    def held_out(self, X: np.ndarray, Y: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Row i predicted at its own fidelity's scale by the model refitted without it: a cheap run is
        checked against what the model says a cheap run gives there, not against the target."""
        use_params, use_tokens = self._inputs()
        S, keep = self._rows()[1], np.arange(len(X)) != i
        at = Scale(S[i, 0] if use_params else None, S[i, 1] if use_tokens else None)
        model = ScaleAwareGP(self.config.fit_maxiter, self.config.scale_mean)
        return AtScale(model, S[keep, 0] if use_params else None, S[keep, 1] if use_tokens else None, at).fit(X[keep], Y[keep]).predict(X[i:i + 1])

    def candidate_runs(self) -> list:
        """The observed runs the recommendation is weighed against: the target's (their losses are the
        target's; a cheap run's mixture is only a prediction there). All runs while none is at the target."""
        runs = super().candidate_runs()
        at_target = [o for o in runs if self.plan.level(o.fidelity).name == self.plan.target]
        return at_target or runs

    def cheap_spent(self) -> float:
        """Cost of the completed runs at fidelities other than the target. A failure carries no fidelity
        (contract.Failure), so the share is counted on completed runs: a bound that failures loosen."""
        return sum(self.plan.level(o.fidelity).cost for o in self.observations if o.fidelity not in (None, self.plan.target))

    # -- proposals ----------------------------------------------------------------------------------
    def next_proposals(self, n: int, pending: list[Mixture]) -> list[Proposal]:
        with single_threaded():
            if n < 1:
                return []
            designing = self.asked < self.initial_trials and len(self.observations) < self.initial_trials
            mixtures = self._next_mixtures(n, pending)
            if designing or len(self.observations) < max(self.min_runs(), 1):
                cheapest = min(self.plan.levels, key=lambda f: f.cost).name
                return [Proposal(m, {"fidelity": cheapest}) for m in mixtures]
            return [Proposal(m, {"fidelity": self.choose_fidelity(m)}) for m in mixtures]

    def choose_fidelity(self, mixture: Mixture) -> str:
        """The cheapest fidelity whose objective std at `mixture` exceeds `threshold` x its noise sd and that
        fits in the cost budget (cheap share and what is left); else the target (module docstring)."""
        target = self.plan.level(None)
        budget = self.plan.budget_cost
        for level in sorted(self.plan.levels, key=lambda f: f.cost):
            if level.name == target.name:
                break
            if budget is not None and self.cheap_spent() + level.cost > self.config.cheap_share * budget:
                continue
            std, noise = self.objective_std_and_noise(mixture.as_array()[None, :], level.name)
            if std[0] > self.config.threshold * noise:
                return level.name
        if self.cost_left is not None and target.cost > self.cost_left + 1e-9:
            # The target no longer fits: what is left buys cheap runs, still evidence for the model.
            fits = [f for f in self.plan.levels if f.cost <= self.cost_left + 1e-9]
            if fits:
                return min(fits, key=lambda f: f.cost).name
        return target.name

    def objective_std_and_noise(self, W: np.ndarray, fidelity: str) -> tuple[np.ndarray, float]:
        """The model's std of the objective at mixtures W (n, k) at `fidelity` (noise excluded), and the
        objective's run-to-run noise sd there (the GP's per-domain noise, composed)."""
        surrogate, loss_domains = self.surrogate()
        # The GP's std alone: the trend's standard error is the same at every mixture of one scale, so it
        # says nothing about which mixture a cheap run would teach the model about.
        mean, std = posterior_mean_std(surrogate.model.model, self._inputs_at(surrogate.model, W, fidelity))
        _, value_std = self.objective.compose(mean, std, loss_domains)
        model = surrogate.model.model
        noise_var = model.likelihood.noise.detach().reshape(-1).numpy() * model.outcome_transform.stdvs.detach().reshape(-1).numpy() ** 2
        noise_sd = np.broadcast_to(np.sqrt(noise_var), mean.shape[1:])[None, :]
        _, objective_noise = self.objective.compose(mean[:1], noise_sd, loss_domains)
        return value_std, float(objective_noise[0])

    def _inputs_at(self, scale_model: ScaleAwareGP, W: np.ndarray, fidelity: str | None) -> np.ndarray:
        """Model inputs (n, k + c): mixtures W (n, k) with the scale columns of `fidelity` (None: the target scale)."""
        at = self._at(fidelity)
        S = scale_model.scale_inputs(at.params, at.tokens)
        return np.column_stack([W, np.tile(S, (len(W), 1))])

    def propose(self, n: int, pending: list[Mixture], rng: np.random.Generator) -> list[Mixture]:
        """n mixtures by qLogNEI on the objective at the target scale (module docstring)."""
        from botorch.acquisition.fixed_feature import FixedFeatureAcquisitionFunction
        from botorch.acquisition.logei import qLogNoisyExpectedImprovement
        from botorch.acquisition.objective import GenericMCObjective, ScalarizedPosteriorTransform
        from botorch.acquisition.utils import prune_inferior_points
        from botorch.optim.optimize import optimize_acqf_discrete
        from botorch.sampling import SobolQMCNormalSampler

        surrogate, loss_domains = self.surrogate()
        scale_model = surrogate.model
        k = len(self.domains)
        S = self._inputs_at(scale_model, np.zeros((1, k)), None)[0, k:]

        def full(W: np.ndarray) -> torch.Tensor:  # mixtures (n, k) -> model inputs at the target scale (n, k + c)
            return torch.tensor(self._inputs_at(scale_model, W, None), dtype=DTYPE)

        X = np.array([o.mixture.as_array() for o in self.observations])
        avoid = list(pending) + [f.mixture for f in self.failures]
        X_pending = full(np.array([m.as_array() for m in avoid])) if avoid else None
        if self.objective.linear and not self.objective.constrained:
            how = {"posterior_transform": ScalarizedPosteriorTransform(torch.tensor(-self.coefficients(loss_domains), dtype=DTYPE))}
            extra = {}
        else:
            # The GP models residuals of the trend: add the trend at the target scale back before the
            # objective reads the losses (`worst` and limits are not shift-invariant).
            offset = torch.tensor(scale_model.trend(S), dtype=DTYPE)
            inner, constraints = self.mc_objective(loss_domains)
            how = {"objective": GenericMCObjective(lambda Y, X=None: inner(Y + offset, X))}
            extra = {"constraints": [(lambda Y, c=c: c(Y + offset)) for c in constraints] if constraints else None}
        model = scale_model.model
        baseline = prune_inferior_points(model, full(X), **how, **extra,
                                         sampler=SobolQMCNormalSampler(torch.Size([512]), seed=int(rng.integers(2**31))))
        acqf = qLogNoisyExpectedImprovement(
            model, X_baseline=baseline,
            sampler=SobolQMCNormalSampler(torch.Size([self.config.mc_samples]), seed=int(rng.integers(2**31))),
            X_pending=X_pending, prune_baseline=False, **how, **extra)
        fixed = FixedFeatureAcquisitionFunction(acqf, d=k + len(S), columns=list(range(k, k + len(S))), values=list(map(float, S)))
        choices = self.screened_candidates(surrogate, loss_domains, rng)
        with torch.no_grad():
            picked, _ = optimize_acqf_discrete(fixed, q=n, choices=torch.tensor(choices, dtype=DTYPE))
        return [Mixture.from_array(self.domains, w) for w in picked.numpy()]

    def compared_losses(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """Predicted losses at the target scale with the GP's std alone: the trend's standard error is the
        same for every mixture at one scale, so it says nothing about which is better."""
        surrogate, loss_domains = self.surrogate()
        mean, _ = surrogate.predict(W)
        _, std = posterior_mean_std(surrogate.model.model, self._inputs_at(surrogate.model, W, None))
        return mean, std, loss_domains

    def _recommend(self) -> Recommendation:
        """gp's recommendation at the target scale (compared by `compared_losses`), then given the full
        std there, trend included: extrapolation is said, not hidden."""
        rec = super()._recommend()
        if len(self.observations) < max(self.min_runs(), 1):
            return rec
        mean, std, loss_domains = self.predict_losses(rec.mixture.as_array()[None, :])
        _, value_std = self.objective.compose(mean, std, loss_domains)
        return replace(rec, predicted_std=dict(zip(loss_domains, map(float, std[0]))),
                       objective_std=float(value_std[0]))

    def recommend(self) -> Recommendation:
        rec = super().recommend()
        at = self._at()
        return replace(rec, notes=[*rec.notes, f"predicted at the target scale ({at.describe()})"])
