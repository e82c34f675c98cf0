"""Shared fixtures: one local Ray for the whole session (never ray.init per test), text fixtures."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).parent


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # PYTHONPATH lets trial actors import the test trainers in tests/integration/trainers.py.
    path = os.pathsep.join(filter(None, [str(TESTS / "integration"), os.environ.get("PYTHONPATH")]))
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


def make_text(rng: np.random.Generator, alphabet: str, n_docs: int, words_per_doc: int) -> list[str]:
    """Documents of random 'words' over an alphabet: distinct domains get distinct statistics."""
    letters = np.array(list(alphabet))
    docs = []
    for _ in range(n_docs):
        lengths = rng.integers(2, 8, size=words_per_doc)
        words = ["".join(rng.choice(letters, size=n)) for n in lengths]
        docs.append(" ".join(words) + ".")
    return docs


@pytest.fixture(scope="session")
def text_domains(tmp_path_factory) -> dict[str, Path]:
    """Two small, statistically distinct text domains as files on disk (about 60 KB each)."""
    root = tmp_path_factory.mktemp("domains")
    rng = np.random.default_rng(0)
    out = {}
    for name, alphabet in (("vowels", "aeiouy"), ("digits", "0123456789+=")):
        d = root / name
        d.mkdir()
        for i in range(6):
            (d / f"part{i}.txt").write_text("\n".join(make_text(rng, alphabet, 20, 80)))
        out[name] = d
    return out


def run_cli(args: list[str], env: dict | None = None, timeout: float = 240):
    """Run `mixsweep ARGS` in its own process group, and kill the whole group on a timeout.

    subprocess.run(timeout=...) kills only the child and then waits for its pipes, which an embedded
    Ray's processes keep open: a hung sweep would hang the test run instead of failing it.
    """
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"mixsweep {' '.join(args)} did not finish in {timeout} s:\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# A tiny runs table for the replay trainer and `mixsweep bench`: 3 training domains, 2 loss domains.
REPLAY_NOISE = 0.03


def replay_truth(W: np.ndarray) -> np.ndarray:
    """Two loss domains that each gain from their own data, with a trade-off between them."""
    return np.stack([3.0 - 0.8 * np.sqrt(W[:, 0]) + 0.2 * W[:, 2], 2.5 - 0.6 * np.sqrt(W[:, 1]) + 0.1 * W[:, 0]], axis=1)


def make_runs_table(path, n: int = 60, seed: int = 0):
    """Write the table (weights of a, b, c; losses x, y with noise REPLAY_NOISE) to `path`; returns (W, L)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(3), n)
    L = replay_truth(W) + rng.normal(0.0, REPLAY_NOISE, (n, 2))
    frame = pd.DataFrame({**{f"weight.{d}": W[:, i] for i, d in enumerate("abc")},
                          "loss.x": L[:, 0], "loss.y": L[:, 1]})
    frame.to_csv(path, index=False)
    return W, L


@pytest.fixture
def confined(tmp_path, monkeypatch):
    """Run from an empty tmp cwd with a tmp HOME (and no debug); afterwards the cwd and the repo are
    unchanged (the hostile-input suite: nothing a hostile input does may write outside its tmp dirs)."""
    import os

    root = TESTS.parent
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MIXSWEEP_DEBUG", raising=False)
    before = set(os.listdir(root))
    yield
    assert not os.listdir(cwd), "wrote into the working directory"
    assert set(os.listdir(root)) == before, "wrote into the repository"
