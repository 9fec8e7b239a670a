"""``streamrec privacy delete-user``'s store side (``features.deletion``) on both online stores: the user's
online rows and offline rows go, everyone else's stay; and the Redis re-rank cache's entries about the user."""
from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

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
    assert forget_offline(client, "a") == 2
    assert forget_online(client, "a") == 0 and forget_offline(client, "a") == 0  # twice: nothing left

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
