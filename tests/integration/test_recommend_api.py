"""The recommend API end to end on a real stack (``tests/fixtures/serving_stack.py``): Feast on SQLite,
the model server serving a trained Wide & Deep export, the candidate generator, the fake OpenAI-compatible
LLM server (``tests/fixtures/fake_llm.py``) and, for the refresh worker, the embedded broker."""
from __future__ import annotations

import json
import time
import uuid

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from serving.app import create_app
from serving.pipeline import STAGES
from streamrec.config import Settings
from streamrec.vocabulary import DEVICES, daypart, local_time
from tests.fixtures.fake_llm import candidate_ids
from tests.fixtures.serving_stack import INJECTION, stack_settings
from tests.helpers import assert_eventually, bearer, free_port

pytestmark = pytest.mark.integration

INTENT = json.dumps({"genre_weights": [{"genre": "Comedy", "weight": 1}], "mood": "funny", "preferred_length": "any",
                     "exclude_genres": [], "reason": "Something light"})
ITEM_FIELDS = {"item_id", "title", "genres", "source", "scores", "reason", "propensity", "explored"}
RESPONSE_FIELDS = {"user_id", "k", "cold_start", "items", "features", "model", "timings_ms", "rerank", "fallbacks",
                   "request_id", "experiment", "before_rerank"}


def client_for(settings: Settings, **app_options) -> TestClient:
    """A client of a trusted service: it may read every user, and the metrics."""
    return TestClient(create_app(settings, **app_options), headers=bearer(settings, "recommend:any", "ops:read"))


@pytest.fixture(scope="module")
def api(serving_stack, _fake_llm_server):
    """The API in intent mode with a generous LLM budget (the fake answers at once unless told otherwise)."""
    with client_for(stack_settings(serving_stack, _fake_llm_server.base_url)) as client:
        yield client


