"""``streamrec privacy delete-user``: the store side (``features.deletion``) on both online stores, the Redis
re-rank cache's entries about the user, and end to end with the stream job, which must leave no trace of a deleted
user and fold none of their history again."""
from __future__ import annotations

import dataclasses
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pytest

from streamrec.catalog import load_items
from streamrec.config import PrivacyConfig
from streamrec.pseudonyms import pseudonymizer
from tests.fixtures.feast import redis_infra

pytestmark = pytest.mark.integration

T1, T2 = datetime(2026, 11, 28, 10, tzinfo=UTC), datetime(2026, 11, 29, 10, tzinfo=UTC)


@pytest.mark.parametrize("store", ["feature_client", "redis_feature_client"])
def test_a_deleted_users_online_and_offline_rows_are_gone_and_no_one_elses(store, request, session_rows):
    from features.deletion import forget_offline, forget_online

    client = request.getfixturevalue(store)
    client.write_session_features(session_rows(T1, a=3, b=4), batch_id=0)
    client.write_session_features(session_rows(T2, a=5, c=6), batch_id=1)  # a's rows on two days
    before = pd.read_parquet(client.offline_dir / "user_session")

    assert forget_online(client, "a") == 1
    assert forget_offline(client, ["a"]) == 2
    assert forget_online(client, "a") == 0 and forget_offline(client, ["a"]) == 0  # twice: nothing left

    a, b, c = client.online_features(["a", "b", "c"])
    assert a["events_total"] is None and b["events_total"] == 4 and c["events_total"] == 6
    after = pd.read_parquet(client.offline_dir / "user_session")
    assert "a" not in set(after["user_id"])
    pd.testing.assert_frame_equal(after.sort_values("user_id").reset_index(drop=True),
                                  before[before["user_id"] != "a"].sort_values("user_id").reset_index(drop=True))


def test_the_users_cached_reranks_go_and_no_one_elses(redis_server):
    import redis
    from prometheus_client import CollectorRegistry, Counter

    from serving.rerank.cache import RedisCache, forget_owner
    from serving.rerank.reranker import REDIS_PREFIX

    host, port = redis_infra.host_port(redis_server)
    client = redis.Redis(host=host, port=port)
    errors = Counter("errors", "", ["op"], registry=CollectorRegistry())
    caches = [RedisCache(client, f"{REDIS_PREFIX}:proposal:{n}", 60.0, lambda v: v, lambda v: v, errors)
              for n in ("m1", "m2")]  # two models' namespaces
    for cache in caches:
        cache.put(("a", "ctx", "q"), ["i1", "i2"], owner="a")
        cache.put(("a", "ctx2", ""), ["i3"], owner="a")
        cache.put(("b", "ctx", "q"), ["i4"], owner="b")
        cache.put(("intent", "ctx"), {"mood": "any"})  # a situation's decision: no one's

    assert forget_owner(client, REDIS_PREFIX, "a") == 4
    for cache in caches:
        assert cache.get(("a", "ctx", "q")) is None and cache.get(("a", "ctx2", "")) is None
        assert cache.get(("b", "ctx", "q")) is not None and cache.get(("intent", "ctx")) is not None
    assert forget_owner(client, REDIS_PREFIX, "a") == 0


def _log(path, user: str, times_ms: list[int], items: list[str]) -> str:
    path.write_text("".join(json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": "watch", "user_id": user, "item_id": items[n % len(items)],
        "ts": t, "device": "tv", "session_id": "s-1", "watch_seconds": 600}) + "\n" for n, t in enumerate(times_ms)))
    return str(path)


def test_a_deleted_user_leaves_no_trace_and_no_replay_brings_them_back(spark, stream_settings, world,
                                                                       tmp_path_factory):
    """With pseudonyms on: the stream job folds two users; alice is deleted; a replay of her history (new event
    ids, the same times) and bob's next event are folded; nothing of her is in the online store, the offline log,
    the stream's state files or any topic; a later event of hers starts her afresh."""
    from features.store import FeatureStoreClient
    from features.stream_job import StreamPaths
    from serving.privacy import delete_user
    from streams.kafka_util import read_topic
    from streams.replay import replay
    from tests.fixtures.stream import run_stream

    settings = dataclasses.replace(stream_settings, privacy=PrivacyConfig(pseudonymize=True))
    logs = tmp_path_factory.mktemp("logs")  # the producers' input: outside the data dir searched below
    hide = pseudonymizer(settings)
    alice, bob = hide("alice@example.com"), hide("bob")
    items = sorted(load_items(world / "items.jsonl"))[:5]
    start = int(time.time() * 1000) - 120_000
    history = [start + n * 1000 for n in range(3)]
    replay(settings, _log(logs / "alice.jsonl", "alice@example.com", history, items), progress=False)
    replay(settings, _log(logs / "bob.jsonl", "bob", history[:2], items), progress=False)
    run_stream(settings, world)
    store = FeatureStoreClient(settings)
    assert [r["events_total"] for r in store.online_features([alice, bob])] == [3, 2]

    gone = delete_user(settings, "alice@example.com")
    assert (gone.user_id, gone.online_rows) == (alice, 1) and gone.offline_rows >= 1

    replay(settings, _log(logs / "again.jsonl", "alice@example.com", history, items), progress=False)
    replay(settings, _log(logs / "bob2.jsonl", "bob", [start + 5000], items), progress=False)
    run_stream(settings, world)  # a restarted job: it reads the deletion before its first batch
    assert [r["events_total"] for r in store.online_features([alice, bob])] == [None, 3]

    offline = pd.read_parquet(store.session_log_dir.local)
    assert alice not in set(offline["user_id"]) and bob in set(offline["user_id"])
    state_files = [f for f in StreamPaths.of(settings).state.local.iterdir() if f.suffix == ".arrow"]
    assert state_files and all(alice not in set(pa_ipc.open_file(pa.memory_map(str(f))).read_all()
                                                 .column("user_id").to_pylist()) for f in state_files)
    raw = b"alice@example.com"
    for topic in (settings.kafka.events_topic, settings.kafka.dlq_topic, settings.kafka.features_topic,
                  settings.kafka.deletions_topic):
        assert all(raw not in (r.value or b"") and raw not in (r.key or b"") for r in read_topic(settings.kafka, topic))
    assert not [p for p in Path(settings.data_dir).rglob("*") if p.is_file() and raw in p.read_bytes()]

    # Her next event, after the deletion, starts her afresh.
    replay(settings, _log(logs / "later.jsonl", "alice@example.com", [int(time.time() * 1000)], items),
           progress=False)
    run_stream(settings, world)
    assert store.online_features([alice])[0]["events_total"] == 1
