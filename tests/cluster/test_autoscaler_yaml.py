"""cluster/aws.yaml and cluster/gcp.yaml against the autoscaler schema that the installed ray ships."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
CLUSTERS = {"aws": "p5.48xlarge", "gcp": "a3-highgpu-8g"}


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / "cluster" / f"{name}.yaml").read_text())


def _instance(node_config: dict) -> str:
    return node_config.get("InstanceType") or node_config.get("machineType")


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_valid_against_ray_schema(name):
    cfg = _load(name)
    jsonschema.validate(cfg, SCHEMA)
    validate_config(cfg)  # ray's own check: schema + head_node_type consistency
    validate_config(prepare_config(copy.deepcopy(cfg)))  # after ray merges its provider defaults
    assert cfg["provider"]["type"] == name


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_cpu_head_and_gpu_groups_scaling_from_zero(name):
    cfg = _load(name)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    assert "--num-cpus=0" in " ".join(cfg["head_start_ray_commands"])
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert workers and all(w["min_workers"] == 0 and w["max_workers"] > 0 for w in workers.values())
    big = [w for w in workers.values() if _instance(w["node_config"]) == CLUSTERS[name]]
    assert len(big) == 2  # on demand and spot
    if name == "gcp":  # GCP does not infer resources from the machine type
        assert big[0]["resources"]["GPU"] == 8
        assert big[0]["node_config"]["guestAccelerators"][0]["acceleratorCount"] == 8
    assert sum(w["max_workers"] for w in workers.values()) >= cfg["max_workers"] > 0


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_installs_this_repo_with_torch_first(name):
    cfg = _load(name)
    cmds = cfg["setup_commands"]
    torch_i = next(i for i, c in enumerate(cmds) if re.search(r"pip install .*torch", c))
    repo_i = next(i for i, c in enumerate(cmds) if "pip install -e" in c)
    assert torch_i < repo_i
    mount = next(k for k, v in cfg["file_mounts"].items() if v == ".")
    assert cmds[repo_i].split()[-1] == mount
    for out in ("results", "lab", "data"):
        assert out in cfg["rsync_exclude"]


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_image_matches_installed_ray(name):
    image = _load(name)["docker"]["image"]
    assert image.split(":")[1].startswith(ray.__version__ + "-"), (image, ray.__version__)


@pytest.mark.parametrize("name", sorted(CLUSTERS))
@pytest.mark.parametrize("breakage", ["no_provider", "no_cluster_name", "no_node_config", "no_resources",
                                      "unknown_key", "bad_min_workers"])
def test_schema_catches_broken_configs(name, breakage):
    cfg = _load(name)
    worker = next(v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"])
    if breakage == "no_provider":
        del cfg["provider"]
    elif breakage == "no_cluster_name":
        del cfg["cluster_name"]
    elif breakage == "no_node_config":
        del worker["node_config"]
    elif breakage == "no_resources":
        del worker["resources"]
    elif breakage == "unknown_key":
        cfg["min_worker"] = 0
    else:
        worker["min_workers"] = "zero"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cfg, SCHEMA)


def _spot(node_config: dict) -> bool:
    aws = node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    return aws or any(s.get("preemptible") for s in node_config.get("scheduling", []))


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_spot_gpu_groups_beside_on_demand_and_shared_storage_for_resuming(name):
    """Each GPU group has a spot/preemptible twin of the same instance; every node mounts the shared file
    system at /mnt/shared on the host and into the container, where checkpoints and records outlive nodes."""
    cfg = _load(name)
    workers = {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}
    spot = {k: v for k, v in workers.items() if _spot(v["node_config"])}
    on_demand = {k: v for k, v in workers.items() if k not in spot}
    assert set(spot) == {f"{k}_spot" for k in on_demand if k != "cpu_worker"}
    for k, v in spot.items():
        twin = on_demand[k.removesuffix("_spot")]["node_config"]
        assert _instance(v["node_config"]) == _instance(twin) and v["min_workers"] == 0
    assert any("/mnt/shared" in c and "mount" in c for c in cfg["initialization_commands"])
    assert "-v /mnt/shared:/mnt/shared" in cfg["docker"]["run_options"]
