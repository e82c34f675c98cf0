"""Real training of the debug proxy on CPU: the claims here are about training, so nothing is faked."""

import logging
import math

import numpy as np
import pytest
import torch

from orchestrator.spec import ProxySpec
from workers.data import ByteTokenizer
from workers.model import PRESETS, build_model
from workers.throughput import flops_per_token, mfu, peak_bf16_flops
from workers.train import TrainConfig, autocast_dtype, lr_at, pick_device, train_proxy

BUDGET = 49_152  # 48 steps of 8 x 128 tokens


@pytest.fixture(scope="module")
def tokens(text_domains):
    """Each domain's files as byte tokens joined by end-of-document, the last 4,096 held out. Built here
    rather than by the data pipeline, so that these tests are about the trainer alone."""
    tok = ByteTokenizer()
    train, val = {}, {}
    for name, root in text_domains.items():
        docs = tok.encode([f.read_text() for f in sorted(root.iterdir())])
        stream = np.concatenate([np.append(ids, tok.eos_id) for ids in docs])
        train[name], val[name] = stream[:-4096], stream[-4096:]
    return train, val, tok.vocab_size


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


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One thread, as a trial actor with `resources.cpus: 1` runs: on a shared 2-core machine two
    OpenMP threads spin against other processes and train 10x slower (docs/benchmarks.md, Trainer)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_token_budget_is_tokens_per_param_times_non_embedding_params_unless_given():
    debug = PRESETS["debug"].non_embedding_params()
    assert ProxySpec().training_tokens() == 20 * debug == 2_129_920
    assert ProxySpec(tokens_per_param=2.5).training_tokens() == round(2.5 * debug)
    assert ProxySpec(preset="1m").training_tokens() == 20 * PRESETS["1m"].non_embedding_params()
    assert ProxySpec(tokens_per_trial=262_144, tokens_per_param=99).training_tokens() == 262_144
    assert TrainConfig.from_spec(ProxySpec(tokens_per_param=3), seed=0).tokens == 3 * debug


def test_mfu_follows_palm_formula_on_a_hand_computed_case():
    # debug, byte vocabulary, T=128: N = 106,496 + 257*64 = 122,944; 12*L*H*Q*T = 12*2*4*16*128 = 196,608
    assert flops_per_token(PRESETS["debug"], 257, 128) == 6 * 122_944 + 196_608 == 934_272
    assert mfu(1e6, 934_272, 989e12) == pytest.approx(934_272e6 / 989e12)
    assert mfu(1e6, 934_272, None) is None and peak_bf16_flops(torch.device("cpu")) is None


def test_device_and_precision_selection():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert autocast_dtype(torch.device("cuda")) == torch.bfloat16
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("cpu"), "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(torch.device("cpu"), "fp8")


def _short(tokens, events=None, **cfg):
    train, val, vocab = tokens
    config = TrainConfig(preset="debug", tokens=16_384, eval_every_tokens=8_192, seed=1, **cfg)
    return train_proxy(config, {"vowels": 0.5, "digits": 0.5}, train, val, vocab,
                       on_eval=(events.append if events is not None else lambda p: None), device="cpu")


def test_progress_streams_standard_errors_and_speed(tokens):
    events = []
    result = _short(tokens, events)
    assert [e.tokens for e in events] == [8_192, 16_384]
    for e in events:
        assert set(e.loss_stderr) == {"vowels", "digits"} and all(0 < s < 0.5 for s in e.loss_stderr.values())
        assert e.tokens_per_s > 0
    assert events[-1].loss_stderr == result.loss_stderr
    speed = result.info["throughput"]
    assert speed["tokens_per_s"] > 0 and speed["mfu"] is None  # no peak for a CPU
    assert speed["flops_per_token"] == flops_per_token(PRESETS["debug"], 257, 128)


def test_bf16_autocast_on_cpu_trains_close_to_fp32(tokens):
    fp32, bf16 = _short(tokens, precision="fp32"), _short(tokens, precision="bf16")
    assert bf16.info["autocast"] == "bfloat16" and fp32.info["autocast"] is None
    for d in fp32.losses:
        assert math.isfinite(bf16.losses[d]) and abs(bf16.losses[d] - fp32.losses[d]) < 0.1


def test_compile_that_fails_falls_back_to_eager_with_one_warning(tokens, monkeypatch, caplog):
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/c++",))  # a real failure: no C++ compiler
    with caplog.at_level(logging.WARNING, logger="workers.train"):
        result = _short(tokens, compile=True)
    warned = [r.getMessage() for r in caplog.records if r.name == "workers.train"]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert warned[0].startswith("proxy.compile: torch.compile failed") and warned[0].endswith("training eagerly")
    assert result.info["compiled"] is False and set(result.losses) == {"vowels", "digits"}
    assert all(math.isfinite(v) for v in result.losses.values())
    assert result.losses == pytest.approx(_short(tokens).losses, abs=1e-5)
