"""Proxy trainer speed on this machine's CPU, against a plain PyTorch loop in the same process.

For each preset (`debug`, `25m`) it prints training tokens/s of

- `trainer`:  `workers.train.train_proxy` as a sweep runs it (packed windows from `MixtureSampler`,
              SDPA attention, fused AdamW, no per-step host sync); its own meter, evaluation excluded;
- `baseline`: the plain loop the goal names, a straightforward loop over the same `transformers` Llama
              model shape and batch shape with **no packing and no fusion**: one document per row
              (the first seq_len + 1 tokens of a document drawn from its domain by the same domain
              schedule; shorter documents padded, the padding masked out of attention and loss, as
              `tokenizer(..., truncation=True, padding="max_length")` gives), eager attention,
              per-parameter AdamW (`foreach=False`), rows built with `torch.tensor` each step,
              `loss.item()` logged every step; its tokens/s counts the real (unpadded) tokens;
- `baseline, packed`: the same unfused loop on the trainer's packed windows, which isolates what
              the fused kernels alone give;

and their ratio (goal: >= 1.5x against `baseline`). Text: the four demo domains (books, code, math,
legal; byte tokens, documents of at most 8 KiB), equal weights. Runs are interleaved (baseline, trainer, baseline, ...) and the
median of `--repeats` is reported, because the machine is shared and its load changes by the minute.
Both run with the same torch thread count (`--threads`, default 1, which is what a trial actor with
`resources.cpus: 1` uses); `--default-threads` adds one baseline row at torch's default thread count to
show what the thread setting alone does on a loaded machine.

Then the data side: `MixtureSampler.batch` tokens/s at each preset's own batch shape against the
trainer's consumption measured above (goal: >= 50x).

The 25m preset runs a few steps of batch 2 x 1024 tokens (its own batch is 32 x 1024, minutes per step
on two CPU cores); both sides use that same shape.

Usage: .venv/bin/python benchmarks/trainer.py [--repeats 3] [--presets debug,25m] [--threads 1]
                                               [--default-threads] [--compile]
       .venv/bin/python benchmarks/trainer.py --smoke   # seconds: debug, 2 steps, generated documents

--smoke runs every row once at `debug` for 2 steps, on generated documents (random words, a third of
them shorter than a row) instead of the demo corpora, so it needs no download.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.data import MixtureSampler  # noqa: E402
from workers.presets import PRESETS  # noqa: E402
from workers.train import TrainConfig, lr_at, train_proxy  # noqa: E402

VOCAB = 257  # the byte tokenizer's
# preset -> (batch size, sequence length, steps) for one timed run.
CASES = {"debug": (8, 128, 32), "25m": (2, 1024, 3)}
MIXTURE = {"books": 0.25, "code": 0.25, "math": 0.25, "legal": 0.25}


def demo_documents(cache_dir: str = "~/.cache/mixsweep") -> dict[str, list[np.ndarray]]:
    """Each demo domain's documents as byte-token arrays (built from the registries at first use)."""
    import json

    from workers.corpus import ensure_demo_domain
    from workers.data import ByteTokenizer

    out = {}
    for d in MIXTURE:
        path = ensure_demo_domain(d, Path(cache_dir).expanduser() / "corpus")
        texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
        out[d] = ByteTokenizer().encode(texts)
    return out


def generated_documents(seed: int = 0) -> dict[str, list[np.ndarray]]:
    """--smoke: 60 documents per domain of random words over distinct alphabets, 40 to 600 bytes long."""
    from workers.data import ByteTokenizer

    rng = np.random.default_rng(seed)
    out = {}
    for d, alphabet in zip(MIXTURE, ("etaoinshr ", "{}();=abcx ", "0123456789+-*/= ", "abcdefghijklmnop ")):
        letters = np.array(list(alphabet))
        out[d] = ByteTokenizer().encode(["".join(rng.choice(letters, size=n)) for n in rng.integers(40, 600, size=60)])
    return out


