"""From the spec to what the workers receive: the typed requests of workers/protocol.py and
workers/data.py, and what the trainer registry (workers/trainers.py) says about the spec's trainer.

The worker side never sees the spec: this module is the one place that reads the spec's sections
into plain requests.
"""

from __future__ import annotations

from typing import Any

from orchestrator.spec import SweepSpec
from workers.data import DataRequest, DomainSource, TokenizerSource
from workers.protocol import TrialRequest
from workers.trainers import TOKEN_SHARDS, Backend, backend_for


def trainer_backend(spec: SweepSpec) -> Backend:
    """The registered backend of the spec's trainer kind."""
    return backend_for(spec.trainer.kind)


def data_request(spec: SweepSpec) -> DataRequest:
    """What preparing the spec's data needs (workers.data.prepare_domains / prepare_eval_domains)."""

    def source(domain) -> DomainSource:
        return DomainSource(**domain.model_dump(mode="json"))

    return DataRequest(domains={name: source(d) for name, d in spec.domains.items()},
                       eval_domains={name: source(d) for name, d in spec.eval_domains.items()},
                       tokenizer=TokenizerSource(**spec.tokenizer.model_dump(mode="json")),
                       cache_dir=spec.data.cache_dir, shard_dir=spec.data.shard_dir,
                       ray_data_min_bytes=spec.data.ray_data_min_bytes,
                       val_tokens=spec.proxy.val_tokens_per_domain, seed=spec.seed)


def proxy_settings(spec: SweepSpec) -> dict[str, Any]:
    """The spec's `proxy` section as JSON with its token budget resolved into `tokens_per_trial`
    (`tokens_per_param` folded in): a spec that names its tokens keeps the trial ids it had."""
    proxy = spec.proxy.model_dump(mode="json")
    proxy.pop("tokens_per_param")
    proxy["tokens_per_trial"] = spec.proxy.training_tokens()
    return proxy


def trial_key(spec: SweepSpec) -> dict[str, Any]:
    """What, besides the mixture and seed, determines a trial's outcome (hashed into its id): the
    trainer backend's `id_fields`."""
    return trainer_backend(spec).id_fields(spec.trainer.model_dump(mode="json"), proxy_settings(spec),
                                           spec.tokenizer.model_dump(mode="json"))


def trial_template(spec: SweepSpec, vocab_size: int, cpus: float) -> TrialRequest:
    """The request every trial of `spec` shares (trial id, mixture, directory and options are filled in
    per trial with `TrialRequest.for_trial`). A scale-ladder rung passes its own spec (its preset)."""
    train_config = None
    if trainer_backend(spec).reads_data == TOKEN_SHARDS:  # it trains the proxy model on them: its settings
        from workers.train import TrainConfig

        train_config = TrainConfig.from_spec(spec.proxy, spec.seed).__dict__
    return TrialRequest(trial="", mixture={}, seed=spec.seed, trainer=spec.trainer.model_dump(mode="json"),
                        vocab_size=vocab_size, cpus=cpus, train_config=train_config, preset=spec.proxy.preset)
