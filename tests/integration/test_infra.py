"""The ops entry points, run as ops would: the CLI against a broker of its own."""
import socket

import pytest

from infra import broker, process, stack
from streamrec.cli import main
from streamrec.config import load_settings
from streamrec.errors import UserError
from tests.helpers import free_port


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STREAMREC_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("STREAMREC_KAFKA__EVENTS_TOPIC", "ops-events")
    monkeypatch.setenv("STREAMREC_KAFKA__DLQ_TOPIC", "ops-dlq")
    monkeypatch.setenv("STREAMREC_KAFKA__FEATURES_TOPIC", "ops-features")
    settings = load_settings()
    # only the broker: the other components have their own tests
    monkeypatch.setattr("infra.stack.COMPONENTS", tuple(c for c in stack.COMPONENTS if c.name == "broker"))
    yield settings
    process.stop(broker.broker_service(settings))


def test_up_status_down(env, capsys):
    assert main(["infra", "up"]) == 0
    pid = process.running_pid(broker.broker_service(env))
    assert pid is not None
    assert "topics: ops-events, ops-dlq, ops-features" in capsys.readouterr().out

    from streams.kafka_util import admin_client

    admin = admin_client(env.kafka)
    assert {"ops-events", "ops-dlq", "ops-features"} <= set(admin.list_topics())
    admin.close()

    assert main(["infra", "up"]) == 0  # idempotent: same broker, topics kept
    assert process.running_pid(broker.broker_service(env)) == pid
    assert "already present" in capsys.readouterr().out

    assert main(["infra", "status"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["SERVICE", "STATE", "PID", "PORT", "HEALTHY", "UPTIME", "FIGURE"]
    port = env.kafka.bootstrap_servers.rsplit(":", 1)[1]
    # events 0: the topics exist and hold nothing yet (the figure is read from the broker)
    assert row.split()[:5] == ["broker", "running", str(pid), port, "yes"] and "events 0, dead letters 0" in row

    assert main(["infra", "logs", "broker", "-n", "3"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"== broker ({broker.broker_service(env).log_file})") and len(shown.splitlines()) <= 4
    assert main(["infra", "logs", "kafka"]) == 2
    assert "no service kafka; the services: broker" in capsys.readouterr().err

    assert main(["infra", "down"]) == 0
    assert process.running_pid(broker.broker_service(env)) is None
    assert "broker: stopped" in capsys.readouterr().out
    assert main(["infra", "status"]) == 1
    assert capsys.readouterr().out.splitlines()[1].split() == ["broker", "stopped", "-", port, "-", "-", "-"]


def test_port_taken_gives_clear_error(env):
    host, port = env.kafka.bootstrap_servers.split(":")
    with socket.socket() as s:
        s.bind((host, int(port)))
        s.listen()
        svc = broker.broker_service(env)
        svc.ready = lambda: False  # the squatter accepts connections; the broker itself must fail
        with pytest.raises(UserError, match="broker exited with code"):
            process.start(svc)


def test_remote_cluster_is_not_started(tmp_path):
    settings = load_settings(environ={"STREAMREC_KAFKA__BOOTSTRAP_SERVERS": "kafka-0.prod:9092,kafka-1.prod:9092"})
    assert not broker.is_embedded(settings)


def test_a_stream_job_that_cannot_run_is_reported_failed_not_running(tmp_path, monkeypatch, capsys):
    """`infra up` once printed `running` with rc 0 for a job that then died; now the job runs under the
    supervisor: a job that fails for good fails `infra up`, and `infra status` says why."""
    from features.stream_job import default_catalog
    from infra import apps

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("STREAMREC_SPARK__METRICS_PORT", str(taken.getsockname()[1]))
        settings = load_settings()
        default_catalog(settings).parent.mkdir(parents=True, exist_ok=True)
        default_catalog(settings).write_text("")
        monkeypatch.setattr("infra.stack.COMPONENTS", (stack.Component("stream", apps.stream_service),))
        assert main(["infra", "up"]) == 2
        assert "stream exited with code 2 while starting" in capsys.readouterr().err
        assert main(["infra", "status"]) == 1
    row = capsys.readouterr().out.splitlines()[1]
    assert row.startswith("stream") and "failed (exit 2); last error:" in row and "Address already in use" in row


def test_logs_follow_prints_what_is_appended(env):
    import threading

    log = broker.broker_service(env).log_file
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("old line\n")
    seen: list[str] = []

    class Enough(Exception):
        pass

    def echo(line: str) -> None:
        seen.append(line)
        if line == "new line":
            raise Enough

    def append_later():
        with log.open("a") as f:
            f.write("new line\n")

    threading.Timer(0.3, append_later).start()
    with pytest.raises(Enough):
        stack.logs(env, ["broker"], follow=True, echo=echo, poll_s=0.05)
    assert seen[1:] == ["old line", "new line"]