def packed_streams(docs: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """What the trainer samples from: each domain's documents joined by the end-of-document token."""
    eos = np.array([VOCAB - 1], dtype=np.uint16)
    return {d: np.concatenate([x for doc in ds for x in (doc, eos)]) for d, ds in docs.items()}


def run_trainer(preset: str, train: dict, val: dict, compile_: bool = False) -> float:
    """Training tokens/s as the trainer itself measures them (evaluation excluded)."""
    batch, seq, steps = CASES[preset]
    cfg = TrainConfig(preset=preset, tokens=steps * batch * seq, eval_every_tokens=1 << 40, seq_len=seq,
                      batch_size=batch, compile=compile_)
    result = train_proxy(cfg, MIXTURE, train, val, VOCAB, device="cpu")
    return result.info["throughput"]["tokens_per_s"]


def plain_model(preset: str, seq: int):
    """The same Llama shape as the trainer's, built the way a first script does (eager attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    p = PRESETS[preset]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=p.d_model, intermediate_size=p.d_ff, num_hidden_layers=p.n_layers,
        num_attention_heads=p.n_heads, num_key_value_heads=p.n_heads, max_position_embeddings=seq,
        tie_word_embeddings=True, attn_implementation="eager"))
    opt = torch.optim.AdamW(model.parameters(), lr=p.learning_rate, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)
    return model, opt


def run_unpacked_baseline(preset: str, train: dict[str, np.ndarray], docs: dict[str, list[list[int]]]) -> float:
    """The plain loop without packing: one (truncated or padded) document per row; real tokens/s."""
    batch, seq, steps = CASES[preset]
    p = PRESETS[preset]
    model, opt = plain_model(preset, seq)
    schedule = MixtureSampler(train, MIXTURE, seq, batch, steps * batch * seq, 0).schedule
    names = list(docs)
    real = 0
    t0 = time.perf_counter()
    for step in range(steps):
        rng = random.Random(step)
        rows, masks = [], []
        for i in schedule[step * batch : (step + 1) * batch]:
            doc = rng.choice(docs[names[i]])[: seq + 1]
            rows.append(doc + [0] * (seq + 1 - len(doc)))
            masks.append([1] * len(doc) + [0] * (seq + 1 - len(doc)))
        x, mask = torch.tensor(rows), torch.tensor(masks)
        labels = x[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        real += int((labels != -100).sum())
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, p.learning_rate, 0.05)
        logits = model(input_ids=x[:, :-1], attention_mask=mask[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=False)
        opt.step()
        loss.item()
    return real / (time.perf_counter() - t0)


def run_baseline(preset: str, train: dict[str, np.ndarray], train_lists: dict[str, list[int]]) -> float:
    """The unfused loop on packed windows: what one writes first with `transformers` and torch.optim."""
    batch, seq, steps = CASES[preset]
    p = PRESETS[preset]
    model, opt = plain_model(preset, seq)
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
    ap.add_argument("--smoke", action="store_true", help="seconds: debug only, 2 steps, 1 repeat, generated documents")
    args = ap.parse_args()
    sampler_s = 2.0
    if args.smoke:
        args.presets, args.repeats, sampler_s = "debug", 1, 0.2
        CASES["debug"] = (8, 128, 2)
    default_threads = torch.get_num_threads()
    docs = generated_documents() if args.smoke else demo_documents()
    train = packed_streams(docs)
    val = {d: s[-(2 * 1025 + 1):] for d, s in train.items()}
    lists = {d: s.tolist() for d, s in train.items()}
    doc_lists = {d: [doc.tolist() for doc in ds] for d, ds in docs.items()}
    print(f"torch {torch.__version__}, {default_threads} default threads, measuring with {args.threads}; "
          f"median of {args.repeats} interleaved repeats (machine shared with other jobs)")
    consumed = {}
    for preset in args.presets.split(","):
        batch, seq, steps = CASES[preset]
        rows: dict[str, list[float]] = {"baseline": [], "baseline, packed": [], "trainer": []}
        for _ in range(args.repeats):
            torch.set_num_threads(args.threads)
            rows["baseline"].append(run_unpacked_baseline(preset, train, doc_lists))
            rows["baseline, packed"].append(run_baseline(preset, train, lists))
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
        s = sampler_tokens_per_s(train, preset, sampler_s)
        print(f"  {preset:<6} sampler {s:>14,.0f} tokens/s   trainer {rate:>10,.0f} tokens/s   x{s / rate:,.0f}")


if __name__ == "__main__":
    main()
