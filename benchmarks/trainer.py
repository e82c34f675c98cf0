"""Proxy trainer speed on this machine's CPU, against a plain PyTorch loop in the same process.

For each preset (`debug`, `25m`) it prints training tokens/s of

- `trainer`:  `workers.train.train_proxy` as a sweep runs it (packed windows from `MixtureSampler`,
              SDPA attention, fused AdamW, no per-step host sync); its own meter, evaluation excluded;
- `baseline`: a straightforward loop over the same `transformers` Llama model shape and the same batch
              shapes and domain schedule: eager attention, per-parameter AdamW (`foreach=False`), windows
              sliced from Python lists and built with `torch.tensor` each step, `loss.item()` logged
              every step;

and their ratio (goal: >= 1.5x). Runs are interleaved (baseline, trainer, baseline, ...) and the
median of `--repeats` is reported, because the machine is shared and its load changes by the minute.
Both run with the same torch thread count (`--threads`, default 1, which is what a trial actor with
`resources.cpus: 1` uses); `--default-threads` adds one baseline row at torch's default thread count to
show what the thread setting alone does on a loaded machine.

Then the data side: `MixtureSampler.batch` tokens/s at each preset's own batch shape against the
trainer's consumption measured above (goal: >= 50x).

The 25m preset runs a few steps of batch 1 x 1024 tokens (its own batch is 32 x 1024, minutes per step
on two CPU cores); both sides use that same shape.

Usage: .venv/bin/python benchmarks/trainer.py [--repeats 3] [--presets debug,25m] [--threads 1]
                                               [--default-threads] [--compile]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from workers.data import MixtureSampler
from workers.presets import PRESETS
from workers.train import TrainConfig, lr_at, train_proxy

VOCAB = 257  # the byte tokenizer's
# preset -> (batch size, sequence length, steps) for one timed run.
CASES = {"debug": (8, 128, 32), "25m": (1, 1024, 3)}
MIXTURE = {"a": 0.7, "b": 0.3}


def token_streams(n: int = 400_000, seed: int = 0) -> dict[str, np.ndarray]:
    """Two domains of uniform random byte tokens: speed does not depend on what the tokens say."""
    rng = np.random.default_rng(seed)
    return {d: rng.integers(0, VOCAB, size=n).astype(np.uint16) for d in MIXTURE}


def run_trainer(preset: str, train: dict, val: dict, compile_: bool = False) -> float:
    """Training tokens/s as the trainer itself measures them (evaluation excluded)."""
    batch, seq, steps = CASES[preset]
    cfg = TrainConfig(preset=preset, tokens=steps * batch * seq, eval_every_tokens=1 << 40, seq_len=seq,
                      batch_size=batch, compile=compile_)
    result = train_proxy(cfg, MIXTURE, train, val, VOCAB, device="cpu")
    return result.info["throughput"]["tokens_per_s"]


def run_baseline(preset: str, train: dict[str, np.ndarray], train_lists: dict[str, list[int]]) -> float:
    """The plain loop: what one writes first with `transformers` and torch.optim, nothing tuned."""
    from transformers import LlamaConfig, LlamaForCausalLM

    batch, seq, steps = CASES[preset]
    p = PRESETS[preset]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=p.d_model, intermediate_size=p.d_ff, num_hidden_layers=p.n_layers,
        num_attention_heads=p.n_heads, num_key_value_heads=p.n_heads, max_position_embeddings=seq,
        tie_word_embeddings=True, attn_implementation="eager"))
    opt = torch.optim.AdamW(model.parameters(), lr=p.learning_rate, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)
    # Same domain schedule as the trainer's sampler; window starts from Python's random.
    schedule = MixtureSampler(train, MIXTURE, seq, batch, steps * batch * seq, 0).schedule
    names = list(train_lists)
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        rng = random.Random(step)
        rows = []
        for i in schedule[step * batch : (step + 1) * batch]:
            stream = train_lists[names[i]]
            start = rng.randrange(len(stream) - seq - 1)
            rows.append(stream[start : start + seq + 1])
        x = torch.tensor(rows)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, p.learning_rate, 0.05)
        logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=False)
        opt.step()
        losses.append(loss.item())
    return steps * batch * seq / (time.perf_counter() - t0)


def sampler_tokens_per_s(train: dict, preset: str, seconds: float = 2.0) -> float:
    """`MixtureSampler.batch` alone, at the preset's own batch shape."""
    p = PRESETS[preset]
    sampler = MixtureSampler(train, MIXTURE, p.seq_len, p.batch_size, 10_000 * p.batch_size * p.seq_len, 0)
    t0, step = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds and step < sampler.n_steps:
        sampler.batch(step)
        step += 1
    return step * p.batch_size * p.seq_len / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--presets", default="debug,25m")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    ap.add_argument("--default-threads", action="store_true", help="add a baseline row at torch's default thread count")
    ap.add_argument("--compile", action="store_true", help="add a trainer row with proxy.compile on (compile time excluded)")
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    train = token_streams()
    val = {d: s[: 2 * 1025 + 1] for d, s in token_streams(4096, seed=1).items()}
    lists = {d: s.tolist() for d, s in train.items()}
    print(f"torch {torch.__version__}, {default_threads} default threads, measuring with {args.threads}; "
          f"median of {args.repeats} interleaved repeats (machine shared with other jobs)")
    consumed = {}
    for preset in args.presets.split(","):
        batch, seq, steps = CASES[preset]
        rows: dict[str, list[float]] = {"baseline": [], "trainer": []}
        for _ in range(args.repeats):
            torch.set_num_threads(args.threads)
            rows["baseline"].append(run_baseline(preset, train, lists))
            rows["trainer"].append(run_trainer(preset, train, val))
            if args.default_threads:
                torch.set_num_threads(default_threads)
                rows.setdefault(f"baseline, {default_threads} threads", []).append(run_baseline(preset, train, lists))
                torch.set_num_threads(args.threads)
            if args.compile:
                # The first call compiles (about a minute here); count only the repeats after it.
                rows.setdefault("trainer, compiled", []).append(run_trainer(preset, train, val, compile_=True))
        base = statistics.median(rows["baseline"])
        print(f"\n{preset}: {steps} steps of {batch} x {seq} tokens")
        for name, values in rows.items():
            med = statistics.median(values)
            print(f"  {name:<22} {med:>10,.0f} tokens/s  ({' '.join(f'{v:,.0f}' for v in values)})  x{med / base:.2f} vs baseline")
        consumed[preset] = statistics.median(rows["trainer"])
    print("\nsampler (MixtureSampler.batch at the preset's own batch shape) vs the trainer's consumption above")
    for preset, rate in consumed.items():
        s = sampler_tokens_per_s(train, preset)
        print(f"  {preset:<6} sampler {s:>14,.0f} tokens/s   trainer {rate:>10,.0f} tokens/s   x{s / rate:,.0f}")


if __name__ == "__main__":
    main()
