"""The re-rank refresh worker: keeps the cached LLM re-ranks in step with users' live context.

The stream job publishes every updated user feature row to ``kafka.features_topic``. For
each row the worker computes the user's context signature; when it differs from the one it
last refreshed for (day-part, device, leading genres, session: ``serving.rerank.context``),
it runs the pipeline up to the re-rank and calls ``Reranker.refresh``, so the user's next
request finds the re-rank ``cached`` instead of waiting on, or timing out on, the LLM.

Where it runs follows the re-rank cache (``serving.rerank_cache``, ``serving.rerank.cache``):
- Redis (the default with Feast on Redis): a process of its own, ``streamrec rerank-worker``
  (``create_worker_app``: the worker plus ``/healthz`` and ``/metrics``), filling the cache every API
  replica reads; ``infra up`` runs it as the ``rerank-worker`` service. Several worker processes
  share the consumer group, so each row is refreshed once, whatever the number of API replicas.
- memory: a thread inside the API process (``streamrec serve --with-worker``), as only that process
  sees its cache: one node, one cache, one worker. A separate worker could not fill it, so
  ``rerank-worker`` refuses to start then.

Rows are at-least-once and may arrive in a burst: they wait in a queue where only a user's newest
row counts, the worker refreshes for ``POLL_BUDGET_S`` and then polls again, rows older than the
session gap are skipped (the context they describe is over), and a refresh that changes nothing
is never made. An intent is shared by everyone in the same situation, so a refresh whose decision
is already cached costs no LLM call (``Reranker.refresh(reuse=True)``). ``streamrec bench rerank``
measures context change → re-rank ready.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from serving.metrics import CONTENT_TYPE, ServingMetrics
from serving.pipeline import Pipeline
from serving.rerank import Reranker, context_signature, live_context
from serving.rerank.reranker import SETTLED
from streamrec.config import Settings
from streams.kafka_util import client_options

if TYPE_CHECKING:  # serving.app builds the worker
    from fastapi import FastAPI

    from serving.app import Services

log = logging.getLogger(__name__)

DEFAULT_GROUP = "streamrec-rerank-worker"
# Users whose last refreshed signature is remembered; beyond it the oldest are forgotten (and refreshed again).
MAX_TRACKED_USERS = 100_000
MAX_POLL_RECORDS = 500
# Rows are refreshed one by one, some needing an LLM call (~1 s): after this long the worker polls again and the
# rest wait, newest row per user, oldest user first.
POLL_BUDGET_S = 2.0
# The longest one refresh waits for its LLM call (which then still fills the cache): with POLL_BUDGET_S, what
# keeps a poll well within Kafka's max.poll.interval.ms (300 s) when the LLM stalls.
REFRESH_WAIT_S = 30.0
# Users waiting for a refresh; beyond it the longest-waiting are dropped (counted: skips "dropped").
MAX_WAITING_USERS = 10_000
RETRY_S = 5.0


class RefreshWorker:
    def __init__(self, settings: Settings, pipeline: Pipeline, reranker: Reranker, metrics: ServingMetrics,
                 group_id: str = DEFAULT_GROUP, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.pipeline = pipeline
        self.reranker = reranker
        self.metrics = metrics
        self.group_id = group_id
        self.clock = clock
        self.state = "stopped"  # stopped | connecting | consuming | error: <why>
        self.partitions: list[int] = []
        self._refreshed: OrderedDict[str, str] = OrderedDict()  # user -> signature of the last refresh
        self._waiting: OrderedDict[str, dict] = OrderedDict()  # user -> newest feature row not yet refreshed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rerank-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.state = "stopped"

    def status(self) -> dict:
        return {"state": self.state, "topic": self.settings.kafka.features_topic, "group": self.group_id,
                "partitions": self.partitions}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.state = "connecting"
            try:
                consumer = self._consumer()
            except KafkaError as e:
                self.state = f"error: {type(e).__name__}: {e}"
                log.warning("re-rank worker cannot reach Kafka at %s (%s); retrying in %.0fs",
                            self.settings.kafka.bootstrap_servers, e, RETRY_S)
                self._stop.wait(RETRY_S)
                continue
            try:
                self._consume(consumer)
            except KafkaError as e:
                self.state = f"error: {type(e).__name__}: {e}"
                log.warning("re-rank worker lost Kafka (%s); reconnecting in %.0fs", e, RETRY_S)
                self._stop.wait(RETRY_S)
            finally:
                consumer.close()

    def _consumer(self) -> KafkaConsumer:
        kafka = self.settings.kafka
        consumer = KafkaConsumer(
            group_id=self.group_id,
            # A new group starts at the beginning: old rows are skipped as stale, the recent ones refreshed.
            auto_offset_reset="earliest",
            enable_auto_commit=True,  # a lost refresh only costs one cache miss
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=max(kafka.session_timeout_ms // 3, 100),
            request_timeout_ms=kafka.request_timeout_ms,
            max_poll_records=MAX_POLL_RECORDS,
            **client_options(kafka),
        )
        consumer.subscribe([kafka.features_topic])
        return consumer

    def _consume(self, consumer: KafkaConsumer) -> None:
        while not self._stop.is_set():
            # Rows still waiting: only look for new ones, do not wait for them.
            batch = consumer.poll(timeout_ms=0 if self._waiting else 500)
            self.partitions = sorted(tp.partition for tp in consumer.assignment())
            if self.partitions:
                self.state = "consuming"
            for records in batch.values():
                for record in records:
                    self.add(record.value, record.key)
            self.drain(time.monotonic() + POLL_BUDGET_S)

    def add(self, value: bytes | None, key: bytes | None = None) -> None:
        """Queue a feature row from the topic: a user's newer row replaces the waiting one (a user's rows are in
        one partition, in order) and keeps its place in the queue. A tombstone (no value: the user was deleted)
        drops the user's waiting row."""
        if value is None and key is not None:
            self._waiting.pop(key.decode("utf-8", "replace"), None)
            self.metrics.worker_skips.labels("deleted").inc()
            return
        row = _parse(value)
        if row is None:
            self.metrics.worker_skips.labels("invalid").inc()
            return
        if row["user_id"] in self._waiting:
            self.metrics.worker_skips.labels("superseded").inc()
        self._waiting[row["user_id"]] = row
        while len(self._waiting) > MAX_WAITING_USERS:
            self._waiting.popitem(last=False)
            self.metrics.worker_skips.labels("dropped").inc()

    def drain(self, deadline: float) -> None:
        """Refresh waiting users, longest-waiting first, until ``deadline`` (``time.monotonic``)."""
        while self._waiting and time.monotonic() < deadline and not self._stop.is_set():
            _, row = self._waiting.popitem(last=False)
            try:
                self.handle(row)
            except Exception:  # one row the pipeline cannot handle (store down, ...) must not stop the worker
                log.exception("re-rank worker could not refresh %s", row["user_id"])
                self.metrics.worker_skips.labels("error").inc()

    # ---- one row

    def handle(self, row: dict) -> str:
        """Refresh the user's re-rank if their context changed materially; returns what was done
        (the re-rank status of a refresh, else ``skipped_<reason>``), also counted in the metrics."""
        cfg = self.settings.features
        now_ms = int(self.clock() * 1000)
        user_id = row["user_id"]
        if now_ms - row["last_event_ts_ms"] > cfg.session_gap_minutes * 60_000:
            return self._skip("stale")
        context = live_context(row, self.pipeline.catalog.rows, now_ms, cfg)
        if self._refreshed.get(user_id) == context_signature(context):
            return self._skip("unchanged")
        short = self.pipeline.shortlist(user_id)
        # The re-rank is keyed by the context the API will see, read from the store like a request.
        signature = context_signature(short.context)
        if self._refreshed.get(user_id) == signature:
            return self._skip("unchanged")
        result = self.reranker.refresh(user_id, short.rerank_candidates(), short.context, reuse=True,
                                       wait_s=REFRESH_WAIT_S)
        self.metrics.worker_refreshes.labels(result.status).inc()
        if result.applied:
            self.metrics.worker_lag.observe(max(self.clock() * 1000 - row["last_event_ts_ms"], 0) / 1000.0)
        if result.applied or result.status in SETTLED:  # settled: what the API would serve too, nothing to redo
            self._refreshed[user_id] = signature
            self._refreshed.move_to_end(user_id)
            while len(self._refreshed) > MAX_TRACKED_USERS:
                self._refreshed.popitem(last=False)
        return result.status

    def _skip(self, reason: str) -> str:
        self.metrics.worker_skips.labels(reason).inc()
        return f"skipped_{reason}"


