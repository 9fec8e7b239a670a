"""docker-compose.yml is a valid Compose file and agrees with the code it runs.

No Docker here: the file is loaded as YAML (anchors and merge keys resolved, ``${VAR:-default}``
interpolated as Compose does with no variables set), validated against the Compose Specification's
JSON schema as check-jsonschema vendors it, and checked against what streamrec itself defines: its
CLI, its settings loader, the TF Serving and llama-server argv it would use, the pinned versions and
the Kubernetes manifests' choices (tests/unit/test_k8s_manifests.py checks those against the code).
"""
from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema
from jsonschema.validators import validator_for

from features.stream_job import StreamPaths
from infra.llm import LLAMA_CPP_VERSION, llm_service
from serving.model_server.server import REAL_BINARY, real_server_argv
from serving.rerank.cache import backend
from serving.rerank.endpoint import embedded_model
from streamrec.cli import build_parser
from streamrec.config import ENV_PREFIX, Settings, load_settings
from streams.ingest_http import page_origins
from tests.deploy_files import ROOT, containers, env_of, find, pinned

COMPOSE = ROOT / "docker-compose.yml"
IMAGE = "streamrec:local"  # the image every service built from the repo's Dockerfile shares
# Variables the streamrec processes read besides STREAMREC_* (a typo here would be silently ignored).
OTHER_ENV = {"OPENAI_API_KEY", "OPENAI_BASE_URL", "PYSPARK_SUBMIT_ARGS"}
# Streamrec-image services that run something else than `streamrec ...`: the volume's one-shot set-up.
NOT_STREAMREC = {"data-init"}


# ---------------------------------------------------------------- loading, as Compose does


_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                  r"|(?P<named>[A-Za-z_]\w*))")


def interpolate(value, environ: dict[str, str], undefaulted: set[str]):
    """``value`` with Compose's variable syntax replaced from ``environ``; the names it uses that
    have no default (so would be empty or an error when unset) are added to ``undefaulted``."""
    if isinstance(value, dict):
        return {k: interpolate(v, environ, undefaulted) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ, undefaulted) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["named"]
        op, arg = m["op"], m["arg"] or ""
        is_set, got = name in environ, environ.get(name, "")
        if op in (":-", "-"):
            return got if (got if op == ":-" else is_set) else arg
        if op in (":+", "+"):
            return arg if (got if op == ":+" else is_set) else ""
        undefaulted.add(name)  # no operator, or ?/:? (an error when unset)
        return got

    out = _VAR.sub(sub, value)
    assert "${" not in out, f"{value!r}: nested or malformed interpolation"
    return out


def load_compose(environ: dict[str, str] | None = None) -> tuple[dict, set[str]]:
    undefaulted: set[str] = set()
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return interpolate(raw, environ or {}, undefaulted), undefaulted


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()[0]


@pytest.fixture(scope="module")
def services(compose) -> dict[str, dict]:
    return compose["services"]


def built(services: dict) -> dict[str, dict]:
    """The services running the repo's image."""
    return {name: s for name, s in services.items() if "build" in s}


def streamrec_services(services: dict) -> dict[str, dict]:
    """The services whose command is a streamrec command line."""
    return {name: s for name, s in built(services).items() if name not in NOT_STREAMREC}


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    assert all(v is not None for v in env.values()), "a variable without a value takes the host's: set it"
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in env.items()}


def settings_of(service: dict) -> Settings:
    env = environment(service)
    assert ENV_PREFIX + "CONFIG" not in env, "the settings come from the environment alone"
    return load_settings(environ=env)  # unknown STREAMREC_* names or bad values raise ConfigError


def parse(service: dict):
    command = service.get("command")
    assert isinstance(command, list), "a streamrec service's command is a list (no shell word splitting)"
    try:
        args = build_parser().parse_args(command)
    except SystemExit:
        pytest.fail(f"`streamrec {shlex.join(command)}` is not a streamrec command line")
    assert callable(getattr(args, "func", None)), shlex.join(command)
    return args


