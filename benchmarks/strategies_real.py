"""Sample efficiency on real proxy training: regret versus trials for every strategy on CPU.

Each trial trains the `debug` proxy (a 2-layer Llama-style model, byte tokens) from scratch on a
mixture of the four demo domains (books, code, math, legal) and evaluates every domain's held-out
loss, exactly as a sweep's trial does (workers.train.train_proxy), but in this process and without
Ray, so the figures measure the strategies and not the orchestration. A sweep is simulated as in
benchmarks/strategies_regret.py: `concurrency` trials in flight, the oldest finishes, is told, and the
strategy refills. Expert trials of MDE / MixMin write their per-token log-probabilities like in a sweep.

Real runs have no known optimum: regret after t trials is the best objective among the first t
minus the best objective any strategy found in the whole benchmark (same seed, same budget), so it
is a regret against the best mixture seen, in nats/token. Runs at the same (mixture, seed) are
trained once and shared between strategies (training is deterministic on CPU given both).

Usage: .venv/bin/python benchmarks/strategies_real.py [--strategies gp,bayesopt,...] [--seeds 2]
       [--budget 12] [--concurrency 2] [--tokens 65536] [--objective mean|<domain>]
       .venv/bin/python benchmarks/strategies_real.py --smoke   # seconds: 3 generated text domains, 4 trials

--smoke trains on three small generated text domains (random words over distinct alphabets, in a
temporary directory) instead of the demo corpora, so it needs no download.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.objective import Objective  # noqa: E402
from orchestrator.strategies.contract import Artifacts, Outcome  # noqa: E402
from orchestrator.spec import parse_spec  # noqa: E402
from orchestrator.strategies import build_strategy  # noqa: E402

DEFAULT = "gp,bayesopt,regmix,mixing_law,mde,mixmin,token_prior,sobol,uniform"
DOMAINS = ("books", "code", "math", "legal")


class RealTrials:
    """Trains (and caches) one proxy per (mixture, seed) on the prepared domains (spec `domains` entries)."""

    def __init__(self, domains: dict[str, dict], tokens: int, cache_dir: str, scratch: str, val_tokens: int = 16_384,
                 threads: int = 2) -> None:
        """`scratch`: a directory for the experts' per-token log-probabilities (removed by the caller)."""
        import torch

        from orchestrator.requests import data_request
        from workers.data import data_payload, open_domains, prepare_domains
        from workers.train import TrainConfig

        torch.set_num_threads(threads)
        spec = parse_spec({"domains": domains, "data": {"cache_dir": cache_dir},
                           "proxy": {"preset": "debug", "tokens_per_trial": tokens, "eval_every_tokens": tokens,
                                     "val_tokens_per_domain": val_tokens}})
        self.domains = spec.domain_names
        self.config = TrainConfig.from_spec(spec.proxy, 0)
        shards, self.vocab = prepare_domains(data_request(spec), self.config.resolved()[0], log=lambda m: None)
        opened = open_domains(data_payload(shards, data_request(spec)))  # memory-mapped, as a trial reads them
        self.train = {d: t.train for d, t in opened.items()}
        self.val = {d: t.val for d, t in opened.items()}
        self.domain_tokens = {d: s.train_tokens for d, s in shards.items()}
        self.tmp = scratch
        self.cache: dict[tuple[str, int, bool], tuple[dict, dict, str | None]] = {}
        self.trained, self.train_s = 0, 0.0

    def run(self, weights: dict[str, float], key: str, seed: int, logprobs: bool) -> tuple[dict, dict, str | None]:
        from dataclasses import replace

        from workers.train import train_proxy

        ck = (key, seed, logprobs)
        if ck not in self.cache:
            t0 = time.perf_counter()
            out = f"{self.tmp}/{abs(hash(ck))}.npz" if logprobs else None
            r = train_proxy(replace(self.config, seed=seed), weights, self.train, self.val, self.vocab, token_logprobs_to=out)
            self.cache[ck] = (r.losses, r.loss_stderr, out)
            self.trained += 1
            self.train_s += time.perf_counter() - t0
        return self.cache[ck]


