"""The recommend API (ASGI): ``/recommend``, ``/healthz``, ``/metrics``, and FastAPI's OpenAPI docs.

``create_app(settings)`` loads everything the pipeline needs (Feast client, the trained
candidate generator, the item catalog, the TF Serving client, the re-ranker), so a bad
setup fails at start-up with a clear message rather than on the first request. Tests
build it with settings pointing at temporary dirs.

Auth: with ``serving.auth_token`` set, ``/recommend`` and ``/metrics`` need
``Authorization: Bearer <token>``; ``/healthz`` and the docs stay open (they hold no user data).
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import httpx
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from streamrec.vocabulary import DEVICES
from infra.llm import resolve_endpoint
from models.retrieval import CandidateGenerator, retrieval_dir
from serving.auth import require_token
from serving.metrics import CONTENT_TYPE, ServingMetrics
from serving.pipeline import FeatureStoreUnavailable, ItemCatalog, Pipeline, Recommendation, Scorer
from serving.rerank import Reranker
from serving.rerank.prompt import MAX_REQUEST_CHARS
from serving.tf_client import PredictClient, PredictError
from serving.worker import DEFAULT_GROUP, RefreshWorker
from streamrec.config import Settings

log = logging.getLogger(__name__)

USER_ID_PATTERN = r"^[A-Za-z0-9_.:@-]+$"
MAX_USER_ID_CHARS = 128
HEALTH_TIMEOUT_S = 1.0
Device = Literal[DEVICES]  # type: ignore[valid-type]


@dataclass
class Services:
    pipeline: Pipeline
    reranker: Reranker
    predict: PredictClient
    metrics: ServingMetrics
    worker: RefreshWorker | None

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.reranker.close()
        self.predict.close()


def build_services(settings: Settings, *, with_worker: bool = False, worker_group: str = DEFAULT_GROUP) -> Services:
    from features.store import FeatureStoreClient

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
    metrics = ServingMetrics(reranker.stats)
    pipeline = Pipeline(settings, store, generator, Scorer(predict), reranker, catalog)
    worker = RefreshWorker(settings, pipeline, reranker, metrics, worker_group) if with_worker else None
    return Services(pipeline, reranker, predict, metrics, worker)


def create_app(settings: Settings, *, with_worker: bool = False, worker_group: str = DEFAULT_GROUP) -> FastAPI:
    services = build_services(settings, with_worker=with_worker, worker_group=worker_group)
    top_n = settings.serving.top_n

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if services.worker is not None:
            services.worker.start()
        try:
            yield
        finally:
            services.close()

    app = FastAPI(
        title="streamrec recommend API",
        summary="Real-time recommendations: live features, retrieval, Wide & Deep, MMR and an LLM re-rank.",
        lifespan=lifespan,
    )
    app.state.services = services
    auth = [Depends(require_token(settings.serving.auth_token))]

    @app.exception_handler(FeatureStoreUnavailable)
    async def _store_down(request: Request, exc: FeatureStoreUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.get("/recommend", response_model=Recommendation, dependencies=auth,
             responses={401: {"description": "missing or wrong bearer token"},
                        503: {"description": "the feature store cannot be read"}})
    def recommend(
        user_id: str = Query(min_length=1, max_length=MAX_USER_ID_CHARS, pattern=USER_ID_PATTERN,
                             description="the viewer; an unknown one gets the cold-start path"),
        k: int = Query(min(10, top_n), ge=1, le=top_n, description=f"items to return, 1..{top_n} (serving.top_n)"),
        device: Device | None = Query(None, description="the device asking now; default: the user's last one"),
        q: str | None = Query(None, max_length=MAX_REQUEST_CHARS, description="free-text request for the re-rank"),
    ) -> Recommendation:
        # A plain def: FastAPI runs it on its thread pool, as the pipeline blocks on Feast and gRPC.
        rec = services.pipeline.recommend(user_id, k, device, q or None)
        services.metrics.observe_request(
            rec.timings_ms, "cold_start" if rec.cold_start else "personal", rec.fallbacks, rec.rerank.status,
            rec.features.age_s, rec.rerank.cache_age_s,
        )
        return rec

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Each dependency's state. 503 when the feature store is down (nothing can be served); a model
        server or LLM that is down only degrades the answers, so the API still reports 200, ``degraded``."""
        checks = {
            "feature_store": _check_store(services),
            "model_server": _check_model(services),
            "llm": _check_llm(settings, services.reranker),
        }
        if services.worker is not None:
            checks["worker"] = services.worker.status()
        down = [name for name in ("feature_store", "model_server", "llm") if checks[name]["state"] == "error"]
        status = "down" if "feature_store" in down else "degraded" if down else "ok"
        return JSONResponse({"status": status, "checks": checks}, status_code=503 if status == "down" else 200)

    @app.get("/metrics", dependencies=auth, response_class=Response)
    def metrics() -> Response:
        return Response(services.metrics.render(), media_type=CONTENT_TYPE)

    return app


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
