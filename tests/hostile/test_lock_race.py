"""The sweep lock under a race: real processes calling acquire() at the same instant, over and over.

Each round gets a fresh sweep directory, either empty or holding a stale lock (a killed controller's:
an old heartbeat, another host; a dead pid on this host; a torn file). All racers are released by one
barrier; exactly one may win, every other must be refused with the one-line SweepLocked."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import time
from pathlib import Path

import pytest

from orchestrator.lock import LOCK, SweepLock, SweepLocked

ROUNDS = 40
RACERS = 3


def _racer(dirs: list[str], start, done, results) -> None:
    """One process: per round, wait for the others, acquire, report, and hold the lock (alive) until all
    have reported (a winner that exited at once would let a late racer take its dead lock over)."""
    for d in dirs:
        lock = SweepLock(d)
        start.wait()
        try:
            lock.acquire()
            results.put((d, "won", ""))
        except SweepLocked as err:
            results.put((d, "refused", str(err)))
        except Exception as err:  # anything else is a failure the test names
            results.put((d, "error", repr(err)))
        done.wait()


def _stale(kind: str, d: Path) -> None:
    lock = d / LOCK
    if kind == "none":
        return
    if kind == "old_heartbeat":
        lock.write_text(json.dumps({"pid": 1, "host": "head-0", "heartbeat": time.time() - 3600}))
    elif kind == "dead_pid_here":
        lock.write_text(json.dumps({"pid": 2**22 + 4321, "host": socket.gethostname(), "heartbeat": time.time()}))
    elif kind == "torn":
        lock.write_text('{"pid": 12, "ho')
        old = time.time() - 3600
        os.utime(lock, (old, old))


@pytest.mark.parametrize("stale", ["none", "old_heartbeat", "dead_pid_here", "torn"])
def test_exactly_one_of_several_racing_processes_gets_the_lock_every_round(tmp_path, stale):
    dirs = []
    for r in range(ROUNDS):
        d = tmp_path / f"round{r}"
        d.mkdir()
        _stale(stale, d)
        dirs.append(str(d))
    ctx = mp.get_context("spawn")  # a clean interpreter: no threads inherited from the test process
    start, done, results = ctx.Barrier(RACERS), ctx.Barrier(RACERS), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(dirs, start, done, results)) for _ in range(RACERS)]
    for p in procs:
        p.start()
    outcomes: dict[str, list[tuple[str, str]]] = {d: [] for d in dirs}
    for _ in range(ROUNDS * RACERS):
        d, what, msg = results.get(timeout=60)
        outcomes[d].append((what, msg))
    for p in procs:
        p.join(timeout=30)
    winners = [sum(w == "won" for w, _ in o) for o in outcomes.values()]
    errors = [m for o in outcomes.values() for w, m in o if w == "error"]
    assert not errors, errors[:3]
    assert winners == [1] * ROUNDS, f"rounds with other than one winner: {[i for i, n in enumerate(winners) if n != 1]}"
    for o in outcomes.values():
        for what, msg in o:
            assert what == "won" or ("\n" not in msg and "stop that controller first" in msg)
    assert not list(tmp_path.glob(f"*/{LOCK}.t*")), "a temp or takeover file was left behind"


def test_a_lock_taken_over_stops_its_paused_owner_at_the_next_heartbeat(tmp_path):
    paused = SweepLock(tmp_path, stale_s=0.2, beat_s=0.0)
    paused.acquire()
    time.sleep(0.3)  # paused past stale_s (e.g. SIGSTOP, a long GC): its lock looks abandoned
    successor = SweepLock(tmp_path, stale_s=0.2)
    lock = tmp_path / LOCK
    lock.write_text(lock.read_text().replace(str(os.getpid()), "1").replace(socket.gethostname(), "elsewhere"))
    successor.acquire()
    with pytest.raises(SweepLocked, match="taken over"):
        paused.beat()
    assert json.loads(lock.read_text())["token"] == successor.token  # the successor's lock was not overwritten
    paused.release()
    assert lock.exists()


def test_a_just_created_lock_is_never_mistaken_for_a_stale_one(tmp_path):
    # An empty lock file is what a racer saw in the old two-step create; fresh, it is refused, not taken.
    (tmp_path / LOCK).write_bytes(b"")
    with pytest.raises(SweepLocked):
        SweepLock(tmp_path).acquire()
