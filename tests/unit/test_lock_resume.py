import json
import os
import socket
import time

import pytest

from orchestrator.lock import SweepLock, SweepLocked
from orchestrator.resume import SpecChanged, check_resumable


def test_a_second_controller_is_refused_while_the_first_lives(tmp_path):
    first = SweepLock(tmp_path)
    first.acquire()
    with pytest.raises(SweepLocked, match=f"pid {os.getpid()}"):
        SweepLock(tmp_path).acquire()
    first.release()
    SweepLock(tmp_path).acquire()  # free again


def test_a_killed_controllers_lock_does_not_block_resume(tmp_path):
    # Same host, process gone: taken over at once.
    (tmp_path / "controller.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname(), "heartbeat": time.time()}))
    lock = SweepLock(tmp_path)
    lock.acquire()
    assert lock.took_over["pid"] == 2**22 + 12345
    # Another host: taken over once the heartbeat is stale, refused before.
    (tmp_path / "controller.lock").write_text(json.dumps({"pid": 1, "host": "head-0", "heartbeat": time.time()}))
    with pytest.raises(SweepLocked, match="head-0"):
        SweepLock(tmp_path, stale_s=30).acquire()
    (tmp_path / "controller.lock").write_text(json.dumps({"pid": 1, "host": "head-0", "heartbeat": time.time() - 60}))
    SweepLock(tmp_path, stale_s=30).acquire()


BASE = {"name": "s", "seed": 0, "budget": {"trials": 8, "concurrency": 2}, "domains": {"a": {}, "b": {}}}


def _with(**changes):
    spec = json.loads(json.dumps(BASE))
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = spec
        for p in path:
            node = node[p]
        node[last] = value
    return spec


def test_safe_spec_changes_are_accepted_and_named():
    changes = check_resumable(BASE, _with(budget__trials=12, budget__concurrency=4))
    assert changes == {"budget.trials": (8, 12), "budget.concurrency": (2, 4)}


@pytest.mark.parametrize("edit, field", [
    (dict(seed=1), "seed"),
    (dict(budget__trials=4), "budget.trials"),
    (dict(domains={"b": {}, "a": {}}), "domains (order)"),
    (dict(domains={"a": {}, "c": {}}), "domains.c"),
])
def test_unsafe_spec_changes_are_refused_naming_the_field(edit, field):
    with pytest.raises(SpecChanged) as err:
        check_resumable(BASE, _with(**edit))
    assert field in str(err.value) and "\n" not in str(err.value)


def test_a_frozen_spec_from_before_a_new_field_resumes_with_its_default():
    from orchestrator.spec import parse_spec

    old = {"name": "s", "trainer": {"kind": "synthetic"}, "domains": {"books": {"demo": "books"}, "code": {"demo": "code"}}}
    new = parse_spec(old).model_dump(mode="json")  # today's schema: budget.replicates, fidelities, target filled in
    assert "replicates" in new["budget"] and "replicates" not in old.get("budget", {})
    assert check_resumable(old, new) == {}
    with pytest.raises(SpecChanged, match="budget.replicates.seeds"):
        check_resumable(old, {**new, "budget": {**new["budget"], "replicates": {"seeds": 2, "top_k": None}}})
