"""TrialActor: runs one trial on a Ray worker and streams what it reports.

`run` is a Ray streaming generator: it yields Progress dicts as the trainer evaluates, then one
result dict. The trainer runs in a thread and hands reports through a queue, so trainers stay plain
functions with a callback and need not know they are inside a generator.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Iterator

from orchestrator.trial import TrialResult

_DONE = object()


def run_trainer(payload: dict[str, Any], data: dict[str, Any] | None, report) -> TrialResult:
    """Dispatch on the trainer kind; `report(Progress)` is called from the trainer's thread."""
    trainer = payload["trainer"]
    mixture, seed = payload["mixture"], payload["seed"] + replicate_offset(payload)
    if trainer["kind"] == "synthetic":
        from workers.backends import run_synthetic

        return run_synthetic(mixture, trainer, seed, report)
    if trainer["kind"] == "python":
        from workers.backends import run_python

        return run_python(mixture, trainer["callable"], seed, report)
    if trainer["kind"] == "replay":
        from workers.replay import ReplayModel, run_replay

        return run_replay(mixture, trainer, ReplayModel.from_payload(data), payload["trial"], seed, report)
    if trainer["kind"] == "command":
        from workers.command import run_command

        return run_command(mixture, trainer, seed, report, trial_dir=payload.get("trial_dir"), trial=payload["trial"])
    from workers.train import TrainConfig, train_proxy

    import torch

    torch.set_num_threads(max(1, int(payload.get("cpus", 1))))
    train_config = payload["train_config"]
    config = TrainConfig(**{**train_config, "seed": train_config["seed"] + replicate_offset(payload)})
    from workers.data import open_domains

    # The payload names the shards; they are memory-mapped here (copied to this node once for a URI).
    opened = open_domains(data)
    train = {d: t.train for d, t in opened.items()}
    val = {d: t.val for d, t in opened.items()}
    # Held-out sets (spec `eval_domains`) are evaluated like domains but never sampled for training.
    val.update({d: t.val for d, t in open_domains(data, "eval_domains").items()})
    # Per-trial options the strategy asked for (Strategy.trial_options; part of the trial id). Files go to
    # the trial's directory, a path or URI that every node reaches.
    options = payload.get("options") or {}
    logprobs_to = f"{payload['trial_dir']}/token_logprobs.npz" if options.get("token_logprobs") else None
    weights_to = f"{payload['trial_dir']}/final_weights.pt" if options.get("save_final_weights") else None
    online = None
    if "online" in options:
        from workers.online import build_online

        online = build_online(options["online"], list(train), config.preset, int(payload["vocab_size"]), config.resolved()[0])
    return train_proxy(config, mixture, train, val, int(payload["vocab_size"]), report, device=payload.get("device"),
                       checkpoint_dir=payload.get("trial_dir"), token_logprobs_to=logprobs_to, online=online,
                       final_weights_to=weights_to)


# Seed offset per replicate: far from the small seeds specs use, so that replicate r of a sweep with
# seed s is not the first run of a sweep with seed s + r.
REPLICATE_SEED_STRIDE = 1_000_003


def replicate_offset(payload: dict[str, Any]) -> int:
    """Added to the trainer's seed for a replicate the strategy asked for on purpose (trial option
    `replicate`: r = 1, 2, ...; 0 otherwise), so that a replicate is a second sample (other
    initialisation, batches and noise) rather than a copy of the first run."""
    return REPLICATE_SEED_STRIDE * int((payload.get("options") or {}).get("replicate", 0))


class TrialActor:
    """One per trial; named `trial-<id>` so the Ray dashboard shows which trial holds which GPU."""

    def run(self, payload: dict[str, Any], data: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        q: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                q.put(run_trainer(payload, data, lambda p: q.put(p)))
            except BaseException as err:  # handed to the generator, which re-raises it on the driver
                q.put(err)
            finally:
                q.put(_DONE)

        threading.Thread(target=work, name=f"trial-{payload['trial']}", daemon=True).start()
        yield {"kind": "placed", **self.node()}
        while (item := q.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item.to_json()

    def node(self) -> dict[str, Any]:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "gpus": ray.get_gpu_ids()}
