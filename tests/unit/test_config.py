import pytest

from streamrec.config import ConfigError, load_settings


def test_defaults_are_embedded():
    s = load_settings(environ={})
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.spark.master == "local[2]"
    assert s.llm.base_url == ""


def test_yaml_then_env_precedence(tmp_path):
    cfg = tmp_path / "prod.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: k1:9092,k2:9092\n  partitions: 12\nllm:\n  mode: listwise\n")
    s = load_settings(cfg, environ={"STREAMREC_KAFKA__PARTITIONS": "24", "STREAMREC_LLM__ENABLED": "false"})
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.kafka.partitions == 24  # env beats the file
    assert s.llm.mode == "listwise"
    assert s.llm.enabled is False


def test_config_file_from_env_and_openai_vars(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: /srv/streamrec\n")
    s = load_settings(environ={"STREAMREC_CONFIG": str(cfg), "OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://h/v1"})
    assert s.data_dir == "/srv/streamrec"
    assert (s.llm.api_key, s.llm.base_url) == ("sk-x", "http://h/v1")


def test_client_options_mapping_from_env():
    s = load_settings(environ={"STREAMREC_KAFKA__CLIENT_OPTIONS": "{security_protocol: SASL_SSL}"})
    assert s.kafka.client_options == {"security_protocol": "SASL_SSL"}


@pytest.mark.parametrize(
    "content, environ, message",
    [
        ("kafka:\n  bootstrap: x\n", {}, "unknown setting 'bootstrap'"),
        ("kafka: 3\n", {}, "expected a mapping"),
        ("- a\n", {}, "top level must be a mapping"),
        ("kafka: [unclosed\n", {}, "not valid YAML"),
        ("", {"STREAMREC_KAFKA__PARTITIONS": "many"}, "expected int, got 'many'"),
        ("", {"STREAMREC_LLM__ENABLED": "maybe"}, "expected a boolean"),
    ],
)
def test_bad_settings_say_what_and_where(tmp_path, content, environ, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, environ=environ)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/streamrec.yaml", environ={})
