"""One settings object for every part of streamrec.

Precedence (lowest to highest): embedded defaults, a YAML file
(``--config`` or ``STREAMREC_CONFIG``), then environment variables named
``STREAMREC_<SECTION>__<KEY>`` (e.g. ``STREAMREC_KAFKA__BOOTSTRAP_SERVERS``; a mapping
such as ``kafka.client_options`` is YAML there). ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``
fill the LLM section when it leaves them unset. Production points the same code at real
Kafka, Redis and TF Serving by config alone.

pydantic-settings reads the file and the variables; pydantic checks every value against
the annotations below (types, choices, ranges), and ``load_settings`` turns what it rejects,
or a key it does not know, into a ``ConfigError`` naming the setting and where it came from.
The sections and ``Settings`` are pydantic dataclasses: constructing one, or
``dataclasses.replace``, is checked too; assigning an attribute is not.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    create_model,
)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, InitSettingsSource, SettingsConfigDict

from streamrec.errors import UserError

ENV_PREFIX = "STREAMREC_"

SparkSource = Literal["python", "kafka"]
OnlineStore = Literal["redis", "sqlite"]
LLMMode = Literal["intent", "listwise"]
IntentDecoder = Literal["auto", "scored", "generated"]
RerankCache = Literal["auto", "memory", "redis"]
Port = Annotated[int, Field(ge=0, le=65535)]
ZeroToOne = Annotated[float, Field(ge=0, le=1)]

# Unknown keys are errors; a number given for a text setting (YAML `secret: 1234`) is taken as its text.
_CHECKS = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class ConfigError(UserError, ValueError):
    """A settings file or variable that cannot be used; the message says which and why."""


@dataclass(config=_CHECKS)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    events_topic: str = "streamrec.events"
    dlq_topic: str = "streamrec.events.dlq"
    # The stream job publishes every updated user feature row here (the re-rank worker's input).
    features_topic: str = "streamrec.features"
    # Item records added or changed (`streamrec catalog add|update`), keyed by item id; refused ones go to its DLQ.
    catalog_topic: str = "streamrec.catalog"
    catalog_dlq_topic: str = "streamrec.catalog.dlq"
    # Every list the API serves (experiment, variant, items, positions, propensities), keyed by user: the
    # A/B report's and the off-policy estimates' input.
    exposures_topic: str = "streamrec.exposures"
    # Users deleted (`streamrec privacy delete-user`), keyed by user, kept for good: what every reader, now or
    # replaying later, folds none of.
    deletions_topic: str = "streamrec.deletions"
    partitions: PositiveInt = 4
    replication_factor: PositiveInt = 1
    # Some brokers (Tansu, the embedded one before) make a group join wait about half the session
    # timeout; 6 s keeps joins quick and is still a valid value for real Kafka.
    session_timeout_ms: PositiveInt = 6000
    request_timeout_ms: PositiveInt = 30000
    # Passed through to every kafka-python client (security_protocol, sasl_* ...).
    client_options: dict[str, Any] = field(default_factory=dict)


@dataclass(config=_CHECKS)
class IngestConfig:
    max_event_bytes: PositiveInt = 65536
    # POST /events reads no further (413): ~1,000 events of ~4 KiB; send bigger ones in smaller batches.
    max_body_bytes: PositiveInt = 4_194_304
    max_future_skew_seconds: NonNegativeFloat = 300.0
    http_port: Port = 8090
    # Browser pages allowed to POST events (CORS), comma-separated, besides the recommend API's own page.
    cors_origins: str = ""


@dataclass(config=_CHECKS)
class SparkConfig:
    master: str = "local[2]"
    # "python": the project's Kafka data source; "kafka": Spark's native connector
    # (needs spark-sql-kafka on the classpath).
    source: SparkSource = "python"
    trigger_seconds: NonNegativeFloat = 0.1
    # 0: no cap
    max_events_per_trigger: NonNegativeInt = 20000
    shuffle_partitions: PositiveInt = 2
    watermark: str = "10 minutes"
    # the stream job's Prometheus /metrics on 127.0.0.1 (0: off)
    metrics_port: Port = 8096
    # Where the stream job keeps its checkpoint (offsets, per-user state): a path or URI (file://, s3a://,
    # hdfs://); empty: <data_dir>/stream/checkpoint.
    checkpoint_uri: str = ""


@dataclass(config=_CHECKS)
class FeatureConfig:
    half_life_minutes: PositiveFloat = 30.0
    session_gap_minutes: PositiveFloat = 30.0
    last_n_items: NonNegativeInt = 10
    click_weight: NonNegativeFloat = 0.25
    timezone: str = "UTC"
    # The user's retrieval vector folded in online by the stream job from what they just watched, against the
    # trained item vectors (``features.user_vector``); off: vectors change only at retraining.
    live_user_vectors: bool = True
    # The fold-in's ridge term (regularization of the least-squares solve against fixed item vectors).
    fold_in_regularization: PositiveFloat = 0.1


@dataclass(config=_CHECKS)
class FeastConfig:
    repo_path: str = "feature_repo"
    # "redis" (the embedded default: `infra up` starts redis-server when the address is loopback) or "sqlite"
    online_store: OnlineStore = "redis"
    redis_connection: str = "127.0.0.1:6379"
    redis_port: Port = 6379
    # Where the offline session log is written: a path or URI (file://, s3a://, hdfs://); empty: under the data dir.
    offline_log_uri: str = ""


@dataclass(config=_CHECKS)
class ModelConfig:
    name: str = "wide_deep"
    grpc_port: Port = 8500
    rest_port: Port = 8501
    host: str = "127.0.0.1"
    poll_seconds: PositiveFloat = 2.0


@dataclass(config=_CHECKS)
class AuthConfig:
    # Off only when set false explicitly: then every caller may do everything (local experiments).
    enabled: bool = True
    # The token-signing secret (>= 32 bytes); empty: <data_dir>/secrets/auth.key, made on first use.
    secret: str = ""


@dataclass(config=_CHECKS)
class ServingConfig:
    host: str = "127.0.0.1"
    port: Port = 8000
    # `streamrec rerank-worker`'s /healthz and /metrics
    worker_port: Port = 8097
    candidates: PositiveInt = 200
    top_n: PositiveInt = 20
    mmr_lambda: ZeroToOne = 0.7
    # Shortlist places kept for items added since training that retrieval's content source found for the user:
    # Wide & Deep knows them only by their content, so without this a new item would rarely be shown and so
    # never gather the interactions that would teach the model about it.
    new_item_slots: NonNegativeInt = 2
    # Requests the API computes at once (the rest wait in the event loop): the pipeline is Python, so on 2 cores
    # more threads (anyio's default is 40) only contend for the interpreter lock. Not yet measured against 40.
    threads: PositiveInt = 4
    # Where the LLM re-rank's answers are cached: "redis" (feast.redis_connection; shared by every API replica
    # and the separate `streamrec rerank-worker`), "memory" (this process only), "auto": redis when the online
    # store is.
    rerank_cache: RerankCache = "auto"


@dataclass(config=_CHECKS)
class PrivacyConfig:
    # User ids become keyed hashes at the edge (the SDK, CLI and HTTP producers, the recommend API), so Kafka,
    # Feast, the offline log, the re-rank's prompts and the models hold pseudonyms only (streamrec.pseudonyms).
    pseudonymize: bool = False
    # The hash key: this secret when set (clusters pass it as STREAMREC_PRIVACY__KEY), else a random one made on
    # first use at <data_dir>/secrets/pseudonym.key. A new key makes every user a new one.
    key: str = ""


Exploration = Literal["none", "epsilon_greedy"]


@dataclass(config=_CHECKS)
class VariantConfig:
    """One arm of an experiment: what it changes from the serving settings (unset: as configured)."""
    weight: PositiveFloat = 1.0  # relative share of users
    mmr_lambda: ZeroToOne | None = None
    rerank: bool | None = None  # the LLM re-rank on or off
    # "epsilon_greedy": each slot of the final list shows, with probability epsilon, an item drawn uniformly from
    # the rest of the shortlist instead of the next best; every shown item's propensity is logged.
    exploration: Exploration = "none"
    epsilon: ZeroToOne = 0.1


@dataclass(config=_CHECKS)
class ExperimentConfig:
    """An A/B test: users are assigned to ``variants`` by a salted hash of their id (sticky across restarts)."""
    name: str = ""  # empty: no experiment, every list is served as configured (variant "default")
    salt: str = ""  # empty: the name; a new salt reshuffles users
    variants: dict[str, VariantConfig] = field(default_factory=dict)
    # A click or watch of a shown item this long after the exposure counts as its outcome.
    outcome_window_minutes: PositiveFloat = 30.0


@dataclass(config=_CHECKS)
class LLMConfig:
    base_url: str = ""
    api_key: str = ""
    model: str = ""
    # The weights the embedded llama-server runs (serving.rerank.endpoint.MODELS); ignored with an endpoint.
    embedded_model: str = "qwen2.5-coder-0.5b"
    mode: LLMMode = "intent"
    # How an intent is read from the model: "scored" ranks each field's allowed values by the model's
    # next-token probabilities after a prefilled answer (one token per field, the prompt cached: needs a
    # server that continues an assistant prefix and returns top_logprobs, as llama-server does);
    # "generated" has it write the JSON (any OpenAI-compatible endpoint); "auto": scored on the embedded server.
    intent_decoder: IntentDecoder = "auto"
    # one LLM call (the background re-rank); small local models need seconds, not milliseconds
    timeout_seconds: PositiveFloat = 120.0
    # How long a request waits for a decision it does not find cached: without a free-text request only
    # briefly (the refresh worker keeps contexts' decisions cached); with one, long enough for a decision.
    budget_ms: NonNegativeFloat = 300.0
    request_budget_ms: NonNegativeFloat = 2500.0
    host: str = "127.0.0.1"
    port: Port = 8081
    threads: PositiveInt = 2
    ctx_size: PositiveInt = 4096
    enabled: bool = True


@dataclass(config=_CHECKS)
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
    experiments: ExperimentConfig = field(default_factory=ExperimentConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

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


# pydantic-settings fills a model, while callers copy Settings with dataclasses.replace: so Settings stays a
# dataclass, and the model pydantic-settings fills is made of its fields (mypy does not know pydantic's attribute).
_FIELDS: dict[str, Any] = {name: (info.annotation, info)
                           for name, info in Settings.__pydantic_fields__.items()}  # type: ignore[attr-defined]
_SettingsModel = create_model(
    "_SettingsModel",
    __base__=BaseSettings,
    __config__=SettingsConfigDict(**_CHECKS, env_prefix=ENV_PREFIX, env_nested_delimiter="__"),
    **_FIELDS,
)


class _Environment(EnvSettingsSource):
    """The settings variables of a given mapping (EnvSettingsSource itself reads os.environ)."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ  # read by EnvSettingsSource.__init__
        super().__init__(_SettingsModel)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        # A mapping is YAML here (JSON is YAML too); what does not parse stays text, for validation to reject.
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def _unknown(key: str, where: str, section: Any) -> str:
    names = ", ".join(sorted(f.name for f in dataclasses.fields(section)))
    return f"{key}: unknown setting (from {where}); known: {names}"


