"""RedisRowWriter against a real redis-server, read back through Feast's get_online_features."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from features.online_write import RedisRowWriter

pytestmark = pytest.mark.integration

T1 = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)


@pytest.fixture
def writer(redis_feature_client):
    w = RedisRowWriter(redis_feature_client.config, redis_feature_client.defs.session_view)
    yield w
    w.close()


@pytest.fixture
def raw_redis(redis_feature_client):
    import redis

    from infra import redis as redis_infra

    host, port = redis_infra.host_port(redis_feature_client.settings)
    return redis.Redis(host=host, port=port)


def event_ms(rows: pd.DataFrame) -> list[int]:
    return [int(ts.timestamp() * 1000) for ts in pd.to_datetime(rows["event_timestamp"], utc=True)]


def write(writer: RedisRowWriter, client, rows: pd.DataFrame, ms: list[int] | None = None) -> None:
    """The rows as the stream job hands them over: numpy columns (NaN for a missing float)."""
    columns = {f.name: rows[f.name].to_numpy() for f in client.defs.session_view.features}
    writer.write(rows["user_id"].tolist(), event_ms(rows) if ms is None else ms, columns)


def assert_reads_back(got: dict, want: pd.Series) -> None:
    for name, value in want.items():
        if name == "event_timestamp":
            continue
        if name == "last_items":
            assert got[name] == list(value), name
        elif value is None or (isinstance(value, float) and pd.isna(value)):
            assert got[name] is None, name
        elif isinstance(value, float):
            assert got[name] == pytest.approx(value, rel=1e-6), name  # stored as float32
        else:
            assert got[name] == value, name


def test_rows_read_back_through_feast(redis_feature_client, writer, session_rows):
    client = redis_feature_client
    rows = session_rows(T1, a=1, b=2, c=7)  # a's prev_gap_s is None
    write(writer, client, rows)

    got = client.online_features(["c", "nobody", "a", "b"])

    for g, (_, want) in zip([got[2], got[3], got[0]], rows.iterrows()):
        assert_reads_back(g, want)
    assert got[1]["user_id"] == "nobody"
    assert all(v is None for k, v in got[1].items() if k != "user_id")


def test_same_bytes_as_feasts_own_writer(redis_feature_client, writer, raw_redis, session_rows):
    client = redis_feature_client
    rows = session_rows(T1, a=1, b=2, c=7)
    client.store.write_to_online_store(client.defs.session_view.name, rows)  # into an empty store: all written
    feasts = {k: raw_redis.dump(k) for k in raw_redis.keys("*")}  # fields, values and their order
    raw_redis.flushall()

    write(writer, client, rows)

    assert len(feasts) == 3
    assert {k: raw_redis.dump(k) for k in raw_redis.keys("*")} == feasts


def test_same_millisecond_rewrite_lands(redis_feature_client, writer, session_rows):
    client = redis_feature_client
    write(writer, client, session_rows(T1, a=3))
    again = session_rows(T1, a=9)
    write(writer, client, again)

    assert_reads_back(client.online_features(["a"])[0], again.iloc[0])


def test_late_older_event_lands(redis_feature_client, writer, session_rows):
    client = redis_feature_client
    write(writer, client, session_rows(T1, a=3))
    late = session_rows(T1 - timedelta(minutes=5), a=4)
    write(writer, client, late)

    got = client.online_features(["a"])[0]
    assert_reads_back(got, late.iloc[0])
    assert got["events_total"] == 4


def test_many_users_in_one_call(redis_feature_client, writer, session_rows):
    client = redis_feature_client
    rows = session_rows(T1, **{f"u{i}": i + 2 for i in range(500)})
    write(writer, client, rows)

    got = client.online_features(rows["user_id"])

    assert [g["user_id"] for g in got] == rows["user_id"].tolist()
    for g, (_, want) in zip(got, rows.iterrows()):
        assert_reads_back(g, want)


def test_lists_and_plain_python_columns(redis_feature_client, writer, session_rows):
    client = redis_feature_client
    rows = session_rows(T1, a=5, b=6)
    columns = {f.name: rows[f.name].tolist() for f in client.defs.session_view.features}
    columns["last_items"] = [[], ["é", ""]]
    columns["session_id"] = [None, "s-b"]
    columns["events_total"] = [None, -(2**63)]
    writer.write(["a", "b"], event_ms(rows), columns)

    a, b = client.online_features(["a", "b"])
    assert (a["last_items"], a["session_id"], a["events_total"]) == ([], None, None)
    assert (b["last_items"], b["session_id"], b["events_total"]) == (["é", ""], "s-b", -(2**63))


def test_key_ttl_is_set_as_feast_does(redis_feature_client, raw_redis, session_rows):
    client = redis_feature_client
    config = client.config.model_copy(deep=True)
    config.online_store.key_ttl_seconds = 3600
    w = RedisRowWriter(config, client.defs.session_view)
    try:
        write(w, client, session_rows(T1, a=1))
    finally:
        w.close()
    (key,) = raw_redis.keys("*")
    assert 3500 < raw_redis.ttl(key) <= 3600
    assert client.online_features(["a"])[0]["events_total"] == 1


def test_mismatched_lengths_are_refused_before_writing(redis_feature_client, writer, raw_redis, session_rows):
    client = redis_feature_client
    rows = session_rows(T1, a=1, b=2)
    columns = {f.name: rows[f.name].to_numpy() for f in client.defs.session_view.features}
    with pytest.raises(ValueError):
        writer.write(["a", "b"], event_ms(rows)[:1], columns)
    with pytest.raises(ValueError):
        writer.write(["a", "b"], event_ms(rows), {k: v for k, v in columns.items() if k != "daypart"})
    assert raw_redis.keys("*") == []
