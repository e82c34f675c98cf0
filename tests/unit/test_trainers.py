"""The worker protocol and the trainer registry: requests round-trip as JSON, every trainer kind a spec
can name has a backend, and what the orchestrator derives from a backend (trial ids, timeouts) is what
it was before the registry existed."""

import json

import pytest

from orchestrator.dispatch import attempt_timeout_s
from orchestrator.mixture import Mixture
from orchestrator.requests import data_request, trial_key, trial_template
from orchestrator.spec import parse_spec
from orchestrator.trial import trial_id
from workers.actor import TrialActor, run_trainer
from workers.protocol import (REPLICATE_SEED_STRIDE, Placement, Progress, TrialRequest, TrialResult, config_hash,
                              message_from_json)
from workers.trainers import REPLAY_MODEL, TOKEN_SHARDS, TRAINERS, UnknownTrainer, backend_for

TWO = {"a": {"demo": "books"}, "b": {"demo": "code"}}


@pytest.fixture(scope="module")
def runs_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    path.write_text("weight.a,weight.b,loss.a,loss.b\n0.5,0.5,2.0,2.1\n0.2,0.8,2.2,2.0\n")
    return str(path)


def _specs(runs: str) -> dict:
    return {
        "proxy": {"domains": TWO, "proxy": {"tokens_per_param": 3, "checkpoint_every_tokens": 1000, "compile": True}},
        "proxy_tokens": {"domains": TWO, "proxy": {"tokens_per_trial": 100000, "preset": "1m"}},
        "synthetic": {"domains": {"a": {}, "b": {}}, "trainer": {"kind": "synthetic", "noise": 0.1}},
        "python": {"domains": {"a": {}, "b": {}}, "trainer": {"kind": "python", "callable": "m:f"}},
        "command": {"domains": {"a": {}, "b": {}}, "trainer": {"kind": "command", "command": "echo {seed}"}},
        "replay": {"domains": {"a": {}, "b": {}}, "trainer": {"kind": "replay", "runs": runs}},
    }


def test_trial_ids_are_those_of_sweeps_run_before_the_registry(runs_table):
    # Computed with the controller's own `_trial_config` before the trainer registry existed: a resumed
    # sweep must find its trials under the same ids (the replay id hashes the table's content, not its path).
    before = {"proxy": "tbc87acccbfcf", "proxy_tokens": "t2f03c63dccf4", "synthetic": "t5d76f6e92607",
              "python": "t0987528fbf30", "command": "tcb8aad4850b6", "replay": "t1e3efea046e6"}
    m = Mixture.from_dict({"a": 0.3, "b": 0.7})
    now = {name: trial_id(m, trial_key(parse_spec(raw)), 3) for name, raw in _specs(runs_table).items()}
    assert now == before


def test_attempt_timeouts_come_from_the_backend_unless_the_spec_sets_one(runs_table):
    specs = {k: parse_spec(v) for k, v in _specs(runs_table).items()}
    assert attempt_timeout_s(specs["proxy"]) == specs["proxy"].proxy.training_tokens() / 500 + 600
    assert attempt_timeout_s(specs["synthetic"]) == 10 * 0.5 + 60
    assert attempt_timeout_s(specs["replay"]) == 60.0
    assert attempt_timeout_s(specs["python"]) is None and attempt_timeout_s(specs["command"]) is None
    fixed = parse_spec({**_specs(runs_table)["python"], "budget": {"trial_timeout_s": 7}})
    assert attempt_timeout_s(fixed) == 7


def test_every_trainer_kind_of_the_spec_has_a_backend():
    from typing import get_args

    from orchestrator.spec import TrainerSpec

    kinds = {get_args(m.model_fields["kind"].annotation)[0] for m in get_args(get_args(TrainerSpec)[0])}
    assert kinds == set(TRAINERS)
    assert backend_for("proxy").reads_data == TOKEN_SHARDS and backend_for("replay").reads_data == REPLAY_MODEL
    assert [k for k, b in TRAINERS.items() if "token_logprobs" in b.options] == ["proxy"]  # experts (MDE, MixMin)
    with pytest.raises(UnknownTrainer, match="'nope' is unknown; use one of proxy, synthetic"):
        backend_for("nope")


def test_a_trial_request_is_plain_json_and_comes_back_the_same():
    spec = parse_spec({"domains": TWO, "seed": 4})
    template = trial_template(spec, vocab_size=257, cpus=2.0)
    request = template.for_trial("t1", {"a": 0.25, "b": 0.75}, "/shared/t1", {"replicate": 2})
    wire = json.loads(json.dumps(request.to_json()))
    assert TrialRequest.from_json(wire) == request
    assert request.train_config["tokens"] == spec.proxy.training_tokens() and request.preset == "debug"
    assert request.trainer_seed == 4 + 2 * REPLICATE_SEED_STRIDE
    with pytest.raises(TypeError, match="unknown field"):
        TrialRequest.from_json({**wire, "spec": {}})
    synthetic = trial_template(parse_spec({"domains": {"a": {}, "b": {}}, "trainer": {"kind": "synthetic"}}), 0, 1.0)
    assert synthetic.train_config is None  # only a trainer that reads token shards trains the proxy model


def test_messages_round_trip():
    for message in (Progress(step=1, tokens=10, losses={"a": 2.0}, weights={"a": 1.0}),
                    TrialResult(losses={"a": 2.0}, info={"x": 1}), Placement(node_id="n", pid=3, gpus=[0])):
        assert message_from_json(json.loads(json.dumps(message.to_json()))) == message
    assert config_hash({"b": 1, "a": 2}) == config_hash({"a": 2, "b": 1})


def test_the_actor_runs_a_request_through_the_registry():
    request = TrialRequest(trial="t", mixture={"a": 0.5, "b": 0.5}, seed=0,
                           trainer={"kind": "synthetic", "duration_s": 0.0, "progress_events": 2, "noise": 0.0}, preset="debug")
    reports = []
    result = run_trainer(request, None, reports.append)
    assert len(reports) == 2 and result.losses.keys() == {"a", "b"}

    class Here(TrialActor):
        def node(self):
            return Placement(node_id="here", pid=1, gpus=[])

    streamed = [message_from_json(m) for m in Here().run(request.to_json())]
    assert isinstance(streamed[0], Placement) and isinstance(streamed[-1], TrialResult)
    assert streamed[-1].losses == result.losses  # the same request answers the same


def test_the_data_request_carries_the_spec_sections_trials_need(tmp_path):
    spec = parse_spec({"domains": {"a": {"demo": "books", "max_bytes": 1000}, "b": {"path": ["x.txt", "y.txt"], "format": "text"}},
                       "proxy": {"val_tokens_per_domain": 512}, "data": {"cache_dir": str(tmp_path), "shard_dir": "s3://b/s"},
                       "seed": 5})
    request = data_request(spec)
    for name, d in spec.domains.items():  # the cache key's reading part is the spec's, field for field
        assert request.domains[name].reading() == d.model_dump(mode="json", exclude={"path"})
        assert request.domains[name].paths() == d.paths()
    assert (request.val_tokens, request.seed, request.shard_root()) == (512, 5, "s3://b/s")