def _check_variable_names(environ: Mapping[str, str]) -> None:
    # EnvSettingsSource skips the variables it has no setting for: a misspelt section must not pass unseen.
    # (A misspelt key within a section reaches validation, which rejects it.)
    fields = _SettingsModel.model_fields
    for name in environ:
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == ENV_PREFIX + "CONFIG":
            continue
        top, *rest = name[len(ENV_PREFIX):].lower().split("__")
        if top not in fields or (rest and not dataclasses.is_dataclass(fields[top].annotation)):
            raise ConfigError(_unknown("__".join([top, *rest]), name, Settings))


# Error types worded for people; the others keep pydantic's message ("must be greater than 0", "must be 'a' or 'b'").
_EXPECTED = {
    "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
    "float_parsing": "a number", "float_type": "a number",
    "bool_parsing": "a boolean (true/false, yes/no, on/off, 1/0)", "bool_type": "a boolean",
    "string_type": "a string", "dict_type": "a mapping", "dataclass_type": "a mapping",
}


def _contains(data: Any, loc: tuple[int | str, ...]) -> bool:
    for key in loc:
        if not isinstance(data, Mapping) or key not in data:
            return False
        data = data[key]
    return True


def _explain(error: ErrorDetails, from_env: Mapping[str, Any], path: Path | None) -> str:
    """One rejected value as a line: the setting, what is wrong, and the variable or file it came from."""
    loc, kind = error["loc"], error["type"]
    key = ".".join(map(str, loc))
    where = ENV_PREFIX + "__".join(map(str, loc)).upper() if _contains(from_env, loc) or not path else str(path)
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        section: Any = Settings()
        for name in loc[:-1]:
            section = getattr(section, str(name))
        return _unknown(key, where, section)
    problem = f"expected {_EXPECTED[kind]}" if kind in _EXPECTED else error["msg"].replace("Input should be", "must be")
    return f"{key}: {problem}, got {error['input']!r} (from {where})"


def load_settings(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    file = Path(path) if path else None
    from_file = _read_yaml(file) if file else {}
    _check_variable_names(environ)
    env = _Environment(environ)
    try:
        # sources by precedence, highest first
        model = _SettingsModel(_build_sources=((env, InitSettingsSource(_SettingsModel, init_kwargs=from_file)), {}))
    except ValidationError as e:
        from_env = env()
        raise ConfigError("; ".join(_explain(error, from_env, file) for error in e.errors())) from None
    settings = Settings(**dict(model))
    if not settings.llm.base_url and environ.get("OPENAI_BASE_URL"):
        settings.llm.base_url = environ["OPENAI_BASE_URL"]
    if not settings.llm.api_key and environ.get("OPENAI_API_KEY"):
        settings.llm.api_key = environ["OPENAI_API_KEY"]
    return settings
