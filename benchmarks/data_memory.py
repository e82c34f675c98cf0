"""Data-pipeline memory benchmark: does a trial's memory grow with the corpus?

Builds two corpora on disk, N and 10N byte tokens (two domains each; text made of a fixed word list
in shuffled sentences, each file a few MB), prepares them with the real pipeline
(`workers.data.prepare_domains`: Arrow token shards in a temp cache), then runs a trial's data path in
a fresh subprocess per corpus and per way of reading it:

  mmap      the new path: `open_domains(data_payload(...))` memory-maps the shards; MixtureSampler draws
            the whole token budget; the validation set is cut into evaluation windows (evaluate.windows)
  in-memory the baseline, the old way: every domain's tokens loaded into one in-memory array
            (np.concatenate of the shards, what `np.load` + `ray.put` gave a trial), then the same work

Each subprocess reports its peak resident set (VmHWM), and the peaks of its anonymous (private) and
file-backed resident memory sampled every 25 steps (RssAnon, RssFile; file-backed includes the
shared libraries, about 100 MiB). Pages of a memory-mapped shard count in RssFile once touched (and
the kernel maps up to 64 KiB of already-cached pages around each fault), but they are page cache:
shared by every trial on the node, never copied, and dropped under memory pressure. Anonymous memory
is what a trial holds and what grows with the corpus when tokens are loaded; the ratios 10N/N are
printed for both paths.

Usage: .venv/bin/python benchmarks/data_memory.py [--tokens 40000000] [--budget 4000000] [--keep DIR]
       .venv/bin/python benchmarks/data_memory.py --smoke   # seconds: N = 400k tokens, budget 40k
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("the of and to in is was for on that with as by at from his her which or be an were are this "
         "mixture domain token shard proxy trial weight data model loss sweep ray arrow memory page cache").split()


def write_corpus(root: Path, tokens: int, seed: int) -> dict[str, Path]:
    """Two domains of about tokens/2 bytes each, as 4 MB text files (byte tokenizer: 1 byte = 1 token)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for name in ("a", "b"):
        d = root / name
        d.mkdir(parents=True)
        # One 4 MB block of random sentences, varied per file by a rotated word order: cheap to write.
        words = np.array(WORDS)
        block = " ".join(words[rng.integers(0, len(words), size=800_000)])[: 4 << 20]
        left, i = tokens // 2, 0
        while left > 0:
            text = block[i % 997:] + block[: i % 997]
            text = text[:left]
            (d / f"part{i:04d}.txt").write_text(text)
            left -= len(text)
            i += 1
        out[name] = d
    return out


def trial(payload_path: str, mode: str, budget: int, seq_len: int, batch: int) -> dict:
    """A trial's data path in this (fresh) process; returns its memory figures."""
    import numpy as np

    from workers.data import MixtureSampler, open_domains
    from workers.evaluate import windows

    def status(key: str) -> int:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    t0 = time.perf_counter()
    data = json.loads(Path(payload_path).read_text())
    opened = open_domains(data)
    if mode == "mmap":
        train = {d: t.train for d, t in opened.items()}
        val = {d: t.val for d, t in opened.items()}
    else:  # the old way: the whole stream in process memory
        train = {d: np.concatenate(t.train) for d, t in opened.items()}
        val = {d: np.array(t.val) for d, t in opened.items()}
    anon, file_pages = status("RssAnon"), status("RssFile")
    sampler = MixtureSampler(train, {"a": 0.7, "b": 0.3}, seq_len, batch, budget, seed=0)
    checksum = 0
    for step in range(sampler.n_steps):
        x, _ = sampler.batch(step)
        checksum += int(x[0, 0])
        if step % 25 == 0:
            anon, file_pages = max(anon, status("RssAnon")), max(file_pages, status("RssFile"))
            for v in val.values():  # an evaluation: every validation window
                checksum += int(windows(v, seq_len)[:, 0].sum() % 7)
    anon, file_pages = max(anon, status("RssAnon")), max(file_pages, status("RssFile"))
    return {"mode": mode, "peak_rss": status("VmHWM"), "peak_anon": anon, "peak_file": file_pages, "steps": sampler.n_steps,
            "train_tokens": int(sum(sum(len(s) for s in ([t] if isinstance(t, np.ndarray) else t)) for t in train.values())),
            "wall_s": round(time.perf_counter() - t0, 2), "checksum": checksum}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=40_000_000, help="N: tokens of the small corpus (the large one has 10N)")
    ap.add_argument("--budget", type=int, default=4_000_000, help="training tokens a trial samples")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--keep", type=Path, default=None, help="build corpora and cache here (default: a temp dir, removed)")
    ap.add_argument("--trial", nargs=2, metavar=("PAYLOAD", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="seconds: N = 400,000 tokens, budget 40,000, 4 x 64-token rows")
    args = ap.parse_args()
    if args.smoke:
        args.tokens, args.budget, args.seq_len, args.batch = 400_000, 40_000, 64, 4
    if args.trial:
        print(json.dumps(trial(args.trial[0], args.trial[1], args.budget, args.seq_len, args.batch)))
        return

    from orchestrator.spec import parse_spec
    from orchestrator.requests import data_request
    from workers.data import data_payload, prepare_domains

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        results = {}
        for label, n in (("N", args.tokens), ("10N", 10 * args.tokens)):
            t0 = time.perf_counter()
            domains = write_corpus(root / f"corpus-{label}", n, seed=1)
            t1 = time.perf_counter()
            spec = parse_spec({"domains": {d: {"path": str(p)} for d, p in domains.items()},
                               "proxy": {"val_tokens_per_domain": min(65_536, args.tokens // 8), "tokens_per_trial": args.budget},
                               "data": {"cache_dir": str(root / "cache")}})
            shards, _ = prepare_domains(data_request(spec), args.seq_len, log=lambda m: None)
            t2 = time.perf_counter()
            payload = root / f"payload-{label}.json"
            payload.write_text(json.dumps(data_payload(shards, data_request(spec))))
            print(f"{label}: {n:,} tokens, corpus written in {t1 - t0:.1f} s, tokenised into "
                  f"{sum(len(s.train_files) for s in shards.values())} train shards in {t2 - t1:.1f} s "
                  f"(payload {payload.stat().st_size} bytes)", flush=True)
            for mode in ("mmap", "in-memory"):
                out = subprocess.run([sys.executable, __file__, "--budget", str(args.budget), "--seq-len", str(args.seq_len),
                                      "--batch", str(args.batch), "--trial", str(payload), mode],
                                     capture_output=True, text=True, check=True, cwd=ROOT)
                results[(label, mode)] = r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"  {mode:9s}: peak RSS {r['peak_rss'] / 2**20:8.1f} MiB, peak anonymous {r['peak_anon'] / 2**20:8.1f} MiB, "
                      f"peak file-backed {r['peak_file'] / 2**20:8.1f} MiB "
                      f"({r['steps']} steps over {r['train_tokens']:,} training tokens, {r['wall_s']} s)", flush=True)
        print()
        for mode in ("mmap", "in-memory"):
            small, big = results[("N", mode)], results[("10N", mode)]
            print(f"{mode:9s} 10N/N: peak RSS x{big['peak_rss'] / small['peak_rss']:.2f}, "
                  f"peak anonymous x{big['peak_anon'] / small['peak_anon']:.2f}")
        m, b = results[("10N", "mmap")], results[("10N", "in-memory")]
        print(f"at 10N, mmap vs in-memory: peak RSS x{m['peak_rss'] / b['peak_rss']:.2f}, "
              f"peak anonymous x{m['peak_anon'] / b['peak_anon']:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
