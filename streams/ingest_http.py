"""HTTP ingest: ``POST /events`` takes a JSON array of events and answers for each one.

Every element goes through the same ``EventProducer`` as the SDK, as the exact
bytes it had in the body, so rejected events reach the DLQ byte for byte. A batch
is answered only once the broker has acknowledged it, so "accepted" means stored. A producer
whose batch failed is replaced at once (``Publisher``); ``/healthz`` is 503 while no new one opens.

Writing needs a token with the scope ``events:write`` (``streamrec.auth``). The body is
read up to ``ingest.max_body_bytes`` and no further (413), split off the event loop, and
refused whole (400) when it is not a JSON array or nests deeper than the decoder's bound;
an element nested too deeply for the validator is rejected alone (``not_json``).
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import asynccontextmanager

import msgspec
from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from kafka.errors import KafkaError
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from streamrec.auth import Principal
from streamrec.config import Settings
from streamrec.errors import UserError
from streamrec.events import event_json_schema
from streamrec.http_auth import HttpAuth
from streamrec.http_errors import documented, error
from streamrec.http_limits import BodyTooLarge, QueryLimit, read_body
from streams.producer import DeliveryError, EventProducer, Outcome

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
    status: str  # ok | unhealthy (HTTP 503: no producer could be opened since a batch failed)
    accepted: int | None = None  # with an ops:read token: events accepted / rejected since start
    rejected: int | None = None


class Unavailable(Exception):
    """No producer can be opened: the broker cannot be reached."""


class Publisher:
    """The app's ``EventProducer``, one batch at a time, replaced as soon as a batch fails.

    One batch at a time: a flush then covers exactly that batch's records, so a delivery failure is
    reported to the request that caused it. A producer is not reused after a failure: an idempotent
    one may be in a fatal state for good (a restarted broker no longer knows its producer id).
    ``accepted``/``rejected`` count the events answered so since start (stored, in the topic or the DLQ).
    """

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._producer: EventProducer | None = None
        self._failed_at = -math.inf  # when the last attempt to open a producer failed, and why
        self._why = ""
        self.accepted = 0
        self.rejected = 0

    def open(self) -> None:
        """Open the first producer (the app does not start without a broker)."""
        self._producer = EventProducer(self._settings, source="http")

    def publish(self, items: list[bytes]) -> list[Outcome]:
        """Send each item and wait for the broker; ``DeliveryError`` or ``Unavailable``: retry the batch."""
        arrived = time.monotonic()
        with self._lock:
            # A request that waited while an attempt failed takes that answer instead of waiting for its own.
            if self._producer is None and self._failed_at < arrived:
                self._try_open()
            producer = self._producer
            if producer is None:
                raise Unavailable(self._why)
            try:
                outcomes = [producer.send(item) for item in items]
                producer.flush(timeout_s=self._settings.kafka.request_timeout_ms / 1000)
            except DeliveryError:
                producer.discard()  # what it still holds is this batch's, answered "retry it"
                self._producer = None
                self._try_open()
                raise
            accepted = sum(o.accepted for o in outcomes)
            self.accepted += accepted
            self.rejected += len(outcomes) - accepted
        return outcomes

    def healthy(self) -> bool:
        """Whether a batch can be sent: a producer is open, or opens now. Without waiting for a batch
        in progress; trying here lets the app recover with no traffic (a probe sends none)."""
        if self._producer is None and self._lock.acquire(blocking=False):
            try:
                if self._producer is None:
                    self._try_open()
            finally:
                self._lock.release()
        return self._producer is not None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()

    def _try_open(self) -> None:
        try:
            self.open()
        except (UserError, KafkaError) as e:
            self._failed_at, self._why = time.monotonic(), str(e)


def page_origins(settings: Settings) -> list[str]:
    """The origins whose pages may publish: the recommend API's web page (by every name of a local
    address it answers on) and ``ingest.cors_origins``."""
    port = settings.serving.port
    hosts = {"127.0.0.1", "localhost"} if settings.serving.host in ("127.0.0.1", "0.0.0.0", "localhost") else set()
    hosts.add(settings.serving.host)
    extra = [o.strip().rstrip("/") for o in settings.ingest.cors_origins.split(",") if o.strip()]
    return sorted({f"http://{h}:{port}" for h in hosts - {"0.0.0.0"}} | set(extra))


def create_ingest_app(settings: Settings) -> FastAPI:
    auth = HttpAuth(settings)
    max_body = settings.ingest.max_body_bytes
    publisher = Publisher(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(publisher.open)
        try:
            yield
        finally:
            await run_in_threadpool(publisher.close)

    app = FastAPI(title="streamrec ingest", lifespan=lifespan)
    # FastAPI's documented way to customize the schema; its class types openapi as a plain method
    app.openapi = lambda: _with_event_schema(app)  # type: ignore[method-assign]
    app.add_middleware(QueryLimit)
    # The recommend API's page (serving.web) publishes from the browser, from another port: another origin.
    app.add_middleware(CORSMiddleware, allow_origins=page_origins(settings), allow_methods=["POST"],
                       allow_headers=["Authorization", "Content-Type"], max_age=600)

    def ingest(items: list[bytes]) -> list[EventResult]:
        return [
            EventResult(index=i, status="accepted") if o.accepted
            else EventResult(index=i, status="rejected", reason=o.reason, detail=o.detail)
            for i, o in enumerate(publisher.publish(items))
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
                  e503="the broker did not acknowledge the batch, or cannot be reached; retry it "
                       "(duplicates are dropped by event_id)")},
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
        except Unavailable as e:
            return error(503, f"the broker cannot be reached; retry the batch later: {e}")
        accepted = sum(r.status == "accepted" for r in results)
        return IngestAnswer(accepted=accepted, rejected=len(results) - accepted, results=results)

    @app.get("/healthz", response_model=IngestHealth, response_model_exclude_none=True,
             responses={**auth.responses(), 503: {"model": IngestHealth, "description": "unhealthy: events cannot be published"}},
             openapi_extra=auth.optional_security())
    def healthz(response: Response, caller: Principal | None = Depends(auth.caller_if_any())) -> IngestHealth:  # noqa: B008
        """``ok``, or ``unhealthy`` (503) while no producer can be opened since a batch failed; with an
        ``ops:read`` token, also the counts of events accepted and rejected."""
        health = IngestHealth(status="ok")
        if not publisher.healthy():
            response.status_code = 503
            health.status = "unhealthy"
        if caller is not None and "ops:read" in caller.scopes:
            health.accepted, health.rejected = publisher.accepted, publisher.rejected
        return health

    return app
