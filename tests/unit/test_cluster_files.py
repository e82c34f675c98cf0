"""docker/ and cluster/ agree with pyproject.toml and with each other (no Docker or Kubernetes needed).

Versions are set once, in docker/versions.env; these tests hold every image, manifest and script to
it, and it to pyproject.toml's pins.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from orchestrator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
DOCKER, CLUSTER = ROOT / "docker", ROOT / "cluster"
OFFICIAL = re.compile(r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d{3,})-(?P<flavour>cpu|cu\d+)$")
# GPUs per instance type named in cluster/aws.yaml (AWS's published counts).
AWS_GPUS = {"g5.xlarge": 1, "g5.12xlarge": 4, "g5.48xlarge": 8, "g6.12xlarge": 4, "p4d.24xlarge": 8, "p5.48xlarge": 8}


def versions() -> dict[str, str]:
    """docker/versions.env as a dict (KEY=VALUE lines; # comments)."""
    out = {}
    for line in (DOCKER / "versions.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pin(name: str) -> str:
    """The exact version pyproject.toml pins `name` to (`name[extras]==X`)."""
    for dep in pyproject()["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==(\S+)", dep.replace(" ", ""))
        if m:
            return m.group(2)
    raise AssertionError(f"pyproject.toml does not pin {name} exactly")


def python_tag() -> str:
    return "py" + versions()["PYTHON_VERSION"].replace(".", "")


def expected_tags() -> dict[str, str]:
    """The two image tags every file must use: {'gpu': ..., 'cpu': ...}."""
    v = versions()
    base = f"{v['IMAGE_REPO']}:{v['MIXSWEEP_VERSION']}-ray{v['RAY_VERSION']}-{python_tag()}"
    return {"gpu": f"{base}-{v['CUDA_TAG']}", "cpu": f"{base}-cpu"}


def load_all(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d is not None]


def of_kind(name: str, kind: str) -> list[dict]:
    return [d for d in load_all(name) if d.get("kind") == kind]


# ------------------------------------------------------------------------------ versions vs pyproject

def test_versions_env_matches_pyproject_pins():
    v = versions()
    assert v["RAY_VERSION"] == pin("ray")
    assert v["TORCH_VERSION"] == pin("torch")
    assert v["MIXSWEEP_VERSION"] == pyproject()["project"]["version"]
    assert v["PYTHON_VERSION"] in SpecifierSet(pyproject()["project"]["requires-python"])
    assert re.fullmatch(r"3\.\d+", v["PYTHON_VERSION"]) and re.fullmatch(r"cu\d{3}", v["CUDA_TAG"])


# ------------------------------------------------------------------------------------------- docker

def dockerfile_args(path: Path) -> tuple[set[str], set[str]]:
    """(ARG names declared, ${NAME} references) in a Dockerfile."""
    text = path.read_text()
    declared = set(re.findall(r"^ARG\s+(\w+)", text, flags=re.M))
    return declared, set(re.findall(r"\$\{(\w+)\}", text))


@pytest.mark.parametrize("name", ["Dockerfile.gpu", "Dockerfile.cpu"])
def test_dockerfiles_take_every_version_from_build_args(name):
    text = (DOCKER / name).read_text()
    assert not re.findall(r"^ARG\s+\w+=", text, flags=re.M), "an ARG default would be a second place for a version"
    assert not re.findall(r"\d+\.\d+\.\d+|py3\d\d|\bcu\d{3}\b", text), "hard-coded version in " + name
    declared, used = dockerfile_args(DOCKER / name)
    assert used <= declared
    assert "pip install --no-cache-dir ." in text  # the package itself is installed


def fake_docker(tmp_path: Path) -> tuple[dict, list[dict]]:
    """A `docker` on PATH that records its arguments instead of building (no engine here)."""
    record = tmp_path / "calls.jsonl"
    exe = tmp_path / "bin" / "docker"
    exe.parent.mkdir()
    exe.write_text(f"#!/usr/bin/env python3\nimport json, sys\nopen({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(DOCKER / "build.sh"), "--push"], env=env, check=True, capture_output=True, timeout=30)
    return env, [json.loads(line) for line in record.read_text().splitlines()]


def build_call(argv: list[str]) -> tuple[str, dict[str, str], str]:
    """(Dockerfile name, build args, tag) of one recorded `docker build`."""
    args = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--build-arg")
    return Path(argv[argv.index("-f") + 1]).name, args, argv[argv.index("-t") + 1]


def resolve_from(dockerfile: str, args: dict[str, str]) -> str:
    """The base image a Dockerfile's FROM names once the build args are substituted."""
    line = next(l for l in (DOCKER / dockerfile).read_text().splitlines() if l.startswith("FROM "))
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], line.split()[1])


def test_build_script_builds_official_ray_bases_at_the_pinned_versions_and_pushes_the_manifest_tags(tmp_path):
    _, calls = fake_docker(tmp_path)
    builds = [build_call(c) for c in calls if c[0] == "build"]
    pushed = [c[1] for c in calls if c[0] == "push"]
    assert sorted(d for d, _, _ in builds) == ["Dockerfile.cpu", "Dockerfile.gpu"]
    tags = expected_tags()
    for dockerfile, args, tag in builds:
        declared, used = dockerfile_args(DOCKER / dockerfile)
        assert used <= set(args), f"{dockerfile} uses a build arg that build.sh does not pass"
        base = OFFICIAL.match(resolve_from(dockerfile, args))
        assert base, f"{dockerfile} is not built on an official rayproject/ray image"
        assert base["ray"] == pin("ray") and base["py"] == python_tag()[2:]
        assert args["TORCH_VERSION"] == pin("torch")
        flavour = "gpu" if dockerfile.endswith("gpu") else "cpu"
        assert (base["flavour"] == "cpu") == (flavour == "cpu")
        assert tag == tags[flavour]
    assert sorted(pushed) == sorted(tags.values())
    out = subprocess.run(["bash", str(DOCKER / "build.sh"), "--tags"], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [tags["gpu"], tags["cpu"]]


# ---------------------------------------------------------------------------------------- kuberay

def pod_containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def cluster_specs() -> list[tuple[str, dict]]:
    """(file, RayClusterSpec) for the RayCluster and the RayJob's embedded cluster."""
    out = [("raycluster.yaml", d["spec"]) for d in of_kind("raycluster.yaml", "RayCluster")]
    out += [("rayjob.yaml", d["spec"]["rayClusterSpec"]) for d in of_kind("rayjob.yaml", "RayJob")]
    assert len(out) == 2
    return out


@pytest.mark.parametrize("name, spec", cluster_specs(), ids=["raycluster", "rayjob"])
def test_kuberay_cluster_images_versions_gpus_and_volumes_agree(name, spec):
    tags = expected_tags()
    assert spec["rayVersion"] == pin("ray")
    assert spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == head["rayStartParams"]["num-cpus"] == "0"  # no trial on the head
    assert [c["image"] for c in pod_containers(head)] == [tags["cpu"]]
    assert spec["workerGroupSpecs"], "no worker group"
    for group in spec["workerGroupSpecs"]:
        params = group["rayStartParams"]
        assert params and all(isinstance(v, str) for v in params.values()), "KubeRay wants rayStartParams as strings"
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        # The controller looks for GPUs once, at sweep start, and falls back to CPU when it finds none.
        assert group["minReplicas"] >= 1
        (worker,) = pod_containers(group)
        limits, requests = worker["resources"]["limits"], worker["resources"]["requests"]
        assert int(limits["nvidia.com/gpu"]) == int(requests["nvidia.com/gpu"]) == int(params["num-gpus"]) > 0
        assert worker["image"] == tags["gpu"]
    claims = {d["metadata"]["name"] for d in of_kind("storage.yaml", "PersistentVolumeClaim")}
    for group in [head, *spec["workerGroupSpecs"]]:
        check_volumes(group["template"]["spec"], claims, config_maps(name))


def config_maps(name: str) -> set[str]:
    return {d["metadata"]["name"] for d in of_kind(name, "ConfigMap")}


def check_volumes(pod: dict, claims: set[str], maps: set[str]) -> None:
    """Every mount names a volume of the pod; every claim and ConfigMap it names is defined here."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"mount {m['name']} has no volume"
    for v in volumes.values():
        if "persistentVolumeClaim" in v:
            assert v["persistentVolumeClaim"]["claimName"] in claims
        if "configMap" in v:
            assert v["configMap"]["name"] in maps


def head_mounts(spec: dict) -> dict[str, dict]:
    """mountPath -> the head pod's volume mounted there."""
    pod = spec["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for c in pod["containers"] for m in c.get("volumeMounts", [])}


def test_rayjob_entrypoint_runs_mixsweep_on_a_mounted_valid_spec_into_shared_storage():
    (job,) = of_kind("rayjob.yaml", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["mixsweep", "run"]
    assert "mixsweep" in pyproject()["project"]["scripts"]
    spec_path, sweep_dir = Path(argv[2]), Path(argv[argv.index("--dir") + 1])
    mounts = head_mounts(job["spec"]["rayClusterSpec"])
    config_map = mounts[str(spec_path.parent)]["configMap"]["name"]
    (cm,) = [d for d in of_kind("rayjob.yaml", "ConfigMap") if d["metadata"]["name"] == config_map]
    sweep = parse_spec(yaml.safe_load(cm["data"][spec_path.name]))  # the real spec model: a valid sweep
    shared = [p for p, v in mounts.items() if "persistentVolumeClaim" in v]
    assert any(sweep_dir.is_relative_to(p) for p in shared), "the sweep directory is not on the shared volume"
    assert any(Path(sweep.data.cache_dir).is_relative_to(p) for p in shared), "the token cache is not shared"
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    (worker,) = pod_containers(group)
    # A trial must fit in one worker pod, or the sweep waits forever.
    assert sweep.resources.gpus <= float(group["rayStartParams"]["num-gpus"])
    assert sweep.resources.cpus <= float(worker["resources"]["requests"]["cpu"])


# ---------------------------------------------------------------------------- ray up (cluster launcher)

def test_cluster_launcher_yaml_images_gpus_auth_and_storage_agree():
    (cfg,) = load_all("aws.yaml")
    tags = expected_tags()
    assert cfg["docker"]["head_image"] == tags["cpu"] and cfg["docker"]["worker_image"] == tags["gpu"]
    run_options = " ".join(cfg["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in run_options
    assert "/home/ray/.ray/auth_token" in cfg["file_mounts"]
    nodes = cfg["available_node_types"]
    head = nodes[cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    workers = {n: t for n, t in nodes.items() if n != cfg["head_node_type"]}
    for t in workers.values():
        assert t["resources"]["GPU"] == AWS_GPUS[t["node_config"]["InstanceType"]] > 0
        assert 1 <= t["min_workers"] <= t["max_workers"] <= cfg["max_workers"]  # a GPU at sweep start
    head_start = " ".join(cfg["head_start_ray_commands"])
    assert "--head" in head_start and "--num-gpus=0" in head_start and "--num-cpus=0" in head_start
    assert "--dashboard-host=127.0.0.1" in head_start  # reached through `ray dashboard`'s SSH tunnel only
    (host_path, container_path) = re.search(r"--volume (\S+):(\S+)", run_options).groups()
    assert host_path == container_path
    assert any(f" {host_path}" in c and "mount " in c for c in cfg["initialization_commands"])


# ---------------------------------------------------------------------------------------- local.sh

def test_local_recipe_declares_gpus_on_workers_only_and_turns_token_auth_on():
    text = (CLUSTER / "local.sh").read_text()
    subprocess.run(["bash", "-n", str(CLUSTER / "local.sh")], check=True)
    starts = [l for l in text.replace("\\\n", " ").splitlines() if '"$RAY" start' in l]
    head = [l for l in starts if "--head" in l]
    workers = [l for l in starts if "--address=" in l]
    assert len(head) == 1 and "--num-gpus=0" in head[0] and "--dashboard-host=\"$HOST\"" in head[0]
    assert len(workers) == 1 and '--num-gpus="$GPUS_PER_WORKER"' in workers[0] and "--resources=" in workers[0]
    assert int(re.search(r'GPUS_PER_WORKER:=(\d+)', text).group(1)) > 0
    assert "export RAY_AUTH_MODE=token" in text


def test_local_recipe_has_no_fixed_port_and_stops_its_whole_session(tmp_path):
    # Another Ray on the machine (an embedded `mixsweep run`) holds Ray's default ports: every port of
    # every node is either picked free at start or 0, and `stop` ends the session the nodes started in.
    text = (CLUSTER / "local.sh").read_text()
    flat = text.replace("\\\n", " ")
    head = next(l for l in flat.splitlines() if '"$RAY" start --head' in l)
    for opt in ("--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
                "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port",
                "--node-manager-port", "--object-manager-port"):
        assert re.search(rf'{opt}="\$\w+"', head), f"head: {opt} is not a port picked at start"
    assert not re.search(r"(PORT|port)[:=]+\d{2,}", flat), "a fixed port number in local.sh"
    assert "setsid" in text and "cluster.env" in text
    # Without a running cluster, `address` says so in one line instead of guessing a port.
    env = {**os.environ, "MIXSWEEP_LOCAL_DIR": str(tmp_path)}
    out = subprocess.run(["bash", str(CLUSTER / "local.sh"), "address"], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "cluster/local.sh start" in out.stderr and len(out.stderr.splitlines()) == 1
    (tmp_path / "cluster.env").write_text("SID=\nRAY_PORT=41234\nDASHBOARD_PORT=41235\n")
    out = subprocess.run(["bash", str(CLUSTER / "local.sh"), "address"], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "127.0.0.1:41234"
    out = subprocess.run(["bash", str(CLUSTER / "local.sh"), "dashboard"], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "http://127.0.0.1:41235"
