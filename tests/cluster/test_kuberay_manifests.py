"""Required fields of the KubeRay manifests (no CRD schema ships with ray, so the checks are explicit)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "cluster" / "kuberay"


def _load(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def _containers(template: dict) -> list[dict]:
    return (template or {}).get("spec", {}).get("containers") or []


def cluster_problems(spec: dict) -> list[str]:
    """What a RayCluster spec lacks for an autoscaling CPU-head / GPU-workers cluster."""
    p = []
    if spec.get("enableInTreeAutoscaling") is not True:
        p.append("enableInTreeAutoscaling")
    if spec.get("rayVersion") != ray.__version__:
        p.append("rayVersion")
    head = spec.get("headGroupSpec") or {}
    if "rayStartParams" not in head:
        p.append("headGroupSpec.rayStartParams")
    hc = _containers(head.get("template"))
    if not hc or not hc[0].get("image"):
        p.append("headGroupSpec.template.spec.containers[0].image")
    elif "nvidia.com/gpu" in hc[0].get("resources", {}).get("limits", {}):
        p.append("head must be CPU-only")
    groups = spec.get("workerGroupSpecs") or []
    if not groups:
        p.append("workerGroupSpecs")
    gpu_groups = 0
    for i, g in enumerate(groups):
        where = f"workerGroupSpecs[{i}]"
        for key in ("groupName", "minReplicas", "maxReplicas", "replicas", "rayStartParams"):
            if key not in g:
                p.append(f"{where}.{key}")
        if g.get("minReplicas") != 0 or not 0 <= g.get("replicas", -1) <= g.get("maxReplicas", -1):
            p.append(f"{where}: replicas must start from 0 within [minReplicas, maxReplicas]")
        wc = _containers(g.get("template"))
        if not wc or not wc[0].get("image"):
            p.append(f"{where}.template.spec.containers[0].image")
            continue
        res = wc[0].get("resources", {})
        gpus = res.get("limits", {}).get("nvidia.com/gpu")
        if gpus is None and str(g.get("groupName", "")).startswith("gpu"):
            p.append(f"{where}: a GPU group without a nvidia.com/gpu limit")
        if gpus is not None:
            gpu_groups += 1
            if res.get("requests", {}).get("nvidia.com/gpu") not in (None, gpus):
                p.append(f"{where}: GPU requests != limits")
    if not any(g.get("template") and _containers(g["template"]) and
               _containers(g["template"])[0].get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == "8"
               for g in groups):
        p.append("an 8-GPU worker group (nvidia.com/gpu limit 8)")
    if groups and not gpu_groups:
        p.append("GPU worker groups")
    return p


def job_problems(job: dict) -> list[str]:
    p = []
    if job.get("apiVersion") != "ray.io/v1" or job.get("kind") != "RayJob":
        p.append("apiVersion/kind")
    spec = job.get("spec") or {}
    if "experiments/scale_model_size.py" not in (spec.get("entrypoint") or ""):
        p.append("entrypoint")
    env = yaml.safe_load(spec.get("runtimeEnvYAML") or "null")
    if not isinstance(env, dict) or not env.get("working_dir"):
        p.append("runtimeEnvYAML.working_dir")
    if "rayClusterSpec" not in spec and "clusterSelector" not in spec:
        p.append("rayClusterSpec")
    else:
        p += cluster_problems(spec.get("rayClusterSpec") or {})
    return p


def test_raycluster_has_required_fields():
    rc = _load("raycluster.yaml")
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster"
    assert cluster_problems(rc["spec"]) == []


def test_rayjob_runs_scale_model_size_on_the_same_cluster():
    job = _load("rayjob.yaml")
    assert job_problems(job) == []
    assert job["spec"]["entrypoint"].split() == ["python", "experiments/scale_model_size.py", "--config", "paper"]
    # one cluster definition: the RayJob's inline cluster must not drift from raycluster.yaml
    assert job["spec"]["rayClusterSpec"] == _load("raycluster.yaml")["spec"]
    # the working dir is where cluster/Dockerfile puts the repo
    assert "WORKDIR " + yaml.safe_load(job["spec"]["runtimeEnvYAML"])["working_dir"] in (
        ROOT / "cluster" / "Dockerfile").read_text()


def test_shared_claim_is_mounted_everywhere():
    rc, pvc = _load("raycluster.yaml"), _load("shared-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    templates = [rc["spec"]["headGroupSpec"]["template"]] + [g["template"] for g in rc["spec"]["workerGroupSpecs"]]
    for t in templates:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in t["spec"]["volumes"]
                  if "persistentVolumeClaim" in v}
        mounts = {m["name"] for m in t["spec"]["containers"][0]["volumeMounts"]}
        assert pvc["metadata"]["name"] in claims.values() and set(claims) <= mounts


REMOVALS = [
    ("spec", "enableInTreeAutoscaling"), ("spec", "headGroupSpec", "rayStartParams"),
    ("spec", "headGroupSpec", "template", "spec", "containers", 0, "image"), ("spec", "workerGroupSpecs"),
    ("spec", "workerGroupSpecs", 0, "minReplicas"), ("spec", "workerGroupSpecs", 1, "maxReplicas"),
    ("spec", "workerGroupSpecs", 1, "groupName"),
    ("spec", "workerGroupSpecs", 1, "template", "spec", "containers", 0, "resources", "limits", "nvidia.com/gpu"),
    ("spec", "rayVersion"),
]


@pytest.mark.parametrize("path", REMOVALS, ids=lambda p: ".".join(map(str, p)))
def test_removing_a_required_field_is_caught(path):
    rc = copy.deepcopy(_load("raycluster.yaml"))
    node = rc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    assert cluster_problems(rc["spec"]) != []


@pytest.mark.parametrize("key", ["entrypoint", "runtimeEnvYAML", "rayClusterSpec"])
def test_removing_a_rayjob_field_is_caught(key):
    job = copy.deepcopy(_load("rayjob.yaml"))
    del job["spec"][key]
    assert job_problems(job) != []


def test_a_spot_gpu_group_on_the_shared_claim():
    groups = {g["groupName"]: g for g in _load("raycluster.yaml")["spec"]["workerGroupSpecs"]}
    spot, on_demand = groups["gpu-8xh100-spot"]["template"]["spec"], groups["gpu-8xh100"]["template"]["spec"]
    assert spot["nodeSelector"] == {"cloud.google.com/gke-spot": "true"}
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} \
        in spot["tolerations"]
    assert spot["containers"][0]["resources"] == on_demand["containers"][0]["resources"]
    assert groups["gpu-8xh100-spot"]["minReplicas"] == 0
