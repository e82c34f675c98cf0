"""DoReMi: the online mixer (real tiny trainings), the strategy's stages and state (the Ray sweep is in
tests/integration/test_doremi_sweep.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from orchestrator.mixture import Mixture
from orchestrator.objective import Objective
from orchestrator.spec import ObjectiveSpec
from orchestrator.strategies import build_strategy
from orchestrator.strategies.contract import Artifacts, Outcome, Proposal
from workers.data import MixtureSampler
from workers.model import PRESETS, build_model
from workers.online import DoReMiMixer, OnlineMixError, build_online
from workers.train import Checkpointer, TrainConfig, train_proxy

VOCAB, SEQ = 32, 32


def _two_domains(n: int = 20_000) -> tuple[dict, dict]:
    """`easy`: 0 1 0 1 ..., learnt by any model in a few steps. `hard`: a noisy permutation chain
    (next = perm[token] 70% of the time, else a random token): learnable, but only over many steps.

    DoReMi follows the excess loss (proxy minus reference, clipped at 0), the loss the proxy could still
    lose. It is largest where the proxy lags the reference most: on `hard`, which the reference has
    learnt over a whole run and a young proxy has not; `easy` is learnt by both almost at once. (Pure
    random tokens would be hard too, but no model can learn them, so their excess is ~0 and DoReMi
    would rightly give them little weight.)"""
    rng = np.random.default_rng(0)
    perm, noise, rand = rng.permutation(VOCAB), rng.random(n) < 0.3, rng.integers(0, VOCAB, n)
    hard = np.zeros(n, dtype=np.int64)
    for t in range(1, n):
        hard[t] = rand[t] if noise[t] else perm[hard[t - 1]]
    full = {"easy": np.tile(np.arange(2), n // 2).astype(np.int64), "hard": hard}
    return {d: v[:-2048] for d, v in full.items()}, {d: v[-2048:] for d, v in full.items()}


def _config(steps: int, seed: int = 0) -> TrainConfig:
    return TrainConfig(preset="debug", tokens=steps * 16 * SEQ, eval_every_tokens=10**9, seq_len=SEQ, batch_size=16, seed=seed)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A reference model trained at the uniform mixture (an ordinary trial that saves its weights)."""
    torch.set_num_threads(1)
    train, val = _two_domains()
    where = str(tmp_path_factory.mktemp("reference") / "final_weights.pt")
    ref = train_proxy(_config(40), {"easy": 0.5, "hard": 0.5}, train, val, VOCAB, device="cpu", final_weights_to=where)
    assert ref.info["final_weights"] == where and ref.losses["hard"] > ref.losses["easy"]
    return where, train, val


def _doremi(where: str, resample: bool = False) -> DoReMiMixer:
    return build_online({"kind": "doremi", "reference": where, "eta": 1.0, "smoothing": 1e-3, "resample": resample},
                        ["easy", "hard"], "debug", VOCAB, SEQ)


@pytest.mark.slow
def test_doremi_moves_weight_toward_the_domain_where_the_proxy_lags_the_reference(reference):
    where, train, val = reference
    seen = []
    proxy = train_proxy(_config(40), {"easy": 0.5, "hard": 0.5}, train, val, VOCAB, on_eval=seen.append, device="cpu",
                        online=_doremi(where))
    online = proxy.info["online"]
    assert online["steps"] == 40
    assert online["average"]["hard"] > 0.65  # uniform was 0.5; measured about 0.77
    assert sum(online["average"].values()) == pytest.approx(1.0)
    assert seen[-1].weights == online["final"]  # the weights went out with the progress


@pytest.mark.slow
def test_resampling_doremi_draws_more_sequences_of_the_lagging_domain(reference):
    where, train, val = reference
    proxy = train_proxy(_config(40), {"easy": 0.5, "hard": 0.5}, train, val, VOCAB, device="cpu",
                        online=_doremi(where, resample=True))
    counts = proxy.info["sequences_per_domain"]
    assert sum(counts.values()) == 40 * 16 and counts["hard"] > 0.6 * 40 * 16
    assert proxy.info["online"]["average"]["hard"] > 0.6


