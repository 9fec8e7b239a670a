"""The supervisor's decisions (pure) and its loop over real child processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from infra import supervisor
from infra.supervisor import backoff_s, crash_loop, describe, next_step, read_state
from tests.helpers import assert_eventually


def test_backoff_doubles_to_a_minute():
    assert [backoff_s(n) for n in (1, 2, 3, 7, 20)] == [1, 2, 4, 60, 60]


@pytest.mark.parametrize("code, step", [(0, "done"), (2, "failed"), (1, "restart"), (-9, "restart"), (130, "restart")])
def test_how_an_exit_is_taken(code, step):
    assert next_step(code) == step


def test_three_restarts_in_ten_minutes_are_a_crash_loop():
    now = 10_000.0
    assert not crash_loop([now - 700, now - 30, now - 10], now)
    assert crash_loop([now - 500, now - 30, now - 10], now)


def test_status_lines():
    assert describe(None, alive=False) == "stopped"
    assert describe({"state": "running", "child_pid": 7, "restarts": 0}, alive=True) == "running (pid 7)"
    again = {"state": "running", "child_pid": 8, "restarts": 1, "last_exit": -9, "last_error": "WARN slow"}
    assert describe(again, alive=True) == "running (pid 8, 1 restart(s), last exit -9)"
    failed = describe({"state": "failed", "last_exit": 2, "last_error": "DataLossError: events[0] ..."}, alive=False)
    assert failed == "failed (exit 2); last error: DataLossError: events[0] ..."
    looping = describe({"state": "restarting", "last_exit": 1, "retry_in_s": 4, "restarts": 3, "crash_loop": True,
                        "last_error": "broker down"}, alive=True)
    assert looping.startswith("restarting in 4s after exit 1 (3 restart(s) - crash loop)") and "broker down" in looping


def _supervise(tmp_path, script: str) -> tuple[subprocess.Popen, object]:
    state, log = tmp_path / "job.state.json", tmp_path / "job.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "infra.supervisor", "--state", str(state), "--log", str(log),
                                 "--", sys.executable, "-c", script], stdout=out, stderr=subprocess.STDOUT,
                                cwd=os.getcwd())
    return proc, state


def test_a_crashing_job_is_restarted_until_it_stays_up_then_stopped_with_the_supervisor(tmp_path):
    count = tmp_path / "runs"
    # Crashes on its first two runs, then runs until stopped.
    script = (f"import pathlib, sys, time; p = pathlib.Path({str(count)!r}); n = int(p.read_text()) if p.exists() else 0; "
              "p.write_text(str(n + 1)); print('boom', n, flush=True); sys.exit(1) if n < 2 else time.sleep(600)")
    proc, state = _supervise(tmp_path, script)
    try:
        def third_run_up():
            s = read_state(state)
            assert s and s["state"] == "running" and s["restarts"] == 2

        assert_eventually(third_run_up, timeout_s=30)
        s = read_state(state)
        assert "boom 1" in s["last_error"] and s["last_exit"] == 1
        child = s["child_pid"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert json.loads(state.read_text())["state"] == "stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_a_user_error_is_not_retried_and_says_why(tmp_path):
    script = ("import sys; print('WARN noise', flush=True); "
              "print('streamrec stream: error: offsets disagree with the checkpoint', flush=True); "
              "print('WARN more noise', flush=True); sys.exit(2)")
    proc, state = _supervise(tmp_path, script)
    assert proc.wait(timeout=20) == 2
    s = read_state(state)
    assert s["state"] == "failed" and s["restarts"] == 0
    assert s["last_error"] == "streamrec stream: error: offsets disagree with the checkpoint"  # the error, not the noise
    assert describe(s, alive=False).startswith("failed (exit 2)")


def test_a_finished_job_ends_the_supervisor(tmp_path):
    proc, state = _supervise(tmp_path, "print('done')")
    assert proc.wait(timeout=20) == 0 and read_state(state)["state"] == "exited"
    assert supervisor.describe(read_state(state), alive=False) == "stopped"
