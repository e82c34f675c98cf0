"""A sweep directory on shared storage (a pyarrow filesystem URI) survives its head: a crashed sweep
is resumed from the URI alone, on a 'new machine' with an empty local mirror."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import run_cli
from orchestrator.storage import SweepStore, read_bytes, write_bytes

def test_push_sends_only_what_changed_and_pull_restores_it(tmp_path):
    uri = f"file://{tmp_path / 'bucket' / 'sweep'}"
    store = SweepStore(uri, cache_dir=tmp_path / "cache-a", push_every_s=0)
    (store.local / "trials" / "t1").mkdir(parents=True)
    (store.local / "trials" / "t1" / "result.json").write_text('{"losses": {}}')
    (store.local / "journal.jsonl").write_text('{"seq": 0}\n')
    assert store.push() == 2 and store.push() == 0
    with open(store.local / "journal.jsonl", "a") as fh:
        fh.write('{"seq": 1}\n')
    assert store.push() == 1
    other = SweepStore(uri, cache_dir=tmp_path / "cache-b")  # another machine
    assert other.local != store.local and other.exists("journal.jsonl")
    local = other.pull()
    assert (local / "journal.jsonl").read_text().count("\n") == 2
    assert (local / "trials" / "t1" / "result.json").read_text() == '{"losses": {}}'


def test_whole_file_writes_through_uris(tmp_path):
    uri = f"file://{tmp_path}/x/checkpoint.pt"
    assert read_bytes(uri) is None
    write_bytes(uri, b"abc")
    assert read_bytes(uri) == b"abc" and read_bytes(str(tmp_path / "x" / "checkpoint.pt")) == b"abc"


@pytest.mark.slow
def test_a_sweep_on_a_uri_resumes_on_another_head(ray_session, tmp_path):
    spec = {"name": "remote", "domains": {d: {} for d in ("a", "b")},
            "trainer": {"kind": "synthetic", "duration_s": 0.6, "progress_events": 2, "noise": 0.0},
            "strategy": {"kind": "sobol"}, "budget": {"trials": 5, "concurrency": 2},
            "data": {"cache_dir": str(tmp_path / "head-1-cache")}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    uri = f"file://{tmp_path / 'bucket' / 'remote'}"
    env = {"MIXSWEEP_FAULT_KILL_AFTER": "trial_completed:2", "PATH": "/usr/bin:/bin"}
    crashed = run_cli(["run", str(tmp_path / "spec.yaml"), "--dir", uri, "--quiet"], env=env)
    assert crashed.returncode == -9
    bucket = tmp_path / "bucket" / "remote"
    kept = {p.parent.name: p.read_bytes() for p in bucket.glob("trials/*/result.json")}
    assert len(kept) == 2, "both finished trials reached the URI before the crash"
    shutil.rmtree(tmp_path / "head-1-cache")  # the first head is gone, with its local mirror
    # The other head: the test session's Ray, joined (the crashed run's embedded Ray died with it).
    out = run_cli(["resume", uri, "--quiet", "--address", ray_session.get_runtime_context().gcs_address])
    assert out.returncode == 0, out.stderr[-3000:]
    for tid, blob in kept.items():
        assert (bucket / "trials" / tid / "result.json").read_bytes() == blob
    status = json.loads(run_cli(["status", uri, "--json"]).stdout)
    assert status["completed"] == 5 and status["finished"] and len({t["id"] for t in status["trials"]}) == 5
    assert not (bucket / "controller.lock").exists()
