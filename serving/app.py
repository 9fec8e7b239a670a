"""The recommend API (ASGI): ``/recommend``, ``/healthz``, ``/metrics``, the web page (``/ui/``, ``serving.web``)
and FastAPI's OpenAPI docs.

``create_app(settings)`` loads everything the pipeline needs (Feast client, the trained
candidate generator, the item catalog, the TF Serving client, the re-ranker), so a bad
setup fails at start-up with a clear message rather than on the first request. Tests
build it with settings pointing at temporary dirs.

Auth (``streamrec.auth``): ``/recommend`` needs a token that may read that user
(``recommend:read`` bound to them, or ``recommend:any``), ``/metrics`` one with ``ops:read``.
``/healthz`` answers everyone ok/unhealthy, and its details only to ``ops:read``.
The caller's identity is what the re-ranker's fair queue and rate limit go by. With ``privacy.pseudonymize``
the user id is checked against the token as given, then replaced by its pseudonym for everything past the edge
(features, retrieval, the re-rank, the exposure log); the answer names the user as the caller did.
Every answered list is logged as an exposure (``serving.experiments.exposure``) for the A/B report.
"""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import anyio
import httpx
from fastapi import Depends, FastAPI, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from models.retrieval import CandidateGenerator, retrieval_dir
from serving.catalog_updates import CatalogWatcher
from serving.experiments.assignment import check as check_experiment
from serving.experiments.exposure import ExposureLog, exposure_record
from serving.metrics import CONTENT_TYPE, ServingMetrics
from serving.pipeline import FeatureStoreUnavailable, ItemCatalog, Pipeline, Recommendation, Scorer
from serving.rerank import Reranker
from serving.rerank.endpoint import resolve_endpoint
from serving.rerank.prompt import MAX_REQUEST_CHARS
from serving.tf_client import PredictClient, PredictError
from serving.web import add_web_ui
from serving.worker import DEFAULT_GROUP, RefreshWorker
from streamrec.auth import AuthError, Principal
from streamrec.config import Settings
from streamrec.http_auth import HttpAuth, http_error
from streamrec.http_errors import documented
from streamrec.http_limits import MAX_QUERY_BYTES, QueryLimit, known_query_only
from streamrec.ids import ID_PATTERN, MAX_ID_CHARS
from streamrec.pseudonyms import pseudonymizer
from streamrec.vocabulary import DEVICES, latest_at_hour

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 1.0
Device = Literal[DEVICES]  # type: ignore[valid-type]


@dataclass
class Services:
    pipeline: Pipeline
    reranker: Reranker
    predict: PredictClient
    metrics: ServingMetrics
    worker: RefreshWorker | None
    catalog: CatalogWatcher | None
    exposures: ExposureLog

    def start(self) -> None:
        """The background threads: items added while serving, and the re-rank refresh worker."""
        for thread in (self.catalog, self.worker):
            if thread is not None:
                thread.start()

    def close(self) -> None:
        for thread in (self.worker, self.catalog):
            if thread is not None:
                thread.stop()
        self.reranker.close()
        self.predict.close()
        self.exposures.close()


def build_services(settings: Settings, *, with_worker: bool = False, worker_group: str = DEFAULT_GROUP,
                   follow_catalog: bool = True) -> Services:
    """``follow_catalog``: serve items added through the catalog topic (``serving.catalog_updates``)."""
    from features.store import FeatureStoreClient

    check_experiment(settings.experiments)
    store = FeatureStoreClient(settings)
    generator = CandidateGenerator.load(retrieval_dir(settings))
    catalog = ItemCatalog.load(store, list(generator.catalog.ids))
    if catalog.missing:
        log.warning("%d of %d retrieval items are not in the item store and will not be served (e.g. %s); "
                    "run `streamrec features load-catalog`", len(catalog.missing), len(generator.catalog),
                    list(catalog.missing[:3]))
    m = settings.model
    predict = PredictClient(m.host, m.grpc_port, m.name)
    reranker = Reranker(settings)
    metrics = ServingMetrics(reranker.metrics)
    pipeline = Pipeline(settings, store, generator, Scorer(predict), reranker, catalog)
    worker = RefreshWorker(settings, pipeline, reranker, metrics, worker_group) if with_worker else None
    return Services(pipeline, reranker, predict, metrics, worker,
                    CatalogWatcher(settings, pipeline) if follow_catalog else None,
                    ExposureLog(settings, metrics.exposures))


