"""JobFactory: turns a sweep's trials into the runner's Jobs, at the sweep's model preset or a larger one.

What a trial needs besides its mixture comes from the spec once per preset: the data its trainer reads
(token shards or the replay simulator, prepared once and cached), the request every trial at that preset
shares, the resources it asks for and its attempt timeout. The sweep's loop and the scale ladder both
build their jobs here and submit them to the same runner (orchestrator/runner.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from orchestrator.dispatch import Resources, attempt_timeout_s
from orchestrator.mixture import Mixture
from orchestrator.requests import data_request, trainer_backend, trial_key, trial_template
from orchestrator.runner import Job
from orchestrator.spec import SweepSpec
from orchestrator.storage import SweepStore
from orchestrator.trial import trial_id
from workers.trainers import REPLAY_MODEL, TOKEN_SHARDS


@dataclass(frozen=True)
class Prepared:
    """What trials at one preset read, prepared once: the trainer's data, the vocabulary, and the
    training tokens per domain (token shards only)."""

    data: Any
    vocab: int = 0
    domain_tokens: dict[str, int] | None = None
    loss_domains: tuple[str, ...] | None = None  # replay: the runs table's loss columns


def rung_spec(spec: SweepSpec, preset: str | None) -> SweepSpec:
    """The spec trials at `preset` train with: the preset's own sequence length, batch size and learning
    rate (a value tuned for the small proxy is wrong for a larger model); token budget and evaluation
    kept. None or the sweep's own preset: the spec itself."""
    if preset is None or preset == spec.proxy.preset:
        return spec
    proxy = spec.proxy.model_copy(update={"preset": preset, "seq_len": None, "batch_size": None, "learning_rate": None})
    return spec.model_copy(update={"proxy": proxy})


def fidelity_spec(spec: SweepSpec, name: str | None) -> SweepSpec:
    """The spec trials at fidelity `name` train with (None: the spec itself): the fidelity's preset (as a
    ladder rung, `rung_spec`), its token budget, and under the replay trainer the table that answers there."""
    f = spec.fidelity(name)
    if f is None:
        return spec
    out = rung_spec(spec, f.preset)
    if f.tokens_per_trial is not None:
        out = out.model_copy(update={"proxy": out.proxy.model_copy(update={"tokens_per_trial": f.tokens_per_trial})})
    if f.runs is not None:
        out = out.model_copy(update={"trainer": out.trainer.model_copy(update={"runs": f.runs})})
    return out


# The fidelity is the controller's to act on (it picks the spec above); the trainer is not sent it.
FIDELITY = "fidelity"


class JobFactory:
    """Builds Jobs for one sweep (see the module docstring)."""

    def __init__(self, spec: SweepSpec, store: SweepStore, resources: Resources | None = None,
                 log: Callable[[str], None] = print) -> None:
        self.spec, self.store, self.resources, self.log = spec, store, resources, log
        self.key = trial_key(spec)  # what besides mixture and seed makes a trial (part of its id)
        self._prepared: dict[str | None, Prepared] = {}
        self._templates: dict[str | None, Any] = {}

    def trial_id(self, mixture: Mixture, options: dict[str, Any] | None) -> str:
        """A sweep trial's content address. Trainer options the strategy asked for (experts' log-probabilities,
        DoReMi's runs, a replicate) are part of it; without options the id is what it always was."""
        return trial_id(mixture, {**self.key, "options": options} if options else self.key, self.spec.seed)

    def prepare(self, preset: str | None = None, fidelity: str | None = None) -> Prepared:
        """The data trials at `preset` (or at `fidelity` of a multi-fidelity sweep) read (tokenised and
        cached on first use; the replay simulator fitted once per table). Data errors are raised here,
        before anything is started."""
        key = self._key(preset, fidelity)
        if key not in self._prepared:
            self._prepared[key] = self._prepare(self._spec(preset, fidelity))
        return self._prepared[key]

    def _spec(self, preset: str | None, fidelity: str | None) -> SweepSpec:
        return fidelity_spec(self.spec, fidelity) if fidelity is not None else rung_spec(self.spec, preset)

    @staticmethod
    def _key(preset: str | None, fidelity: str | None) -> Any:
        return (FIDELITY, fidelity) if fidelity is not None else preset

    def _prepare(self, spec: SweepSpec) -> Prepared:
        reads = trainer_backend(spec).reads_data
        if reads == REPLAY_MODEL:
            from orchestrator.replay_table import replay_model

            model = replay_model(spec.trainer.runs, spec.domain_names, spec.data.cache_dir, log=self.log)
            return Prepared(model.to_payload(), loss_domains=tuple(model.loss_domains))
        if reads != TOKEN_SHARDS:
            return Prepared(None)
        from workers.data import data_payload, prepare_domains, prepare_eval_domains
        from workers.model import preset_json

        # Trials get only the shards' locations (a few hundred bytes) and memory-map them where they run:
        # a path or URI every node reaches, never the object store.
        seq_len = spec.proxy.seq_len or preset_json(spec.proxy.preset)["seq_len"]
        request = data_request(spec)
        shards, vocab = prepare_domains(request, seq_len, log=self.log)
        eval_shards = prepare_eval_domains(request, log=self.log)
        return Prepared(data_payload(shards, request, eval_shards), vocab, {d: s.train_tokens for d, s in shards.items()})

    def job(self, tid: str, mixture: dict[str, float], options: dict[str, Any] | None = None,
            preset: str | None = None, result_fields: dict[str, Any] | None = None) -> Job:
        """The Job of trial `tid` at `preset` (None: the sweep's own), or at the fidelity its options name."""
        options = dict(options or {})
        fidelity = options.pop(FIDELITY, None)
        key, spec = self._key(preset, fidelity), self._spec(preset, fidelity)
        if key not in self._templates:
            self._templates[key] = trial_template(spec, self.prepare(preset, fidelity).vocab, self.resources.num_cpus)
        # Actors write checkpoints and artifacts where every node can reach them: the sweep's own location.
        where = f"{self.store.location.rstrip('/')}/trials/{tid}" if self.store.remote else \
            str((self.store.local / "trials" / tid).resolve())
        request = self._templates[key].for_trial(tid, mixture, where, options)
        return Job(tid, dict(mixture), request.to_json(), self.prepare(preset, fidelity).data, self.resources,
                   attempt_timeout_s(spec), dict(result_fields or {}))
