"""Bounds on what an HTTP request may make the server read and hold.

- the request head: uvicorn's h11 parser takes heads up to ``MAX_HEAD_BYTES`` (httptools,
  its default, answers a bare "Invalid HTTP request" at ~64 KiB; h11 lets the app say why);
- the query string: ``QueryLimit`` answers 414 beyond ``MAX_QUERY_BYTES``, before routing;
- the body: ``read_body`` stops reading past its cap (413), whatever Content-Length claims.
"""
from __future__ import annotations

import json

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

MAX_HEAD_BYTES = 1 << 20
MAX_QUERY_BYTES = 8192


class BodyTooLarge(Exception):
    pass


def uvicorn_options() -> dict:
    """What ``uvicorn.run`` needs for the head bound above (both apps' CLIs use it)."""
    return {"http": "h11", "h11_max_incomplete_event_size": MAX_HEAD_BYTES}


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, or ``BodyTooLarge`` as soon as more than ``max_bytes`` are declared or have arrived."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"the body is {int(declared)} bytes, at most {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"the body is more than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class QueryLimit:
    """ASGI middleware: a query string over ``max_bytes`` gets a 414 that says so."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_QUERY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = len(scope.get("query_string", b""))
        if scope["type"] != "http" or size <= self.max_bytes:
            return await self.app(scope, receive, send)
        body = json.dumps({"detail": f"the query string is {size} bytes, at most {self.max_bytes}"}).encode()
        await send({"type": "http.response.start", "status": 414,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def known_query_only(request: Request) -> None:
    """A dependency: 422 for a query parameter the route does not take, as for a bad value: a misspelt one
    (``usr_id=``) must not be silently ignored."""
    from fastapi import HTTPException

    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    unknown = sorted(set(request.query_params) - _query_names(dependant))
    if unknown:
        raise HTTPException(422, [{"type": "extra_forbidden", "loc": ["query", name], "msg": "unknown query parameter",
                                   "input": request.query_params.get(name)} for name in unknown])


def _query_names(dependant) -> set[str]:
    """The query parameters a route's endpoint and its dependencies take."""
    return {p.alias for p in dependant.query_params} | {n for d in dependant.dependencies for n in _query_names(d)}