def create_app(settings: Settings, *, with_worker: bool = False, worker_group: str = DEFAULT_GROUP,
               follow_catalog: bool = True) -> FastAPI:
    services = build_services(settings, with_worker=with_worker, worker_group=worker_group,
                              follow_catalog=follow_catalog)
    top_n = settings.serving.top_n
    pseudonym = pseudonymizer(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Plain-def endpoints and dependencies run on anyio's thread pool; its limiter bounds them all.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.serving.threads
        services.start()
        try:
            yield
        finally:
            services.close()

    app = FastAPI(
        title="streamrec recommend API",
        summary="Real-time recommendations: live features, retrieval, Wide & Deep, MMR and an LLM re-rank.",
        lifespan=lifespan,
        dependencies=[Depends(known_query_only)],
    )
    app.state.services = services
    app.add_middleware(QueryLimit)
    auth = HttpAuth(settings)

    @app.get("/recommend", response_model=Recommendation,
             responses={**auth.responses(), **documented(
                 e414=f"a query string over {MAX_QUERY_BYTES} bytes")})
    def recommend(
        user_id: str = Query(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN,
                             description="the viewer; an unknown one gets the cold-start path"),
        k: int = Query(min(10, top_n), ge=1, le=top_n, description=f"items to return, 1..{top_n} (serving.top_n)"),
        device: Device | None = Query(None, description="the device asking now; default: the user's last one"),
        q: str | None = Query(None, max_length=MAX_REQUEST_CHARS, description="free-text request for the re-rank"),
        hour: int | None = Query(None, ge=0, le=23, description="answer as at this hour (features.timezone): the "
                                 "latest such hour, today or yesterday; the context and the features' decay follow"),
        compare: bool = Query(False, description="also return the top k before the re-rank (before_rerank)"),
        caller: Principal = Depends(auth.caller()),  # noqa: B008 - a dependency of this app's auth object
    ) -> Recommendation:
        try:
            caller.require_read(user_id)
        except AuthError as e:
            raise http_error(e) from None
        at_ms = None if hour is None else latest_at_hour(int(time.time() * 1000), hour, settings.features.timezone)
        # A plain def: FastAPI runs it on its thread pool, as the pipeline blocks on Feast and gRPC.
        rec = services.pipeline.recommend(pseudonym(user_id), k, device, q or None, client=caller.client,
                                          at_ms=at_ms, compare=compare)
        services.metrics.observe_request(
            rec.timings_ms, "cold_start" if rec.cold_start else "personal", rec.fallbacks, rec.rerank.status,
            rec.features.age_s, rec.rerank.cache_age_s,
        )
        services.exposures.log(exposure_record(rec, int(time.time() * 1000)))
        rec.user_id = user_id
        return rec

    @app.get("/healthz", response_model=Health, response_model_exclude_none=True,
             responses={**auth.responses(), 503: {"model": Health, "description": "the feature store is down"}},
             openapi_extra=auth.optional_security())
    def healthz(caller: Principal | None = Depends(auth.caller_if_any())) -> JSONResponse:  # noqa: B008
        """``ok``, or ``unhealthy`` with 503 when the feature store is down (nothing can be served).

        With an ``ops:read`` token: each dependency's state, and ``degraded`` (still 200) when the
        model server, the LLM or the shared re-rank cache is down, as that only degrades the answers."""
        store = _check_store(services)
        code = 503 if store["state"] == "error" else 200
        if caller is None or "ops:read" not in caller.scopes:
            return JSONResponse({"status": "ok" if code == 200 else "unhealthy"}, status_code=code)
        checks = {"feature_store": store, "model_server": _check_model(services),
                  "llm": _check_llm(settings, services.reranker), "rerank_cache": services.reranker.cache_state()}
        if services.worker is not None:
            checks["worker"] = services.worker.status()
        if services.catalog is not None:
            checks["catalog"] = services.catalog.status()
        degraded = any(checks[name]["state"] == "error" for name in ("model_server", "llm", "rerank_cache"))
        status = "down" if code == 503 else "degraded" if degraded else "ok"
        return JSONResponse({"status": status, "checks": checks}, status_code=code)

    @app.get("/metrics", dependencies=[Depends(auth.scope("ops:read"))], response_class=Response,
             responses=auth.responses())
    def metrics() -> Response:
        return Response(services.metrics.render(), media_type=CONTENT_TYPE)

    # Pseudonyms are no names to pick from: with them the page's viewer types their own id.
    add_web_ui(app, settings, auth, lambda: services.pipeline.catalog.rows,
               () if settings.privacy.pseudonymize else services.pipeline.generator.user_ids)

    return app


class Health(BaseModel):
    status: str  # ok | unhealthy; with ops:read: ok | degraded | down
    checks: dict | None = None  # with ops:read: each dependency's state


def _check_store(services: Services) -> dict:
    try:
        services.pipeline.read_features("healthz-probe")
    except FeatureStoreUnavailable as e:
        return {"state": "error", "detail": str(e)}
    return {"state": "ok", "items": len(services.pipeline.catalog)}


def _check_model(services: Services) -> dict:
    try:
        meta = services.predict.metadata()
    except PredictError as e:
        return {"state": "error", "detail": str(e)}
    return {"state": "ok", "model": meta.name, "version": meta.version}


def _check_llm(settings: Settings, reranker: Reranker) -> dict:
    if not reranker.enabled:
        return {"state": "disabled"}
    base_url, api_key, model = resolve_endpoint(settings)
    try:
        resp = httpx.get(f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=HEALTH_TIMEOUT_S)
    except httpx.HTTPError as e:
        return {"state": "error", "detail": f"{base_url}: {type(e).__name__}: {e}"}
    if resp.status_code != 200:
        return {"state": "error", "detail": f"{base_url}/models answered HTTP {resp.status_code}"}
    return {"state": "ok", "model": model, "mode": reranker.mode}
