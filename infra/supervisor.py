"""Keep a long-running job up: restart it with backoff when it dies, and say why it is down.

``python -m infra.supervisor --state FILE --log FILE -- ARGV...`` runs ARGV as a child and
decides by how it ended (``next_step``):

- exit 0: the job finished (``--available-now``); the supervisor exits 0;
- exit 2: a ``UserError`` (bad settings, offsets that disagree with the checkpoint): running it
  again fails the same way, so the state is ``failed`` with the log's last lines, exit 2;
- anything else (a crash, a broker outage that outlived the job's retries, kill -9): restart after
  ``backoff_s`` (1 s doubling to 60 s; back to 1 s after a run of 5 minutes). Three restarts
  within 10 minutes are reported as a crash loop (and still retried).

The state file (JSON) is what ``infra status`` reads; SIGTERM stops the child, then the supervisor.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from infra.process import tail_lines

USER_ERROR_EXIT = 2  # streamrec.cli's exit code for a UserError
FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 60.0
STABLE_RUN_S = 300.0  # a run this long resets the backoff
CRASH_LOOP_RESTARTS, CRASH_LOOP_WINDOW_S = 3, 600.0
STOP_GRACE_S = 8.0  # below infra.process.stop's 10 s, so the child is gone before the supervisor is killed
LOG_LINES = 3
_ERROR = re.compile(r"error|exception|traceback", re.IGNORECASE)


def backoff_s(failures_in_a_row: int) -> float:
    """Seconds to wait before restart number ``failures_in_a_row`` (1-based): 1, 2, 4, ... capped at 60."""
    return min(FIRST_BACKOFF_S * 2 ** (failures_in_a_row - 1), MAX_BACKOFF_S)


def next_step(returncode: int) -> str:
    """"done", "failed" or "restart" for a child that ended with ``returncode`` (negative: a signal)."""
    if returncode == 0:
        return "done"
    if returncode == USER_ERROR_EXIT:
        return "failed"
    return "restart"


def crash_loop(restart_times: list[float], now: float) -> bool:
    return sum(now - t <= CRASH_LOOP_WINDOW_S for t in restart_times) >= CRASH_LOOP_RESTARTS


def describe(state: dict | None, alive: bool) -> str:
    """One line for ``infra status`` from a state file and whether the supervisor still runs."""
    if state is None:
        return "running" if alive else "stopped"
    error = f"; last error: {state['last_error']}" if state.get("last_error") else ""
    if not alive:
        if state.get("state") == "failed":
            return f"failed (exit {state.get('last_exit')}){error}"
        return "stopped"
    restarts = state.get("restarts", 0)
    if state.get("state") == "running":
        loop = " - crash loop" if state.get("crash_loop") else ""
        after = f", {restarts} restart(s), last exit {state.get('last_exit')}{loop}" if restarts else ""
        return f"running (pid {state.get('child_pid')}{after})"
    return f"restarting in {state.get('retry_in_s', 0):.0f}s after exit {state.get('last_exit')} " \
           f"({restarts} restart(s){' - crash loop' if state.get('crash_loop') else ''}){error}"


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _log_tail(log: Path | None) -> str:
    """What the log says went wrong: its last lines naming an error, else its last lines (a few, cut short)."""
    lines = [] if log is None else [ln.strip() for ln in tail_lines(log, 1000)]
    errors = [ln for ln in lines if _ERROR.search(ln)]
    return " | ".join((errors or lines)[-LOG_LINES:])[-600:]


class Supervisor:
    def __init__(self, argv: list[str], state_file: Path, log: Path | None):
        self.argv, self.state_file, self.log = argv, state_file, log
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.state: dict = {"state": "starting", "pid": os.getpid(), "restarts": 0, "argv": argv}

    def _save(self, **changes) -> None:
        self.state.update(changes)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        tmp.replace(self.state_file)  # atomic: a reader never sees half a file

    def _stop(self, signum, frame) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        restart_times: list[float] = []
        failures = 0
        while not self.stopping:
            started = time.monotonic()
            # Its own session: the job's JVM and workers can be killed as one group.
            self.child = subprocess.Popen(self.argv, start_new_session=True)
            self._save(state="running", child_pid=self.child.pid, crash_loop=crash_loop(restart_times, time.time()))
            code = self._wait()
            if self.stopping:
                break
            step = next_step(code)
            if step == "done":
                self._save(state="exited", last_exit=code)
                return 0
            if step == "failed":
                self._save(state="failed", last_exit=code, last_error=_log_tail(self.log))
                return USER_ERROR_EXIT
            failures = 1 if time.monotonic() - started >= STABLE_RUN_S else failures + 1
            restart_times.append(time.time())
            wait = backoff_s(failures)
            print(f"supervisor: {self.argv[-1]} ended with {code}; restart {len(restart_times)} in {wait:.0f}s",
                  flush=True)
            self._save(state="restarting", last_exit=code, last_error=_log_tail(self.log), retry_in_s=wait,
                       restarts=len(restart_times), crash_loop=crash_loop(restart_times, time.time()))
            deadline = time.monotonic() + wait
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(0.1)
        self._save(state="stopped")
        return 0

    def _wait(self) -> int:
        child = self.child
        assert child is not None  # run() starts the child before waiting on it
        while True:
            try:
                code = child.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if self.stopping:
                    try:
                        code = child.wait(timeout=STOP_GRACE_S)
                    except subprocess.TimeoutExpired:
                        os.killpg(child.pid, signal.SIGKILL)
                        code = child.wait()
                    break
        if code != 0 and child.pid:
            # What the job left behind (a JVM of a killed driver) goes with it.
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.supervisor", description=__doc__.splitlines()[0])
    p.add_argument("--state", type=Path, required=True, help="where the supervisor writes its state (JSON)")
    p.add_argument("--log", type=Path, help="the job's log, quoted as the last error")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the job's command line")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the job's command after --")
    args.state.parent.mkdir(parents=True, exist_ok=True)
    return Supervisor(command, args.state, args.log).run()


if __name__ == "__main__":
    sys.exit(main())
