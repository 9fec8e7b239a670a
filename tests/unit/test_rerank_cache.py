"""The re-rank cache's Redis backend on a real redis-server (``tests/fixtures/feast.py``'s ``redis_server``), and
the choice of backend. Marked integration: it needs that server (unit tests otherwise need none)."""
from __future__ import annotations

import dataclasses
import json
import uuid

import pytest

from serving.metrics import RerankMetrics, counts
from serving.rerank.cache import RedisCache, backend, redis_client, redis_key
from serving.rerank.intent import Intent
from serving.rerank.reranker import Reranker, decode_proposal, encode_proposal
from streamrec.config import Settings
from tests.helpers import assert_eventually, free_port
from tests.integration.test_reranker_guardrails import CANDIDATES, CTX, FUNNY_INTENT, settings_for

pytestmark = pytest.mark.integration

PROPOSALS = [
    Intent(mood="funny", genre="Comedy", avoid_genre="Horror", preferred_length="short", reason="Something funny",
           asked=True),
    Intent(),
    (("i3", "A comedy, as asked"), ("i1", "Ünïcode reason — fine")),
    (),
    "empty",
    "invalid_output",
]
PRIORS = {"mood": {"funny": 0.25, "any": 0.75}, "preferred_length": {"short": 1.0}}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(redis_server):
    client = redis_client(redis_server)
    yield client
    client.close()


def make_cache(client, encode=encode_proposal, decode=decode_proposal, ttl_s: float = 60.0, clock=None):
    metrics = RerankMetrics()
    cache = RedisCache(client, f"test:{uuid.uuid4().hex[:8]}", ttl_s, encode, decode, metrics.cache_errors,
                       **({"clock": clock} if clock else {}))
    return cache, metrics


@pytest.mark.parametrize("proposal", PROPOSALS, ids=["intent", "empty-intent", "ranking", "no-ranking", "settled-empty",
                                                     "settled-invalid"])
def test_every_proposal_kind_round_trips_with_its_age(client, proposal):
    clock = Clock()
    cache, _ = make_cache(client, clock=clock)
    key = ("intent", "0123456789abcdef")
    assert cache.get(key) is None
    cache.put(key, proposal)
    clock.now += 12.5
    value, age = cache.get(key)
    assert value == proposal and type(value) is type(proposal)
    assert age == pytest.approx(12.5)
    # Stored as JSON under the namespace, never as a pickle.
    raw = client.get(redis_key(cache.namespace, key))
    assert json.loads(raw)["value"] == encode_proposal(proposal)


def test_priors_round_trip(client):
    cache, _ = make_cache(client, encode=lambda v: v, decode=lambda v: v)
    cache.put("a1b2c3", PRIORS)
    assert cache.get("a1b2c3")[0] == PRIORS


def test_keys_are_deterministic_and_namespaced(client):
    cache, _ = make_cache(client)
    key = ("u1", "sig", "something funny", "cands")
    cache.put(key, "empty")
    name = redis_key(cache.namespace, key)
    assert name.startswith(cache.namespace + ":") and len(name) == len(cache.namespace) + 41
    assert name == redis_key(cache.namespace, list(key))  # the JSON form, as another process computes it
    assert redis_key(cache.namespace, ("u1", "sig", "something funny", "other")) != name
    assert client.exists(name)


def test_entries_expire_by_redis_ttl(client):
    cache, _ = make_cache(client, ttl_s=60.0)
    cache.put("k", "empty")
    assert 0 < client.pttl(redis_key(cache.namespace, "k")) <= 60_000
    short, _ = make_cache(client, ttl_s=0.05)
    short.put("k", "empty")

    def gone():
        assert short.get("k") is None

    assert_eventually(gone, timeout_s=5, interval_s=0.05)


def test_unknown_or_corrupt_entries_are_misses(client):
    cache, metrics = make_cache(client)
    for raw in (b"\x80\x04pickle", b'{"at": 1, "value": {"settled": "applied"}}', b'{"value": {"settled": "empty"}}',
                b'{"at": 1, "value": {"listwise": []}}'):
        client.set(redis_key(cache.namespace, "k"), raw)
        assert cache.get("k") is None
    assert counts(metrics.cache_errors) == {"decode": 4}


def test_redis_down_is_a_miss_and_a_dropped_write_never_an_error():
    settings = Settings()
    settings.feast.redis_connection = f"127.0.0.1:{free_port()}"  # nothing listens there
    cache, metrics = make_cache(redis_client(settings))
    cache.put("k", "empty")  # no exception
    assert cache.get("k") is None  # a miss (within the back-off: not even asked)
    assert counts(metrics.cache_errors) == {"put": 1, "get": 1}
    assert cache.state()["state"] == "error"


def test_backend_follows_the_setting():
    settings = Settings()
    assert settings.serving.rerank_cache == "auto" and backend(settings) == "redis"  # Feast on Redis, the default
    settings.feast.online_store = "sqlite"
    assert backend(settings) == "memory"
    settings.serving.rerank_cache = "redis"
    assert backend(settings) == "redis"
    settings.serving.rerank_cache = "memory"
    settings.feast.online_store = "redis"
    assert backend(settings) == "memory"


def test_decode_refuses_what_is_not_a_proposal():
    for data in ({"settled": "applied"}, {"intent": {"mood": "x", "colour": "red"}}, {}, {"a": 1, "b": 2}):
        with pytest.raises((ValueError, TypeError)):
            decode_proposal(data)


def test_two_rerankers_share_one_decision_through_redis(redis_server, fake_llm):
    """Separate Reranker instances (as two API replicas) share only Redis: one LLM call serves both."""
    fake_llm.answer(FUNNY_INTENT)
    settings = settings_for(fake_llm.base_url, "intent")
    settings.serving.rerank_cache = "redis"
    settings.feast = dataclasses.replace(redis_server.feast)
    with Reranker(settings) as worker, Reranker(settings) as replica:
        assert worker.cache_backend == replica.cache_backend == "redis"
        refreshed = worker.refresh("u1", CANDIDATES, CTX)
        served = replica.rerank("u2", CANDIDATES, CTX)  # another user in the same situation
        assert refreshed.status == "applied" and served.status == "cached"
        assert [i.item_id for i in served.items] == [i.item_id for i in refreshed.items]
        assert served.cache_age_s >= 0.0 and served.intent == refreshed.intent
        assert len(fake_llm.received()) == 1
        assert replica.cache_state()["state"] == "ok"


def test_infra_runs_the_worker_on_its_own_only_with_the_redis_cache(tmp_path, monkeypatch):
    from infra import stack

    monkeypatch.setattr("infra.stack.COMPONENTS", tuple(c for c in stack.COMPONENTS if c.name == "rerank-worker"))
    settings = Settings(data_dir=str(tmp_path))
    settings.serving.rerank_cache = "memory"
    said: list[str] = []
    stack.up(settings, echo=said.append)
    assert said == ["rerank-worker: runs inside api"]
    (row,) = stack.status(settings)
    assert row.state == "inside api" and row.running
    settings.serving.rerank_cache = "redis"
    said.clear()
    stack.up(settings, echo=said.append)  # it needs what the API needs
    assert said == [f"rerank-worker: not started: no candidate generator at {tmp_path / 'retrieval'} yet (streamrec train)"]
    (row,) = stack.status(settings)
    assert row.state == "stopped" and row.port == "8097 health, metrics" and not row.running
