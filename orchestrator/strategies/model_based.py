"""What every surrogate-driven strategy shares: bounds, an initial design, the fitted surrogate, and a
recommendation: the surrogate's optimum, or an observed run where the surrogate predicts one better.

A model-based strategy runs in two phases. First `initial_trials` mixtures from a space-filling design
(the uniform mixture, then scrambled Sobol points, all inside the bounds); once enough runs are back
for its surrogate, each `ask` fits the surrogate to every observation (in the order told) and turns it
into proposals (`propose`, per strategy). Randomness comes from a numpy Generator seeded by
(seed, proposals made, results seen), so the same events give the same proposals, also after
`load_state_dict`.
"""

from __future__ import annotations

import abc
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.optimize import Bounds, minimize_on_simplex, project, sobol_simplex
from orchestrator.strategies.base import Predictive, Predictor, Recommendation, Strategy
from orchestrator.strategies.configs import BoundedConfig
from orchestrator.strategies.contract import Proposal, Requirements
from orchestrator.surrogates.base import Surrogate, single_threaded
from orchestrator.surrogates.noise import FixedNoise, pool_replicates


# Standard deviations added to the predicted objective when choosing the recommendation.
RECOMMEND_RISK = 1.0
# Folds of the cross-validation that checks an uncalibrated surrogate before its optimum is recommended.
CV_FOLDS = 5
# SLSQP iterations per polished start under a constraint penalty (docs/benchmarks.md, "Objectives").
POLISH_ITERS_CONSTRAINED = 15


def objective_points(objective: Objective, domains: tuple[str, ...], reference: np.ndarray) -> np.ndarray:
    """Design points tilted towards the training domains the objective reads, (0-2, k); the opening of
    `gp` and the other model strategies after the reference mixture, and of `bayesopt`.

    Why: a target (or weighted) objective is usually minimised near the face of its own domains
    (pile_cc's optimum on the RegMix runs has 0.88 of pile_cc), where a space-filling design in k
    dimensions almost never goes and a stationary GP does not extrapolate. Two points, half and
    85% of the way from uniform to the objective's own domains, show the model that direction
    from the start (measured with `mixsweep bench`: docs/benchmarks.md, "Replay bench"). None
    when the objective reads the domains as the reference mixture already weighs them."""
    if not objective.linear:
        return np.empty((0, len(domains)))
    tilt = np.array([max(objective.coefficients.get(d, 0.0), 0.0) for d in domains])
    if tilt.sum() <= 0:
        return np.empty((0, len(domains)))
    tilt /= tilt.sum()
    if np.max(np.abs(tilt - reference)) < 0.05:
        return np.empty((0, len(domains)))
    uniform = np.full(len(domains), 1.0 / len(domains))
    return np.array([0.5 * tilt + 0.5 * uniform, 0.85 * tilt + 0.15 * uniform])


def best_observed(strategy: Strategy, count: int) -> np.ndarray:
    """The `count` observed mixtures of `strategy` with the lowest objective (penalised under
    constraints), (count, k): the centres of an optimum search."""
    order = sorted(range(len(strategy.observations)), key=lambda i: strategy.observed_score(strategy.observations[i]))
    return np.array([strategy.observations[i].mixture.as_array() for i in order[:count]])


def predicted_upper(strategy: Strategy, predict: Predictor, W: np.ndarray, risk: float) -> np.ndarray:
    """Predicted objective + risk * its std at W (n, k) by `predict` (W -> per-domain mean, std (n, m)
    and the m domains): (n,), nats/token; under constraints, the penalty on the per-domain upper bounds
    (mean + risk * std), so the pick is feasible with margin. `gp`'s and `bayesopt`'s recommendation."""
    mean, std, loss_domains = predict(W)
    value, value_std = strategy.objective.compose(mean, std, loss_domains)
    return value + risk * value_std + strategy.penalty(mean + risk * std, loss_domains)


def minimize_objective(strategy: Strategy, fun: Callable[[np.ndarray], np.ndarray], bounds: Bounds,
                       rng: np.random.Generator, polish: int = 3) -> np.ndarray:
    """Minimiser (k,) inside `bounds` of `fun` (W (n, k) -> (n,)): `minimize_on_simplex`'s candidates
    (Sobol points and clouds around the strategy's 4 best observed runs), the best `polish` of them
    refined with SLSQP."""
    # A constraint penalty has a kink at the limit, where SLSQP's finite-difference steps keep it
    # iterating to its limit (850 GP predictions, 10 s on the 3-domain test problem); the candidates
    # already found the feasible region, so the polish is kept short there.
    maxiter = POLISH_ITERS_CONSTRAINED if strategy.objective.constrained else 100
    w, _ = minimize_on_simplex(fun, bounds, rng, centres=best_observed(strategy, 4), polish=polish, maxiter=maxiter)
    return w


