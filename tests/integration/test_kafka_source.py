"""The Python Kafka source: pure offset logic, partition reads against the real broker,
and streaming queries on the shared local SparkSession."""
from __future__ import annotations

import dataclasses
from collections import Counter

import pyarrow as pa
import pytest
from kafka import KafkaProducer, TopicPartition

from streams.kafka_source import (
    DataLossError,
    KafkaRanges,
    KafkaSourceError,
    KafkaStreamReader,
    OffsetMismatchError,
    cap_offsets,
    fingerprint,
    group_ranges,
    kafka_schema,
    next_end,
    offsets_from_json,
    offsets_to_json,
    parse_options,
    parse_starting_offsets,
    plan_ranges,
    resolve_starting,
    verify_fingerprints,
)
from streams.kafka_util import client_options
from streams.spark_session import kafka_stream
from tests.helpers import assert_eventually


def tp(partition: int, topic: str = "t") -> TopicPartition:
    return TopicPartition(topic, partition)


# ---------------------------------------------------------------- pure offset logic

def test_offsets_json_round_trip_matches_sparks_format():
    offsets = {tp(1): 7, tp(0): 42, tp(0, "u"): 0}
    as_json = offsets_to_json(offsets)
    assert as_json == {"t": {"0": 42, "1": 7}, "u": {"0": 0}}
    assert offsets_from_json(as_json) == offsets
    for bad in ([1], {"t": 3}, {"t": {"x": 1}}, {"t": {"0": -1}}, {"t": {"0": "5"}}):
        with pytest.raises(KafkaSourceError):
            offsets_from_json(bad)


def test_starting_offsets_resolve_like_spark():
    parts = [tp(0), tp(1)]
    earliest, latest = {tp(0): 0, tp(1): 3}, {tp(0): 10, tp(1): 20}
    assert resolve_starting(parse_starting_offsets("earliest"), parts, earliest, latest) == earliest
    assert resolve_starting(parse_starting_offsets(" LATEST "), parts, earliest, latest) == latest
    spec = parse_starting_offsets('{"t": {"0": 5, "1": -2}}')
    assert resolve_starting(spec, parts, earliest, latest) == {tp(0): 5, tp(1): 3}
    spec = parse_starting_offsets('{"t": {"0": -1, "1": 4}}')
    assert resolve_starting(spec, parts, earliest, latest) == {tp(0): 10, tp(1): 4}
    with pytest.raises(KafkaSourceError, match="missing"):
        resolve_starting(parse_starting_offsets('{"t": {"0": 5}}'), parts, earliest, latest)
    with pytest.raises(KafkaSourceError, match="startingOffsets"):
        parse_starting_offsets("oldest")


def test_cap_splits_the_trigger_budget_fairly():
    start = {tp(0): 0, tp(1): 100, tp(2): 5, tp(3): 0}
    end = {tp(0): 1000, tp(1): 103, tp(2): 1005, tp(3): 0}
    capped = cap_offsets(start, end, 100)
    taken = {k: capped[k] - start[k] for k in start}
    # the small backlog is read whole, the rest is shared; empty partitions take nothing
    assert taken == {tp(0): 48, tp(1): 3, tp(2): 49, tp(3): 0}
    assert cap_offsets(start, end, 10_000) == end
    # a budget smaller than the partition count still makes progress
    assert sum(cap_offsets(start, end, 1)[k] - start[k] for k in start) == 1


def test_new_partitions_are_read_from_offset_zero():
    start = {tp(0): 5, tp(1): 3}
    latest = {tp(0): 9, tp(1): 3, tp(2): 4}
    end = next_end(start, latest)
    assert end == {tp(0): 9, tp(1): 3, tp(2): 4}
    assert plan_ranges(start, end) == [(tp(0), 5, 9), (tp(2), 0, 4)]

    # capped, the new partition gets its fair share of the budget
    assert next_end(start, latest, max_records=4) == {tp(0): 7, tp(1): 3, tp(2): 2}


def test_ranges_go_to_at_most_the_given_tasks_balanced_by_size():
    ranges = [(tp(0), 0, 10), (tp(1), 0, 100), (tp(2), 5, 6), (tp(3), 0, 50)]
    assert group_ranges(ranges, 1) == [KafkaRanges((("t", 0, 0, 10), ("t", 1, 0, 100), ("t", 2, 5, 6), ("t", 3, 0, 50)))]
    assert group_ranges(ranges, 2) == [KafkaRanges((("t", 1, 0, 100),)), KafkaRanges((("t", 0, 0, 10), ("t", 2, 5, 6), ("t", 3, 0, 50)))]
    assert len(group_ranges(ranges[:1], 4)) == 1


