"""How trials become Ray actors: resources, names, namespaces, timeouts, and which failures are deaths."""

from __future__ import annotations

from dataclasses import dataclass, field

import ray

from orchestrator.spec import ResourcesSpec
from workers.actor import TrialActor

_REMOTE_ACTOR = None


def remote_actor_class():
    global _REMOTE_ACTOR
    if _REMOTE_ACTOR is None:
        # max_restarts=0: a trial that dies is the controller's decision (fail or retry), not Ray's.
        _REMOTE_ACTOR = ray.remote(max_restarts=0)(TrialActor)
    return _REMOTE_ACTOR


@dataclass(frozen=True)
class Resources:
    """What each trial asks Ray for, after checking what the cluster has (a pool key: the note aside)."""

    num_cpus: float
    num_gpus: float
    note: str | None = field(default=None, compare=False)  # set when the spec's request had to be changed


def placement(resources: ResourcesSpec, cpu_fallback: bool = True) -> Resources:
    """Honour `resources.gpus`; on a Ray without GPUs, fall back to CPU (and say so) when allowed.

    The CLI allows the fallback only on the embedded local Ray: a cluster whose GPU group autoscales
    from zero has no GPU yet, and must be asked for one rather than silently trained on CPU.
    """
    gpus_in_cluster = ray.cluster_resources().get("GPU", 0.0)
    if resources.gpus > 0 and gpus_in_cluster == 0 and cpu_fallback:
        return Resources(resources.cpus, 0.0, f"the cluster has no GPU: trials run on CPU instead of {resources.gpus:g} GPU each")
    return Resources(resources.cpus, resources.gpus)


def sweep_namespace(sweep_location: str) -> str:
    """The Ray namespace of one sweep's trial actors. Trial ids are content hashes of (mixture, trainer,
    seed), so two sweeps on one cluster (two users, or `mixsweep bench`'s parallel sweeps) can hold a
    trial of the same id at once: their actor names must not share a namespace."""
    from workers.protocol import config_hash

    return f"mixsweep-{config_hash(sweep_location)}"


def start_actor(name: str, resources: Resources, namespace: str | None = None):
    """Start trainer actor `name` in `namespace` (see sweep_namespace) with `resources`."""
    return remote_actor_class().options(name=name, namespace=namespace, num_cpus=resources.num_cpus,
                                        num_gpus=resources.num_gpus).remote()


def stop(actor) -> None:
    """Free the trial's resources at once (its result is already journaled)."""
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already dead: nothing to free
        pass


def attempt_timeout_s(spec) -> float | None:
    """Wall time after which an attempt counts as hung: `budget.trial_timeout_s`, else what the trainer's
    backend derives from what the trial must do (workers/trainers.py: the proxy's token budget at a floor
    of 500 tokens/s plus 10 minutes, 10x a simulated trainer's duration plus a minute; None for a python
    callable or a command, whose cost is unknown)."""
    if spec.budget.trial_timeout_s is not None:
        return spec.budget.trial_timeout_s
    from workers.trainers import backend_for

    return backend_for(spec.trainer.kind).timeout(spec.trainer.model_dump(mode="json"), spec.proxy.training_tokens())


def died(err: BaseException) -> bool:
    """True when the trial's process or node went away (retry it), not when its code raised."""
    kinds = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
             ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError)
    return isinstance(err, kinds)
