"""features.online_write's encoders against protobuf's own serialization, byte for byte."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from feast import Entity, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.protos.feast.types.Value_pb2 import FloatList, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.types import Array, Bool, Float32, Float64, Int64, String
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from features.online_write import RedisRowWriter, encode_column, encode_timestamps

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FLT_MAX = float(np.finfo(np.float32).max)
FLT_TRUE_MIN = float(np.finfo(np.float32).smallest_subnormal)
no_deadline = settings(deadline=None)  # on a loaded box the 200 ms default flakes; these are not timing tests


def serialized(**field) -> bytes:
    return ValueProto(**field).SerializeToString()


def feast_writes(values: list, value_type: ValueType) -> list[bytes]:
    """The bytes Feast's own conversion produces for a column (what its Redis writer stores)."""
    return [v.SerializeToString() for v in python_values_to_proto_values(values, value_type)]


finite_floats = st.floats(allow_nan=False, allow_infinity=True)
special_floats = st.sampled_from([0.0, -0.0, FLT_TRUE_MIN, -FLT_TRUE_MIN, FLT_TRUE_MIN / 2, 5e-324, 1.1754942e-38,
                                  FLT_MAX, -FLT_MAX, 3.4028235677973366e38, 1e39, 1e308, -1e308])


@no_deadline
@given(st.lists(st.one_of(finite_floats, special_floats, st.floats(width=32, allow_nan=False))))
@example([0.0, -0.0, 5e-324, FLT_TRUE_MIN, FLT_MAX, 1e308, -1e308, float("inf")])
def test_float32_is_protobufs_float_val(values):
    want = [serialized(float_val=v) for v in values]
    assert encode_column(Float32, values) == want
    assert encode_column(Float32, np.array(values, dtype=np.float64)) == want


@no_deadline
@given(st.lists(st.floats(width=32, allow_nan=False)))
def test_float32_from_a_float32_array(values):
    assert encode_column(Float32, np.array(values, dtype=np.float32)) == [serialized(float_val=v) for v in values]


def test_float32_nan_and_none_are_null_as_feast_writes_them():
    values = [1.5, float("nan"), None, np.float32("nan"), 0.0]
    assert encode_column(Float32, values) == [serialized(float_val=1.5), b"", b"", b"", serialized(float_val=0.0)]
    assert encode_column(Float32, values) == feast_writes(values, ValueType.FLOAT)
    assert encode_column(Float32, pd.array([2.0, None], dtype="Float64")) == [serialized(float_val=2.0), b""]


int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@no_deadline
@given(st.lists(int64s))
@example([0, -1, 1, 127, 128, 2**63 - 1, -(2**63)])
def test_int64_is_protobufs_int64_val(values):
    want = [serialized(int64_val=v) for v in values]
    assert encode_column(Int64, values) == want
    assert encode_column(Int64, np.array(values, dtype=np.int64)) == want


@no_deadline
@given(st.lists(st.one_of(st.none(), int64s)))
def test_int64_with_nulls(values):
    want = [b"" if v is None else serialized(int64_val=v) for v in values]
    assert encode_column(Int64, values) == want
    assert encode_column(Int64, pd.array(values, dtype="Int64")) == want


def test_int64_out_of_range_is_refused():
    with pytest.raises(ValueError):
        encode_column(Int64, [2**63])


@no_deadline
@given(st.lists(st.one_of(st.none(), st.text())))
@example(["", "\x00", "a\x00b", "é", "🎬" * 100, "x" * 300])
def test_string_is_protobufs_string_val(values):
    assert encode_column(String, values) == [b"" if v is None else serialized(string_val=v) for v in values]
    assert encode_column(String, values) == feast_writes(values, ValueType.STRING)


@no_deadline
@given(st.lists(st.one_of(st.none(), st.lists(st.text()))))
@example([[], [""], ["é", "\x00"], ["x" * 200] * 3, None])
def test_string_list_is_protobufs_string_list_val(values):
    want = [b"" if v is None else serialized(string_list_val=StringList(val=v)) for v in values]
    assert encode_column(Array(String), values) == want
    as_arrays = [None if v is None else np.array(v, dtype=object) for v in values]  # as pandas gives them
    assert encode_column(Array(String), as_arrays) == want


@no_deadline
@given(st.lists(st.one_of(st.none(), st.lists(st.floats(width=32, allow_nan=False)))))
@example([[], [0.0, -0.0, 1.5], [FLT_TRUE_MIN] * 40, None])
def test_float_list_is_protobufs_float_list_val(values):
    want = [b"" if v is None else serialized(float_list_val=FloatList(val=v)) for v in values]
    assert encode_column(Array(Float32), values) == want
    assert encode_column(Array(Float32), values) == feast_writes(values, ValueType.FLOAT_LIST)
    as_arrays = [None if v is None else np.array(v, dtype=np.float32) for v in values]  # as pandas gives them
    assert encode_column(Array(Float32), as_arrays) == want


def test_other_types_are_refused():
    for dtype in (Float64, Bool, Array(Int64)):
        with pytest.raises(TypeError):
            encode_column(dtype, [])


def from_datetime(ms: int) -> bytes:
    ts = Timestamp()
    ts.FromDatetime(EPOCH + timedelta(milliseconds=ms))
    return ts.SerializeToString()


MS_1990 = int((datetime(1990, 1, 1, tzinfo=UTC) - EPOCH).total_seconds() * 1000)
MS_2100 = int((datetime(2100, 1, 1, tzinfo=UTC) - EPOCH).total_seconds() * 1000)


@no_deadline
@given(st.lists(st.integers(min_value=MS_1990, max_value=MS_2100)))
@example([MS_1990, MS_2100, 1_714_564_800_000, 1_714_564_800_001, 1_714_564_800_999])
def test_timestamp_is_from_datetime(event_ms):
    want = [from_datetime(ms) for ms in event_ms]
    assert encode_timestamps(event_ms) == want
    assert encode_timestamps(np.array(event_ms, dtype=np.int64)) == want


def test_timestamp_edge_values():
    assert encode_timestamps([0, 1, 999, 1000, -1]) == [from_datetime(ms) for ms in [0, 1, 999, 1000, -1]]


def make_view() -> FeatureView:
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    return FeatureView(name="v", entities=[user], schema=[Field(name="user_id", dtype=String), Field(name="x", dtype=Float32)],
                       source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"))


def config(tmp_path, online_store) -> RepoConfig:
    return RepoConfig(project="p", provider="local", registry=str(tmp_path / "registry.db"), repo_path=str(tmp_path),
                      online_store=online_store, offline_store={"type": "file"}, entity_key_serialization_version=3)


@pytest.mark.parametrize("online_store", [
    {"type": "redis", "redis_type": "redis_cluster", "connection_string": "h1:6379,h2:6379"},
    {"type": "redis", "redis_type": "redis_sentinel", "connection_string": "h1:26379"},
    {"type": "sqlite", "path": "online.db"},
])
def test_writer_refuses_stores_other_than_plain_redis(tmp_path, online_store):
    with pytest.raises(ValueError):
        RedisRowWriter(config(tmp_path, online_store), make_view())


def test_writer_takes_feasts_connection_string_without_connecting(tmp_path):
    store = {"type": "redis", "connection_string": "127.0.0.1:1,db=3,socket_timeout=0.5"}
    writer = RedisRowWriter(config(tmp_path, store), make_view())
    kwargs = writer._client.connection_pool.connection_kwargs
    assert (kwargs["host"], int(kwargs["port"]), kwargs["db"], kwargs["socket_timeout"]) == ("127.0.0.1", 1, 3, 0.5)
    writer.close()