def test_available_now_target_bounds_every_batch():
    start = {tp(0): 5}
    latest = {tp(0): 50, tp(1): 8}
    target = {tp(0): 20}  # tp(1) appeared after the run began: not read in this run
    assert next_end(start, latest, target) == {tp(0): 20, tp(1): 0}
    assert next_end({tp(0): 20, tp(1): 0}, latest, target) == {tp(0): 20, tp(1): 0}


def test_offsets_that_went_back_are_data_loss():
    with pytest.raises(DataLossError, match=r"t\[1\] ends at 2, stream is at 7"):
        next_end({tp(0): 3, tp(1): 7}, {tp(0): 3, tp(1): 2})


def test_options_map_to_kafka_python_settings():
    opts = parse_options({
        "kafka.bootstrap.servers": "h1:9092,h2:9092",
        "subscribe": "a, b",
        "startingOffsets": "earliest",
        "maxOffsetsPerTrigger": "500",
        "kafka.security.protocol": "SASL_SSL",
        "kafka.request.timeout.ms": "5000",
        "kafka.check.crcs": "false",
    })
    assert opts.topics == ("a", "b")
    assert opts.max_per_trigger == 500
    assert opts.kafka.bootstrap_servers == "h1:9092,h2:9092"
    assert opts.kafka.client_options == {"security_protocol": "SASL_SSL", "request_timeout_ms": 5000, "check_crcs": False}
    base = {"kafka.bootstrap.servers": "h:1", "subscribe": "a"}
    assert parse_options(base).starting == "latest"
    for extra, message in [
        ({"kafka.group.id": "g"}, "manages it"),
        ({"kafka.no.such.thing": "1"}, "no consumer setting"),
        ({"maxOffsetsPerTrigger": "0"}, "positive integer"),
        ({"subscribe": " , "}, "subscribe is required"),
        ({"subscribePattern": "a.*"}, "use subscribe"),
    ]:
        with pytest.raises(KafkaSourceError, match=message):
            parse_options(base | extra)


# ---------------------------------------------------------------- partition reads (broker, no Spark)

def produce(settings, count: int, tag: str, partition: int | None = None) -> list[tuple]:
    """Send ``count`` keyed records; returns (partition, offset, key, value, timestamp_ms) per record."""
    producer = KafkaProducer(**client_options(settings.kafka))
    try:
        futures = [
            producer.send(settings.kafka.events_topic, key=f"user-{i % 13}".encode(), value=f"{tag}-{i}".encode(), partition=partition)
            for i in range(count)
        ]
        producer.flush()
        return [(m.partition, m.offset, f"user-{i % 13}".encode(), f"{tag}-{i}".encode(), m.timestamp)
                for i, m in enumerate(f.get(timeout=30) for f in futures)]
    finally:
        producer.close()


def source_options(settings, **extra) -> dict:
    return {"kafka.bootstrap.servers": settings.kafka.bootstrap_servers, "subscribe": settings.kafka.events_topic, **extra}


def read_range(settings, start: int, end: int, expect: tuple = (), **extra) -> pa.Table:
    """Partition 0's ``[start, end)`` as the executor-side reader returns it; ``expect``: (offset, fingerprint)
    of a record before it that must still be there."""
    opts = parse_options(source_options(settings, **extra))
    reader = KafkaStreamReader(opts, kafka_schema(opts.include_headers))
    topic = settings.kafka.events_topic
    part = KafkaRanges(((topic, 0, start, end),), ((topic, 0, *expect),) if expect else ())
    return pa.Table.from_batches(list(reader.read(part)))


def test_a_range_is_read_only_while_the_record_read_before_it_is_still_there(kafka_settings):
    records = produce(kafka_settings, 8, "r", partition=0)
    _, offset, key, value, ts = records[2]
    read = fingerprint(ts, key, value)
    assert read_range(kafka_settings, 3, 6, expect=(offset, read)).column("offset").to_pylist() == [3, 4, 5]
    assert read_range(kafka_settings, 5, 7, expect=(offset, read)).column("offset").to_pylist() == [5, 6]
    with pytest.raises(OffsetMismatchError, match=r"events-\w+\[0\] offset 2: the stream read a record there, but another record is there.*--reset-offsets earliest"):
        read_range(kafka_settings, 3, 6, expect=(offset, read ^ 1))


