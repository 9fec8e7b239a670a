"""HTTP ingest: ``POST /events`` takes a JSON array of events and answers for each one.

Every element goes through the same ``EventProducer`` as the SDK, as the exact
bytes it had in the body, so rejected events reach the DLQ byte for byte. A batch
is answered only once the broker has acknowledged it, so "accepted" means stored.

Writing needs a token with the scope ``events:write`` (``streamrec.auth``). The body is
read up to ``ingest.max_body_bytes`` and no further (413), split off the event loop, and
refused whole (400) when it is not a JSON array or nests deeper than the decoder's bound;
an element nested too deeply for the validator is rejected alone (``not_json``).
"""
from __future__ import annotations

import threading
from contextlib import asynccontextmanager

import msgspec
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from streamrec.auth import Principal
from streamrec.config import Settings
from streamrec.events import event_json_schema
from streamrec.http_auth import HttpAuth
from streamrec.http_errors import documented, error
from streamrec.http_limits import BodyTooLarge, QueryLimit, read_body
from streams.producer import DeliveryError, EventProducer

MAX_BATCH_EVENTS = 1000
_SPLIT = msgspec.json.Decoder(list[msgspec.Raw])


def split_json_array(body: bytes) -> list[bytes]:
    """The source bytes of each element of the JSON array ``body``; ValueError says why it is not one."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"body is not UTF-8 (invalid byte at {e.start})") from None
    try:
        return [bytes(raw) for raw in _SPLIT.decode(body)]
    except msgspec.ValidationError as e:  # valid JSON, not an array
        raise ValueError(f"body must be a JSON array of events: {e}") from None
    except msgspec.DecodeError as e:
        raise ValueError(f"body must be a JSON array of events: {e}") from None
    except RecursionError:  # msgspec's bound on nesting is the interpreter's recursion limit
        raise ValueError("body must be a JSON array of events: it nests too deeply") from None


def _with_event_schema(app: FastAPI) -> dict:
    """FastAPI's OpenAPI document, once, with the Event schema among its components."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["Event"] = event_json_schema()
        app.openapi_schema = schema
    return app.openapi_schema


class EventResult(BaseModel):
    index: int
    status: str  # accepted | rejected
    reason: str | None = None  # rejected: the validator's reason code (also the DLQ record's header)
    detail: str | None = None


class IngestAnswer(BaseModel):
    accepted: int
    rejected: int
    results: list[EventResult]


class IngestHealth(BaseModel):
    status: str  # ok
    accepted: int | None = None  # with an ops:read token: events accepted / rejected since start
    rejected: int | None = None


def create_ingest_app(settings: Settings) -> FastAPI:
    state: dict = {}
    auth = HttpAuth(settings)
    max_body = settings.ingest.max_body_bytes
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
    app.openapi = lambda: _with_event_schema(app)
    app.add_middleware(QueryLimit)

    def ingest(items: list[bytes]) -> list[EventResult]:
        producer: EventProducer = state["producer"]
        with batch_lock:
            outcomes = [producer.send(item) for item in items]
            producer.flush(timeout_s=settings.kafka.request_timeout_ms / 1000)
        return [
            EventResult(index=i, status="accepted") if o.accepted
            else EventResult(index=i, status="rejected", reason=o.reason, detail=o.detail)
            for i, o in enumerate(outcomes)
        ]

    # Any JSON array is taken and each element judged on its own (200 with a verdict each), so the
    # body's schema is that; the event schema comes along as what each element should be.
    body_schema = {"type": "array", "maxItems": MAX_BATCH_EVENTS,
                   "items": {"description": "an event (see the Event schema); anything else is rejected alone"}}

    @app.post("/events", response_model=IngestAnswer,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}},
              responses={**auth.responses(), **documented(
                  e400="the body is not a JSON array (or is not UTF-8, or nests too deeply)",
                  e413=f"more than {MAX_BATCH_EVENTS} events, or a body over {max_body} bytes",
                  e503="the broker did not acknowledge the batch; retry it (duplicates are dropped by event_id)")},
              dependencies=[Depends(auth.scope("events:write"))])
    async def post_events(request: Request):
        """Validate and publish each event; invalid ones go to the DLQ with their reason."""
        try:
            body = await read_body(request, max_body)
        except BodyTooLarge as e:
            return error(413, f"{e}; send the events in smaller batches")
        try:
            items = await run_in_threadpool(split_json_array, body)
        except ValueError as e:
            return error(400, str(e))
        if len(items) > MAX_BATCH_EVENTS:
            return error(413, f"{len(items)} events in one batch; send at most {MAX_BATCH_EVENTS}")
        try:
            results = await run_in_threadpool(ingest, items)
        except DeliveryError as e:
            return error(503, f"the broker did not acknowledge the batch; retry it (duplicates are dropped by event_id): {e}")
        accepted = sum(r.status == "accepted" for r in results)
        return IngestAnswer(accepted=accepted, rejected=len(results) - accepted, results=results)

    @app.get("/healthz", response_model=IngestHealth, response_model_exclude_none=True,
             responses=auth.responses(), openapi_extra=auth.optional_security())
    def healthz(caller: Principal | None = Depends(auth.caller_if_any())) -> IngestHealth:
        """``ok``; with an ``ops:read`` token, also the counts of events accepted and rejected."""
        if caller is None or "ops:read" not in caller.scopes:
            return IngestHealth(status="ok")
        producer: EventProducer = state["producer"]
        return IngestHealth(status="ok", accepted=producer.accepted, rejected=producer.rejected)

    return app
