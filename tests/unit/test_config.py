import dataclasses

import pydantic
import pytest

from streamrec.config import ConfigError, LLMConfig, Settings, load_settings


def test_defaults_are_embedded():
    s = load_settings(environ={})
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.spark.master == "local[2]"
    assert s.llm.base_url == ""
    assert s == Settings()


def test_defaults_then_yaml_then_env(tmp_path):
    cfg = tmp_path / "prod.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: k1:9092,k2:9092\n  partitions: 12\nllm:\n  mode: listwise\n")
    s = load_settings(cfg, environ={"STREAMREC_KAFKA__PARTITIONS": "24", "STREAMREC_LLM__ENABLED": "false"})
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.kafka.partitions == 24  # env beats the file
    assert s.kafka.events_topic == "streamrec.events"  # neither: the default
    assert s.llm.mode == "listwise"
    assert s.llm.enabled is False


def test_settings_constructed_in_code_ignore_the_environment(monkeypatch):
    monkeypatch.setenv("STREAMREC_KAFKA__PARTITIONS", "24")
    assert Settings().kafka.partitions == 4
    assert load_settings().kafka.partitions == 24


def test_config_file_from_env_and_openai_vars(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: /srv/streamrec\n")
    s = load_settings(environ={"STREAMREC_CONFIG": str(cfg), "OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://h/v1"})
    assert s.data_dir == "/srv/streamrec"
    assert (s.llm.api_key, s.llm.base_url) == ("sk-x", "http://h/v1")


def test_openai_vars_only_fill_what_is_unset():
    s = load_settings(environ={"STREAMREC_LLM__BASE_URL": "http://mine/v1", "OPENAI_BASE_URL": "http://h/v1",
                               "OPENAI_API_KEY": "sk-x"})
    assert (s.llm.base_url, s.llm.api_key) == ("http://mine/v1", "sk-x")


def test_client_options_mapping_from_env():
    s = load_settings(environ={"STREAMREC_KAFKA__CLIENT_OPTIONS": "{security_protocol: SASL_SSL, sasl_mechanism: PLAIN}"})
    assert s.kafka.client_options == {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("TRUE", True), ("yes", True), ("on", True),
                                                 ("0", False), ("false", False), ("No", False), ("off", False)])
def test_booleans_from_env(value, expected):
    assert load_settings(environ={"STREAMREC_AUTH__ENABLED": value}).auth.enabled is expected


def test_numbers_in_yaml_are_text_for_text_settings(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("auth:\n  secret: 12345678901234567890123456789012\n")
    assert load_settings(cfg, environ={}).auth.secret == "12345678901234567890123456789012"


@pytest.mark.parametrize(
    ("content", "environ", "message"),
    [
        # unknown keys: in the file, in a section's variable, a misspelt section variable
        ("kafka:\n  bootstrap: x\n", {}, r"^kafka\.bootstrap: unknown setting \(from .*bad\.yaml\); known: bootstrap_servers"),
        ("colour: red\n", {}, r"^colour: unknown setting \(from .*bad\.yaml\); known: auth, data_dir"),
        ("", {"STREAMREC_KAFKA__BOOTSTRAP": "x"}, r"^kafka\.bootstrap: unknown setting \(from STREAMREC_KAFKA__BOOTSTRAP\)"),
        ("", {"STREAMREC_KAFKA_PARTITIONS": "3"}, r"^kafka_partitions: unknown setting \(from STREAMREC_KAFKA_PARTITIONS\)"),
        ("", {"STREAMREC_DATA_DIR__X": "3"}, r"^data_dir__x: unknown setting"),
        # the file itself
        ("kafka: 3\n", {}, r"^kafka: expected a mapping, got 3 \(from .*bad\.yaml\)$"),
        ("- a\n", {}, "top level must be a mapping"),
        ("kafka: [unclosed\n", {}, "not valid YAML"),
        # types
        ("", {"STREAMREC_KAFKA__PARTITIONS": "many"},
         r"^kafka\.partitions: expected an integer, got 'many' \(from STREAMREC_KAFKA__PARTITIONS\)$"),
        ("features:\n  half_life_minutes: soon\n", {}, r"^features\.half_life_minutes: expected a number, got 'soon'"),
        ("", {"STREAMREC_LLM__ENABLED": "maybe"}, r"^llm\.enabled: expected a boolean .*, got 'maybe'"),
        ("", {"STREAMREC_KAFKA__CLIENT_OPTIONS": "[a, b]"}, r"^kafka\.client_options: expected a mapping, got \['a', 'b'\]"),
        # choices
        ("spark:\n  source: flink\n", {}, r"^spark\.source: must be 'python' or 'kafka', got 'flink' \(from .*bad\.yaml\)$"),
        ("", {"STREAMREC_FEAST__ONLINE_STORE": "memory"}, r"^feast\.online_store: must be 'redis' or 'sqlite', got 'memory'"),
        ("llm:\n  mode: pairwise\n", {}, r"^llm\.mode: must be 'intent' or 'listwise', got 'pairwise'"),
        ("", {"STREAMREC_LLM__INTENT_DECODER": "best"},
         r"^llm\.intent_decoder: must be 'auto', 'scored' or 'generated', got 'best'"),
        # ranges
        ("kafka:\n  partitions: 0\n", {}, r"^kafka\.partitions: must be greater than 0, got 0"),
        ("", {"STREAMREC_SERVING__PORT": "70000"}, r"^serving\.port: must be less than or equal to 65535, got '70000'"),
        ("serving:\n  mmr_lambda: 1.5\n", {}, r"^serving\.mmr_lambda: must be less than or equal to 1, got 1\.5"),
        ("", {"STREAMREC_FEATURES__HALF_LIFE_MINUTES": "0"}, r"^features\.half_life_minutes: must be greater than 0"),
    ],
)
def test_bad_settings_say_what_and_where(tmp_path, content, environ, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, environ=environ)


def test_every_bad_value_is_named(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"STREAMREC_KAFKA__PARTITIONS": "x", "STREAMREC_SPARK__SOURCE": "flink"})
    assert "kafka.partitions" in str(caught.value) and "spark.source" in str(caught.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/streamrec.yaml", environ={})


def test_sections_are_dataclasses_checked_when_made():
    settings = Settings()
    copy = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, mode="listwise"))
    assert copy.llm.mode == "listwise" and settings.llm.mode == "intent"
    assert copy.kafka is settings.kafka
    assert copy.to_dict()["llm"]["mode"] == "listwise"
    with pytest.raises(pydantic.ValidationError, match="mode"):
        LLMConfig(mode="pairwise")