def run_sweep(kind: str, trials: RealTrials, objective: Objective, seed: int, budget: int, concurrency: int) -> list[float]:
    """Objective of each finished trial, in the order finished."""
    strategy = build_strategy(kind, {}, trials.domains, objective, seed)
    strategy.domain_tokens = trials.domain_tokens  # as the controller sets it once the data is prepared
    pending, values = [], []  # proposals in flight (mixture + the trial options a sweep's trial is run with)
    while len(values) < budget:
        pending += strategy.ask(min(concurrency - len(pending), budget - len(values) - len(pending)), [p.mixture for p in pending])
        if not pending:
            break
        proposal = pending.pop(0)
        mixture, wants = proposal.mixture, bool(proposal.options.get("token_logprobs"))
        losses, stderr, logprobs = trials.run(mixture.as_dict(), mixture.key(), seed, wants)
        strategy.tell(Outcome(mixture, losses, stderr, Artifacts(token_logprobs=logprobs or None)))
        values.append(objective(losses))
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategies", default=DEFAULT)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budget", type=int, default=12)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=65_536, help="training tokens per trial")
    ap.add_argument("--objective", default="mean", help="mean, or a domain name (its loss alone)")
    ap.add_argument("--cache-dir", default="~/.cache/mixsweep")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (default 2)")
    ap.add_argument("--smoke", action="store_true",
                    help="seconds: 3 generated text domains, gp/mde/sobol, 1 seed, 4 trials of 4,096 tokens, 1 thread")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.strategies, args.seeds, args.budget, args.tokens, args.cache_dir = "gp,mde,sobol", 1, 4, 4096, f"{tmp}/cache"
            trials = RealTrials(generated_domains(Path(tmp) / "text"), args.tokens, args.cache_dir, tmp, val_tokens=2048,
                                threads=1)
        else:
            trials = RealTrials({d: {"demo": d} for d in DOMAINS}, args.tokens, args.cache_dir, tmp, threads=args.threads)
        benchmark(trials, args, t_start)


def generated_domains(root: Path) -> dict[str, dict]:
    """Three small text domains (about 40 KB each) of random words over distinct alphabets: spec entries."""
    rng = np.random.default_rng(0)
    out = {}
    for name, alphabet in (("vowels", "aeiouy"), ("digits", "0123456789+="), ("consonants", "bcdfghklmnprst")):
        letters = np.array(list(alphabet))
        docs = [" ".join("".join(rng.choice(letters, size=n)) for n in rng.integers(2, 8, size=80)) + "."
                for _ in range(100)]
        (root / name).mkdir(parents=True)
        (root / name / "part0.txt").write_text("\n".join(docs))
        out[name] = {"path": str(root / name)}
    return out


def benchmark(trials: RealTrials, args: argparse.Namespace, t_start: float) -> None:
    """Every strategy's sweeps on `trials`, then the regret table."""
    domains = trials.domains
    objective = (Objective({d: 1 / len(domains) for d in domains}, "mean") if args.objective == "mean"
                 else Objective({args.objective: 1.0}, f"loss on {args.objective}"))
    kinds = args.strategies.split(",")
    values: dict[str, list[list[float]]] = {k: [] for k in kinds}
    for seed in range(args.seeds):
        for kind in kinds:
            t0 = time.perf_counter()
            values[kind].append(run_sweep(kind, trials, objective, seed, args.budget, args.concurrency))
            print(f"  seed {seed} {kind}: {time.perf_counter() - t0:.0f} s ({trials.trained} runs trained so far)",
                  file=sys.stderr, flush=True)
    checkpoints = sorted({c for c in (4, 8, args.budget) if c <= args.budget})
    # Regret against the best objective any strategy reached with the same seed.
    best = [min(min(v[s]) for v in values.values() if v[s]) for s in range(args.seeds)]
    head = ["strategy"] + [f"regret@{c}" for c in checkpoints] + [f"ratio to sobol @{checkpoints[-1]}"]
    print(f"\nreal debug-proxy sweeps on CPU: {len(domains)} domains ({', '.join(domains)}), objective {objective.description}, "
          f"{args.tokens:,} tokens/trial, {args.seeds} seeds, concurrency {args.concurrency}")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    regret = {}
    for kind, per_seed in values.items():
        r = np.array([[min(v[:c]) - best[s] if len(v) >= 1 else np.nan for c in checkpoints]
                      for s, v in enumerate(per_seed)])
        regret[kind] = r
    sobol = regret["sobol"][:, -1].mean() if "sobol" in regret else np.nan
    for kind, r in regret.items():
        cells = [f"{r[:, i].mean():.4f}" for i in range(len(checkpoints))]
        print(f"| {kind} | " + " | ".join(cells) + f" | {r[:, -1].mean() / sobol:.2f} |")
    print(f"\nbest objective per seed: {', '.join(f'{b:.4f}' for b in best)}; {trials.trained} proxies trained, "
          f"{trials.train_s / max(trials.trained, 1):.1f} s each; total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
