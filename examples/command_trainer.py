#!/usr/bin/env python3
"""A stand-in for a team's own training program, speaking mixsweep's command-trainer protocol.

Run by `trainer: {kind: command}` (see examples/command.yaml and workers/command.py). Standard library
only, so any `python3` on a Ray node runs it. It reads the mixture, "trains" for `--steps` steps and
prints, one JSON object per line on stdout:

    {"step": 1, "tokens": 65536, "losses": {"books": 3.9, ...}}       after each step
    {"final": true, "losses": {...}, "loss_stderr": {...}, ...}       once, at the end

Other lines (the plain log lines below) are kept in the trial's command.log. The losses follow a
per-domain power law in the tokens a domain "sees": its own share plus a little transfer from the
others, L_d = E_d + A_d * (1 + t_d / 10^4)^-0.3, with t_d = tokens * (w_d + 0.15 (1 - w_d)).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import zlib

TRANSFER = 0.15  # fraction of other domains' tokens that also teach domain d


def domain_constants(name: str) -> tuple[float, float]:
    """(E_d, A_d) in nats/token, fixed per domain name so every run agrees (crc32, not hash())."""
    h = zlib.crc32(name.encode())
    return 1.5 + (h % 100) / 100.0, 4.0 + (h // 100 % 100) / 50.0


def losses_at(mixture: dict[str, float], tokens: int) -> dict[str, float]:
    """Per-domain loss (nats/token) after `tokens` training tokens of this mixture."""
    out = {}
    for d, w in mixture.items():
        e, a = domain_constants(d)
        seen = tokens * (w + TRANSFER * (1.0 - w))
        out[d] = e + a * (1.0 + seen / 1e4) ** -0.3
    return out


def read_mixture(path: str | None) -> dict[str, float]:
    """The mixture from --mixture, else $MIXSWEEP_MIXTURE_PATH, else $MIXSWEEP_MIXTURE (JSON)."""
    path = path or os.environ.get("MIXSWEEP_MIXTURE_PATH")
    text = open(path, encoding="utf-8").read() if path else os.environ["MIXSWEEP_MIXTURE"]
    return {str(k): float(v) for k, v in json.loads(text).items()}


def emit(obj: dict) -> None:
    # flush: mixsweep streams each line as it arrives; a buffered line would arrive at exit.
    print(json.dumps(obj), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mixture", help="JSON file {domain: weight} (default: $MIXSWEEP_MIXTURE_PATH)")
    p.add_argument("--seed", type=int, default=int(os.environ.get("MIXSWEEP_SEED", "0")))
    p.add_argument("--steps", type=int, default=4, help="progress lines to print")
    p.add_argument("--tokens-per-step", type=int, default=65_536)
    p.add_argument("--sleep-s", type=float, default=0.25, help="wall time per step, seconds")
    p.add_argument("--noise", type=float, default=0.005, help="std of the final loss noise, nats/token")
    args = p.parse_args(argv)
    mixture = read_mixture(args.mixture)
    rng = random.Random(f"{args.seed}:{json.dumps(mixture, sort_keys=True)}")
    print(f"training on {len(mixture)} domains, seed {args.seed}, trial {os.environ.get('MIXSWEEP_TRIAL', '?')}",
          flush=True)
    for step in range(1, args.steps + 1):
        time.sleep(args.sleep_s)
        emit({"step": step, "tokens": step * args.tokens_per_step, "losses": losses_at(mixture, step * args.tokens_per_step)})
    tokens = args.steps * args.tokens_per_step
    final = {d: v + rng.gauss(0.0, args.noise) for d, v in losses_at(mixture, tokens).items()}
    emit({"final": True, "losses": final, "loss_stderr": {d: args.noise for d in mixture},
          "tokens": tokens, "steps": args.steps, "info": {"program": "examples/command_trainer.py"}})
    print("done", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