@pytest.mark.slow
def test_a_resumed_doremi_trial_ends_with_the_weights_of_an_uninterrupted_one(reference, tmp_path):
    where, train, val = reference
    config = dataclasses.replace(_config(12), eval_every_tokens=6 * 16 * SEQ, checkpoint_every_tokens=4 * 16 * SEQ)
    whole = train_proxy(config, {"easy": 0.5, "hard": 0.5}, train, val, VOCAB, device="cpu", online=_doremi(where, True))

    def crash(p):
        if p.step == 12:
            raise RuntimeError("node lost")

    with pytest.raises(RuntimeError):  # dies after the checkpoint at step 8
        train_proxy(config, {"easy": 0.5, "hard": 0.5}, train, val, VOCAB, on_eval=crash, device="cpu",
                    checkpoint_dir=tmp_path, online=_doremi(where, True))
    resumed = train_proxy(config, {"easy": 0.5, "hard": 0.5}, train, val, VOCAB, device="cpu", checkpoint_dir=tmp_path,
                          online=_doremi(where, True))
    assert resumed.info["resumed_from_step"] == 8 and resumed.info["online"]["steps"] == 12
    assert resumed.info["online"]["average"] == pytest.approx(whole.info["online"]["average"], rel=1e-4)
    assert resumed.info["online"]["sequences"] == whole.info["online"]["sequences"]  # the batches trained on


def _mixer(eta: float, smoothing: float, k: int = 3) -> DoReMiMixer:
    return DoReMiMixer([f"d{i}" for i in range(k)], build_model(PRESETS["debug"], VOCAB, SEQ), eta=eta, smoothing=smoothing)


def test_online_weights_stay_on_the_simplex_and_honour_smoothing():
    rng = np.random.default_rng(1)
    c, k = 0.05, 3
    m = _mixer(eta=4.0, smoothing=c, k=k)
    for _ in range(50):
        before = m.alpha.copy()
        lam = rng.exponential(3.0, size=k) * (rng.random(k) < 0.7)  # some domains absent from a batch
        m.update(lam)
        assert m.alpha.sum() == pytest.approx(1.0) and m.alpha.min() >= c / k - 1e-12
        expected = before * np.exp(4.0 * lam)  # the paper's step, written out
        assert m.alpha == pytest.approx((1 - c) * expected / expected.sum() + c / k)
    assert m.steps == 50 and sum(m.average().values()) == pytest.approx(1.0)
    full = _mixer(eta=4.0, smoothing=1.0)  # c = 1: always uniform
    for _ in range(5):
        full.update(rng.exponential(3.0, size=3))
    assert full.alpha == pytest.approx(np.full(3, 1 / 3))
    still = _mixer(eta=1.0, smoothing=1e-3)
    still.update(np.zeros(3))  # no excess anywhere: nothing moves
    assert still.alpha == pytest.approx(np.full(3, 1 / 3))


def test_reweighted_loss_is_the_alpha_weighted_mean_of_per_domain_losses():
    m = _mixer(eta=1.0, smoothing=0.0, k=2)
    m.alpha = np.array([0.8, 0.2])
    m.update = lambda lam: None  # keep alpha fixed to check the objective alone
    tokens = torch.randint(0, VOCAB, (4, SEQ + 1))
    token_losses = torch.tensor([[1.0] * SEQ, [3.0] * SEQ, [2.0] * SEQ, [2.0] * SEQ])
    loss = m.loss(tokens, np.array([0, 0, 1, 1]), token_losses)
    assert loss.item() == pytest.approx(0.8 * 2.0 + 0.2 * 2.0)
    loss = m.loss(tokens, np.array([0, 1, 1, 1]), token_losses)
    assert loss.item() == pytest.approx(0.8 * 1.0 + 0.2 * (3.0 + 2.0 + 2.0) / 3)


def test_set_weights_remixes_only_the_steps_to_come():
    rng = np.random.default_rng(0)
    train = {"a": rng.integers(0, 9, 5000), "b": rng.integers(0, 9, 5000)}
    s = MixtureSampler(train, {"a": 0.5, "b": 0.5}, 16, 8, 16 * 8 * 20, seed=3)
    early = [s.batch(i)[1].copy() for i in range(5)]
    s.set_weights({"a": 1.0, "b": 0.0}, 5)
    assert all(np.array_equal(s.batch(i)[1], e) for i, e in enumerate(early))
    assert all((s.batch(i)[1] == 0).all() for i in range(5, 20))
    assert sum(s.counts.values()) == 20 * 8 and s.counts["b"] == sum(int((e == 1).sum()) for e in early)
    again = MixtureSampler(train, {"a": 0.5, "b": 0.5}, 16, 8, 16 * 8 * 20, seed=3)
    again.set_weights({"a": 1.0, "b": 0.0}, 5)  # the same weights at the same step: the same batches
    assert np.array_equal(again.schedule, s.schedule)