def recommend_rng(strategy: Strategy) -> np.random.Generator:
    """The recommendation's optimum search draws from (seed, results seen): the same results give the
    same recommendation."""
    return np.random.default_rng([strategy.seed, len(strategy.observations), 7])


class ModelStrategy(Predictive):
    """Base for surrogate strategies; subclasses give `make_surrogate`, `default_initial` and `propose`."""

    Config = BoundedConfig
    requirements = Requirements(reference_run=True)  # the initial design opens with the reference mixture

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bounds = Bounds.of(self.domains, self.config.min_weight, self.config.bounds)
        self._fitted: tuple[int, Surrogate, tuple[str, ...]] | None = None

    # -- what subclasses provide -------------------------------------------------------------------
    @abc.abstractmethod
    def make_surrogate(self) -> Surrogate:
        """A fresh, unfitted surrogate."""

    @abc.abstractmethod
    def propose(self, n: int, pending: list[Mixture], rng: np.random.Generator) -> list[Mixture]:
        """Up to n proposals from the fitted surrogate (`self.surrogate()`)."""

    def default_initial(self) -> int:
        return len(self.domains) + 1

    # -- the shared machinery ----------------------------------------------------------------------
    @property
    def initial_trials(self) -> int:
        return max(self.config.initial_trials or self.default_initial(), 1)

    def min_runs(self) -> int:
        """Finished runs the surrogate needs before it can propose."""
        return self.make_surrogate().min_runs(len(self.domains))

    def rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.asked, len(self.observations)])

    def next_proposals(self, n: int, pending: list[Mixture]) -> list[Proposal]:
        with single_threaded():  # why: see surrogates.base.single_threaded
            return [Proposal(m) for m in self._next_mixtures(n, pending)]

    def _next_mixtures(self, n: int, pending: list[Mixture]) -> list[Mixture]:
        if n < 1:
            return []
        # Results told from elsewhere (a runs table, a resumed sweep) count towards the design.
        if self.asked < self.initial_trials and len(self.observations) < self.initial_trials:
            return self.initial_design(min(n, self.initial_trials - self.asked))
        if len(self.observations) >= max(self.min_runs(), 1):
            return self.propose(n, pending, self.rng())
        if pending:
            return []  # wait for the initial runs in flight
        return self.initial_design(n)  # initial runs failed: keep filling space

    def initial_design(self, n: int) -> list[Mixture]:
        """Points asked..asked+n of the design. The prefix is regenerated so the design does not
        depend on how asks are batched."""
        pts = self.initial_design_points(self.asked + n)[self.asked:]
        return [Mixture.from_array(self.domains, w) for w in pts]

    def initial_design_points(self, count: int) -> np.ndarray:
        """The first `count` design points (count, k): the uniform mixture, then Sobol points, all
        projected into the bounds."""
        k = len(self.domains)
        # The first point is the objective's reference mixture (uniform unless the spec names one):
        # `excess` and `max_excess` are measured against its run.
        first = self.objective.reference_point(self.domains)[None, :]
        pts = np.vstack([first, objective_points(self.objective, self.domains, first[0]), sobol_simplex(max(count - 1, 1), k, seed=self.seed)])
        return project(pts[:count], self.bounds)

    def training_data(self) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """X (n, k) mixtures, Y (n, m) losses and the m loss domains every observation reports: one row
        per observation, or, once some mixture has two distinct runs (replicates), one row per mixture
        with the mean of its runs (its noise: `training_noise`)."""
        X, Y, loss_domains = self.observed_data()
        replicated = pool_replicates(X, Y)
        return (X, Y, loss_domains) if replicated is None else (replicated.X, replicated.Y, loss_domains)

    def training_noise(self) -> np.ndarray | None:
        """The noise variance (n, m) of each `training_data` row, nats^2: the run-to-run variance pooled
        over the replicated mixtures, per domain, over the row's runs (surrogates/noise.py); None when no
        mixture has two distinct runs (the surrogate infers the noise, as without replicates)."""
        replicated = pool_replicates(*self.observed_data()[:2])
        return None if replicated is None else replicated.Yvar

    def observed_data(self) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """X (n, k) mixtures, Y (n, m) losses and the m loss domains every observation reports, one row
        per observation in the order told."""
        reported = tuple(d for d in self.observations[0].losses if all(d in o.losses for o in self.observations))
        loss_domains = self.modelled_domains(reported)
        missing = sorted((set(self.objective.coefficients) | set(self.objective.max_loss)) - set(loss_domains))
        if missing:
            raise ValueError(f"the objective needs losses on {missing}, which not every run reports; "
                             f"choose an objective over {list(loss_domains)}")
        X = np.array([o.mixture.as_array() for o in self.observations])
        Y = np.array([[o.losses[d] for d in loss_domains] for o in self.observations])
        return X, Y, loss_domains

    def held_out(self, X: np.ndarray, Y: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Row i of the training data predicted (mean, std (1, m)) by the surrogate refitted without it:
        the report's leave-one-out. A strategy whose rows differ by more than the mixture (mfgp: each
        row's scale) overrides it."""
        return refit_held_out(self.make_surrogate, X, Y, i)

    def modelled_domains(self, reported: tuple[str, ...]) -> tuple[str, ...]:
        """The loss domains to model, of those every run reports (default: all)."""
        return reported

    def surrogate(self) -> tuple[Surrogate, tuple[str, ...]]:
        """The surrogate fitted to all observations (refitted only when a result arrived)."""
        if self._fitted is None or self._fitted[0] != len(self.observations):
            X, Y, loss_domains = self.training_data()
            surrogate, Yvar = self.make_surrogate(), self.training_noise()
            # Replicates measure the noise; a surrogate that takes it is given it (others fit the means).
            fitted = surrogate.fit(X, Y, Yvar) if Yvar is not None and isinstance(surrogate, FixedNoise) else surrogate.fit(X, Y)
            self._fitted = (len(self.observations), fitted, loss_domains)
        return self._fitted[1], self._fitted[2]

    def coefficients(self, loss_domains: tuple[str, ...]) -> np.ndarray:
        """The objective's coefficients as a vector over `loss_domains`, (m,)."""
        return np.array([self.objective.coefficients.get(d, 0.0) for d in loss_domains])

    def predicted_objective(self, W: np.ndarray) -> np.ndarray:
        """The surrogate's objective at mixtures W (n, k), (n,) nats/token, plus the constraint penalty
        on the predicted mean losses (objective.CONSTRAINT_PENALTY per nat of violation)."""
        surrogate, loss_domains = self.surrogate()
        mean, std = surrogate.predict(W)
        if self.objective.linear:
            value = mean @ self.coefficients(loss_domains)
        else:
            value = self.objective.compose(mean, std, loss_domains)[0]
        return value + self.penalty(mean, loss_domains)

    def best_observed(self, count: int) -> np.ndarray:
        """The `count` observed mixtures with the lowest objective (penalised under constraints), (count, k)."""
        return best_observed(self, count)

    def predicted_upper(self, W: np.ndarray, risk: float) -> np.ndarray:
        """Predicted objective + risk * its std at W (n, k) by `compared_losses`: (n,), nats/token
        (module `predicted_upper`)."""
        return predicted_upper(self, self.compared_losses, W, risk)

    def compared_losses(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """What the recommendation compares mixtures by (its optimum's search on mean + risk std, and the
        in-sample rule's margin): `predict_losses`, unless a strategy's std holds a part shared by every
        mixture (mfgp: the scale trend's error at the target scale)."""
        return self.predict_losses(W)

    def model_optimum(self, rng: np.random.Generator, polish: int = 3, risk: float = 0.0) -> np.ndarray:
        """Minimiser (k,) inside the bounds of the predicted objective plus `risk` standard deviations
        (risk > 0 keeps a recommendation where the surrogate has seen data)."""
        fun = self.predicted_objective if risk == 0 else (lambda W: self.predicted_upper(W, risk))
        return minimize_objective(self, fun, self.bounds, rng, polish)

    def recommend(self) -> Recommendation:
        """The model's optimum or an observed run, whichever the model predicts best (base.best_predicted),
        with predicted per-domain losses and std."""
        with single_threaded():
            return self._recommend()

    def _recommend(self) -> Recommendation:
        if len(self.observations) < max(self.min_runs(), 1):
            base = super().recommend()
            return replace(base, notes=[f"{self.kind} needs {self.min_runs()} results to model; best observed"])
        # The optimum is searched where the model is confident, not where its mean dips in an
        # unexplored corner: the minimiser of mean + 1 std (an upper confidence bound on the objective).
        surrogate, _ = self.surrogate()
        notes, floor = [f"surrogate: {surrogate.name}"], 0.0
        if not surrogate.calibrated:
            # A law or a tree ensemble has no posterior: its std does not grow where it extrapolates
            # (mixing_law on the bench predicted optima 0.06-0.15 nats better than its best run, within
            # 0.5 std, that were 0.05-0.4 nats worse). Its held-out error says what its predictions are worth.
            error, spread = self.cross_validated()
            notes.append(f"cross-validated error of the objective: {error:.4f} (the runs' spread: {spread:.4f})")
            if error >= spread:
                base = Strategy.recommend(self)
                why = (f"the {surrogate.name} model predicts held-out runs no better than their mean "
                       f"(error {error:.4f} >= spread {spread:.4f}); best observed run")
                return replace(base, notes=[*notes, why, *base.notes])
            floor = error
        w = self.model_optimum(recommend_rng(self), risk=RECOMMEND_RISK)
        return self.checked(self.best_predicted(w, self.compared_losses, notes, std_floor=floor,
                                                rank_runs_observed=not surrogate.calibrated))

    def cross_validated(self, folds: int = CV_FOLDS) -> tuple[float, float]:
        """The surrogate's root-mean-square error on the objective of held-out runs (`folds`-fold,
        rows dealt round-robin in the order told), and the standard deviation of the runs' objective
        (the error of predicting their mean), both nats/token."""
        X, Y, loss_domains = self.training_data()
        observed = self.objective.compose(Y, np.zeros_like(Y), loss_domains)[0]
        fold = np.arange(len(X)) % min(folds, len(X))
        held = np.zeros(len(X))
        for f in np.unique(fold):
            mean, std = self.make_surrogate().fit(X[fold != f], Y[fold != f]).predict(X[fold == f])
            held[fold == f] = self.objective.compose(mean, std, loss_domains)[0]
        return float(np.sqrt(np.mean((held - observed) ** 2))), float(observed.std())

    def predict_losses(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """Predicted per-domain loss mean and std (n, m) at mixtures W (n, k), with the m domains."""
        with single_threaded():
            surrogate, loss_domains = self.surrogate()
            mean, std = surrogate.predict(W)
        return mean, std, loss_domains


def refit_held_out(make_surrogate, X: np.ndarray, Y: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Row i of X (n, k), Y (n, m) predicted by a fresh surrogate fitted to the other rows, (1, m) each."""
    keep = np.arange(len(X)) != i
    return make_surrogate().fit(X[keep], Y[keep]).predict(X[i:i + 1])


class OptimumStrategy(ModelStrategy):
    """Propose the surrogate's optimum, and explore with the other slots.

    For surrogates without a useful uncertainty (fitted laws, trees) there is no acquisition function
    to balance exploring and exploiting, so the balance is by slots: one proposal in flight at a time
    is the minimiser of the predicted objective (made only when results arrived since the last one:
    the same data gives the same point), and the other slots continue the space-filling design, which
    is what improves such regressions (RegMix's lesson: more small runs).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.optimum_at = -1  # number of results the last optimum proposal was fitted on
        self.optima: list[str] = []  # keys of the mixtures proposed as optima

    def propose(self, n: int, pending: list[Mixture], rng: np.random.Generator) -> list[Mixture]:
        out = []
        in_flight = set(self.optima) & {m.key() for m in pending}
        if not in_flight and self.optimum_at != len(self.observations):
            self.optimum_at = len(self.observations)
            out.append(Mixture.from_array(self.domains, self.model_optimum(rng)))
            self.optima.append(out[0].key())
        return out + self.explore(n - len(out), self.asked + len(out), rng)

    def explore(self, n: int, first: int, rng: np.random.Generator) -> list[Mixture]:
        """n exploratory mixtures; default: design points first..first+n (the proposal count so far
        indexes the design, so no design point comes twice)."""
        if n < 1:
            return []
        pts = self.initial_design_points(first + n)[first:first + n]
        return [Mixture.from_array(self.domains, w) for w in pts]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimum_at": self.optimum_at, "optima": self.optima}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimum_at = state.get("optimum_at", -1)
        self.optima = list(state.get("optima", []))
