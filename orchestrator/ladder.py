"""Scale ladder: does the mixture that won on the small proxy still win on a larger one?

A mixture optimal for a small proxy need not be optimal at production scale. After the sweep (at the
ladder's first preset, the sweep's own `proxy.preset`), the `top_k` best completed mixtures and the
baselines (uniform, token prior) are re-trained at each larger preset; `ladder_summary` then gives,
per rung, the Spearman rank correlation of the objective between the two scales and whether the
small-scale winner is still the winner.

Ladder trials are ordinary journaled trials (`trial_proposed` carries `preset` and `role`), so they
survive a crash and are never trained twice; their id is the content hash of (mixture, trainer, seed,
preset) with the preset appended (`t<hash>-1m`). They spend no budget and are not told to the
strategy: a loss measured on another model size is not an observation of the same function. When
asked (`ladder.scale_model`, `mixsweep ladder --scale-model`), a GP with model size as an input
(orchestrator/scale_model.py) is fitted on the sweep's and the ladder's runs after each rung, and its
recommendation at that rung's size is journaled (`scale_recommended`) beside the sweep's own. A baseline that the sweep did
not train itself is also trained at the first preset, so that both scales have its objective.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import ray

from orchestrator.dispatch import attempt_timeout_s, died, launch, placement, stop, sweep_namespace
from orchestrator.mixture import Mixture
from orchestrator.optimize import Bounds
from orchestrator.sweepdir import JOURNAL, trial_dir, write_json_atomic
from orchestrator.trial import Placement, TrialResult, TrialStatus, message_from_json, trial_id

if TYPE_CHECKING:
    from orchestrator.controller import Controller
    from orchestrator.state import SweepState


class LadderError(ValueError):
    """A ladder request that cannot run (unknown or smaller preset, unfinished sweep); one line."""


def ladder_mixtures(state: SweepState, domains: tuple[str, ...], top_k: int, baselines: list[str],
                    domain_tokens: dict[str, int] | None) -> list[tuple[str, Mixture]]:
    """(role, mixture) to re-train: the `top_k` best completed sweep trials by objective (top1 first),
    then the baselines. A mixture that is both (uniform among the best) is listed once, roles joined."""
    done = sorted((t for t in state.completed if t.objective is not None and math.isfinite(t.objective) and t.measures_mixture),
                  key=lambda t: (t.objective, t.proposed_seq))
    out = [(f"top{i}", Mixture.from_dict(t.mixture, domains)) for i, t in enumerate(done[:top_k], 1)]
    for name in baselines:
        m = baseline_mixture(name, domains, domain_tokens)
        if m is not None:
            out.append((name, m))
    merged: dict[str, tuple[str, Mixture]] = {}
    for role, m in out:
        merged[m.key()] = (f"{merged[m.key()][0]}/{role}", m) if m.key() in merged else (role, m)
    return list(merged.values())


def baseline_mixture(name: str, domains: tuple[str, ...], domain_tokens: dict[str, int] | None) -> Mixture | None:
    """The uniform or token-prior mixture (None for token_prior when the token counts are unknown)."""
    if name == "uniform":
        return Mixture.uniform(domains)
    if name == "token_prior" and domain_tokens and sum(domain_tokens.values()) > 0:
        from orchestrator.strategies.fixed import TokenPrior

        prior = TokenPrior(TokenPrior.Config(), domains, None, 0)  # the strategy's own definition of the prior
        prior.domain_tokens = domain_tokens
        return prior.mixture()
    return None


def rung_spec(spec, preset: str):
    """The spec a rung trains with: the preset's own sequence length, batch size and learning rate (a
    value tuned for the small proxy is wrong for a larger model); token budget and evaluation kept."""
    proxy = spec.proxy.model_copy(update={"preset": preset, "seq_len": None, "batch_size": None, "learning_rate": None})
    return spec.model_copy(update={"proxy": proxy})


class LadderStage:
    """Runs the ladder's trials through a controller that holds the sweep's journal and lock."""

    def __init__(self, controller: Controller, scale_model: bool = False) -> None:
        self.c = controller
        self.scale_model = scale_model  # `mixsweep ladder --scale-model` (the spec's ladder.scale_model otherwise)
        self.domain_tokens = getattr(controller.strategy, "domain_tokens", None) or getattr(controller.state, "domain_tokens", None)
        self._data: dict[str, tuple[Any, int]] = {}

    def run(self, presets: list[str], top_k: int, baselines: list[str]) -> dict[str, Any] | None:
        """Train every rung's missing trials (presets[0] = the sweep's scale); return the summary."""
        c, base = self.c, presets[0]
        if self.domain_tokens is None and c.spec.trainer.kind == "proxy" and "token_prior" in baselines:
            self._rung_data(base)  # sets domain_tokens
        entries = ladder_mixtures(c.state, c.domains, top_k, baselines, self.domain_tokens)
        if not entries:
            c.log("ladder: no completed trial to re-train")
            return None
        observed = {Mixture.from_dict(t.mixture, c.domains).key() for t in c.state.completed}
        for preset in presets:
            todo = []
            for role, m in entries:
                if preset == base and m.key() in observed:
                    continue  # the sweep trained it at this scale already
                tid = ladder_trial_id(m, c._trial_config(), c.spec.seed, preset)
                known = c.state.ladder.get(tid)
                if known is not None and known.status.is_final:
                    continue  # trained before (a resumed sweep, a repeated `mixsweep ladder`)
                if known is None:
                    c._record("trial_proposed", trial=tid, mixture=m.as_dict(), preset=preset, role=role)
                todo.append(tid)
            if todo:
                c.log(f"ladder: {len(todo)} trial(s) at preset {preset}")
                self._train(preset, todo)
            if getattr(c.spec.ladder, "scale_model", False) or self.scale_model:
                self._recommend_at_scale(base, preset)
        return ladder_summary(c.state, base)

    def _recommend_at_scale(self, base: str, preset: str) -> None:
        """Journal the scale-aware model's recommendation at `preset` (or why there is none)."""
        c = self.c
        if preset == base:
            return
        strategy = c.strategy
        bounds = getattr(strategy, "bounds", None)
        if bounds is None:  # strategies without bounds: the simplex, inside the data's caps
            caps = getattr(strategy, "caps", None) or {}
            bounds = Bounds.of(c.domains, 0.0, {d: (0.0, caps[d]) for d in caps})
        try:
            rec = scale_recommendation(c.state, c.domains, base, preset, strategy.objective, bounds, c.spec.seed)
        except ValueError as err:
            c.log(f"ladder: no scale-aware recommendation at {preset}: {err}")
            c._record("scale_recommended", preset=preset, mixture=None, note=str(err))
            return
        c._record("scale_recommended", **rec)
        c.log(f"ladder: scale-aware recommendation at {preset}: {Mixture.from_dict(rec['mixture'], c.domains)} "
              f"(predicted objective {rec['objective']:.4f} ± {rec['objective_std']:.4f})")

    def _rung_data(self, preset: str) -> tuple[Any, int]:
        """What trials at `preset` read (the controller's data payload) and the vocabulary, per rung."""
        if preset not in self._data:
            c = self.c
            # The controller's own preparation, run with the rung's spec (its sequence length), so the
            # ladder reaches the data exactly as the sweep's trials do; tokenisation is cached.
            sweep_spec, c.spec = c.spec, rung_spec(c.spec, preset)
            try:
                self._data[preset] = c._prepare_data()
            finally:
                c.spec = sweep_spec
            self.domain_tokens = self.domain_tokens or getattr(c.strategy, "domain_tokens", None)
        return self._data[preset]

    def _payload(self, preset: str) -> dict[str, Any]:
        """The request every trial at `preset` shares (workers.protocol.TrialRequest as JSON: the rung's
        model size and training settings)."""
        from orchestrator.requests import trial_template

        c = self.c
        _, vocab = self._rung_data(preset)
        return trial_template(rung_spec(c.spec, preset), vocab, c.where.num_cpus).to_json()

    def _train(self, preset: str, tids: list[str]) -> None:
        """Keep `budget.concurrency` ladder trials in flight until each completed or failed for good."""
        c = self.c
        base, timeout = self._payload(preset), attempt_timeout_s(rung_spec(c.spec, preset)) or math.inf
        data_ref = self._data[preset][0]
        queue, running = list(tids), {}
        for tid in tids:
            if c.state.ladder[tid].status == TrialStatus.RUNNING:  # left running by a stopped controller
                c._record("trial_requeued", trial=tid, attempt=c.state.ladder[tid].attempts, reason="the controller stopped while it ran")
        while queue or running:
            c.lock.beat()
            while queue and len(running) < c.spec.budget.concurrency:
                tid = queue.pop(0)
                t = c.state.ladder[tid]
                if t.attempts >= c.spec.budget.max_attempts:
                    c._record("trial_failed", trial=tid, reason=f"no attempts left ({t.attempts} of {c.spec.budget.max_attempts})")
                    continue
                name = f"trial-{tid}-{t.attempts + 1}" if t.attempts else f"trial-{tid}"
                c._record("trial_started", trial=tid, attempt=t.attempts + 1, actor=name)
                payload = {**base, "trial": tid, "mixture": t.mixture, "trial_dir": str(trial_dir(c.dir, tid).resolve())}
                trial_dir(c.dir, tid).mkdir(parents=True, exist_ok=True)
                actor, gen = launch(name, payload, data_ref, c.where, sweep_namespace(c.store.location))
                running[gen] = (tid, actor, time.time() + timeout)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for gen in ready:
                if not self._advance(gen, running[gen]):
                    tid, actor, _ = running.pop(gen)
                    stop(actor)
                    if c.state.ladder[tid].status == TrialStatus.PROPOSED:  # requeued
                        queue.append(tid)
            for gen, (tid, actor, deadline) in list(running.items()):
                if time.time() > deadline:
                    running.pop(gen)
                    stop(actor)
                    c._record("trial_requeued", trial=tid, attempt=c.state.ladder[tid].attempts, reason="hung past its timeout")
                    queue.append(tid)

    def _advance(self, gen, run: tuple) -> bool:
        """Take one streamed message; False when the trial's attempt has ended (done, failed, died)."""
        c, (tid, _, _) = self.c, run
        try:
            message = message_from_json(ray.get(next(gen)))
        except StopIteration:
            c._record("trial_failed", trial=tid, reason="the trainer ended without a result")
            return False
        except Exception as err:
            from orchestrator.controller import _reason

            if died(err):
                c._record("trial_requeued", trial=tid, attempt=c.state.ladder[tid].attempts, reason=_reason(err))
            else:
                c._record("trial_failed", trial=tid, reason=_reason(err))
            return False
        if isinstance(message, Placement):
            c._record("trial_placed", trial=tid, node_id=message.node_id, pid=message.pid, gpus=message.gpus)
            return True
        if not isinstance(message, TrialResult):
            c._record("trial_progress", trial=tid, step=message.step, tokens=message.tokens, losses=message.losses,
                      elapsed_s=round(message.elapsed_s, 3))
            return True
        missing = [d for d in c.objective.coefficients if d not in message.losses]
        if missing or not message.is_finite():
            c._record("trial_failed", trial=tid, reason=f"invalid result: missing {missing}" if missing else f"non-finite losses {message.losses}")
            return False
        body = {"trial": tid, "mixture": c.state.ladder[tid].mixture, "preset": c.state.ladder[tid].preset, **message.to_json()}
        body.pop("kind")
        write_json_atomic(trial_dir(c.dir, tid) / "result.json", body)
        c._record("trial_completed", trial=tid, losses=message.losses, loss_stderr=message.loss_stderr,
                  objective=c.objective(message.losses), tokens=message.tokens, steps=message.steps, wall_s=round(message.wall_s, 3))
        return False


