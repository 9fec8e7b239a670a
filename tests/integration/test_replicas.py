"""Two API replicas and a separate re-rank worker sharing the re-rank cache in Redis (issue 18).

The serving stack (``tests/fixtures/serving_stack.py``), the embedded broker, a real redis-server and the fake
LLM: the worker is a ``streamrec rerank-worker`` process; the replicas are two apps in this process, each with
its own ``Reranker``, so all they share is Redis."""
from __future__ import annotations

import dataclasses
import sys
import time
import uuid

import httpx
import pytest

from benchmarks.stack import settings_env
from infra import process
from infra.process import Service
from serving.cli import register
from streamrec.errors import UserError
from streamrec.vocabulary import DEVICES
from tests.fixtures.serving_stack import stack_settings
from tests.helpers import assert_eventually, bearer, free_port, run_cli
from tests.integration.test_recommend_api import INTENT, client_for, metric, publish_feature_row, recommend

pytestmark = pytest.mark.integration


@pytest.fixture
def shared_settings(serving_stack, kafka_settings, redis_server, fake_llm):
    """The stack's settings with the re-rank cache in the session's Redis and the test's own topics."""
    settings = stack_settings(serving_stack, fake_llm.base_url, serving__rerank_cache="redis")
    settings.feast = dataclasses.replace(settings.feast, redis_connection=redis_server.feast.redis_connection)
    settings.kafka = kafka_settings.kafka
    return settings


@pytest.fixture
def worker_process(shared_settings, tmp_path):
    """``streamrec rerank-worker`` as a process with exactly these settings; yields its base URL once ready."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    svc = Service(name="rerank-worker", ready=ready, data_dir=tmp_path, env=settings_env(shared_settings),
                  argv=[sys.executable, "-m", "streamrec.cli", "rerank-worker", "--port", str(port),
                        "--worker-group", f"test-{uuid.uuid4().hex[:8]}"], start_timeout_s=180.0)
    process.start(svc)
    try:
        yield url
    finally:
        process.stop(svc)


def test_two_replicas_serve_one_decision_the_separate_worker_made(serving_stack, shared_settings, worker_process,
                                                                   fake_llm):
    from features.store import FeatureStoreClient

    fake_llm.answer(INTENT)
    settings = shared_settings
    ops = bearer(settings, "ops:read")
    health = httpx.get(f"{worker_process}/healthz", headers=ops).json()
    assert health["status"] == "ok" and health["checks"]["cache"]["backend"] == "redis"
    assert health["checks"]["worker"]["topic"] == settings.kafka.features_topic

    user = serving_stack.user_ids[8]
    (row,) = FeatureStoreClient(settings).online_features([user])
    # A new session on another device: a material change of context, for the worker to refresh.
    row.update(last_device=next(d for d in DEVICES if d != row["last_device"]), session_id=f"{user}-replicas",
               session_events=1, last_event_ts_ms=int(time.time() * 1000))

    with client_for(settings) as first, client_for(settings) as second:
        assert first.app.state.services.worker is None and second.app.state.services.worker is None
        publish_feature_row(settings, row)

        def refreshed():
            text = httpx.get(f"{worker_process}/metrics", headers=ops).text
            assert 'streamrec_rerank_worker_refreshes_total{status="applied"} 1.0' in text

        assert_eventually(refreshed, timeout_s=60)

        # Both answer as at one instant: features decay with the clock, and two W&D scores a hair apart may
        # swap between two requests a few milliseconds apart, whatever the cache holds.
        instant = time.time()
        for client in (first, second):
            client.app.state.services.pipeline.clock = lambda: instant

        def both_cached():
            bodies = [recommend(client, user_id=user, k=5) for client in (first, second)]
            assert [b["rerank"]["status"] for b in bodies] == ["cached", "cached"]
            return bodies

        one, two = assert_eventually(both_cached)
        assert [i["item_id"] for i in one["items"]] == [i["item_id"] for i in two["items"]]
        assert one["features"]["context"]["device"] == row["last_device"]
        # One decision, made by the worker: neither replica asked the LLM.
        assert len(fake_llm.received()) == 1
        assert metric(first, "streamrec_llm_calls_total", outcome="ok") == 0
        assert metric(second, "streamrec_llm_calls_total", outcome="ok") == 0
        assert metric(first, "streamrec_rerank_cache_errors_total", op="get") == 0


def test_rerank_worker_refuses_an_in_process_cache(serving_stack, fake_llm):
    settings = stack_settings(serving_stack, fake_llm.base_url, serving__rerank_cache="memory")
    with pytest.raises(UserError, match="in-process memory.*could not fill it"):
        run_cli(register, settings, "rerank-worker")
