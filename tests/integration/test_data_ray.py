"""Tokenising on the cluster: Ray Data tasks write the same shards as the controller does alone (real Ray)."""

from pathlib import Path

from orchestrator.requests import data_request
from orchestrator.spec import parse_spec
from workers.data import prepare_domains


def test_ray_data_path_writes_the_same_shards(ray_session, text_domains, tmp_path):
    import datasets

    rows = [f"row {i} " + "lorem ipsum " * (i % 40) for i in range(500)]
    datasets.Dataset.from_dict({"text": rows}).save_to_disk(str(tmp_path / "saved"))
    domains = {**{n: {"path": str(p)} for n, p in text_domains.items()}, "hf": {"path": str(tmp_path / "saved"), "format": "hf_disk"}}
    local = parse_spec({"domains": domains, "proxy": {"val_tokens_per_domain": 2048},
                        "data": {"cache_dir": str(tmp_path / "a"), "ray_data_min_bytes": 1 << 40}})
    ray_path = parse_spec({"domains": domains, "proxy": {"val_tokens_per_domain": 2048},
                           "data": {"cache_dir": str(tmp_path / "b"), "ray_data_min_bytes": 0}})
    logs: list[str] = []
    one, _ = prepare_domains(data_request(local), seq_len=128, log=logs.append)
    assert not any("Ray Data" in m for m in logs)
    two, _ = prepare_domains(data_request(ray_path), seq_len=128, log=logs.append)
    assert sum("Ray Data" in m for m in logs) == 3
    for d in domains:
        assert one[d].to_json() | {"location": ""} == two[d].to_json() | {"location": ""}
        for f in (*one[d].train_files, one[d].val_file):
            assert Path(one[d].location, f).read_bytes() == Path(two[d].location, f).read_bytes()
