"""The Kubernetes manifests (infra/k8s) and the Dockerfile agree with the code they run.

No cluster here: each manifest is loaded as YAML and checked against what streamrec itself
defines (its CLI, its settings loader, the TF Serving argv it would use, the pinned versions).
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from serving.model_server.server import REAL_BINARY, real_server_argv
from serving.rerank.cache import backend
from streamrec.cli import build_parser
from streamrec.config import ServingConfig, load_settings
from tests.deploy_files import (
    CONFIG_KEY,
    IMAGE,
    K8S,
    ROOT,
    containers,
    env_of,
    find,
    load_docs,
    manifest_files,
    objects,
    pinned,
    pod_spec,
    streamrec_containers,
    workloads,
)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("k8s") / CONFIG_KEY
    path.write_text(find("ConfigMap", "streamrec-config")["data"][CONFIG_KEY], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def settings(config_file):
    return load_settings(config_file, environ={})


# ---------------------------------------------------------------- structure


def test_every_manifest_is_a_named_k8s_object():
    assert objects(), "no manifests found"
    for file, doc in objects():
        assert doc.get("apiVersion") and doc.get("kind"), f"{file}: a document without apiVersion/kind"
        assert doc.get("metadata", {}).get("name"), f"{file}: {doc['kind']} without metadata.name"


def test_kustomization_applies_every_manifest_but_the_secret_example():
    kustomization = load_docs(K8S / "kustomization.yaml")[0]
    expected = {p.name for p in manifest_files()} - {"secret.example.yaml"}
    assert set(kustomization["resources"]) == expected
    assert kustomization["namespace"] == find("Namespace", kustomization["namespace"])["metadata"]["name"]
    assert IMAGE in [i["name"] for i in kustomization["images"]]


def test_references_resolve():
    claims = {d["metadata"]["name"] for _, d in objects() if d["kind"] == "PersistentVolumeClaim"}
    secret = find("Secret", "streamrec-secrets")
    for w in workloads():
        for volume in pod_spec(w).get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in volume:
                find("ConfigMap", volume["configMap"]["name"])
        for c in containers(w):
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in pod_spec(w).get("volumes", [])} | {
                t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


def test_secret_example_holds_placeholders_only():
    secret = find("Secret", "streamrec-secrets")
    assert "data" not in secret
    assert all(v.startswith("CHANGE-ME") for v in secret["stringData"].values())


# ---------------------------------------------------------------- what the containers run


def test_streamrec_containers_run_real_subcommands():
    parser = build_parser()
    commands = set()
    for w, c in streamrec_containers():
        where = f"{w['kind']} {w['metadata']['name']} container {c['name']}"
        assert c.get("command") == ["streamrec"], f"{where}: command must be [streamrec]"
        try:
            args = parser.parse_args(c.get("args", []))
        except SystemExit:
            pytest.fail(f"{where}: `streamrec {' '.join(c.get('args', []))}` is not a streamrec command line")
        assert callable(getattr(args, "func", None)), where
        commands.add(args.command)
    assert {"stream", "serve", "train", "rerank-worker"} <= commands


def test_api_replicas_share_the_rerank_cache_a_separate_worker_fills(settings):
    # Two replicas, each with its own Reranker: only a shared (Redis) cache lets one decision serve both.
    api = find("Deployment", "recommend-api")
    assert api["spec"]["replicas"] >= 2
    assert backend(settings) == "redis"
    args = build_parser().parse_args(containers(api, init=False)[0]["args"])
    assert args.command == "serve" and not args.with_worker, "the worker runs on its own (rerank-worker.yaml)"
    worker = find("Deployment", "rerank-worker")
    container = containers(worker, init=False)[0]
    args = build_parser().parse_args(container["args"])
    assert args.command == "rerank-worker" and not args.port and not args.host  # serving.worker_port, serving.host
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert env_of(container).keys() == env_of(containers(api, init=False)[0]).keys(), "it builds the API's pipeline"


def test_config_loads_with_every_containers_environment(config_file, settings):
    mount = "/etc/streamrec"
    for _, c in streamrec_containers():
        env = env_of(c)
        assert env.get("STREAMREC_CONFIG") == f"{mount}/{CONFIG_KEY}"
        assert any(m["mountPath"] == mount for m in c["volumeMounts"])
        # Unknown STREAMREC_* names or bad values raise ConfigError here.
        load_settings(config_file, environ={k: v for k, v in env.items() if k != "STREAMREC_CONFIG"})
        assert any(m["mountPath"] == settings.data_dir for m in c["volumeMounts"]), "data_dir is not a volume"
    assert settings.spark.source == "kafka"
    assert settings.feast.online_store == "redis"
    assert settings.serving.host == "0.0.0.0"
    assert not settings.auth.secret and not settings.llm.api_key, "secrets belong in the Secret"
    assert settings.auth.enabled
    assert settings.llm.base_url and settings.llm.model


def test_feature_repo_path_is_where_the_image_puts_it(settings):
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(rf"^COPY feature_repo {re.escape(settings.feast.repo_path)}/?$", dockerfile, re.M)


def test_service_ports_match_the_config(settings):
    def port(service: str, name: str) -> int:
        return next(p["port"] for p in find("Service", service)["spec"]["ports"] if p["name"] == name)

    def container_port(deployment: str, name: str) -> int:
        c = containers(find("Deployment", deployment), init=False)[0]
        return next(p["containerPort"] for p in c["ports"] if p["name"] == name)

    assert port("recommend-api", "http") == container_port("recommend-api", "http") == settings.serving.port
    assert port("rerank-worker", "http") == container_port("rerank-worker", "http") == ServingConfig().worker_port
    assert settings.model.host == "tf-serving"
    assert port("tf-serving", "grpc") == container_port("tf-serving", "grpc") == settings.model.grpc_port
    assert port("tf-serving", "http") == container_port("tf-serving", "http") == settings.model.rest_port
    host, _, redis_port = settings.feast.redis_connection.partition(":")
    assert (host, int(redis_port)) == ("redis", port("redis", "redis"))


def test_tf_serving_is_the_real_server_with_streamrecs_flags(settings):
    m = settings.model
    server = containers(find("Deployment", "tf-serving"), init=False)[0]
    model_dir = Path(settings.data_dir) / "model_repo" / m.name  # where `streamrec train` exports
    expected = real_server_argv(REAL_BINARY, model_dir, m.name, m.grpc_port, m.rest_port, m.poll_seconds)
    assert server["command"] + server["args"] == expected
    assert server["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{m.name}"
    assert server["image"] == f"tensorflow/serving:{pinned('tensorflow')}"


def test_spark_kafka_package_matches_the_pinned_pyspark():
    import pyspark

    version = pinned("pyspark")
    jars = Path(pyspark.__file__).parent / "jars"
    scala = {m.group(1) for p in jars.glob("spark-sql_*.jar") if (m := re.match(r"spark-sql_(\d+\.\d+)-", p.name))}
    assert len(scala) == 1, f"cannot tell pyspark's Scala version from {jars}"
    stream = containers(find("Deployment", "stream-job"), init=False)[0]
    argv = shlex.split(env_of(stream)["PYSPARK_SUBMIT_ARGS"])
    assert argv[-1] == "pyspark-shell"
    assert argv[argv.index("--packages") + 1] == f"org.apache.spark:spark-sql-kafka-0-10_{scala.pop()}:{version}"
    ivy = next(a.split("=", 1)[1] for a in argv if a.startswith("spark.jars.ivy="))
    assert re.search(rf"^ENV SPARK_IVY_DIR={re.escape(ivy)}$", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.M)


def test_dockerfile_builds_the_pinned_project_as_a_non_root_user():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "openjdk-17-jre-headless" in text
    assert "pip install -c constraints.txt ." in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["streamrec"\]', text, re.M)
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".venv", "var"} <= ignored
