"""Helpers for tests against live services."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from infra.process import free_port

T = TypeVar("T")

# Ids that ingest accepted and the API refused (the security probe's), with the validator's reason.
BAD_IDS = {
    "whitespace only": ("   ", "bad_id"),
    "with NUL": ("u\x001", "bad_id"),
    "ending in a newline": ("u1\n", "bad_id"),
    "with a newline": ("u\n1", "bad_id"),
    "non-ASCII": ("usér", "bad_id"),
    "markup": ("<b>u1</b>", "bad_id"),
    "60,000 characters": ("u" * 60_000, "too_long"),
    "129 characters": ("u" * 129, "too_long"),
}


def assert_eventually(check: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.2) -> T:
    """Retry ``check`` (which raises AssertionError until it holds) until it passes or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval_s)


def bearer(settings, *scopes: str, user: str | None = None, name: str = "tests") -> dict[str, str]:
    """The Authorization header of a token with ``scopes`` signed by ``settings``' secret."""
    from streamrec.auth import bearer_header

    return bearer_header(settings, scopes, user=user, name=name)


def run_cli(register: Callable, settings, *argv: str) -> int:
    """Run a subcommand as `streamrec` would: the package's parser (``register``), then the command function."""
    import argparse

    parser = argparse.ArgumentParser(prog="streamrec")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args, settings)


@contextlib.contextmanager
def serving(app) -> Iterator[tuple[str, int]]:
    """``app`` under a real uvicorn (the CLIs' options) on a free port, for what a test client skips:
    the HTTP parser's limits and reading the body as it arrives."""
    import uvicorn

    from streamrec.http_limits import uvicorn_options

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **uvicorn_options()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        def started():
            assert server.started

        assert_eventually(started, timeout_s=60)
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def raw_request(host: str, port: int, request: str) -> str:
    """Send ``request`` as written and return the answer's text (what clients refuse to send, servers must handle)."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _content_length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer.decode()


def _content_length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0