def scale_recommendation(state: SweepState, domains: tuple[str, ...], base: str, preset: str, objective,
                         bounds: Bounds, seed: int) -> dict[str, Any]:
    """The mixture to use at `preset`, from a GP with model size as an input (orchestrator/scale_model.py)
    fitted on every completed sweep trial (at `base`) and ladder trial (at its preset): the minimiser of
    the predicted objective + 1 std at that size inside `bounds`, as a model strategy recommends
    (orchestrator/strategies/model_based.py), with predicted per-domain losses and std. ValueError
    when there are too few runs to fit."""
    import numpy as np

    from orchestrator.optimize import minimize_on_simplex
    from orchestrator.scale_model import ScaleAwareGP
    from orchestrator.strategies.model_based import RECOMMEND_RISK
    from workers.presets import PRESETS

    runs = [(t, base) for t in state.completed if t.measures_mixture]
    runs += [(t, t.preset) for t in state.ladder.values() if t.status == TrialStatus.COMPLETED]
    runs = [(t, p) for t, p in runs if t.losses and all(math.isfinite(v) for v in t.losses.values())]
    if not runs:
        raise ValueError("no completed trial to fit")
    loss_domains = tuple(d for d in runs[0][0].losses if all(d in t.losses for t, _ in runs))
    W = np.array([Mixture.from_dict(t.mixture, domains).as_array() for t, _ in runs])
    P = np.array([PRESETS[p].non_embedding_params() for _, p in runs], dtype=float)
    Y = np.array([[t.losses[d] for d in loss_domains] for t, _ in runs])
    model = ScaleAwareGP().fit(W, P, Y)
    size = PRESETS[preset].non_embedding_params()

    def upper(X: np.ndarray) -> np.ndarray:
        mean, std = model.predict(X, size)
        value, value_std = objective.compose(mean, std, loss_domains)
        penalty = objective.penalised(mean, loss_domains) - objective.values(mean, loss_domains) if objective.constrained else 0.0
        return value + RECOMMEND_RISK * value_std + penalty

    at_preset = [Mixture.from_dict(t.mixture, domains).as_array() for t, p in runs if p == preset]
    centres = np.array(at_preset) if at_preset else None
    w, _ = minimize_on_simplex(upper, bounds, np.random.default_rng([seed, len(runs), 11]), centres=centres)
    mean, std = model.predict(w[None], size)
    value, value_std = objective.compose(mean, std, loss_domains)
    return {"preset": preset, "mixture": Mixture.from_array(domains, w).as_dict(),
            "predicted_losses": dict(zip(loss_domains, map(float, mean[0]))),
            "predicted_std": dict(zip(loss_domains, map(float, std[0]))),
            "objective": float(value[0]), "objective_std": float(value_std[0]),
            "runs": {"sweep": sum(p == base for _, p in runs), "ladder": sum(p != base for _, p in runs)}}


