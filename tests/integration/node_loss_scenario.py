"""Scenario for test_faults: a head and two worker nodes declaring GPUs; remove the node running a
trial while it trains; the sweep must retry that trial on the other node and finish.

Usage: python node_loss_scenario.py OUT_DIR   (writes OUT_DIR/scenario.json and OUT_DIR/sweep/)
"""

import json
import logging
import sys
import threading
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from orchestrator.controller import Controller
from orchestrator.spec import parse_spec

BUDGET = 4


def main(out: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    workers = [cluster.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
    spec = parse_spec({
        "name": "node-loss", "domains": {d: {} for d in ("a", "b", "c")},
        "trainer": {"kind": "synthetic", "duration_s": 6.0, "progress_events": 12, "noise": 0.0},
        "strategy": {"kind": "sobol"}, "budget": {"trials": BUDGET, "concurrency": 2, "max_attempts": 3},
        "resources": {"gpus": 1, "cpus": 1},
    })
    done = {}

    def on_event(record, state):
        # Remove the node of a trial that started after one completed, at its first progress (mid-training).
        if record["event"] == "trial_progress" and state.completed and "victim_trial" not in done:
            t = state.trials[record["trial"]]
            if t.attempts == 1 and t.placement and t.progress_events == 1:
                node = next(n for n in workers if n.node_id == t.placement["node_id"])
                done.update(victim_trial=t.id, removed_node=node.node_id)
                threading.Thread(target=cluster.remove_node, args=(node, False), daemon=True).start()

    Controller(spec, out / "sweep", on_event=on_event, log=print).run()
    (out / "scenario.json").write_text(json.dumps({**done, "budget": BUDGET}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
