"""TrialActor: runs trials on a Ray worker, one at a time, and streams what each reports.

`run` is a Ray streaming generator: it yields the attempt's Placement, then Progress dicts as the
trainer evaluates, then one result dict (workers/protocol.py). The trainer runs in a thread and hands
reports through a queue, so trainers stay plain functions with a callback and need not know they are
inside a generator. Which trainer runs is the request's trainer kind (workers/trainers.py). The
controller's TrialRunner keeps an actor between trials (`resources.reuse_actors`) and replaces it after
any failure. The actor keeps no state of its own between trials.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Iterator, Mapping

from workers.protocol import Placement, TrialRequest, TrialResult
from workers.trainers import backend_for

_DONE = object()


def run_trainer(request: TrialRequest, data: Any, report) -> TrialResult:
    """Run the request with its trainer's backend; `report(Progress)` is called from the trainer's thread."""
    return backend_for(request.kind).run(request, data, report)


class TrialActor:
    """A trainer process: `run` streams one trial's attempt; pooled actors run many trials in turn
    (named `trainer-<n>`, each trial's task `trial-<id>`, so the dashboard shows which trial holds which GPU)."""

    def run(self, request: TrialRequest | Mapping[str, Any], data: Any = None) -> Iterator[dict[str, Any]]:
        """Stream one attempt of `request` (a TrialRequest or its `to_json()`); `data` is what its
        trainer reads (workers.trainers.Backend.reads_data)."""
        if not isinstance(request, TrialRequest):
            request = TrialRequest.from_json(request)
        q: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                q.put(run_trainer(request, data, lambda p: q.put(p)))
            except BaseException as err:  # handed to the generator, which re-raises it on the driver
                q.put(err)
            finally:
                q.put(_DONE)

        threading.Thread(target=work, name=f"trial-{request.trial}", daemon=True).start()
        yield self.node().to_json()
        while (item := q.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item.to_json()

    def node(self) -> Placement:
        import ray

        return Placement(node_id=ray.get_runtime_context().get_node_id(), pid=os.getpid(), gpus=ray.get_gpu_ids())