def test_online_options_name_a_missing_reference_in_one_line(tmp_path):
    with pytest.raises(OnlineMixError, match="no reference weights"):
        build_online({"kind": "doremi", "reference": str(tmp_path / "nope.pt")}, ["a"], "debug", VOCAB, SEQ)
    with pytest.raises(OnlineMixError, match="unknown"):
        build_online({"kind": "odm"}, ["a"], "debug", VOCAB, SEQ)
    model = build_model(PRESETS["debug"], VOCAB, SEQ)
    Checkpointer.write_weights(str(tmp_path / "w.pt"), model)
    back = Checkpointer.read_weights(str(tmp_path / "w.pt"))
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------ strategy


def _strategy(**options):
    domains = ("a", "b", "c")
    objective = Objective.from_spec(ObjectiveSpec(), domains)
    return build_strategy("doremi", options, domains, objective, seed=0)


REFERENCE_WEIGHTS = "/sweep/trials/tref/final_weights.pt"
AVERAGE = {"a": 0.2, "b": 0.3, "c": 0.5}


def _drive(s, stop_after: int):
    """Run the three stages with made-up trial outputs, as the controller would tell them: each
    outcome carries what its trial wrote (artifacts) in the same call as its losses."""
    (ref,) = s.ask(1, [])
    steps = [("reference", ref.mixture, dict(ref.options))]
    if stop_after == 0:
        return steps
    s.tell(Outcome(ref.mixture, {"a": 2.0, "b": 3.0, "c": 4.0}, artifacts=Artifacts(final_weights=REFERENCE_WEIGHTS)))
    (proxy,) = s.ask(1, [])
    steps.append(("proxy", proxy.mixture, dict(proxy.options)))
    if stop_after == 1:
        return steps
    s.tell(Outcome(proxy.mixture, {"a": 2.5, "b": 3.5, "c": 4.5},
                   artifacts=Artifacts(online={"kind": "doremi", "average": AVERAGE, "steps": 9})))
    (final,) = s.ask(1, [])
    steps.append(("final", final.mixture, dict(final.options)))
    return steps


def test_doremi_stages_ask_reference_then_proxy_then_the_averaged_weights():
    s = _strategy(eta=0.5)
    (_, ref, ref_opts), (_, proxy, proxy_opts), (_, final, final_opts) = _drive(s, 2)
    assert ref == proxy == Mixture.uniform(("a", "b", "c"))
    assert ref_opts == {"save_final_weights": True}
    assert proxy_opts["online"] == {"kind": "doremi", "reference": REFERENCE_WEIGHTS, "eta": 0.5,
                                    "smoothing": 1e-3, "resample": False}
    assert final.as_dict() == AVERAGE and final_opts == {}
    assert s.ask(1, [final]) == []  # waits for it
    s.tell(Outcome(final, {"a": 1.0, "b": 1.0, "c": 1.0}))
    assert s.ask(1, []) == []  # done
    rec = s.recommend()
    assert rec.mixture == final and rec.predicted == {"a": 1.0, "b": 1.0, "c": 1.0} and rec.source == "observed"
    assert s.roles == ["reference", "proxy", "ordinary"]


def test_doremi_reads_each_stage_from_the_outcome_not_from_the_order_of_calls():
    """The proposal carries its options and the outcome its artifacts: asking again, asking for
    nothing, or re-telling from another instance changes nothing; a trial's stage is what it wrote."""
    s = _strategy()
    (ref,) = s.ask(1, [])
    assert s.ask(0, []) == [] and s.ask(1, [ref.mixture]) == []  # nothing new while the reference runs
    other = Mixture.from_dict({"a": 0.5, "b": 0.25, "c": 0.25}, ("a", "b", "c"))
    s.tell(Outcome(other, {"a": 2.1, "b": 3.1, "c": 4.1}))  # a run the sweep was seeded with: ordinary
    assert s.ask(1, []) == [ref] and s.roles == ["ordinary"]  # still the reference stage
    s.tell(Outcome(ref.mixture, {"a": 2.0, "b": 3.0, "c": 4.0}, artifacts=Artifacts(final_weights=REFERENCE_WEIGHTS)))
    (proxy,) = s.ask(1, [])
    assert proxy.options["online"]["reference"] == REFERENCE_WEIGHTS and s.roles == ["ordinary", "reference"]


