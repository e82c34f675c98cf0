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