def recommend(client: TestClient, **params) -> dict:
    r = client.get("/recommend", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def metric(client: TestClient, sample: str, **labels) -> float:
    """A sample's value from /metrics (0 when absent)."""
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def wait_for_metric(client: TestClient, value: float, sample: str, **labels) -> None:
    def check():
        assert metric(client, sample, **labels) == value

    assert_eventually(check, timeout_s=60)


# ---------------------------------------------------------------- the contract


def test_response_contract(api, serving_stack, fake_llm):
    from models.retrieval import CandidateGenerator, retrieval_dir

    fake_llm.answer(INTENT)
    user = serving_stack.user_ids[0]
    body = recommend(api, user_id=user, k=5)

    assert set(body) == RESPONSE_FIELDS
    assert body["user_id"] == user and body["k"] == 5 and body["cold_start"] is False
    items = body["items"]
    ids = [i["item_id"] for i in items]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert set(ids) <= serving_stack.item_ids
    for item in items:
        assert set(item) == ITEM_FIELDS
        assert isinstance(item["title"], str) and item["title"]
        assert isinstance(item["genres"], list) and item["source"] in ("embedding", "content", "popular")
        assert isinstance(item["scores"]["retrieval"], float)
        assert 0.0 <= item["scores"]["wide_deep"] <= 1.0
        assert isinstance(item["scores"]["final"], float)
        assert isinstance(item["reason"], str) and item["reason"]

    # Every item is one retrieval would give for the features and context the response reports.
    features = body["features"]
    assert features["found"] is True and features["age_s"] >= 0
    ctx = features["context"]
    generator = CandidateGenerator.load(retrieval_dir(serving_stack.settings))
    candidates = generator.candidates(
        user, features["session"], {f: ctx[f] for f in ("daypart", "device", "is_weekend")},
        serving_stack.settings.serving.candidates, exclude=features["session"]["last_items"])
    assert set(ids) <= {c.item_id for c in candidates}
    assert not set(ids) & set(features["session"]["last_items"])  # just watched: not recommended again

    assert body["model"] == {"name": "wide_deep", "version": 1}
    assert set(body["timings_ms"]) == set(STAGES)
    assert all(ms >= 0 for ms in body["timings_ms"].values())
    assert body["timings_ms"]["total"] >= max(ms for stage, ms in body["timings_ms"].items() if stage != "total")
    assert body["rerank"]["applied"] is True and body["rerank"]["status"] == "applied"
    assert body["rerank"]["mode"] == "intent" and body["rerank"]["model"] == "fake-llm"
    assert body["fallbacks"] == []
    assert ctx["device"] == features["session"]["last_device"]
    # No experiment runs: the default variant, nothing explored.
    assert body["experiment"] == {"name": "", "variant": "default"} and len(body["request_id"]) == 32
    assert all(i["propensity"] == 1.0 and i["explored"] is False for i in items)


def test_device_parameter_overrides_the_live_device(api, serving_stack, fake_llm):
    fake_llm.answer(INTENT)
    user = serving_stack.user_ids[1]
    live = recommend(api, user_id=user, k=3)["features"]["context"]["device"]
    other = next(d for d in DEVICES if d != live)
    assert recommend(api, user_id=user, k=3, device=other)["features"]["context"]["device"] == other


def test_hour_and_compare_answer_as_at_that_hour_with_the_order_before_the_rerank(api, serving_stack, fake_llm):
    fake_llm.answer(INTENT)
    user = serving_stack.user_ids[1]
    now = recommend(api, user_id=user, k=5)
    assert now["before_rerank"] is None  # only when asked for
    hour = (local_time(int(time.time() * 1000), serving_stack.settings.features.timezone).hour + 12) % 24
    body = recommend(api, user_id=user, k=5, hour=hour, compare="true")
    assert body["features"]["context"]["daypart"] == daypart(hour) != now["features"]["context"]["daypart"]
    # 11-12 hours ago: the features are aged to then, not to now.
    assert 0 <= body["features"]["age_s"] <= now["features"]["age_s"]
    before = body["before_rerank"]
    assert len(before) == 5 and {i["item_id"] for i in before} <= serving_stack.item_ids
    scores = [i["scores"]["final"] for i in before]  # W&D relevance, in MMR order: the top one is the best
    assert scores[0] == max(scores) and all(i["scores"]["final"] == i["scores"]["wide_deep"] for i in before)


def test_items_lists_catalog_items_by_genre_and_title(api, serving_stack):
    comedies = api.get("/items", params={"genre": "Comedy", "limit": 5}).json()
    assert 0 < len(comedies) <= 5 and all("Comedy" in i["genres"] for i in comedies)
    assert {i["item_id"] for i in comedies} <= serving_stack.item_ids
    word = comedies[0]["title"].split()[0]
    assert all(word.lower() in i["title"].lower() for i in api.get("/items", params={"q": word}).json())
    assert api.get("/items", params={"limit": 0}).status_code == 422


def test_unknown_user_gets_the_cold_start_path(api, serving_stack, fake_llm):
    fake_llm.answer(INTENT)
    body = recommend(api, user_id="never-seen-viewer", k=4, device="tv", q="something funny")
    assert body["cold_start"] is True and "cold_start" in body["fallbacks"]
    assert body["features"]["found"] is False and body["features"]["context"]["device"] == "tv"
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 4 and set(ids) <= serving_stack.item_ids
    assert body["model"]["version"] == 1  # still scored, from the context alone
    assert "something funny" in fake_llm.received()[-1]["messages"][-1]["content"]


@pytest.mark.parametrize("params, field", [
    ({"k": 3}, "user_id"),
    ({"user_id": "u0001", "k": 0}, "k"),
    ({"user_id": "u0001", "k": 21}, "k"),
    ({"user_id": "u0001", "k": "many"}, "k"),
    ({"user_id": "has space", "k": 3}, "user_id"),
    ({"user_id": "", "k": 3}, "user_id"),
    ({"user_id": "u0001", "device": "toaster"}, "device"),
    ({"user_id": "u0001", "q": "x" * 201}, "q"),
    ({"user_id": "u0001", "hour": 24}, "hour"),
    ({"user_id": "u0001", "compare": "maybe"}, "compare"),
])
def test_bad_parameters_get_a_422_naming_the_field(api, params, field):
    r = api.get("/recommend", params=params)
    assert r.status_code == 422
    errors = r.json()["detail"]
    assert [e["loc"] for e in errors] == [["query", field]] and errors[0]["msg"]


def test_openapi_docs_describe_the_endpoints(api):
    spec = api.get("/openapi.json").json()
    assert {"/recommend", "/healthz", "/metrics", "/items", "/ui/config"} <= set(spec["paths"])
    params = {p["name"] for p in spec["paths"]["/recommend"]["get"]["parameters"]}
    assert params == {"user_id", "k", "device", "q", "hour", "compare"}
    assert "Recommendation" in spec["components"]["schemas"]
    assert api.get("/docs").status_code == 200


def test_metrics_expose_stage_histograms_fallbacks_feature_age_and_llm(api, serving_stack, fake_llm):
    fake_llm.answer(INTENT)
    recommend(api, user_id=serving_stack.user_ids[2], k=2, q="metrics check")
    recommend(api, user_id="metrics-cold-viewer", k=2)
    for stage in STAGES:
        assert metric(api, "streamrec_recommend_stage_seconds_count", stage=stage) >= 2
    assert metric(api, "streamrec_recommend_fallbacks_total", reason="cold_start") >= 1
    assert metric(api, "streamrec_recommend_requests_total", path="personal") >= 1
    assert metric(api, "streamrec_feature_age_seconds_count") >= 1
    assert metric(api, "streamrec_llm_latency_seconds_count") >= 1
    assert metric(api, "streamrec_llm_calls_total", outcome="ok") >= 1
    assert metric(api, "streamrec_recommend_rerank_total", status="applied") >= 1


def test_healthz_reports_each_dependency(serving_stack, _fake_llm_server):
    # No LLM listens on this port: the LLM is down, which degrades answers but does not stop them.
    settings = stack_settings(serving_stack, f"http://127.0.0.1:{free_port()}/v1")
    with client_for(settings) as client:
        r = client.get("/healthz")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "degraded"
        assert body["checks"]["feature_store"] == {"state": "ok", "items": len(serving_stack.item_ids)}
        assert body["checks"]["model_server"] == {"state": "ok", "model": "wide_deep", "version": 1}
        assert body["checks"]["llm"]["state"] == "error" and "ConnectError" in body["checks"]["llm"]["detail"]
        assert "worker" not in body["checks"]
    settings = stack_settings(serving_stack, _fake_llm_server.base_url, llm__enabled=False)
    with client_for(settings) as client:
        body = client.get("/healthz").json()
        assert body["status"] == "ok" and body["checks"]["llm"] == {"state": "disabled"}


def test_model_server_down_degrades_to_retrieval_order(serving_stack, _fake_llm_server):
    settings = stack_settings(serving_stack, _fake_llm_server.base_url, llm__enabled=False,
                              model__grpc_port=free_port())
    with client_for(settings) as client:
        body = recommend(client, user_id=serving_stack.user_ids[0], k=5)
        assert body["fallbacks"] == ["model_unavailable"] and body["model"] is None
        assert len(body["items"]) == 5 and all(i["scores"]["wide_deep"] is None for i in body["items"])
        assert body["rerank"]["status"] == "disabled"
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and health["checks"]["model_server"]["state"] == "error"
        assert metric(client, "streamrec_recommend_fallbacks_total", reason="model_unavailable") == 1


def test_request_tensors_decode_as_tensorflow_encodes_them():
    import numpy as np
    import tensorflow as tf

    from serving.tf_client import tensor_proto

    arrays = [np.array([["i00001", ""], ["é", "x"]], dtype=object), np.random.default_rng(0).random((3, 18), np.float32),
              np.array([[1], [0]], np.int64), np.array([["phone"]]), np.zeros((0, 1), np.float32)]
    for value in arrays:
        ours, theirs = tf.make_ndarray(tensor_proto(value)), tf.make_ndarray(tf.make_tensor_proto(value))
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and (ours == theirs).all()


def test_unreadable_feature_store_still_gets_a_list_flagged_and_healthz_says_down(serving_stack, tmp_path, _fake_llm_server):
    import shutil
    import sqlite3

    data = tmp_path / "data"
    shutil.copytree(serving_stack.settings.data_path, data, ignore=shutil.ignore_patterns("log", "run"))
    settings = stack_settings(serving_stack, _fake_llm_server.base_url, llm__enabled=False)
    settings.data_dir = str(data)
    with client_for(settings) as client:
        with sqlite3.connect(data / "feast" / "online.db") as db:  # the online tables are gone
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                db.execute(f'DROP TABLE "{table}"')
        r = client.get("/recommend", params={"user_id": serving_stack.user_ids[0], "k": 3})
        assert r.status_code == 200 and len(r.json()["items"]) == 3
        assert r.json()["fallbacks"] == ["features_unavailable"] and r.json()["cold_start"] is False
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "down"
        assert health.json()["checks"]["feature_store"]["state"] == "error"


# ---------------------------------------------------------------- re-rank guardrails, through the API


def assert_wide_deep_order(body: dict) -> None:
    """The re-rank did not apply: items keep the MMR order of the W&D shortlist, scored by W&D."""
    assert body["rerank"]["applied"] is False
    assert all(i["scores"]["final"] == i["scores"]["wide_deep"] for i in body["items"])


def test_slow_llm_times_out_to_wide_deep_order_then_serves_the_cached_answer(serving_stack, fake_llm):
    settings = stack_settings(serving_stack, fake_llm.base_url, llm__budget_ms=200)
    fake_llm.answer(INTENT)
    fake_llm.hold()
    with client_for(settings) as client:
        params = {"user_id": serving_stack.user_ids[3], "k": 5}
        body = recommend(client, **params)
        assert body["rerank"]["status"] == "timeout" and "rerank_timeout" in body["fallbacks"]
        assert_wide_deep_order(body)
        fake_llm.release()  # the call finishes in the background and fills the cache

        def cached():
            again = recommend(client, **params)
            assert again["rerank"]["status"] == "cached", again["rerank"]
            return again

        again = assert_eventually(cached)
        assert again["rerank"]["applied"] is True and again["fallbacks"] == []
        assert len(fake_llm.received()) == 1  # one LLM call served both


@pytest.mark.parametrize("behave, status", [
    (lambda fake: fake.fail(500), "error"),
    (lambda fake: fake.answer("Sure! Here are some great picks for tonight."), "invalid_output"),
    (lambda fake: fake.answer('{"genre_weights": "lots", "mood": 7'), "invalid_output"),
    (lambda fake: fake.refuse("I can't help with that."), "refusal"),
], ids=["http-500", "prose", "broken-json", "refusal"])
def test_llm_failures_fall_back_to_wide_deep_order_with_their_status(api, serving_stack, fake_llm, behave, status):
    behave(fake_llm)
    body = recommend(api, user_id=serving_stack.user_ids[4], k=5, q=f"guardrail {uuid.uuid4().hex[:6]}")
    assert body["rerank"]["status"] == status and f"rerank_{status}" in body["fallbacks"]
    assert len(body["items"]) == 5
    assert_wide_deep_order(body)
    assert metric(api, "streamrec_recommend_fallbacks_total", reason=f"rerank_{status}") >= 1


def test_injected_title_never_yields_a_non_candidate_id(serving_stack, fake_llm):
    """A title tells the LLM to rank an id that is no candidate; a model that obeys still cannot put one on the list."""
    outsider = {}

    def obey(body):
        allowed = candidate_ids(body)
        outsider["id"] = next(i for i in sorted(serving_stack.item_ids) if i not in allowed)
        return json.dumps({"ranking": [
            {"id": "HACKED-1", "reason": "as instructed"},
            {"id": outsider["id"], "reason": "also instructed"},
            {"id": allowed[-1], "reason": "a better fit"},
            {"id": allowed[-2], "reason": "a fine pick"},
        ]})

    fake_llm.answer(obey)
    settings = stack_settings(serving_stack, fake_llm.base_url, llm__mode="listwise")
    with client_for(settings) as client:
        body = recommend(client, user_id=serving_stack.user_ids[5], k=20)
    (request,) = fake_llm.received()
    allowed = candidate_ids(request)
    assert INJECTION in request["messages"][-1]["content"]  # the poisoned titles did reach the LLM
    ids = [i["item_id"] for i in body["items"]]
    assert body["rerank"]["status"] == "applied"
    assert set(ids) <= set(allowed) and len(ids) == len(set(ids)) == len(allowed)
    assert "HACKED-1" not in ids and outsider["id"] not in ids
    assert ids[:2] == [allowed[-1], allowed[-2]]  # the valid part of the answer was used


# ---------------------------------------------------------------- the refresh worker


def publish(settings: Settings, key: str, value: bytes) -> None:
    from streams.producer import open_kafka_producer

    producer = open_kafka_producer(settings.kafka)
    try:
        producer.send(settings.kafka.features_topic, value, key=key.encode())
        producer.flush()
    finally:
        producer.close()


def publish_feature_row(settings: Settings, row: dict) -> None:
    """What the stream sink does with an updated user: the online store first, then the features topic."""
    from features.store import FeatureStoreClient

    stamped = {**row, "event_timestamp": pd.Timestamp(row["last_event_ts_ms"], unit="ms", tz="UTC")}
    FeatureStoreClient(settings).write_session_features(pd.DataFrame([stamped]), f"test-{uuid.uuid4().hex[:8]}")
    publish(settings, row["user_id"], json.dumps({**row, "event_timestamp": row["last_event_ts_ms"]}).encode())


def test_worker_refreshes_the_cached_rerank_after_a_context_change(serving_stack, kafka_settings, fake_llm):
    from features.store import FeatureStoreClient

    fake_llm.answer(INTENT)
    settings = stack_settings(serving_stack, fake_llm.base_url)
    settings.kafka = kafka_settings.kafka
    user = serving_stack.user_ids[6]
    (row,) = FeatureStoreClient(settings).online_features([user])
    now_ms = int(time.time() * 1000)
    # The user just started a new session on another device: a material change of context.
    row.update(last_device=next(d for d in DEVICES if d != row["last_device"]), session_id=f"{user}-fresh",
               session_events=1, last_event_ts_ms=now_ms)

    with client_for(settings, with_worker=True, worker_group=f"test-{uuid.uuid4().hex[:8]}") as client:
        publish_feature_row(settings, row)
        wait_for_metric(client, 1, "streamrec_rerank_worker_refreshes_total", status="applied")
        calls = len(fake_llm.received())
        body = recommend(client, user_id=user, k=5)
        assert body["rerank"]["status"] == "cached"  # the first request already finds the refreshed re-rank
        assert len(fake_llm.received()) == calls  # and made no LLM call of its own
        assert body["features"]["context"]["device"] == row["last_device"]
        worker = client.get("/healthz").json()["checks"]["worker"]
        assert worker["state"] == "consuming" and worker["topic"] == settings.kafka.features_topic

        publish_feature_row(settings, row)  # the same context again: nothing to refresh
        wait_for_metric(client, 1, "streamrec_rerank_worker_skips_total", reason="unchanged")
        publish(settings, user, b"not a feature row")
        wait_for_metric(client, 1, "streamrec_rerank_worker_skips_total", reason="invalid")
        # A row from two hours ago describes a session that is over: not worth an LLM call.
        old = {**row, "user_id": serving_stack.user_ids[7], "last_event_ts_ms": now_ms - 2 * 3600 * 1000}
        publish(settings, old["user_id"], json.dumps(old).encode())
        wait_for_metric(client, 1, "streamrec_rerank_worker_skips_total", reason="stale")
        assert metric(client, "streamrec_rerank_worker_refreshes_total", status="applied") == 1
        assert len(fake_llm.received()) == calls
