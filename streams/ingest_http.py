"""HTTP ingest: ``POST /events`` takes a JSON array of events and answers for each one.

Every element goes through the same ``EventProducer`` as the SDK, as the exact
text it had in the body, so rejected events reach the DLQ byte for byte. A batch
is answered only once the broker has acknowledged it, so "accepted" means stored.
"""
from __future__ import annotations

import json
import re
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from streamrec.config import Settings
from streams.producer import DeliveryError, EventProducer

MAX_BATCH_EVENTS = 1000
_WS = re.compile(r"[ \t\n\r]*")


def split_json_array(text: str) -> list[str]:
    """The source text of each element of the JSON array ``text``; ValueError says where it is not one."""
    decoder = json.JSONDecoder()
    pos = _WS.match(text).end()
    if text[pos:pos + 1] != "[":
        raise ValueError("expected a JSON array '[...]' of events")
    pos = _WS.match(text, pos + 1).end()
    items: list[str] = []
    while items or text[pos:pos + 1] != "]":
        try:
            _, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise ValueError(f"element {len(items)}: {e.msg} at character {e.pos}") from None
        items.append(text[pos:end])
        pos = _WS.match(text, end).end()
        if text[pos:pos + 1] == "]":
            break
        if text[pos:pos + 1] != ",":
            raise ValueError(f"expected ',' or ']' after element {len(items) - 1} at character {pos}")
        pos = _WS.match(text, pos + 1).end()
    if _WS.match(text, pos + 1).end() != len(text):
        raise ValueError(f"unexpected data after the array at character {pos + 1}")
    return items


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def create_ingest_app(settings: Settings) -> FastAPI:
    state: dict = {}
    # One batch at a time: a flush then covers exactly that batch's records, so a
    # delivery failure is reported to the request that caused it.
    batch_lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["producer"] = await run_in_threadpool(EventProducer, settings, source="http")
        try:
            yield
        finally:
            await run_in_threadpool(state["producer"].close)

    app = FastAPI(title="streamrec ingest", lifespan=lifespan)

    def ingest(items: list[str]) -> list[dict]:
        producer: EventProducer = state["producer"]
        with batch_lock:
            outcomes = [producer.send(item) for item in items]
            producer.flush(timeout_s=settings.kafka.request_timeout_ms / 1000)
        return [
            {"index": i, "status": "accepted"} if o.accepted
            else {"index": i, "status": "rejected", "reason": o.reason, "detail": o.detail}
            for i, o in enumerate(outcomes)
        ]

    @app.post("/events")
    async def post_events(request: Request):
        body = await request.body()
        try:
            items = split_json_array(body.decode("utf-8"))
        except UnicodeDecodeError as e:
            return _error(400, f"body is not UTF-8 (invalid byte at {e.start})")
        except ValueError as e:
            return _error(400, f"body must be a JSON array of events: {e}")
        if len(items) > MAX_BATCH_EVENTS:
            return _error(413, f"{len(items)} events in one batch; send at most {MAX_BATCH_EVENTS}")
        try:
            results = await run_in_threadpool(ingest, items)
        except DeliveryError as e:
            return _error(503, f"the broker did not acknowledge the batch; retry it (duplicates are dropped by event_id): {e}")
        accepted = sum(r["status"] == "accepted" for r in results)
        return {"accepted": accepted, "rejected": len(results) - accepted, "results": results}

    @app.get("/healthz")
    def healthz():
        producer: EventProducer = state["producer"]
        return {"status": "ok", "accepted": producer.accepted, "rejected": producer.rejected}

    return app
