"""The feature-store client against real Feast: SQLite online store + parquet offline store, and Redis."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from features import store
from streamrec.cli import main
from streamrec.vocabulary import GENRE_SLUGS

T1 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T2 = datetime(2024, 5, 2, 9, 30, tzinfo=UTC)  # the next day: another log partition


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)

CATALOG = [
    {"item_id": "i1", "title": "Alien", "genres": ["Horror", "Sci-Fi"], "year": 1979, "duration_minutes": 117, "popularity": 0.9},
    # no popularity, an unknown duration: null features
    {"item_id": "i2", "title": "Toy Story", "genres": ["Animation", "Children's", "Comedy"], "year": 1995,
     "duration_minutes": None},
]


def assert_same_features(got: dict, expected: pd.Series) -> None:
    for name, want in expected.items():
        if name == "event_timestamp":
            continue
        value = got[name]
        if name == "last_items":
            assert value == list(want), name
        elif want is None or (isinstance(want, float) and pd.isna(want)):
            assert value is None, name
        elif isinstance(want, float):
            assert value == pytest.approx(want, rel=1e-6), name
        else:
            assert value == want, name


def log_rows(client) -> pd.DataFrame:
    return pd.read_parquet(client.offline_dir / "user_session")


def write_catalog(path) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in CATALOG))
    return str(path)


def test_apply_is_idempotent_and_keeps_online_data(feature_client, feast_settings, session_rows):
    from features.store import FeatureStoreClient

    views = {fv.name: fv for fv in feature_client.store.list_feature_views()}
    assert set(views) == {"user_session_features", "item_features", "user_profile"}
    feature_client.write_session_features(session_rows(T1, a=3), batch_id=0)

    again = FeatureStoreClient(feast_settings)  # as a restarted job would
    again.apply()
    again.apply()

    # Feast's equality: definitions, schemas and sources, not the registry's bookkeeping stamps.
    assert {fv.name: fv for fv in again.store.list_feature_views()} == views
    assert [fs.name for fs in again.store.list_feature_services()] == ["ranking"]
    assert again.online_features(["a"])[0]["events_total"] == 3


def test_write_then_online_read_round_trip(feature_client, session_rows):
    rows = session_rows(T1, a=1, b=2, c=7)
    assert feature_client.write_session_features(rows, batch_id=0) == 3

    got = feature_client.online_features(["c", "nobody", "a", "b"])

    assert [g["user_id"] for g in got] == ["c", "nobody", "a", "b"]
    for g, (_, want) in zip([got[2], got[3], got[0]], rows.iterrows()):
        assert_same_features(g, want)
    assert set(got[1]) == {"user_id", *rows.columns} - {"event_timestamp"}
    assert all(v is None for k, v in got[1].items() if k != "user_id")


def test_replayed_batch_leaves_one_copy_in_the_offline_log(feature_client, session_rows):
    batch = pd.concat([session_rows(T1, a=1, b=2), session_rows(T2, c=3)], ignore_index=True)
    feature_client.write_session_features(batch, batch_id=7)
    feature_client.write_session_features(batch, batch_id=7)  # replay after a crash

    log_dir = feature_client.offline_dir / "user_session"
    files = sorted(p.relative_to(log_dir).as_posix() for p in log_dir.rglob("*") if p.is_file())
    assert files == ["date=2024-05-01/batch-7.parquet", "date=2024-05-02/batch-7.parquet"]
    assert sorted(log_rows(feature_client)["user_id"]) == ["a", "b", "c"]

    # A replay that computed different rows replaces the first attempt, on every day.
    feature_client.write_session_features(session_rows(T1, a=1), batch_id=7)
    assert sorted(log_rows(feature_client)["user_id"]) == ["a"]
    feature_client.write_session_features(session_rows(T2, a=2), batch_id=8)
    assert sorted(log_rows(feature_client)["events_total"]) == [1, 2]


def test_an_older_row_never_overwrites_a_newer_one_online(feature_client, session_rows):
    feature_client.write_session_features(session_rows(T2, a=2), batch_id=1)
    assert feature_client.write_session_features(session_rows(T1, a=1), batch_id=2) == 0  # late
    assert feature_client.online_features(["a"])[0]["events_total"] == 2

    # Within one batch too: the newest row wins, whatever its position.
    later = T2 + timedelta(minutes=5)
    batch = pd.concat([session_rows(later, a=5), session_rows(T2 + timedelta(minutes=1), a=4)], ignore_index=True)
    assert feature_client.write_session_features(batch, batch_id=3) == 1
    assert feature_client.online_features(["a"])[0]["events_total"] == 5

    # The offline log keeps history, late rows included.
    assert sorted(log_rows(feature_client)["events_total"]) == [1, 2, 4, 5]


@pytest.mark.parametrize("chunk_rows", [100_000, 1])  # one query, or one per key: the same rows
def test_training_set_is_point_in_time_correct(feature_client, session_rows, tmp_path, monkeypatch, chunk_rows):
    monkeypatch.setattr(store, "HISTORICAL_CHUNK_ROWS", chunk_rows)
    feature_client.write_session_features(session_rows(T1, a=1, b=5), batch_id=0)
    feature_client.write_session_features(session_rows(T2, a=2), batch_id=1)
    feature_client.load_catalog(write_catalog(tmp_path / "items.jsonl"))
    cut = T1 - timedelta(hours=1)
    events = pd.DataFrame({
        "user_id": ["a", "a", "b", "a"],
        "item_id": ["i1", "i2", "i2", "i2"],
        "ts_ms": [int((cut - timedelta(hours=1)).timestamp() * 1000)] * 3 + [int((cut + timedelta(minutes=1)).timestamp() * 1000)],
    })
    feature_client.build_profiles(events, cut)

    rows = [  # (user, item, label time, expected events_total, expected profile_events)
        ("a", "i1", T1 - timedelta(minutes=30), None, 2),   # before any session row
        ("a", "i1", T1 + timedelta(hours=1), 1, 2),         # t1 < label < t2: the t1 row
        ("a", "i2", T1 + timedelta(hours=1), 1, 2),         # same user and time, another item: kept
        ("a", "i1", T2, 1, 2),                              # at t2: the labelled event's own row is not seen
        ("a", "i1", T2 + timedelta(milliseconds=1), 2, 2),  # just after t2: the t2 row
        ("b", "i2", T1 + timedelta(days=31), None, 1),      # past the 30-day ttl
        ("zz", "i1", T2, None, None),                       # unknown user
        ("a", "i2", cut, None, None),                       # at the profile cut: not yet
    ]
    entity_df = pd.DataFrame({
        "user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
        "event_timestamp": [r[2] for r in rows], "label": range(len(rows)),
    })

    out = feature_client.training_set(entity_df)

    assert list(out["label"]) == list(range(len(rows)))
    assert [None if pd.isna(v) else v for v in out["events_total"]] == [r[3] for r in rows]
    assert [None if pd.isna(v) else v for v in out["profile_events"]] == [r[4] for r in rows]
    assert list(out["title"]) == ["Alien", "Alien", "Toy Story", "Alien", "Alien", "Toy Story", "Alien", "Toy Story"]
    assert list(out.loc[1, "last_items"]) == ["i1", "i2", "i3"]
    assert list(out.loc[4, "last_items"]) == ["i2", "i3", "i4"]
    # a's profile: i1 split over horror/sci_fi, i2 over animation/children/comedy; the event after the cut is out.
    assert out.loc[1, "share_horror"] == pytest.approx(0.25)
    assert out.loc[1, "share_comedy"] == pytest.approx(1 / 6)
    assert sum(out.loc[1, f"share_{s}"] for s in GENRE_SLUGS) == pytest.approx(1.0)


def test_catalog_and_profiles_are_online(feature_client, tmp_path):
    assert feature_client.load_catalog(write_catalog(tmp_path / "items.jsonl")) == 2
    i1, i2, missing = feature_client.item_features(["i1", "i2", "i9"])
    assert i1 == {"item_id": "i1", "title": "Alien", "genres": ["Horror", "Sci-Fi"], "year": 1979,
                  "duration_minutes": 117.0, "popularity": pytest.approx(0.9)}
    assert (i2["genres"], i2["year"], i2["duration_minutes"], i2["popularity"]) == (["Animation", "Children's", "Comedy"], 1995, None, None)
    assert missing["title"] is None

    events = pd.DataFrame({"user_id": ["u1", "u1", "u1"], "item_id": ["i2", "i2", "i1"],
                           "ts_ms": [ms("2024-05-01T10:00:00Z"), ms("2024-05-01T11:00:00Z"), ms("2024-05-01T13:00:00Z")]})
    assert feature_client.build_profiles(events, T1) == 1
    (profile,) = feature_client.profile_features(["u1"])
    assert profile["profile_events"] == 2
    assert profile["profile_top_genre"] == "animation"  # ties go to the earlier genre in GENRE_SLUGS
    assert profile["share_comedy"] == pytest.approx(1 / 3)
    assert profile["share_horror"] == 0.0

    # An older cut rebuilt later does not replace the newer profile online.
    feature_client.build_profiles(events, T1 - timedelta(hours=1, minutes=30))
    assert feature_client.profile_features(["u1"])[0]["profile_events"] == 2


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_requests_read_equals_the_sdk_read(backend, request, session_rows, tmp_path):
    """user_features (the online store's own read, what /recommend uses) answers what get_online_features
    does: a user with a session and a profile, one with a session only, one never seen."""
    client = request.getfixturevalue("feature_client" if backend == "sqlite" else "redis_feature_client")
    client.write_session_features(session_rows(T1, a=3, b=1), batch_id=0)
    client.load_catalog(write_catalog(tmp_path / "items.jsonl"))
    client.build_profiles(pd.DataFrame({"user_id": ["a"], "item_id": ["i1"], "ts_ms": [ms("2024-05-01T10:00:00Z")]}), T1)
    for user in ("a", "b", "nobody"):
        session, profile = client.user_features(user)
        assert session == client.online_features([user])[0], user
        assert profile == client.profile_features([user])[0], user
    assert client.user_features("a")[1]["profile_events"] == 1 and client.user_features("b")[1]["profile_events"] is None
    assert client.user_features("nobody")[0]["events_total"] is None


def test_embedded_redis_keeps_written_features_across_a_kill_9(tmp_path, session_rows):
    """`infra up`'s redis-server persists every write (AOF, fsync always) under <data>/redis."""
    import os
    import signal

    from features.store import FeatureStoreClient
    from infra import process
    from infra import redis as redis_infra
    from streamrec.config import Settings
    from tests.helpers import assert_eventually, free_port

    settings = Settings(data_dir=str(tmp_path))
    settings.feast.redis_connection = f"127.0.0.1:{free_port()}"
    svc = redis_infra.redis_service(settings)
    process.start(svc)
    try:
        client = FeatureStoreClient(settings)
        client.apply()
        rows = session_rows(T1, a=1, b=2)
        client.write_session_online({c: rows[c].tolist() for c in rows.columns})
        os.kill(process.running_pid(svc), signal.SIGKILL)
        assert_eventually(lambda: _stopped(svc), timeout_s=10)
        process.start(svc)
        got = FeatureStoreClient(settings).online_features(["a", "b"])
        for g, (_, want) in zip(got, rows.iterrows()):
            assert_same_features(g, want)
        assert (tmp_path / "redis").is_dir()
    finally:
        process.stop(svc)


def _stopped(svc) -> None:
    from infra import process

    assert process.running_pid(svc) is None


def test_redis_online_store_round_trip(redis_feature_client, session_rows):
    client = redis_feature_client
    assert client.config.online_store.type == "redis"
    rows = session_rows(T1, a=1, b=2)
    client.write_session_features(rows, batch_id=0)

    got = client.online_features(["a", "b", "nobody"])

    for g, (_, want) in zip(got, rows.iterrows()):
        assert_same_features(g, want)
    assert got[2]["events_total"] is None
    # Feast's Redis store itself keeps the newer state when a late row arrives.
    client.write_session_features(session_rows(T1 - timedelta(minutes=1), a=9), batch_id=1)
    assert client.online_features(["a"])[0]["events_total"] == 1


def test_redis_is_started_here_only_for_a_loopback_address():
    from infra import redis as redis_infra
    from streamrec.config import Settings

    settings = Settings()
    assert redis_infra.is_embedded(settings)  # the default: Redis on loopback, started by `infra up`
    settings.feast.online_store = "sqlite"
    assert not redis_infra.is_embedded(settings)
    settings.feast.online_store = "redis"
    for connection, embedded, address in [
        ("127.0.0.1:6390", True, ("127.0.0.1", 6390)),
        ("localhost:6391,db=1", True, ("localhost", 6391)),
        ("localhost", True, ("localhost", 6379)),  # no port: feast.redis_port
        ("redis.prod.internal:6379,password=x", False, ("redis.prod.internal", 6379)),
    ]:
        settings.feast.redis_connection = connection
        assert (redis_infra.is_embedded(settings), redis_infra.host_port(settings)) == (embedded, address)


def test_cli_apply_online_and_batch_loads(tmp_path, monkeypatch, capsys, session_rows):
    from features.store import FeatureStoreClient
    from streamrec.config import load_settings

    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STREAMREC_FEAST__ONLINE_STORE", "sqlite")
    monkeypatch.setattr("streamrec.cli.COMMAND_MODULES", ("infra.cli", "features.cli"))

    assert main(["features", "online", "a"]) == 2
    assert "run `streamrec features apply`" in capsys.readouterr().err

    assert main(["features", "apply"]) == 0
    assert "user_session_features" in capsys.readouterr().out
    FeatureStoreClient(load_settings()).write_session_features(session_rows(T1, a=4), batch_id=0)
    assert main(["features", "online", "a", "nobody"]) == 0
    a, nobody = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (a["user_id"], a["events_total"], a["last_items"]) == ("a", 4, ["i4", "i5", "i6"])
    assert nobody["events_total"] is None

    assert main(["features", "load-catalog", write_catalog(tmp_path / "items.jsonl")]) == 0
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"event_id": "00000000-0000-4000-8000-000000000001", "user_id": "a", "item_id": "i1",
                                  "event_type": "watch", "ts": 1714557600000, "device": "tv", "session_id": "s1",
                                  "watch_seconds": 60}) + "\n")
    assert main(["features", "build-profiles", str(events)]) == 0
    assert "built 1 user profiles as of 2024-05-01T10:00:00+00:00" in capsys.readouterr().out


def test_batch_loads_say_when_redis_does_not_answer(tmp_path, monkeypatch, capsys):
    """`streamrec train` once ended in a redis-py traceback when Redis was down; a batch command says it in a line."""
    from infra.process import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STREAMREC_FEAST__ONLINE_STORE", "redis")
    monkeypatch.setenv("STREAMREC_FEAST__REDIS_CONNECTION", address)
    monkeypatch.setattr("streamrec.cli.COMMAND_MODULES", ("features.cli",))
    assert main(["features", "apply"]) == 0
    capsys.readouterr()
    assert main(["features", "load-catalog", write_catalog(tmp_path / "items.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"streamrec features: error: the online store (Redis at {address}) does not answer")
    assert "Traceback" not in err and "streamrec infra up" in err