def test_a_restored_doremi_strategy_proposes_exactly_what_the_original_would():
    for stage in range(3):
        original = _strategy()
        _drive(original, stage)
        state = json.loads(json.dumps(original.state_dict()))  # JSON only
        restored = _strategy()
        restored.load_state_dict(state)
        for s in (original, restored):  # the stage's trial finishes the same way for both
            if stage == 2:
                s.tell(Outcome(s.proposal(), {"a": 1.0, "b": 1.1, "c": 0.9}))
        a, b = original.ask(1, []), restored.ask(1, [])
        assert a == b  # mixtures and trial options
        assert original.roles == restored.roles and original.asked == restored.asked
        if stage == 2:
            assert restored.recommend().to_json() == original.recommend().to_json()


def test_a_failed_stage_stops_doremi_and_the_recommendation_says_why():
    s = _strategy()
    _drive(s, 1)
    s.tell_failed(Mixture.uniform(("a", "b", "c")), "diverged", retryable=False)
    assert s.ask(2, []) == []
    rec = s.recommend()
    assert rec.mixture == Mixture.uniform(("a", "b", "c")) and "proxy trial failed" in rec.notes[-1]
    hung = _strategy()
    _drive(hung, 0)
    hung.tell_failed(Mixture.uniform(("a", "b", "c")), "hung: no result after 600 s", retryable=True)
    assert hung.ask(1, []) == [] and "budget.max_attempts" in hung.stopped  # the machine failed: what to do says so


def test_doremi_refuses_trainers_other_than_the_proxy(tmp_path):
    from orchestrator.controller import Controller
    from orchestrator.spec import SpecError, parse_spec

    spec = parse_spec({"domains": {"a": {}, "b": {}}, "trainer": {"kind": "synthetic"}, "strategy": {"kind": "doremi"}})
    with pytest.raises(SpecError, match=r"^`strategy.kind`: doremi .*only the proxy trainer.*trainer: \{kind: proxy\}"):
        Controller(spec, tmp_path)


def test_resume_rebuilds_doremi_from_the_journal_alone():
    """`retell` (what `mixsweep resume` does) tells artifacts and results in journal order."""
    from orchestrator.resume import retell
    from orchestrator.state import SweepState

    original = _strategy()
    steps = _drive(original, 2)
    outputs = [({"final_weights": REFERENCE_WEIGHTS}, {"a": 2.0, "b": 3.0, "c": 4.0}),
               ({"online": {"kind": "doremi", "average": AVERAGE, "steps": 9}}, {"a": 2.5, "b": 3.5, "c": 4.5})]
    events, seq = [{"event": "sweep_started", "seq": 0, "domains": ["a", "b", "c"]}], 1
    for (role, mixture, options), (artifacts, losses) in zip(steps, outputs):
        tid = f"t{role}"
        for e in ({"event": "trial_proposed", "trial": tid, "mixture": mixture.as_dict(), "options": options},
                  {"event": "trial_started", "trial": tid, "attempt": 1},
                  {"event": "trial_completed", "trial": tid, "losses": losses, "artifacts": artifacts}):
            events.append({**e, "seq": seq})
            seq += 1
    state = SweepState()
    for e in events:
        state.apply(e)
    assert state.trials["tproxy"].options == steps[1][2]  # a retried proxy trial runs with its journaled options
    resumed = _strategy()
    retell(resumed, events, state)
    assert resumed.ask(1, []) == [Proposal(steps[2][1])] and resumed.roles == original.roles


def test_doremi_under_data_caps_keeps_its_options_and_recognises_its_measured_run():
    s = _strategy()
    s.set_caps({"a": 0.2, "b": 1.0, "c": 1.0})  # uniform gives `a` more than its data allows
    (_, ref, ref_opts), (_, proxy, proxy_opts), (_, final, final_opts) = _drive(s, 2)
    assert ref.as_dict()["a"] <= 0.2 + 1e-6 and ref == proxy  # projected onto the caps by the base class
    assert ref_opts == {"save_final_weights": True} and "online" in proxy_opts and final_opts == {}
    assert final.as_dict()["a"] == pytest.approx(0.2, abs=1e-6)  # the average (a = 0.2) within the caps
    s.tell(Outcome(final, {"a": 1.0, "b": 1.0, "c": 1.0}))
    assert s.ask(1, []) == [] and s.recommend().mixture == final
