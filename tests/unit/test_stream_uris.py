"""Locations as a path or a URI (``streams.storage``): the checkpoint's files and the offline session log land in
the same place whether given as a plain path or a ``file://`` URI, and other schemes are opened or refused clearly."""
from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pyarrow as pa
import pytest
from kafka import TopicPartition

from features.store import FeatureStoreClient
from features.stream_job import StreamPaths
from features.stream_reset import reset_offsets
from features.stream_state import StateStore
from features.tables import arrow_schema
from streamrec.config import Settings
from streamrec.errors import UserError
from streams.kafka_source import Fingerprints
from streams.spark_session import cluster_memory_mb
from streams.storage import Location


def test_a_path_and_a_file_uri_name_the_same_place(tmp_path):
    by_path, by_uri = Location.of(tmp_path / "a"), Location.of(f"file://{tmp_path}/a/")
    assert (by_path.fs.type_name, by_path.path) == (by_uri.fs.type_name, by_uri.path) == ("local", f"{tmp_path}/a")
    assert by_uri.uri == f"file://{tmp_path}/a" and by_uri.local == tmp_path / "a"
    (by_uri / "d=1" / "x.bin").write_atomic(b"one")
    assert (tmp_path / "a" / "d=1" / "x.bin").read_bytes() == b"one"
    assert [f.path for f in by_path.glob("d=*/x.*")] == [f"{tmp_path}/a/d=1/x.bin"]  # no temporary left
    (by_path / "d=1" / "x.bin").unlink()
    (by_path / "d=1" / "x.bin").unlink(missing_ok=True)
    assert by_uri.glob("*") == [] and [d.name for d in by_uri.iterdir()] == ["d=1"]


def test_state_and_fingerprints_written_by_uri_are_read_by_path(tmp_path):
    store = StateStore(f"file://{tmp_path}/cp/user-state")
    store.save(0, {"a": b"a0"}, [("a", "e1", 100)])
    assert StateStore(tmp_path / "cp" / "user-state").load(["a"], 1) == {"a": b"a0"}
    Fingerprints(f"file://{tmp_path}/cp/fingerprints.json").add({TopicPartition("t", 0): (5, 55)})
    assert list(Fingerprints(tmp_path / "cp" / "fingerprints.json").load().values()) == [[(5, 55)]]
    assert sorted(p.name for p in (tmp_path / "cp").rglob("*")) == ["batch-0.arrow", "fingerprints.json", "user-state"]


def test_the_checkpoint_uri_goes_to_spark_as_given_and_its_files_beside_it(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    assert StreamPaths.of(settings).checkpoint.uri == str(tmp_path / "data" / "stream" / "checkpoint")
    settings.spark.checkpoint_uri = f"file://{tmp_path}/cp"
    paths = StreamPaths.of(settings)
    assert str(paths.checkpoint) == f"file://{tmp_path}/cp" and paths.state.local == tmp_path / "cp" / "user-state"
    assert paths.run_info() == {"epoch": 0, "starting_offsets": None}


@pytest.mark.parametrize("uri", [lambda tmp: f"file://{tmp}/log", lambda tmp: str(tmp / "log")])
def test_the_offline_session_log_lands_at_its_location_and_feast_reads_it_there(tmp_path, uri):
    settings = Settings(data_dir=str(tmp_path / "data"))
    settings.feast.offline_log_uri = uri(tmp_path)
    client = FeatureStoreClient(settings)
    rows = _two_rows(client)
    client.log_offline(rows, "7")
    client.log_offline(rows, "7")  # a replayed batch replaces its file
    files = sorted(p.relative_to(tmp_path / "log").as_posix() for p in (tmp_path / "log").rglob("*.parquet"))
    assert files == ["date=2023-11-14/batch-7.parquet"]
    assert pd.read_parquet(tmp_path / "log")["user_id"].tolist() == ["u1", "u2"]
    assert client.defs.session_view.batch_source.path == f"{tmp_path}/log/**/*.parquet"  # DuckDB's glob
    assert not (tmp_path / "data" / "offline" / "user_session").exists()


def _two_rows(client: FeatureStoreClient) -> pa.Table:
    """Two users' session rows (features left null), at 2023-11-14."""
    schema = arrow_schema(client.defs.session_view)
    given = {"user_id": ["u1", "u2"], "event_timestamp": [datetime(2023, 11, 14, 22, 13, tzinfo=UTC)] * 2}
    return pa.Table.from_pydict({name: given.get(name, [None, None]) for name in schema.names}, schema=schema)


def test_hadoop_s3_schemes_are_opened_as_pyarrows_s3():
    location = Location.of("s3a://bucket/stream/checkpoint?region=us-east-1")
    assert location.fs.type_name == "s3" and location.path == "bucket/stream/checkpoint"
    assert location.uri.startswith("s3a://")  # Spark is given what the operator wrote


@pytest.mark.parametrize("uri", ["nosuch://host/x", "   "])
def test_a_location_no_filesystem_opens_is_a_user_error_naming_the_setting(tmp_path, uri):
    settings = Settings(data_dir=str(tmp_path))
    settings.spark.checkpoint_uri = uri
    with pytest.raises(UserError, match="spark.checkpoint_uri"):
        StreamPaths.of(settings)


def test_reset_offsets_refuses_a_checkpoint_it_cannot_move(tmp_path):
    settings = Settings(data_dir=str(tmp_path))
    settings.spark.checkpoint_uri = "s3://bucket/checkpoint?region=us-east-1"
    with pytest.raises(UserError, match="cannot do"):
        reset_offsets(settings, "earliest")


@pytest.mark.parametrize("master, mb", [("local-cluster[2,1,512]", 512), ("local-cluster[ 2, 1, 1024 ]", 1024), ("local[2]", None)])
def test_executor_memory_follows_a_local_clusters_workers(master, mb):
    assert cluster_memory_mb(master) == mb
