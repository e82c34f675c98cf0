"""DoReMi proxy-trial overhead: training tokens/s with the online mixer vs a plain trial (the baseline).

A DoReMi proxy step also runs the reference model forward on the batch (no backward) and updates the
weights on the host, so its cost should be about one extra forward, i.e. well under 1.5x a plain step.
Both trials run here, in the same process, on the same two synthetic domains (a period-2 pattern and a
noisy permutation chain, as in tests/unit/test_doremi.py), the same preset and the same number of steps;
the reference model is a plain trial trained first. Each trial is timed `--repeats` times and the
fastest run is kept (the machine may be shared). Prints tokens/s of both and the ratio.

Usage: .venv/bin/python benchmarks/doremi_overhead.py [--preset debug] [--steps 60] [--repeats 3] [--device cpu]
                                                       [--threads N]
       .venv/bin/python benchmarks/doremi_overhead.py --smoke   # seconds: debug, 3 steps, 1 repeat
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.online import build_online  # noqa: E402
from workers.presets import PRESETS  # noqa: E402
from workers.train import TrainConfig, train_proxy  # noqa: E402

VOCAB = 32


def domains(n: int, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    perm, noise, rand = rng.permutation(VOCAB), rng.random(n) < 0.3, rng.integers(0, VOCAB, n)
    hard = np.zeros(n, dtype=np.int64)
    for t in range(1, n):
        hard[t] = rand[t] if noise[t] else perm[hard[t - 1]]
    full = {"easy": np.tile(np.arange(2), n // 2).astype(np.int64), "hard": hard}
    return {d: v[:-4096] for d, v in full.items()}, {d: v[-4096:] for d, v in full.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="debug")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--smoke", action="store_true", help="seconds: 3 steps, 1 repeat, 1 thread (same preset and device)")
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.repeats, args.threads = 3, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    p = PRESETS[args.preset]
    train, val = domains(max(200_000, 4 * p.seq_len * p.batch_size))
    config = TrainConfig(preset=args.preset, tokens=args.steps * p.seq_len * p.batch_size, eval_every_tokens=10**12)
    uniform = {"easy": 0.5, "hard": 0.5}
    with tempfile.TemporaryDirectory() as tmp:
        where = str(Path(tmp) / "final_weights.pt")
        train_proxy(config, uniform, train, val, VOCAB, device=args.device, final_weights_to=where)
        plain, doremi = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            train_proxy(config, uniform, train, val, VOCAB, device=args.device)
            plain.append(time.perf_counter() - t0)
            mixer = build_online({"kind": "doremi", "reference": where}, list(train), args.preset, VOCAB, p.seq_len)
            t0 = time.perf_counter()
            r = train_proxy(config, uniform, train, val, VOCAB, device=args.device, online=mixer)
            doremi.append(time.perf_counter() - t0)
    tokens = args.steps * p.seq_len * p.batch_size
    print(f"preset {args.preset}, {args.steps} steps of {p.batch_size}x{p.seq_len} tokens on {args.device}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    print(f"plain trial (baseline): {tokens / min(plain):,.0f} tokens/s ({min(plain):.2f} s)")
    print(f"DoReMi proxy trial:     {tokens / min(doremi):,.0f} tokens/s ({min(doremi):.2f} s)")
    print(f"ratio DoReMi / plain wall time: {min(doremi) / min(plain):.2f}x; averaged weights {r.info['online']['average']}")


if __name__ == "__main__":
    main()