def ladder_trial_id(mixture: Mixture, trial_config: dict[str, Any], seed: int, preset: str) -> str:
    """`t<hash>-<preset>`: the content address of a ladder trial, naming the preset it trains at."""
    return f"{trial_id(mixture, {**trial_config, 'ladder_preset': preset}, seed)}-{preset}"


def ladder_summary(state: SweepState, base_preset: str) -> dict[str, Any] | None:
    """Per larger preset: each mixture's objective at both scales, Spearman rank correlation, and whether
    the small-scale winner (lowest objective among the re-trained mixtures) is still the lowest."""
    if not state.ladder:
        return None
    domains = state.domains or tuple(next(iter(state.ladder.values())).mixture)
    key = lambda m: Mixture.from_dict(m, domains).key()  # noqa: E731
    at_base: dict[str, float] = {}
    for t in [*state.completed, *(t for t in state.ladder.values() if t.preset == base_preset and t.status == TrialStatus.COMPLETED)]:
        if t.objective is not None and math.isfinite(t.objective):
            at_base[key(t.mixture)] = min(t.objective, at_base.get(key(t.mixture), math.inf))
    ladder = sorted(state.ladder.values(), key=lambda t: t.proposed_seq)
    rungs = []
    for preset in dict.fromkeys(t.preset for t in ladder if t.preset != base_preset):
        rows = [{"role": t.role, "trial": t.id, "mixture": t.mixture, "status": t.status.value,
                 "objective": t.objective, "base_objective": at_base.get(key(t.mixture))}
                for t in ladder if t.preset == preset]
        rungs.append({"preset": preset, "rows": rows, **_compare(rows),
                      **({"scale_recommended": state.scale_recommendations[preset]} if preset in state.scale_recommendations else {})})
    return {"base_preset": base_preset, "rungs": rungs}