def by_command(services: dict) -> dict[str, tuple[dict, object]]:
    """streamrec subcommand -> (service, its parsed arguments); one service per subcommand."""
    found: dict[str, tuple[dict, object]] = {}
    for service in streamrec_services(services).values():
        args = parse(service)
        assert args.command not in found, f"two services run `streamrec {args.command}`"
        found[args.command] = (service, args)
    return found


@pytest.fixture(scope="module")
def settings(services) -> Settings:
    return settings_of(by_command(services)["serve"][0])


def ports(service: dict) -> list[tuple[str, tuple[int, ...], int]]:
    """(host ip, host ports, container port) of each published port (short syntax "ip:host:container"; the
    host part may be a range "first-last", one port per replica)."""
    out = []
    for spec in service.get("ports", []):
        ip, host, container = str(spec).rsplit(":", 2) if str(spec).count(":") == 2 else ("", *str(spec).split(":"))
        first, _, last = host.partition("-")
        out.append((ip, tuple(range(int(first), int(last or first) + 1)), int(container)))
    return out


def healthcheck_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def mounts(service: dict) -> dict[str, str]:
    """Mount target -> source of each volume (short syntax)."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def image_tag(image: str) -> str:
    name, _, tag = image.rpartition(":")
    return tag if name and "/" not in tag else ""


# ---------------------------------------------------------------- the file


def test_valid_against_the_compose_specification(compose):
    schema = get_builtin_schema("vendor.compose-spec")
    assert schema["title"] == "Compose Specification"
    cls = validator_for(schema)
    cls.check_schema(schema)
    errors = sorted(cls(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def test_runs_with_no_variables_set():
    _, undefaulted = load_compose()
    assert not undefaulted, f"variables without a default (`docker compose up` needs no .env): {sorted(undefaulted)}"


def test_references_resolve(compose, services):
    volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on undefined service {dep}"
            assert dep != name
            target = services[dep]
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in target and not target["healthcheck"].get("disable"), \
                    f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
            if spec["condition"] == "service_completed_successfully":
                assert target.get("restart", "no") == "no", f"{dep} is a one-shot: it must not be restarted"
            if not service.get("profiles"):
                assert not target.get("profiles"), f"{name} (always on) depends on {dep}, which only a profile starts"
        for source in mounts(service).values():
            if not source.startswith((".", "/", "~")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"


def test_every_image_is_pinned(services):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image"
        tag = image_tag(image)
        assert image == IMAGE or (tag and tag != "latest" and re.search(r"\d", tag)), f"{name}: {image} is not pinned"
        assert "build" not in service or image == IMAGE, f"{name}: built, so tagged {IMAGE}"
    for name, service in built(services).items():
        assert service["build"]["context"] == "."
        assert (ROOT / service["build"]["dockerfile"]).is_file(), name


def test_images_follow_the_pins_and_the_manifests(services):
    assert services["tf-serving"]["image"] == f"tensorflow/serving:{pinned('tensorflow')}"
    redis_k8s = containers(find("StatefulSet", "redis"), init=False)[0]["image"]
    assert services["redis"]["image"] == redis_k8s
    build = LLAMA_CPP_VERSION.split(".")[0]
    assert services["llm"]["image"] == f"ghcr.io/ggml-org/llama.cpp:server-b{build}"
    assert services["topics"]["image"] == services["kafka"]["image"], "the topics tool in the broker's version"


# ---------------------------------------------------------------- what the streamrec services run


def test_streamrec_services_run_real_command_lines(services):
    commands = by_command(services)
    assert {"stream", "serve", "ingest-http", "train", "rerank-worker"} <= set(commands)
    for name, service in built(services).items():
        assert ("entrypoint" in service) == (name in NOT_STREAMREC), \
            f"{name}: the image's entrypoint is streamrec; only {NOT_STREAMREC} replace it"


def test_api_replicas_share_the_rerank_cache_a_separate_worker_fills(services, settings):
    commands = by_command(services)
    api, args = commands["serve"]
    # Two replicas, each with its own Reranker: only the shared (Redis) cache lets one decision serve both,
    # and with it `serve` runs no worker (the default; --with-worker would add a consumer).
    assert api["deploy"]["replicas"] == 2 and backend(settings) == "redis" and args.with_worker is None
    worker, args = commands["rerank-worker"]
    assert not args.port and (args.host or settings.serving.host) == "0.0.0.0"  # serving.worker_port
    assert f"127.0.0.1:{settings.serving.worker_port}/healthz" in healthcheck_text(worker)
    assert worker["depends_on"].keys() == api["depends_on"].keys(), "it builds the API's pipeline"
    assert "deploy" not in worker and "ports" not in worker


def test_every_streamrec_service_shares_one_config(services, settings):
    for name, service in built(services).items():
        env = environment(service)
        extra = {k for k in env if not k.startswith(ENV_PREFIX)} - OTHER_ENV
        assert not extra, f"{name}: {sorted(extra)} are read by nothing"
        if name not in NOT_STREAMREC:
            assert settings_of(service) == settings, f"{name}: settings differ from the API's"
    # With variables pointing the LLM elsewhere the settings still load.
    other, _ = load_compose({"LLM_BASE_URL": "https://api.example.com/v1", "LLM_MODEL": "m",
                             "LLM_INTENT_DECODER": "generated", "OPENAI_API_KEY": "k", "AUTH_SECRET": "s" * 32})
    for service in streamrec_services(other["services"]).values():
        assert settings_of(service).llm.base_url == "https://api.example.com/v1"
    assert settings.auth.enabled and not settings.auth.secret and not settings.llm.api_key


def test_settings_point_at_the_compose_services(services, settings):
    host, _, port = settings.kafka.bootstrap_servers.partition(":")
    assert "," not in port and host in services, settings.kafka.bootstrap_servers
    kafka = environment(services[host])
    assert f"//{host}:{port}" in kafka["KAFKA_ADVERTISED_LISTENERS"] and f":{port}" in kafka["KAFKA_LISTENERS"]
    assert settings.spark.source == "kafka" and settings.feast.online_store == "redis"
    host, _, port = settings.feast.redis_connection.partition(":")
    command = services[host].get("command") or []
    assert int(port) == (int(command[command.index("--port") + 1]) if "--port" in command else 6379)
    assert settings.model.host == "tf-serving" in services
    llm = urlsplit(settings.llm.base_url)
    assert llm.hostname in services and llm.path == "/v1"
    command = services[llm.hostname]["command"]
    assert llm.port == int(command[command.index("--port") + 1])
    assert command[command.index("--alias") + 1] == settings.llm.model


def test_http_services_listen_on_their_ports_on_every_interface(services, settings):
    commands = by_command(services)
    api, args = commands["serve"]
    assert (args.host or settings.serving.host) == "0.0.0.0"
    api_port = args.port or settings.serving.port
    ingest, args = commands["ingest-http"]
    assert args.host == "0.0.0.0"
    ingest_port = args.port or settings.ingest.http_port
    # The page (/ui/ on the API) posts events to ingest.http_port on the host it was loaded from, and the
    # ingest endpoint's CORS allows serving.port's origins: the host must see both on the same numbers.
    assert ingest_port == settings.ingest.http_port and api_port == settings.serving.port
    assert ports(ingest) == [("127.0.0.1", (ingest_port,), ingest_port)]
    # One host port per API replica, the first serving.port; each page's origin may post events.
    replicas = api["deploy"]["replicas"]
    assert ports(api) == [("127.0.0.1", tuple(range(api_port, api_port + replicas)), api_port)]
    origins = set(page_origins(settings))
    assert all(f"http://127.0.0.1:{p}" in origins and f"http://localhost:{p}" in origins
               for p in range(api_port, api_port + replicas))
    for service, port in ((api, api_port), (ingest, ingest_port)):
        assert f"127.0.0.1:{port}/healthz" in healthcheck_text(service)


def test_tf_serving_is_the_real_server_with_streamrecs_flags(services, settings):
    m = settings.model
    server = services["tf-serving"]
    model_dir = Path(settings.data_dir) / "model_repo" / m.name  # where `streamrec train` exports
    assert server["entrypoint"] + server["command"] == real_server_argv(
        REAL_BINARY, model_dir, m.name, m.grpc_port, m.rest_port, m.poll_seconds)
    check = healthcheck_text(server)
    assert f"/dev/tcp/127.0.0.1/{m.rest_port}" in check and f"/v1/models/{m.name} " in check
    # The initContainer's job: the model dir exists before the first training run.
    assert services["data-init"]["entrypoint"] == ["mkdir", "-p", str(model_dir)]


def test_llm_is_llama_server_as_the_embedded_stack_runs_it(services, settings, tmp_path):
    llm = services["llm"]
    command = llm["command"]
    port = int(command[command.index("--port") + 1])
    cfg = dataclasses.replace(settings, data_dir=str(tmp_path),
                              llm=dataclasses.replace(settings.llm, host="0.0.0.0", port=port))
    embedded = llm_service(cfg)
    expected = embedded.argv[1:]
    expected[expected.index("-m") + 1] = f"/models/{embedded_model(cfg.llm.embedded_model).file}"
    assert command == expected
    assert environment(llm) == embedded.env
    assert mounts(llm)["/models"]
    assert f"127.0.0.1:{port}/health" in healthcheck_text(llm)


def test_topics_are_the_settings_topics(services, settings):
    k = settings.kafka
    script = services["topics"]["command"][-1]
    created = set()
    for part in script.split("&&"):
        argv = shlex.split(part)
        assert argv[0].endswith("/kafka-topics.sh") and "--create" in argv, part
        value = {flag: argv[argv.index(flag) + 1] for flag in ("--bootstrap-server", "--topic", "--partitions",
                                                                "--replication-factor")}
        assert value["--bootstrap-server"] == k.bootstrap_servers
        assert (int(value["--partitions"]), int(value["--replication-factor"])) == (k.partitions, k.replication_factor)
        created.add(value["--topic"])
    assert created == {k.events_topic, k.dlq_topic, k.features_topic}
    assert environment(services["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_the_data_dir_is_one_shared_volume(services, settings, tmp_path):
    data = settings.data_dir
    sources = set()
    for name, service in built(services).items():
        assert data in mounts(service), f"{name}: data_dir {data} is not a volume"
        sources.add(mounts(service)[data])
    assert mounts(services["tf-serving"]).get(data) in sources and len(sources) == 1
    commands = by_command(services)
    assert Path(commands["stream"][1].catalog).is_relative_to(data)
    assert Path(commands["train"][1].world).is_relative_to(data)
    # Its readiness file, relative to the data dir as StreamPaths puts it.
    local = StreamPaths.of(dataclasses.replace(settings, data_dir=str(tmp_path))).heartbeat.relative_to(tmp_path)
    assert healthcheck_text(commands["stream"][0]) == f"CMD test -f {Path(data) / local}"


def test_stream_job_gets_the_manifests_spark_kafka_package(services):
    # test_k8s_manifests checks the manifest's value against the installed pyspark and the Dockerfile.
    k8s = env_of(containers(find("Deployment", "stream-job"), init=False)[0])["PYSPARK_SUBMIT_ARGS"]
    stream = by_command(services)["stream"][0]
    assert shlex.split(environment(stream)["PYSPARK_SUBMIT_ARGS"]) == shlex.split(k8s)
