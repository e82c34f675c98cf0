"""Strategies built on domain experts: Mixture of Data Experts (MDE) and MixMin.

Stage 1 of both trains one expert per domain: an ordinary trial at a vertex of the simplex that also
writes its per-token log-probabilities on every validation set (workers/token_logprobs.py). For a mixture w,
the token-level ensemble sum_i w_i p_i(x_t | x_<t) approximates the model trained on w, so

    L_MDE_j(w) = -mean_t log( sum_i w_i p_i(x_t) )        over the tokens t of domain j's validation set

is an estimate of domain j's loss under w that costs no training (Belenki et al. 2025, arXiv 2502.15950).
It is convex in w (the negative log of a linear function), which MixMin (Thudi et al. 2025, arXiv
2502.10510) minimises directly by exponentiated-gradient descent on the simplex.

The ensemble arithmetic is a few lines of numpy on cached arrays; no library does it on caches.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from orchestrator.mixture import Mixture
from orchestrator.strategies.base import Recommendation, Strategy
from orchestrator.strategies.configs import ExpertConfig
from orchestrator.strategies.contract import Outcome, Proposal, Requirements

_FLOOR = 1e-12  # log(0) weights -> a vanishing ensemble share, without -inf arithmetic


class ExpertEnsemble:
    """Cached expert log-probabilities: expert domain i -> eval domain j -> [T_j] log p_i(x_t)."""

    def __init__(self, domains: tuple[str, ...], experts: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        self.domains = domains
        # Every set all experts were evaluated on: the training domains, then held-out sets that are
        # not mixed into training (spec `eval_domains`, e.g. MixMin's downstream target).
        shared = set.intersection(*(set(experts[i]) for i in domains))
        self.eval_domains = tuple(d for d in domains if d in shared) + tuple(sorted(shared - set(domains)))
        # [m][k, T_j] per evaluated set. The ensemble is kept as probabilities relative to the best
        # expert at each token, P_j = exp(logp - max_i logp) in (0, 1], with the shift m_j [T_j]:
        # then sum_i w_i p_i(t) = exp(m_t) (w @ P)_t exactly, and scoring thousands of candidate
        # mixtures is one matrix product instead of a logsumexp over [n, k, T] (measured 0.3 s instead
        # of 110 s for 6,000 mixtures x 4 experts x 16k tokens x 4 sets).
        self.logp = {j: np.stack([np.asarray(experts[i][j], dtype=np.float64) for i in domains]) for j in self.eval_domains}
        self.shift = {j: lp.max(axis=0) for j, lp in self.logp.items()}
        self.prob = {j: np.exp(lp - self.shift[j][None]) for j, lp in self.logp.items()}

    def _sets(self, tokens: Mapping[str, np.ndarray] | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(P [k, T], shift [T]) of each evaluated set, restricted to `tokens` where given."""
        for j in self.eval_domains:
            if tokens is None:
                yield self.prob[j], self.shift[j]
            else:
                yield self.prob[j][:, tokens[j]], self.shift[j][tokens[j]]

    def losses(self, W: np.ndarray, tokens: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """L_MDE [n, m] (nats/token) for mixtures W [n, k]; `tokens` picks token indices per domain."""
        W = np.maximum(np.atleast_2d(np.asarray(W, dtype=np.float64)), 0.0)
        out = np.empty((len(W), len(self.eval_domains)))
        for col, (P, shift) in enumerate(self._sets(tokens)):
            rows = max(1, (1 << 22) // max(P.shape[1], 1))  # bound the [rows, T] block to ~32 MB
            for start in range(0, len(W), rows):
                mix = np.maximum(W[start:start + rows] @ P, _FLOOR)  # [rows, T]
                out[start:start + rows, col] = -(np.log(mix).mean(axis=1) + shift.mean())
        return out

    def gradient(self, w: np.ndarray, coef: np.ndarray, tokens: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """d/dw of sum_j coef_j L_MDE_j(w): -sum_j coef_j mean_t p_i(t) / sum_k w_k p_k(t), shape [k]."""
        w = np.maximum(np.asarray(w, dtype=np.float64), 0.0)
        g = np.zeros(len(w))
        for c, (P, _) in zip(coef, self._sets(tokens)):
            g -= c * (P / np.maximum(w @ P, _FLOOR)[None]).mean(axis=1)  # the shift cancels in the ratio
        return g


class ExpertStrategy(Strategy):
    """Stage 1 for MDE and MixMin: ask for the k vertices first (each trial asked to write its per-token
    log-probabilities), and read them from the outcome that names where they were written."""

    Config = ExpertConfig
    requirements = Requirements(
        expert_logprobs=True,
        proxy_trainer="trains domain experts that write per-token log-probabilities",
        sweep_only="needs each domain expert's per-token log-probabilities, which its expert trials write in a sweep "
                   "and a runs table does not hold")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.expert_logprobs: dict[str, dict[str, np.ndarray]] = {}
        self.expert_sources: dict[str, str] = {}

    def set_caps(self, caps: dict[str, float]) -> None:
        """An expert trains on its one domain for a whole trial: every cap must allow weight 1."""
        short = sorted(d for d in self.domains if caps.get(d, 1.0) < 1.0)
        if short:
            raise ValueError(f"{self.kind} trains one expert per domain on {short[0]!r} alone, above its cap "
                             f"{caps[short[0]]:.3f} (also short: {short[1:]}); raise data.max_epochs, lower "
                             "proxy.tokens_per_trial, or use another strategy")
        super().set_caps(caps)

    @staticmethod
    def is_vertex(mixture: Mixture) -> bool:
        """A mixture of one domain alone: an expert's."""
        return max(mixture.weights) >= 1.0 - 1e-9

    def proposal(self, mixture: Mixture) -> Proposal:
        """An expert (a vertex) writes its per-token log-probabilities; any other mixture trains plainly."""
        return Proposal(mixture, {"token_logprobs": True} if self.is_vertex(mixture) else {})

    def tell(self, outcome: Outcome) -> None:
        """An expert's outcome names where its log-probabilities are (`Artifacts.token_logprobs`): read them."""
        super().tell(outcome)
        location = outcome.artifacts.token_logprobs
        if location:
            from orchestrator.storage import read_arrays

            self.add_expert(outcome.mixture, read_arrays(location), source=location)

    def add_expert(self, mixture: Mixture, logprobs: Mapping[str, np.ndarray], source: str = "") -> None:
        """The per-token log-probabilities (eval domain -> [T]) of the expert trained on `mixture`'s domain,
        in memory (`tell` reads a sweep's from disk; tests and benchmarks hand arrays directly)."""
        domain = mixture.domains[int(np.argmax(mixture.weights))]
        self.expert_logprobs[domain] = dict(logprobs)
        self.expert_sources[domain] = source

    def ensemble(self) -> ExpertEnsemble | None:
        if set(self.expert_logprobs) != set(self.domains):
            return None
        return ExpertEnsemble(self.domains, self.expert_logprobs)

    def coef(self, ens: ExpertEnsemble) -> np.ndarray:
        return np.array([self.objective.coefficients.get(j, 0.0) for j in ens.eval_domains])

    def ask_experts(self, n: int, pending: list[Mixture]) -> list[Mixture]:
        busy = {m.key() for m in pending} | {f.mixture.key() for f in self.failures}
        out = []
        for i, d in enumerate(self.domains):
            vertex = Mixture.from_array(self.domains, np.eye(len(self.domains))[i])
            if d not in self.expert_logprobs and vertex.key() not in busy and len(out) < n:
                out.append(vertex)
        return out

    def state_dict(self) -> dict[str, Any]:
        # Arrays stay where the trials wrote them; the state names them (JSON only).
        return {**super().state_dict(), "experts": dict(self.expert_sources)}


class MixMin(ExpertStrategy):
    """MixMin: the experts' ensemble loss is convex in w; minimise it by mirror descent, run it once."""

    kind = "mixmin"

    def solve(self, ens: ExpertEnsemble) -> tuple[np.ndarray, list[float], dict[str, np.ndarray]]:
        """(w*, objective after each step on the fit tokens, held-out token indices per domain)."""
        rng = np.random.default_rng(self.seed)
        fit, held = {}, {}
        for j in ens.eval_domains:
            idx = rng.permutation(ens.logp[j].shape[1])
            cut = int(len(idx) * (1 - self.config.holdout))
            fit[j], held[j] = idx[:cut], (idx[cut:] if cut < len(idx) else idx)
        def objective(v: np.ndarray) -> float:  # penalised under constraints; convex for mean and worst
            return float(self.objective.penalised(ens.losses(v, fit)[0], ens.eval_domains))

        w = np.full(len(self.domains), 1.0 / len(self.domains))
        trace = [objective(w)]
        eta = self.config.eta
        for _ in range(self.config.max_steps):
            # Chain rule: the objective's gradient in the losses (coefficients; for `worst` a smooth max).
            g = ens.gradient(w, self.objective.gradient(ens.losses(w, fit)[0], ens.eval_domains), fit)
            if np.max(np.abs(g - g.mean())) < self.config.tol:  # the simplex ignores a constant shift
                break
            for _halving in range(20):  # backtrack: every accepted step lowers the objective
                step = w * np.exp(-eta * (g - g.min()))
                step /= step.sum()
                value = objective(step)
                if value <= trace[-1]:
                    break
                eta /= 2
            else:
                break
            w = step
            trace.append(value)
        return w, trace, held

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.optimum_asked = False  # the optimum was proposed (state_dict keeps it)

    def next_proposals(self, n: int, pending: list[Mixture]) -> list[Proposal]:
        experts = [self.proposal(m) for m in self.ask_experts(n, pending)]
        ens = self.ensemble()
        if experts or ens is None or n < 1 or self.optimum_proposed(pending):
            return experts
        self.optimum_asked = True
        return [Proposal(Mixture.from_array(self.domains, self.solve(ens)[0]))]

    def optimum_proposed(self, pending: list[Mixture]) -> bool:
        """Whether the MixMin optimum was proposed: asked before, or (a strategy rebuilt by re-telling a
        journal) any run told, failed or in flight that is not a vertex, since the optimum is the one
        such mixture MixMin proposes."""
        seen = [o.mixture for o in self.observations] + [f.mixture for f in self.failures] + list(pending)
        return self.optimum_asked or any(not self.is_vertex(m) for m in seen)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "optimum_asked": self.optimum_asked}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimum_asked = bool(state.get("optimum_asked", False))

    def recommend(self) -> Recommendation:
        ens = self.ensemble()
        if ens is None:
            return super().recommend()
        w, trace, held = self.solve(ens)
        notes = [f"ensemble of {len(self.domains)} experts; objective {trace[0]:.4f} (uniform) -> {trace[-1]:.4f} in {len(trace) - 1} steps"]
        ran = [o for o in self.observations if np.allclose(o.mixture.as_array(), w, atol=1e-9)]
        if ran:
            notes.append("trained at this mixture: " + ", ".join(f"{d}={v:.4f}" for d, v in ran[0].losses.items()))

        def predict(W: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
            # The ensemble's loss on the held-out tokens; an ensemble has no std.
            losses = ens.losses(W, held)
            return losses, np.zeros_like(losses), ens.eval_domains

        return self.checked(self.best_predicted(w, predict, notes, optimum_name="the MixMin optimum"))


class MDE(ExpertStrategy):
    """Mixture of Data Experts: per-domain ridge regression on (w, L_MDE(w)), fitted on real runs."""

    kind = "mde"

    def _features(self, ens: ExpertEnsemble, W: np.ndarray) -> np.ndarray:
        return np.hstack([W, ens.losses(W), np.ones((len(W), 1))])

    def _fit(self, ens: ExpertEnsemble) -> tuple[np.ndarray, np.ndarray] | None:
        """Ridge coefficients [p, m] and residual std [m] from the non-vertex runs; None if too few."""
        runs = [o for o in self.observations if not self.is_vertex(o.mixture)]
        if len(runs) < max(2, self.config.seed_mixtures):
            return None
        W = np.array([o.mixture.as_array() for o in runs])
        Y = np.array([[o.losses[j] for j in ens.eval_domains] for o in runs])
        X = self._features(ens, W)
        beta = np.linalg.solve(X.T @ X + self.config.ridge * np.eye(X.shape[1]), X.T @ Y)
        resid = Y - X @ beta
        return beta, np.sqrt((resid**2).mean(axis=0) * len(runs) / max(1, len(runs) - 1))

    def _predict(self, ens: ExpertEnsemble, W: np.ndarray) -> np.ndarray:
        fit = self._fit(ens)
        return ens.losses(W) if fit is None else self._features(ens, W) @ fit[0]

    def mixtures_proposed(self, pending: list[Mixture]) -> int:
        """Mixture runs (not experts) told, failed or in flight: the position in MDE's own sequence
        (its seed design and candidate draws), read from the runs themselves, so a strategy rebuilt by
        re-telling a journal continues where the original was."""
        seen = [o.mixture for o in self.observations] + [f.mixture for f in self.failures] + list(pending)
        return sum(not self.is_vertex(m) for m in seen)

    def _best(self, ens: ExpertEnsemble, n: int, avoid: list[np.ndarray], pending: list[Mixture] = ()) -> list[np.ndarray]:
        rng = np.random.default_rng((self.seed, len(self.observations), self.mixtures_proposed(list(pending))))
        W = np.vstack([rng.dirichlet(np.ones(len(self.domains)), size=self.config.candidates),
                       rng.dirichlet(np.full(len(self.domains), 0.3), size=self.config.candidates // 2)])
        score = self.objective.penalised(self._predict(ens, W), ens.eval_domains)
        picked: list[np.ndarray] = []
        for i in np.argsort(score):
            if all(np.abs(W[i] - a).sum() > 0.05 for a in avoid + picked):
                picked.append(W[i])
            if len(picked) == n:
                break
        return picked

    def next_proposals(self, n: int, pending: list[Mixture]) -> list[Proposal]:
        experts = [self.proposal(m) for m in self.ask_experts(n, pending)]
        ens = self.ensemble()
        if experts or ens is None or n < 1:
            return experts
        runs = sum(not self.is_vertex(o.mixture) for o in self.observations) + len(pending)
        if runs < self.config.seed_mixtures:  # a few diverse real runs to fit the regression on
            from botorch.utils.sampling import sample_simplex

            first = self.mixtures_proposed(pending)
            W = sample_simplex(len(self.domains), first + n, qmc=True, seed=self.seed).double().numpy()[first:]
        else:
            avoid = [m.as_array() for m in pending] + [o.mixture.as_array() for o in self.observations]
            W = self._best(ens, n, avoid, pending)
        return [Proposal(Mixture.from_array(self.domains, w)) for w in W]

    def recommend(self) -> Recommendation:
        ens = self.ensemble()
        if ens is None:
            return super().recommend()
        w = self._best(ens, 1, [])[0]
        fit = self._fit(ens)
        note = "regression on MDE features" if fit is not None else "MDE ensemble estimate only (no mixture runs yet)"

        def predict(W: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
            mean = self._predict(ens, W)
            std = np.broadcast_to(fit[1], mean.shape).copy() if fit is not None else np.zeros_like(mean)
            return mean, std, ens.eval_domains

        return self.checked(self.best_predicted(w, predict, [note], optimum_name="the MDE optimum"))
