"""RegMix (Liu et al., 2407.01492; code sail-sg/regmix): many small runs, regression, simulation.

1. Swarm: mixtures drawn around the token prior. The prior is each domain's token share tempered
   (share^0.5, renormalised); each sample draws a strength s from 15 log-spaced values in [0.1, 5] and
   w ~ Dirichlet(s * prior); samples where a domain exceeds 15x its prior share are rejected; weights
   below 2e-4 are zeroed and the rest renormalised.
2. Regression: one LightGBM per evaluated domain (1000 trees, learning rate 0.01), composed by the
   objective.
3. Proposal: predict many simulated mixtures from the swarm distribution and average the top k
   (RegMix: 100,000 and 128; the default here simulates 20,000 so that a sweep's `ask` stays within
   seconds: 17 domains x 1000 trees x 100,000 rows takes ~30 s on 2 cores).

In a sweep the swarm is the initial design, and after it every ask proposes the top-k average (when
new results arrived) and fills the other slots with more swarm samples.
"""

from __future__ import annotations

import numpy as np

from orchestrator.mixture import Mixture
from orchestrator.optimize import project
from orchestrator.strategies.configs import RegMixConfig
from orchestrator.strategies.model_based import OptimumStrategy
from orchestrator.surrogates.lightgbm import LightGBMSurrogate

STRENGTHS = np.logspace(np.log10(0.1), np.log10(5.0), 15)


class RegMix(OptimumStrategy):
    kind = "regmix"
    Config = RegMixConfig

    def default_initial(self) -> int:
        # RegMix ran 512 swarm runs for 17 domains; a sweep budget is smaller. 2(k+1), capped at 24,
        # leaves room for proposals in a 32-trial sweep while giving the trees some data.
        return min(2 * (len(self.domains) + 1), 24)

    def make_surrogate(self) -> LightGBMSurrogate:
        return LightGBMSurrogate(self.config.n_estimators, self.config.learning_rate, seed=self.seed)

    def prior(self) -> np.ndarray:
        """The swarm's centre (k,): tempered token shares, or uniform."""
        k = len(self.domains)
        if self.config.prior == "uniform":
            return np.full(k, 1.0 / k)
        if self.domain_tokens is None:
            raise ValueError("regmix centres its swarm on the token counts per domain, which this sweep does not have "
                             "(its trainer reads no data); set `strategy.options.prior: uniform`")
        shares = np.array([max(self.domain_tokens.get(d, 0), 0) for d in self.domains], dtype=float)
        if shares.sum() <= 0:
            raise ValueError("regmix: every domain has 0 tokens; check the data, or set `strategy.options.prior: uniform`")
        tempered = (shares / shares.sum()) ** self.config.temperature
        return tempered / tempered.sum()

    def swarm(self, n: int, rng: np.random.Generator, prior: np.ndarray | None = None) -> np.ndarray:
        """n swarm mixtures (n, k), projected into the bounds, centred on `prior` (default:
        `simulation_prior`)."""
        prior = self.simulation_prior() if prior is None else prior
        out: list[np.ndarray] = []
        while sum(len(o) for o in out) < n:
            s = STRENGTHS[rng.integers(len(STRENGTHS), size=max(n, 256))]
            # Dirichlet via normalised Gamma draws: numpy's dirichlet takes one alpha vector per call.
            g = rng.gamma(s[:, None] * prior[None, :])
            w = g / np.maximum(g.sum(axis=1, keepdims=True), 1e-300)
            w = w[np.all(w <= self.config.max_ratio * prior, axis=1) & np.isfinite(w).all(axis=1)]
            w = np.where(w < self.config.zero_below, 0.0, w)
            out.append(w[w.sum(axis=1) > 0])
        w = np.vstack(out)[:n]
        return project(w / w.sum(axis=1, keepdims=True), self.bounds)

    def initial_design(self, n: int) -> list[Mixture]:
        rng = np.random.default_rng([self.seed, self.asked, 1])
        pts = self.swarm(n, rng)
        if self.asked == 0 and n > 0 and self.objective.needs_reference:
            # `excess` and `max_excess` are measured against a run at the reference mixture: run it first.
            pts[0] = project(self.objective.reference_point(self.domains), self.bounds)[0]
        return [Mixture.from_array(self.domains, w) for w in pts]

    def explore(self, n: int, first: int, rng: np.random.Generator) -> list[Mixture]:
        return self.initial_design(n) if n > 0 else []

    def simulation_prior(self) -> np.ndarray:
        """Centre of the swarm and the simulated mixtures: the token prior when known, else (offline, from
        a runs table, which holds no token counts) the mean of the observed mixtures, which is where the
        swarm was drawn. Neither: `prior` says what to set (ValueError)."""
        if self.config.prior == "tokens" and self.domain_tokens is None and self.observations:
            mean = np.mean([o.mixture.as_array() for o in self.observations], axis=0)
            return mean / mean.sum()
        return self.prior()

    def model_optimum(self, rng: np.random.Generator, polish: int = 0, risk: float = 0.0) -> np.ndarray:
        """Mean of the top_k simulated mixtures by predicted objective (feasible: the bounded simplex
        is convex). Trees give no std, so `polish` and `risk` do not apply."""
        sims = self.swarm(self.config.simulations, rng, self.simulation_prior())
        order = np.argsort(self.predicted_objective(sims), kind="stable")
        return sims[order[: self.config.top_k]].mean(axis=0)