def _parse(value: bytes | None) -> dict | None:
    """A feature row from the topic, or None when it is not one (no user or last event time)."""
    if value is None:
        return None
    try:
        row = json.loads(value)
    except (TypeError, ValueError):
        return None
    if not isinstance(row, dict) or not isinstance(row.get("user_id"), str) or not row["user_id"]:
        return None
    if isinstance(row.get("last_event_ts_ms"), bool) or not isinstance(row.get("last_event_ts_ms"), int):
        return None
    return row


def create_worker_app(settings: Settings, services: Services) -> FastAPI:
    """The worker of ``services`` (``serving.app.build_services(with_worker=True)``) as a service: started and
    stopped with the app, ``/healthz`` (503 until it consumes and while the shared cache does not answer: the
    probes' readiness; details with ``ops:read``) and ``/metrics`` (``ops:read``, as the API's)."""
    from fastapi import Depends, FastAPI
    from fastapi.responses import JSONResponse, Response

    from streamrec.auth import Principal
    from streamrec.http_auth import HttpAuth

    worker = services.worker
    if worker is None:
        raise ValueError("create_worker_app needs services built with_worker=True")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        services.start()  # the worker, and the catalog follower its shortlists need
        try:
            yield
        finally:
            services.close()

    app = FastAPI(title="streamrec re-rank worker", lifespan=lifespan)
    auth = HttpAuth(settings)

    @app.get("/healthz", responses=auth.responses(), openapi_extra=auth.optional_security())
    def healthz(caller: Principal | None = Depends(auth.caller_if_any())) -> JSONResponse:  # noqa: B008
        checks = {"worker": worker.status(), "cache": services.reranker.cache_state()}
        ready = checks["worker"]["state"] == "consuming" and checks["cache"]["state"] == "ok"
        body: dict = {"status": "ok" if ready else "unhealthy"}
        if caller is not None and "ops:read" in caller.scopes:
            body["checks"] = checks
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", dependencies=[Depends(auth.scope("ops:read"))], response_class=Response,
             responses=auth.responses())
    def metrics() -> Response:
        return Response(services.metrics.render(), media_type=CONTENT_TYPE)

    return app