def test_fingerprints_are_verified_against_the_topic_before_a_job_resumes(kafka_settings):
    records = produce(kafka_settings, 5, "v", partition=1)
    tp1 = TopicPartition(kafka_settings.kafka.events_topic, 1)
    _, offset, key, value, ts = records[-1]
    assert verify_fingerprints(kafka_settings.kafka, {tp1: [(offset, fingerprint(ts, key, value))]}) == []
    assert verify_fingerprints(kafka_settings.kafka, {tp1: [(offset, 1)]}) == [
        f"{tp1.topic}[1] offset 4: the stream read a record there, but another record is there"]
    assert verify_fingerprints(kafka_settings.kafka, {tp1: [(2, 1), (9, 1)]}) == [  # the newest counts
        f"{tp1.topic}[1] offset 9: the stream read a record there, but no record is there (the partition now ends at offset 5)"]


def test_a_partition_read_stops_at_the_range_end(kafka_settings):
    produce(kafka_settings, 10, "r", partition=0)
    assert read_range(kafka_settings, 3, 7).column("offset").to_pylist() == [3, 4, 5, 6]


def test_headers_are_read_when_asked(kafka_settings):
    producer = KafkaProducer(**client_options(kafka_settings.kafka))
    producer.send(kafka_settings.kafka.events_topic, value=b"x", partition=0, headers=[("reason", b"bad_json"), ("detail", b"")])
    producer.send(kafka_settings.kafka.events_topic, value=b"y", partition=0)
    producer.close()
    table = read_range(kafka_settings, 0, 2, includeHeaders="true")
    assert table.column("headers").to_pylist() == [
        [{"key": "reason", "value": b"bad_json"}, {"key": "detail", "value": b""}],
        [],
    ]
    assert "headers" not in read_range(kafka_settings, 0, 2).column_names


def test_a_partition_read_fails_when_records_are_gone(kafka_settings):
    # What a checkpoint ahead of the broker looks like (a broker that lost its data).
    produce(kafka_settings, 10, "r", partition=0)
    with pytest.raises(DataLossError, match="ends at offset 10"):
        read_range(kafka_settings, 5, 20, **{"kafkaConsumer.pollTimeoutMs": "1000"})


# ---------------------------------------------------------------- streaming queries (Spark)

def run_available_now(spark, settings, checkpoint, **stream_args) -> list[list[tuple]]:
    """One Trigger.AvailableNow run; returns the rows of each micro-batch."""
    batches = []

    def collect(df, _batch_id):
        rows = df.selectExpr("partition", "offset", "key", "value", "unix_millis(timestamp) AS ts").collect()
        batches.append([tuple(r) for r in rows])

    query = (kafka_stream(spark, settings, **stream_args).writeStream.foreachBatch(collect)
             .option("checkpointLocation", str(checkpoint)).trigger(availableNow=True).start())
    query.awaitTermination()
    return [b for b in batches if b]


def test_stream_reads_each_record_once_and_resumes_from_its_checkpoint(spark, kafka_settings, tmp_path):
    df = kafka_stream(spark, kafka_settings)
    assert df.schema == kafka_schema()
    first = produce(kafka_settings, 300, "a")
    assert len({p for p, *_ in first}) > 1, "keys should spread over partitions"
    batches = run_available_now(spark, kafka_settings, tmp_path / "ckpt")
    assert Counter(r for b in batches for r in b) == Counter(first)

    second = produce(kafka_settings, 120, "b")
    batches = run_available_now(spark, kafka_settings, tmp_path / "ckpt")
    assert Counter(r for b in batches for r in b) == Counter(second)


def test_max_offsets_per_trigger_caps_each_batch(spark, kafka_settings, tmp_path):
    settings = dataclasses.replace(kafka_settings, spark=dataclasses.replace(kafka_settings.spark, max_events_per_trigger=60))
    produced = produce(settings, 200, "c")
    batches = run_available_now(spark, settings, tmp_path / "ckpt")
    assert [len(b) for b in batches] == [60, 60, 60, 20]
    assert Counter(r for b in batches for r in b) == Counter(produced)


def test_starting_at_latest_skips_existing_records(spark, kafka_settings, tmp_path):
    produce(kafka_settings, 50, "old")
    rows = []
    query = (
        kafka_stream(spark, kafka_settings, starting_offsets="latest")
        .writeStream.foreachBatch(lambda df, _: rows.extend(tuple(r) for r in df.select("partition", "offset", "key", "value").collect()))
        .option("checkpointLocation", str(tmp_path / "ckpt"))
        .trigger(processingTime="500 milliseconds")
        .start()
    )
    try:
        # The first trigger fixes the starting offsets; only then is "new" unambiguous.
        def started():
            assert query.lastProgress is not None
        assert_eventually(started, timeout_s=60)
        new = produce(kafka_settings, 30, "new")

        def read_new():
            assert Counter(rows) == Counter(r[:4] for r in new)
        assert_eventually(read_new, timeout_s=60)
    finally:
        query.stop()
