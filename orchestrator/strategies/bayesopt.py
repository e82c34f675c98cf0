"""Bayesian optimisation of the mixture with Ax (`ax.api.Client`).

Each domain's loss is its own Ax metric (`loss_<domain>`), and the objective is Ax's scalarised
expression over them, so Ax fits one GP per domain and optimises the composed objective: a composite
objective learns more from the same runs than a GP on the average (DESIGN.md section 3).

The simplex is parameterised as the unit cube u in [0,1]^(k-1) through `cube_to_simplex`, which maps
a uniform cube to a uniform simplex: Ax's Sobol initialisation is then uniform on the simplex, and the
acquisition is optimised under box bounds only (see docs/decisions.md for the measured speed-up over
a linear sum constraint). Trials that are running are known to Ax as RUNNING trials, which it treats
as pending points when it proposes the next batch.

The model (`method`, default `mixsweep`): mixsweep's `gp` run inside Ax's generation strategy
(orchestrator/strategies/ax_model.py: per-domain GP on sqrt(w), noise inferred, `gp`'s screened
candidates for Ax's qLogNEI), opened with `gp`'s design (the reference mixture, then for a target
objective two mixtures towards its domains, attached as Ax trials before Ax's Sobol points); or
Ax's own choice of model on the cube (`fast`, `quality`). Either way the recommendation is the
in-sample best-point rule over the model's optimum and the observed runs, by Ax's predictions.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from orchestrator.mixture import Mixture, cube_to_simplex, simplex_to_cube, within_caps
from orchestrator.strategies.base import Predictive, Recommendation
from orchestrator.strategies.configs import BayesOptConfig
from orchestrator.strategies.contract import Outcome, Proposal, Requirements
from orchestrator.strategies.model_based import RECOMMEND_RISK, minimize_objective, predicted_upper, recommend_rng
from orchestrator.surrogates.base import single_threaded


class BayesOpt(Predictive):
    kind = "bayesopt"
    Config = BayesOptConfig
    requirements = Requirements(reference_run=True)  # attached as an Ax trial before Ax's own design

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._client = self._new_client()
        self._index: dict[str, int] = {}  # mixture key -> Ax trial index of trials Ax knows as running
        # Results held back from Ax until the reference run completes (an excess objective is
        # undefined before): their trials stay RUNNING in Ax, i.e. pending points.
        self._held: list[Outcome] = []
        self._constraints_at: tuple[str, ...] = ()
        self._fitted_on: tuple[int, int] | None = None  # (generation strategy, completed trials) `_fit_model` fitted

    def _new_client(self):
        from ax.api.client import Client
        from ax.api.configs import RangeParameterConfig

        _quiet_ax()
        k = len(self.domains)
        client = Client(random_seed=self.seed)
        client.configure_experiment(
            parameters=[RangeParameterConfig(name=f"u{i}", parameter_type="float", bounds=(0.0, 1.0)) for i in range(k - 1)],
            name="mixture",
        )
        self._configure_optimization(client)
        used = set(self.objective.coefficients) if self.objective.linear else set()
        others = [_metric(d) for d in self.domains if d not in used]
        # Limit metrics not constrained yet (those relative to the reference run) are tracked until then.
        others += [_limit_metric(d) for d in self._limited() if f"{_limit_metric(d)} <=" not in " ".join(self._constraints_at)]
        if others:
            client.configure_tracking_metrics(others)
        # The generation strategy is built here (what `configure_generation_strategy` does) so that this
        # strategy holds it: `_fit_model` fits it outside Ax's generation flow.
        self._generation = self._new_generation_strategy()
        client.set_generation_strategy(self._generation)
        return client

    def _new_generation_strategy(self):
        """Ax's Sobol initialisation, then its modular BoTorch generator: with mixsweep's per-domain
        GP on sqrt(w) (`method: mixsweep`, orchestrator/strategies/ax_model.py), or Ax's own choice of
        model (`fast`, `quality`). Results attached from a runs table or a resumed journal count as
        the initial design."""
        if self.config.method == "mixsweep":
            from orchestrator.strategies.ax_model import generation_strategy

            return generation_strategy(self.seed, self.min_runs())
        from ax.api.utils.generation_strategy_dispatch import choose_generation_strategy
        from ax.api.utils.structs import GenerationStrategyDispatchStruct

        return choose_generation_strategy(struct=GenerationStrategyDispatchStruct(
            method=self.config.method,
            initialization_budget=self.min_runs(),
            initialization_random_seed=self.seed,
            initialize_with_center=True,  # the centre of the cube is the uniform-ish mixture: a useful first run
            use_existing_trials_for_initialization=True,
        ))

    def _configure_optimization(self, client) -> None:
        """The objective (Ax maximises; we minimise loss) and the constraints as Ax outcome constraints
        `loss_<d> <= limit`; limits relative to the reference run are added once its losses are known.
        A linear objective is Ax's scalarised expression over the domain metrics (one GP each); `worst`
        is not linear, so it is its own metric, computed from each run's losses."""
        if self.objective.linear:
            terms = " + ".join(f"{c!r}*{_metric(d)}" for d, c in self.objective.coefficients.items())
            objective = f"-({terms})"
        else:
            objective = f"-{OBJECTIVE_METRIC}"
        limits = self.objective.limits(self.domains)
        # Ax allows no constraint on a metric of the objective, so a constrained domain's loss is also
        # reported as `limit_<d>` (the same numbers), which the constraint names.
        self._constraints_at = tuple(f"{_limit_metric(d)} <= {float(lim)!r}" for d, lim in zip(self.domains, limits) if np.isfinite(lim))
        client.configure_optimization(objective=objective, outcome_constraints=list(self._constraints_at) or None)

    def _limited(self) -> list[str]:
        """Domains a constraint may limit (every objective domain under max_excess)."""
        domains = set(self.objective.max_loss) | (set(self.objective.coefficients) if self.objective.max_excess is not None else set())
        return [d for d in self.domains if d in domains]

    def _reference_asked(self, pending: list[Mixture]) -> bool:
        ref = self.objective.reference_point(self.domains)
        seen = [o.mixture for o in self.observations] + list(pending) + [f.mixture for f in self.failures]
        return (self.objective.reference_known or Mixture.from_array(self.domains, ref).key() in self._index
                or any(np.max(np.abs(m.as_array() - ref)) <= 1e-6 for m in seen))

    def _params(self, mixture: Mixture) -> dict[str, float]:
        u = simplex_to_cube(mixture.as_array())
        return {f"u{i}": float(x) for i, x in enumerate(u)}

    def _ensure_known(self, mixture: Mixture) -> int:
        """Ax trial index of a mixture, attaching it as a running trial if Ax did not propose it."""
        key = mixture.key()
        if key not in self._index:
            self._index[key] = self._client.attach_trial(parameters=self._params(mixture))
        return self._index[key]

    def next_proposals(self, n: int, pending: list[Mixture]) -> list[Proposal]:
        return [Proposal(m) for m in self._next_mixtures(n, pending)]

    def _next_mixtures(self, n: int, pending: list[Mixture]) -> list[Mixture]:
        for m in pending:
            self._ensure_known(m)
        if n < 1:
            return []
        out = self._opening(n)
        if len(out) == n:
            return out
        if self.objective.needs_reference and not self._reference_asked(pending):
            # `excess` and `max_excess` are measured against a run at the reference mixture: run it first.
            out.append(Mixture.from_array(self.domains, self.objective.reference_point(self.domains)))
            self._ensure_known(out[-1])
            if len(out) == n:
                return out
        from ax.exceptions.core import DataRequiredError

        try:
            with single_threaded():  # why: surrogates.base.single_threaded (measured here: 1.3-2.0 s vs 6.2-7.3 s, load 1-2)
                trials = self._client.get_next_trials(max_trials=n - len(out))
        except DataRequiredError:
            # Ax's initial design is all out and it waits for half of it to return before it models:
            # fewer proposals now (the contract's "wait"). With nothing in flight there is nothing to
            # wait for, so Ax's error stands.
            if not (pending or out):
                raise
            trials = {}
        for idx, params in trials.items():
            u = np.array([params[f"u{i}"] for i in range(len(self.domains) - 1)])
            m = Mixture.from_array(self.domains, cube_to_simplex(u))
            if self.caps and (capped := within_caps(m, self.caps)) != m:
                # Caps are not a box in Ax's cube: run the nearest capped mixture, and tell Ax so.
                self._client.mark_trial_abandoned(trial_index=idx)
                m, idx = capped, self._client.attach_trial(parameters=self._params(capped))
            self._index[m.key()] = idx
            out.append(m)
        return out

    def _opening(self, n: int) -> list[Mixture]:
        """With mixsweep's model, the first trials are `gp`'s opening, attached to Ax before its Sobol
        points: the reference mixture, then for a target or weighted objective two mixtures towards its
        own domains (model_based.objective_points says why). Up to n not asked yet; none once enough
        results are in (from a runs table or a resumed sweep)."""
        if self.config.method != "mixsweep" or len(self.observations) >= self.min_runs():
            return []
        from orchestrator.strategies.model_based import objective_points

        reference = self.objective.reference_point(self.domains)
        points = np.vstack([reference[None, :], objective_points(self.objective, self.domains, reference)])
        out = [Mixture.from_array(self.domains, w) for w in points[self.asked:self.asked + n]]
        for m in out:
            self._ensure_known(m)
        return out

    def tell(self, outcome: Outcome) -> None:
        super().tell(outcome)
        self._ensure_known(outcome.mixture)
        self._held.append(outcome)
        if self.objective.excess and not self.objective.reference_known and not self._reference_failed():
            return  # the objective metric is undefined until the reference run completes
        self._complete_held()

    def _reference_failed(self) -> bool:
        ref = self.objective.reference_point(self.domains)
        return any(np.max(np.abs(f.mixture.as_array() - ref)) <= 1e-6 for f in self.failures)

    def _complete_held(self) -> None:
        """Hand Ax the results held back (all of them once the reference is known or has failed)."""
        if self.objective.max_excess is not None and self.objective.reference_known:
            limits = self.objective.limits(self.domains)
            if len(self._constraints_at) < int(np.isfinite(limits).sum()):
                self._configure_optimization(self._client)  # the reference is known: add its constraints
        for outcome in self._held:
            m, lo, se = outcome.mixture, outcome.losses, outcome.loss_stderr
            data = {_metric(d): (float(v), float(se.get(d, 0.0))) for d, v in lo.items() if d in self.domains}
            data.update({_limit_metric(d): data[_metric(d)] for d in self._limited() if _metric(d) in data})
            if not self.objective.linear:
                data[OBJECTIVE_METRIC] = (self.objective(lo), self.objective.std(se, lo))
            self._client.complete_trial(trial_index=self._index.pop(m.key()), raw_data=data)
        self._held = []

    def tell_failed(self, mixture: Mixture, reason: str, retryable: bool = False) -> None:
        super().tell_failed(mixture, reason, retryable)
        idx = self._index.pop(mixture.key(), None)
        if idx is not None:
            self._client.mark_trial_failed(trial_index=idx, failed_reason=reason[:200])
        if self._held and self._reference_failed():
            # No reference run will come: `excess` falls back to the plain worst loss (noted in the
            # recommendation) rather than keeping every result from Ax for good.
            self._complete_held()

    def min_runs(self) -> int:
        """Ax models once its initialisation budget is complete (attached runs count): by default
        k + 1 trials with Ax's own models, min(k + 1, 10) with mixsweep's (as `gp`)."""
        k = len(self.domains)
        return self.config.initial_trials or (min(k + 1, 10) if self.config.method == "mixsweep" else k + 1)

    def _fit_model(self) -> None:
        """Fit Ax's GP to every completed trial, so that `predict` uses all results.

        Why: Ax leaves its initial nodes (centre, Sobol) and refits its GP only inside `get_next_trials`.
        Results attached from a runs table never pass through it, so Ax stays at a node that cannot
        predict (UnsupportedError); in a sweep the GP lags the latest results. `GenerationStrategy.fit`
        moves to the node the experiment's trials call for (attached trials count: see `_new_client`)
        and fits it. Raises ValueError (one line) when fewer than two results reached Ax."""
        from ax.core.trial_status import TrialStatus

        done = sum(t.status == TrialStatus.COMPLETED for t in self._generation.experiment.trials.values())
        if done < 2:
            raise ValueError(f"bayesopt needs 2 completed trials to fit its GP, has {done}")
        if self._fitted_on == (id(self._generation), done):
            return  # fitted to these results already
        with single_threaded():
            self._generation.fit(experiment=self._generation.experiment)
        if self._generation.adapter is None or self._generation.current_node_name in ("CenterOfSearchSpace", "Sobol"):
            raise ValueError(f"bayesopt: Ax stayed at its {self._generation.current_node_name} node with {done} "
                             f"completed trials; it models after {self.min_runs()}")
        self._fitted_on = (id(self._generation), done)

    def predict_losses(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """Predicted per-domain loss mean and std (n, m) at mixtures W (n, k) from Ax's GP
        (`Client.predict`), with the m domains Ax models. ValueError when it cannot fit yet."""
        self._fit_model()
        # Not through `Mixture`, which rounds weights to 1e-6: the optimum search's finite differences
        # (steps of ~1e-8) would see a flat objective. Renormalised only off the simplex, as `Mixture` is.
        W = np.clip(np.atleast_2d(np.asarray(W, dtype=float)), 0.0, None)
        off = np.abs(W.sum(axis=1) - 1.0) > 1e-4
        W[off] /= W[off].sum(axis=1, keepdims=True)
        points = [{f"u{i}": float(x) for i, x in enumerate(u)} for u in simplex_to_cube(W)]
        predictions = []
        with single_threaded():
            # Chunks of 256: Ax forms the joint covariance of all the points it is given.
            for i in range(0, len(points), PREDICT_CHUNK):
                predictions += self._client.predict(points=points[i:i + PREDICT_CHUNK])
        loss_domains = tuple(d for d in self.domains if _metric(d) in predictions[0])
        mean = np.array([[p[_metric(d)][0] for d in loss_domains] for p in predictions])
        std = np.array([[p[_metric(d)][1] for d in loss_domains] for p in predictions])
        return mean, np.nan_to_num(std), loss_domains

    def recommend(self) -> Recommendation:
        """`gp`'s recommendation by Ax's predictions: the model's optimum is the minimiser of the
        predicted objective + RECOMMEND_RISK std inside the bounds (`model_based.minimize_objective`, seeded
        by the results seen), and base.best_predicted takes it only when it beats the best observed run
        by RECOMMEND_MARGIN of its std. Ax's own best point (an observed arm) is named in the notes. Fewer
        than min_runs results: the best observed run, said in notes."""
        base = super().recommend()
        try:
            self._fit_model()
        except ValueError as err:
            return replace(base, notes=[f"model unavailable ({err}); best observed", *base.notes])
        with single_threaded():
            params, _, _, _ = self._client.get_best_parameterization(use_model_predictions=True)
        u = np.array([params[f"u{i}"] for i in range(len(self.domains) - 1)])
        ax_best = cube_to_simplex(u)
        mean, std, loss_domains = self.predict_losses(ax_best[None, :])
        missing = sorted(set(self.objective.coefficients) - set(loss_domains))
        if missing:
            raise ValueError(f"bayesopt: Ax models no loss for {missing}, which the objective needs")
        ax_value = self.objective.compose(mean, std, loss_domains)[0][0] + self.penalty(mean, loss_domains)[0]
        optimum = self.model_optimum(recommend_rng(self))
        return self.checked(self.best_predicted(optimum, self.predict_losses, [
            f"surrogate: Ax GP ({self.config.method}); Ax's best point predicted at {ax_value:.4f}"]))

    def model_optimum(self, rng: np.random.Generator, polish: int = 3) -> np.ndarray:
        """Minimiser (k,) inside the bounds of the predicted objective + RECOMMEND_RISK std (constraint
        penalty on the per-domain upper bounds) by Ax's predictions, searched as `gp` searches its own
        (`model_based.minimize_objective`: Sobol points and clouds around the 4 best runs, the best 3
        polished with SLSQP)."""
        return minimize_objective(self, lambda W: predicted_upper(self, self.predict_losses, W, RECOMMEND_RISK),
                                  self.bounds, rng, polish)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Rebuild Ax from the history rather than unpickling its internals: JSON only.
        self._client = self._new_client()
        self._index, self._held = {}, []
        super().load_state_dict(state)


def _quiet_ax() -> None:
    """Ax logs every trial at INFO on loggers it configures itself; the journal already has them."""
    import ax  # noqa: F401  (creates Ax's loggers)

    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("ax", "botorch"):
            logging.getLogger(name).setLevel(logging.ERROR)


OBJECTIVE_METRIC = "objective"  # the metric of a nonlinear (worst) objective
PREDICT_CHUNK = 256  # points per `Client.predict` call


def _limit_metric(domain: str) -> str:
    return f"limit_{domain}"


def _metric(domain: str) -> str:
    return f"loss_{domain}"