def _compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman rho between the scales and the winners, over rows with an objective at both."""
    from scipy.stats import spearmanr

    paired = [r for r in rows if r["objective"] is not None and r["base_objective"] is not None]
    if len(paired) < 2:
        return {"pairs": len(paired), "spearman": None, "winner_base": None, "winner": None, "winner_held": None}
    small, large = [r["base_objective"] for r in paired], [r["objective"] for r in paired]
    rho = float(spearmanr(small, large).statistic)
    first = min(range(len(paired)), key=lambda i: small[i])
    best = min(range(len(paired)), key=lambda i: large[i])
    return {"pairs": len(paired), "spearman": rho if math.isfinite(rho) else None,
            "winner_base": paired[first]["role"], "winner": paired[best]["role"], "winner_held": first == best}


def check_rung(base: str, preset: str) -> None:
    """LadderError unless `preset` is a known preset larger than the sweep's `base`."""
    from workers.presets import PRESETS

    if preset not in PRESETS:
        raise LadderError(f"--preset: unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    if PRESETS[preset].non_embedding_params() <= PRESETS[base].non_embedding_params():
        raise LadderError(f"--preset: {preset} is not larger than the sweep's preset {base}; pick a larger one ({', '.join(PRESETS)})")


def run_ladder_command(spec, sweep_dir: str, preset: str, top_k: int, baselines: list[str],
                       log=print, cpu_fallback: bool = True, scale_model: bool = False) -> dict[str, Any] | None:
    """`mixsweep ladder`: re-train a finished sweep's best `top_k` mixtures and baselines at `preset`,
    holding the sweep's lock and appending to its journal (Ray must be initialised)."""
    from orchestrator.controller import Controller
    from orchestrator.journal import Journal, read_events
    from orchestrator.lock import SweepLock
    from orchestrator.metrics import SweepMetrics

    base = spec.proxy.preset
    check_rung(base, preset)
    c = Controller(spec, sweep_dir, log=log, cpu_fallback=cpu_fallback)
    c.store.pull()
    for e in read_events(c.dir / JOURNAL):
        c.state.apply(e)
    if not c.state.finished:
        raise LadderError(f"the sweep in {sweep_dir} has not finished; `mixsweep resume {sweep_dir}` first")
    c.lock = SweepLock(c.dir)
    c.lock.acquire()
    c.journal = Journal(c.dir / JOURNAL, repair=True, log=log)
    try:
        c.where = placement(spec.resources, cpu_fallback)
        c.metrics = SweepMetrics(spec.name)
        return LadderStage(c, scale_model=scale_model).run([base, preset], top_k, baselines)
    finally:
        c.journal.close()
        c.lock.release()
        c.store.push(force=True)
        c.store.remove("controller.lock")
