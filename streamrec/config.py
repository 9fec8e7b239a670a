"""One settings object for every part of streamrec.

Precedence (lowest to highest): embedded defaults, a YAML file
(``--config`` or ``STREAMREC_CONFIG``), then environment variables named
``STREAMREC_<SECTION>__<KEY>`` (e.g. ``STREAMREC_KAFKA__BOOTSTRAP_SERVERS``).
``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` fill the LLM section when it leaves
them unset. Production points the same code at real Kafka, Redis and TF
Serving by config alone.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streamrec.errors import UserError

ENV_PREFIX = "STREAMREC_"


class ConfigError(UserError, ValueError):
    """A settings file or variable that cannot be used; the message says which and why."""


@dataclass
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    events_topic: str = "streamrec.events"
    dlq_topic: str = "streamrec.events.dlq"
    # The stream job publishes every updated user feature row here (the re-rank worker's input).
    features_topic: str = "streamrec.features"
    partitions: int = 4
    replication_factor: int = 1
    # Some brokers (Tansu, the embedded one before) make a group join wait about half the session
    # timeout; 6 s keeps joins quick and is still a valid value for real Kafka.
    session_timeout_ms: int = 6000
    request_timeout_ms: int = 30000
    # Passed through to every kafka-python client (security_protocol, sasl_* ...).
    client_options: dict = field(default_factory=dict)


@dataclass
class IngestConfig:
    max_event_bytes: int = 65536
    # POST /events reads no further (413): ~1,000 events of ~4 KiB; send bigger ones in smaller batches.
    max_body_bytes: int = 4_194_304
    max_future_skew_seconds: float = 300.0
    http_port: int = 8090
    # Browser pages allowed to POST events (CORS), comma-separated, besides the recommend API's own page.
    cors_origins: str = ""


@dataclass
class SparkConfig:
    master: str = "local[2]"
    # "python": the project's Kafka data source; "kafka": Spark's native connector
    # (needs spark-sql-kafka on the classpath).
    source: str = "python"
    trigger_seconds: float = 0.1
    max_events_per_trigger: int = 20000
    shuffle_partitions: int = 2
    watermark: str = "10 minutes"
    # the stream job's Prometheus /metrics on 127.0.0.1 (0: off)
    metrics_port: int = 8096


@dataclass
class FeatureConfig:
    half_life_minutes: float = 30.0
    session_gap_minutes: float = 30.0
    last_n_items: int = 10
    click_weight: float = 0.25
    timezone: str = "UTC"


@dataclass
class FeastConfig:
    repo_path: str = "feature_repo"
    # "redis" (the embedded default: `infra up` starts redis-server when the address is loopback) or "sqlite"
    online_store: str = "redis"
    redis_connection: str = "127.0.0.1:6379"
    redis_port: int = 6379


@dataclass
class ModelConfig:
    name: str = "wide_deep"
    grpc_port: int = 8500
    rest_port: int = 8501
    host: str = "127.0.0.1"
    poll_seconds: float = 2.0


@dataclass
class AuthConfig:
    # Off only when set false explicitly: then every caller may do everything (local experiments).
    enabled: bool = True
    # The token-signing secret (>= 32 bytes); empty: <data_dir>/secrets/auth.key, made on first use.
    secret: str = ""


@dataclass
class ServingConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    candidates: int = 200
    top_n: int = 20
    mmr_lambda: float = 0.7
    # Requests the API computes at once (the rest wait in the event loop): the pipeline is Python, so on 2 cores
    # more threads (anyio's default is 40) only contend for the interpreter lock. Not yet measured against 40.
    threads: int = 4


@dataclass
class LLMConfig:
    base_url: str = ""
    api_key: str = ""
    model: str = ""
    # The weights the embedded llama-server runs (infra.llm.MODELS); ignored with an endpoint.
    embedded_model: str = "qwen2.5-coder-0.5b"
    mode: str = "intent"
    # How an intent is read from the model: "scored" ranks each field's allowed values by the model's
    # next-token probabilities after a prefilled answer (one token per field, the prompt cached: needs a
    # server that continues an assistant prefix and returns top_logprobs, as llama-server does);
    # "generated" has it write the JSON (any OpenAI-compatible endpoint); "auto": scored on the embedded server.
    intent_decoder: str = "auto"
    # one LLM call (the background re-rank); small local models need seconds, not milliseconds
    timeout_seconds: float = 120.0
    # How long a request waits for a decision it does not find cached: without a free-text request only
    # briefly (the refresh worker keeps contexts' decisions cached); with one, long enough for a decision.
    budget_ms: float = 300.0
    request_budget_ms: float = 2500.0
    host: str = "127.0.0.1"
    port: int = 8081
    threads: int = 2
    ctx_size: int = 4096
    enabled: bool = True


@dataclass
class Settings:
    data_dir: str = "var"
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    feast: FeastConfig = field(default_factory=FeastConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    def path(self, *parts: str) -> Path:
        """A path under the data dir, its parent created."""
        p = self.data_path.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(value: Any, target: type, where: str) -> Any:
    if target is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{where}: expected a boolean, got {value!r}")
    if target is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    try:
        return target(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {target.__name__}, got {value!r}") from None


def _apply(obj: Any, values: Mapping[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(obj))
    known = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{key}: expected a mapping")
            _apply(current, value, f"{where}.{key}")
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{where}.{key}"))


def _env_overrides(environ: Mapping[str, str]) -> dict:
    nested: dict = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        node = nested
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return nested


def load_settings(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    settings = Settings()
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {p}: top level must be a mapping")
        _apply(settings, data, str(p))
    _apply(settings, _env_overrides(environ), "environment")
    if not settings.llm.base_url and environ.get("OPENAI_BASE_URL"):
        settings.llm.base_url = environ["OPENAI_BASE_URL"]
    if not settings.llm.api_key and environ.get("OPENAI_API_KEY"):
        settings.llm.api_key = environ["OPENAI_API_KEY"]
    return settings
