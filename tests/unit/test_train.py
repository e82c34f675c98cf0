"""Real training of the debug proxy on CPU: the claims here are about training, so nothing is faked."""

import math

import pytest

from orchestrator.spec import parse_spec
from workers.data import prepare_domains
from workers.model import PRESETS, build_model
from workers.train import TrainConfig, lr_at, train_proxy

BUDGET = 49_152  # 48 steps of 8 x 128 tokens


@pytest.fixture(scope="module")
def tokens(text_domains, tmp_path_factory):
    spec = parse_spec({"domains": {n: {"path": str(p)} for n, p in text_domains.items()},
                       "proxy": {"val_tokens_per_domain": 4096},
                       "data": {"cache_dir": str(tmp_path_factory.mktemp("cache"))}})
    toks, vocab = prepare_domains(spec, seq_len=128, log=lambda m: None)
    return {d: t.train for d, t in toks.items()}, {d: t.val for d, t in toks.items()}, vocab


def _train(tokens, mixture, seed=0, events=None):
    train, val, vocab = tokens
    cfg = TrainConfig(preset="debug", tokens=BUDGET, eval_every_tokens=16_384, seed=seed)
    return train_proxy(cfg, mixture, train, val, vocab, on_eval=(events.append if events is not None else lambda p: None),
                       device="cpu")


def test_training_streams_progress_and_lowers_loss(tokens):
    events = []
    result = _train(tokens, {"vowels": 0.5, "digits": 0.5}, events=events)
    assert [e.tokens for e in events] == [16_384, 32_768, 49_152]
    assert result.tokens == BUDGET and result.steps == 48
    first, last = events[0].losses, result.losses
    for d in ("vowels", "digits"):
        assert math.isfinite(last[d]) and last[d] < first[d] < math.log(257)
        assert 0 < result.loss_stderr[d] < 0.5


def test_the_mixture_decides_what_the_model_learns(tokens):
    on_vowels = _train(tokens, {"vowels": 0.9, "digits": 0.1}).losses
    on_digits = _train(tokens, {"vowels": 0.1, "digits": 0.9}).losses
    assert on_vowels["vowels"] < on_digits["vowels"] - 0.05
    assert on_digits["digits"] < on_vowels["digits"] - 0.05


def test_same_seed_same_losses(tokens):
    a = _train(tokens, {"vowels": 0.3, "digits": 0.7}, seed=5).losses
    b = _train(tokens, {"vowels": 0.3, "digits": 0.7}, seed=5).losses
    assert a == b


def test_presets_have_the_sizes_they_are_named_for():
    expected = {"1m": 1e6, "25m": 25e6, "60m": 60e6, "150m": 150e6}
    for name, n in expected.items():
        assert abs(PRESETS[name].non_embedding_params() - n) / n < 0.1, name
    model = build_model(PRESETS["debug"], vocab_size=257, seq_len=128)
    counted = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "norm" not in n)
    assert counted == PRESETS["debug"].non_embedding_params()


def test_learning_rate_warms_up_then_decays():
    lrs = [lr_at(s, 100, 1.0, 0.05) for s in range(100)]
    assert lrs[0] < lrs[4] == pytest.approx(1.0) and lrs[-1] < 0.15 and min(lrs[5:]) >= 0.1


class _Interrupt(Exception):
    pass


def test_a_trial_resumed_from_its_checkpoint_ends_with_the_same_losses(tokens, tmp_path):
    train, val, vocab = tokens
    cfg = TrainConfig(preset="debug", tokens=BUDGET, eval_every_tokens=16_384, seed=3, checkpoint_every_tokens=16_384)
    mixture = {"vowels": 0.6, "digits": 0.4}
    whole = train_proxy(cfg, mixture, train, val, vocab, device="cpu")

    def die_at_second_eval(p):
        if p.step == 32:  # after the step-16 checkpoint, before the step-32 one
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_proxy(cfg, mixture, train, val, vocab, on_eval=die_at_second_eval, device="cpu", checkpoint_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").exists()
    resumed = train_proxy(cfg, mixture, train, val, vocab, device="cpu", checkpoint_dir=tmp_path)
    assert resumed.info["resumed_from_step"] == 16
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-6)
