"""The deployment files (``infra/k8s`` manifests, constraints) as data: loaders their tests share."""
from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "infra" / "k8s"
IMAGE = "streamrec"  # the image name the manifests use; kustomization.yaml maps it to a registry
CONFIG_KEY = "streamrec.yaml"
WORKLOADS = ("Deployment", "StatefulSet", "Job", "CronJob")


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def objects() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in manifest_files() for d in load_docs(p)]


def find(kind: str, name: str) -> dict:
    hits = [d for _, d in objects() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind} {name}, found {len(hits)}"
    return hits[0]


def pod_spec(obj: dict) -> dict:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def workloads() -> list[dict]:
    return [d for _, d in objects() if d["kind"] in WORKLOADS]


def containers(obj: dict, *, init: bool = True) -> list[dict]:
    spec = pod_spec(obj)
    return spec["containers"] + (spec.get("initContainers", []) if init else [])


def streamrec_containers() -> list[tuple[dict, dict]]:
    return [(w, c) for w in workloads() for c in containers(w) if c["image"] == IMAGE]


def env_of(container: dict) -> dict[str, str]:
    """The container's variables; those from a Secret or the downward API get a stand-in value."""
    return {e["name"]: e.get("value", "from-secret") for e in container.get("env", [])}


def pinned(package: str) -> str:
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and name.lower() == package:
            return version
    raise AssertionError(f"{package} is not pinned in constraints.txt")
