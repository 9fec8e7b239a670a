"""``infra status``'s table: one aligned row per service, whatever each could report."""
from infra.stack import Status, status_table


def test_rows_align_under_the_header_and_say_what_is_unknown():
    rows = [
        Status("broker", "running", 4242, "9092", True, 125.0, "events 1,204, dead letters 3"),
        Status("stream", "running (pid 77, 1 restart(s), last exit -9)", 70, "8096 metrics", False, 7322.0, None),
        Status("redis", "external", port="6379"),
        Status("model-server", "stopped", port="8500 grpc, 8501 rest"),
    ]
    lines = status_table(rows).splitlines()
    assert lines[0].split() == ["SERVICE", "STATE", "PID", "PORT", "HEALTHY", "UPTIME", "FIGURE"]
    columns = [lines[0].index(name) for name in ("STATE", "PID", "PORT", "HEALTHY", "UPTIME", "FIGURE")]
    assert lines[1][columns[0]:].startswith("running ") and lines[1][columns[1]:].startswith("4242 ")
    assert lines[1][columns[4]:].startswith("2m 05s") and lines[1].endswith("events 1,204, dead letters 3")
    assert lines[2][columns[3]:].startswith("no ") and lines[2][columns[4]:].startswith("2h 02m")
    assert lines[2].endswith("-")  # no figure read
    assert lines[3].split() == ["redis", "external", "-", "6379", "-", "-", "-"]
    assert lines[4][columns[2]:].startswith("8500 grpc, 8501 rest ")


def test_only_running_and_external_services_count_as_up():
    assert Status("broker", "running").running and Status("redis", "external").running
    assert not Status("stream", "failed (exit 2); last error: boom").running
    assert not Status("stream", "restarting in 4s after exit 1 (2 restart(s))").running
    assert not Status("api", "stopped").running
