"""Start, check and stop a local daemon by pid file (broker, LLM server, Redis, ...).

Each service writes ``<data>/run/<name>.pid`` and logs to ``<data>/log/<name>.log``.
A start returns only once the service's own readiness probe answers, and a
service that dies while starting is reported with the tail of its log.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.errors import UserError


@dataclass
class Service:
    name: str
    argv: list[str]
    ready: Callable[[], bool]
    data_dir: Path
    env: dict = field(default_factory=dict)
    start_timeout_s: float = 60.0
    stop_timeout_s: float = 10.0  # from TERM to KILL: longer for a service that saves its data on TERM
    supervised: bool = False  # argv runs under infra.supervisor, which keeps ``state_file``

    @property
    def state_file(self) -> Path:
        return self.data_dir / "run" / f"{self.name}.state.json"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "log" / f"{self.name}.log"


def free_port() -> int:
    """A loopback port free now (the OS picks it): for services started beside a running stack."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def running_pid(svc: Service) -> int | None:
    try:
        pid = int(svc.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def tail_lines(path: Path, lines: int, max_bytes: int = 64_000) -> list[str]:
    """The last ``lines`` non-blank lines of ``path``, reading only its last ``max_bytes`` (logs grow large)."""
    try:
        with path.open("rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - max_bytes, 0))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.strip()][-lines:]


def log_tail(svc: Service, lines: int = 20) -> str:
    return "\n".join(tail_lines(svc.log_file, lines)) or "(no log)"


def start(svc: Service) -> int:
    """Start ``svc`` unless it already runs; wait for readiness; return its pid."""
    pid = running_pid(svc)
    if pid is not None:
        return pid
    svc.pid_file.parent.mkdir(parents=True, exist_ok=True)
    svc.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(svc.log_file, "ab") as log:
        proc = subprocess.Popen(
            svc.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **svc.env},
            start_new_session=True,  # outlives the CLI that started it; Ctrl-C there does not reach it
        )
    svc.pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + svc.start_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            svc.pid_file.unlink(missing_ok=True)
            raise UserError(f"{svc.name} exited with code {proc.returncode} while starting; log {svc.log_file}:\n{log_tail(svc)}")
        if svc.ready():
            return proc.pid
        time.sleep(0.2)
    stop(svc)
    raise UserError(f"{svc.name} did not become ready within {svc.start_timeout_s:.0f}s; log {svc.log_file}:\n{log_tail(svc)}")


def stop(svc: Service, timeout_s: float | None = None) -> bool:
    """Stop ``svc`` by its pid file (TERM, then KILL after ``timeout_s``, by default the service's); True if it was running."""
    pid = running_pid(svc)
    svc.pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + (svc.stop_timeout_s if timeout_s is None else timeout_s)
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    return True
