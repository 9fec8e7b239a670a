"""A Kafka source for Spark Structured Streaming, written as a PySpark Python data source.

Used where Spark's own connector (spark-sql-kafka) is not on the classpath. Read it with
``spark.readStream.format("streamrec-kafka")`` and the native source's option names:
``kafka.bootstrap.servers``, ``subscribe`` (comma-separated topics), ``startingOffsets``
(``earliest`` | ``latest`` | ``{"topic": {"0": 23}}`` with -2/-1 for earliest/latest),
``maxOffsetsPerTrigger``, ``includeHeaders``, ``kafkaConsumer.pollTimeoutMs`` and any
kafka-python client option as ``kafka.<name with dots>`` (``kafka.security.protocol``).
Rows have the native source's columns and types.

Offsets are Kafka offsets per partition, checkpointed as ``{"topic": {"0": 42}}`` (the
native format). No consumer group is used: partitions are assigned and sought. The
latest offset comes from a fetch's high watermark, because Tansu answers ``end_offsets``
wrongly. Offset arithmetic is in pure functions at the top of this module.

Unlike the native source, the resolved ``startingOffsets`` live only in the running query:
a query stopped before its first batch resolves ``latest`` anew when restarted (a Python
source cannot write to the checkpoint).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import pyarrow as pa
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, OffsetOutOfRangeError
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from streamrec.config import KafkaConfig
from streamrec.errors import UserError
from streams.kafka_util import assigned_consumer, high_watermarks, partitions_of

SOURCE_NAME = "streamrec-kafka"
EARLIEST, LATEST = -2, -1  # the native source's markers inside a startingOffsets JSON

Offsets = dict[TopicPartition, int]

# Client settings the source itself depends on (no group, no reset, raw bytes).
RESERVED_CLIENT_OPTIONS = {
    "group_id", "enable_auto_commit", "auto_offset_reset", "key_deserializer", "value_deserializer",
}
POLL_RECORDS = 10_000  # records per poll, and so per Arrow batch
RETRIES = 3  # consecutive retriable client errors tolerated per partition read
RETRY_BACKOFF_S = 1.0
# The driver's offset lookups fetch one small batch per partition just to learn its high
# watermark; a small limit keeps that cheap on big topics.
OFFSET_FETCH_BYTES = 64 * 1024


class KafkaSourceError(UserError):
    """The source cannot go on: bad options, or Kafka does not answer as needed."""


class DataLossError(KafkaSourceError):
    """Records the stream must read are no longer in Kafka."""


# ---------------------------------------------------------------- pure offset logic

def offsets_to_json(offsets: Offsets) -> dict:
    """``{"topic": {"0": 42}}`` as Spark's Kafka source writes it, in a stable order."""
    out: dict = {}
    for tp in sorted(offsets):
        out.setdefault(tp.topic, {})[str(tp.partition)] = offsets[tp]
    return out


def offsets_from_json(data: object, minimum: int = 0) -> Offsets:
    """The inverse of ``offsets_to_json``; rejects anything else with a clear message."""
    example = '{"topic": {"0": 42}}'
    if not isinstance(data, Mapping):
        raise KafkaSourceError(f"offsets must look like {example}, got {data!r}")
    out: Offsets = {}
    for topic, parts in data.items():
        if not isinstance(parts, Mapping):
            raise KafkaSourceError(f"offsets of topic {topic!r} must look like {example}, got {parts!r}")
        for part, offset in parts.items():
            try:
                p = int(part)
            except ValueError:
                raise KafkaSourceError(f"topic {topic!r}: partition {part!r} is not a number") from None
            if isinstance(offset, bool) or not isinstance(offset, int) or offset < minimum:
                raise KafkaSourceError(f"{topic}[{p}]: offset must be an integer >= {minimum}, got {offset!r}")
            out[TopicPartition(topic, p)] = offset
    return out


def parse_starting_offsets(text: str) -> str | Offsets:
    """``"earliest"``, ``"latest"`` or offsets per partition (where -2/-1 mean earliest/latest)."""
    value = text.strip()
    if value.lower() in ("earliest", "latest"):
        return value.lower()
    try:
        data = json.loads(value)
    except ValueError:
        raise KafkaSourceError(
            f'startingOffsets must be "earliest", "latest" or JSON like {{"topic": {{"0": 23}}}}, got {text!r}'
        ) from None
    return offsets_from_json(data, minimum=EARLIEST)


def resolve_starting(spec: str | Offsets, partitions: Iterable[TopicPartition], earliest: Offsets, latest: Offsets) -> Offsets:
    """The offsets a new query starts from. A JSON spec must name every partition, as in Spark."""
    partitions = sorted(partitions)
    if spec == "earliest":
        return {tp: earliest[tp] for tp in partitions}
    if spec == "latest":
        return {tp: latest[tp] for tp in partitions}
    assert isinstance(spec, dict)
    missing = [tp for tp in partitions if tp not in spec]
    unknown = sorted(set(spec) - set(partitions))
    if missing or unknown:
        raise KafkaSourceError(
            "startingOffsets must give an offset for exactly the subscribed partitions; "
            f"missing: {offsets_to_json(dict.fromkeys(missing, 0))}, unknown: {offsets_to_json(dict.fromkeys(unknown, 0))}"
        )
    marks = {EARLIEST: earliest, LATEST: latest}
    return {tp: marks[spec[tp]][tp] if spec[tp] in marks else spec[tp] for tp in partitions}


def cap_offsets(start: Offsets, end: Offsets, max_records: int) -> Offsets:
    """Pull ``end`` back so that at most ``max_records`` are read, shared max-min fairly.

    Every partition with a backlog gets an equal share, a partition needing less gives the
    rest to the others, and the rounding leftover goes to those furthest behind.
    """
    backlog = sorted((end[tp] - start[tp], tp) for tp in end)
    capped = dict(end)
    remaining = max_records
    for i, (available, tp) in enumerate(backlog):
        take = min(available, remaining // (len(backlog) - i))
        capped[tp] = start[tp] + take
        remaining -= take
    return capped


def next_end(start: Offsets, latest: Offsets, target: Offsets | None = None, max_records: int | None = None) -> Offsets:
    """The end offsets of the next micro-batch.

    ``start``: where the stream is; ``latest``: the partitions' high watermarks now;
    ``target``: the end fixed when a Trigger.AvailableNow run began (nothing past it is read);
    ``max_records``: the per-trigger cap. Partitions unknown to ``start`` are new and are
    read from offset 0. Returns ``start`` (with new partitions) when there is nothing to read.
    """
    start = {tp: 0 for tp in latest} | start
    behind = {tp: (latest[tp], start[tp]) for tp in latest if latest[tp] < start[tp]}
    if behind:
        detail = ", ".join(f"{tp.topic}[{tp.partition}] ends at {hw}, stream is at {pos}" for tp, (hw, pos) in sorted(behind.items()))
        raise DataLossError(
            f"partitions end before the stream's position ({detail}): the topic was recreated, the broker "
            "lost its data (the embedded Tansu broker forgets everything on restart) or startingOffsets "
            "points past the end. Delete the query's checkpoint to start over."
        )
    end = {tp: latest.get(tp, offset) for tp, offset in start.items()}
    if target is not None:
        end = {tp: max(start[tp], min(offset, target.get(tp, start[tp]))) for tp, offset in end.items()}
    if max_records is not None:
        end = cap_offsets(start, end, max_records)
    return end


def plan_ranges(start: Offsets, end: Offsets) -> list[tuple[TopicPartition, int, int]]:
    """The non-empty ``[from, until)`` range of each partition; new partitions start at 0."""
    return [(tp, start.get(tp, 0), end[tp]) for tp in sorted(end) if end[tp] > start.get(tp, 0)]


# ---------------------------------------------------------------- options

@dataclass(frozen=True)
class SourceOptions:
    kafka: KafkaConfig
    topics: tuple[str, ...]
    starting: str | Offsets
    max_per_trigger: int | None
    include_headers: bool
    poll_timeout_s: float


def _parse_bool(name: str, value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "false"):
        return v == "true"
    raise KafkaSourceError(f"option {name} must be true or false, got {value!r}")


def _parse_positive_int(name: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n <= 0:
        raise KafkaSourceError(f"option {name} must be a positive integer, got {value!r}")
    return n


def kafka_client_options(raw: Mapping[str, str]) -> dict:
    """kafka-python keyword arguments from ``kafka.*`` options (``security.protocol`` -> ``security_protocol``).

    Values arrive as strings; each is converted to the type of kafka-python's default.
    """
    out = {}
    for key, value in raw.items():
        name = key.replace(".", "_")
        if name in RESERVED_CLIENT_OPTIONS:
            raise KafkaSourceError(f"option kafka.{key} cannot be set: the source manages it")
        if name not in KafkaConsumer.DEFAULT_CONFIG:
            raise KafkaSourceError(f"option kafka.{key}: kafka-python has no consumer setting {name!r}")
        default = KafkaConsumer.DEFAULT_CONFIG[name]
        if isinstance(default, bool):
            out[name] = _parse_bool(f"kafka.{key}", value)
        elif isinstance(default, (int, float)) and isinstance(value, str):
            try:
                out[name] = type(default)(value)
            except ValueError:
                raise KafkaSourceError(f"option kafka.{key} must be a number, got {value!r}") from None
        else:
            out[name] = value
    return out


def parse_options(options: Mapping[str, str]) -> SourceOptions:
    opts = {k.lower(): v for k, v in options.items()}
    servers = opts.get("kafka.bootstrap.servers", "").strip()
    if not servers:
        raise KafkaSourceError("option kafka.bootstrap.servers is required (host:port[,host:port...])")
    for other in ("assign", "subscribepattern"):
        if other in opts:
            raise KafkaSourceError(f"option {other} is not supported by the {SOURCE_NAME} source; use subscribe")
    topics = tuple(t.strip() for t in opts.get("subscribe", "").split(",") if t.strip())
    if not topics:
        raise KafkaSourceError("option subscribe is required (one or more topics, comma-separated)")
    cap = opts.get("maxoffsetspertrigger")
    client = {k[len("kafka."):]: v for k, v in opts.items() if k.startswith("kafka.") and k != "kafka.bootstrap.servers"}
    return SourceOptions(
        kafka=KafkaConfig(bootstrap_servers=servers, client_options=kafka_client_options(client)),
        topics=topics,
        # Spark's default too: a new query without a checkpoint reads only what arrives next.
        starting=parse_starting_offsets(opts.get("startingoffsets", "latest")),
        max_per_trigger=None if cap is None else _parse_positive_int("maxOffsetsPerTrigger", cap),
        include_headers=_parse_bool("includeHeaders", opts.get("includeheaders", "false")),
        poll_timeout_s=_parse_positive_int("kafkaConsumer.pollTimeoutMs", opts.get("kafkaconsumer.polltimeoutms", "120000")) / 1000,
    )


def kafka_schema(include_headers: bool = False) -> StructType:
    """The columns of Spark's native Kafka source."""
    fields = [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),
        StructField("timestampType", IntegerType()),
    ]
    if include_headers:
        header = StructType([StructField("key", StringType()), StructField("value", BinaryType())])
        fields.append(StructField("headers", ArrayType(header)))
    return StructType(fields)


# ---------------------------------------------------------------- Kafka I/O

@dataclass
class KafkaRange(InputPartition):
    """One Spark task: offsets ``[start, end)`` of one Kafka partition."""
    topic: str
    partition: int
    start: int
    end: int


def current_offsets(opts: SourceOptions) -> tuple[Offsets, Offsets]:
    """(earliest, latest) offsets of every partition of the subscribed topics, retrying client errors."""
    for attempt in range(1, RETRIES + 2):
        try:
            return _current_offsets(opts)
        except KafkaError as e:
            if attempt > RETRIES:
                raise KafkaSourceError(
                    f"cannot read the offsets of {', '.join(opts.topics)} from {opts.kafka.bootstrap_servers}: {e}"
                ) from e
            time.sleep(RETRY_BACKOFF_S * attempt)


def _current_offsets(opts: SourceOptions) -> tuple[Offsets, Offsets]:
    # A fresh consumer each time: a reused one reports the high watermark cached from its previous fetch.
    consumer = assigned_consumer(opts.kafka, max_partition_fetch_bytes=OFFSET_FETCH_BYTES, fetch_max_bytes=OFFSET_FETCH_BYTES)
    try:
        tps = [TopicPartition(t, p) for t in opts.topics for p in partitions_of(consumer, t)]
        earliest = consumer.beginning_offsets(tps)
        return earliest, high_watermarks(consumer, tps)
    finally:
        consumer.close()


def fetch_range(opts: SourceOptions, part: KafkaRange) -> Iterator[list]:
    """The records of ``[part.start, part.end)`` in offset order, in chunks.

    Stops at ``end`` even if more has arrived; offsets missing inside the range (compaction,
    transaction markers) are skipped as Kafka does. Retriable client errors reconnect and
    resume after the last record returned; records that are gone raise ``DataLossError``.
    """
    tp = TopicPartition(part.topic, part.partition)
    where = f"{part.topic}[{part.partition}]"
    next_offset, failures = part.start, 0
    while next_offset < part.end:
        consumer = assigned_consumer(opts.kafka, auto_offset_reset="none", max_poll_records=POLL_RECORDS)
        try:
            consumer.assign([tp])
            consumer.seek(tp, next_offset)
            progressed_at = time.monotonic()
            while next_offset < part.end:
                records = [r for r in consumer.poll(timeout_ms=500).get(tp, []) if r.offset < part.end]
                position = consumer.position(tp)  # also moves past offsets that hold no record
                if position > next_offset:
                    next_offset, failures, progressed_at = position, 0, time.monotonic()
                elif time.monotonic() - progressed_at > opts.poll_timeout_s:
                    hw = consumer.highwater(tp)
                    if hw is not None and hw < part.end:
                        raise DataLossError(
                            f"{where} now ends at offset {hw}, but this batch must read up to {part.end}: "
                            "the topic was recreated or the broker lost its data. Delete the query's checkpoint to start over."
                        )
                    raise KafkaSourceError(
                        f"{where}: no records at offset {next_offset} for {opts.poll_timeout_s:g}s "
                        f"(batch range {part.start}..{part.end}); is the broker at {opts.kafka.bootstrap_servers} healthy?"
                    )
                if records:
                    yield records
        except OffsetOutOfRangeError:
            raise DataLossError(
                f"{where}: offsets {next_offset}..{part.end} are no longer in Kafka (deleted by retention, "
                "or the topic was recreated). Delete the query's checkpoint to start over."
            ) from None
        except KafkaError as e:
            failures += 1
            if not e.retriable or failures > RETRIES:
                raise KafkaSourceError(f"{where}: reading offsets {next_offset}..{part.end} failed: {e}") from e
            time.sleep(RETRY_BACKOFF_S * failures)
        finally:
            consumer.close()


def records_to_batch(records: list, schema: pa.Schema, include_headers: bool) -> pa.RecordBatch:
    columns = [
        pa.array([r.key for r in records], pa.binary()),
        pa.array([r.value for r in records], pa.binary()),
        pa.array([r.topic for r in records], pa.string()),
        pa.array([r.partition for r in records], pa.int32()),
        pa.array([r.offset for r in records], pa.int64()),
        pa.array([r.timestamp * 1000 for r in records], schema.field("timestamp").type),  # ms -> us
        pa.array([r.timestamp_type for r in records], pa.int32()),
    ]
    if include_headers:
        headers = [[{"key": k, "value": v} for k, v in r.headers or ()] for r in records]
        columns.append(pa.array(headers, schema.field("headers").type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


# ---------------------------------------------------------------- Spark plumbing

class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Plans micro-batches on the driver (one long-lived instance per query run) and reads
    them in executors (``read`` runs on a pickled copy, so it keeps no state)."""

    def __init__(self, opts: SourceOptions, schema: StructType):
        self._opts = opts
        self._schema = schema
        self._initial: dict | None = None
        self._latest: Offsets | None = None
        self._target: Offsets | None = None

    def initialOffset(self) -> dict:
        # Resolved once per run, so "latest" does not move on before the first batch.
        if self._initial is None:
            earliest, latest = current_offsets(self._opts)
            self._initial = offsets_to_json(resolve_starting(self._opts.starting, list(latest), earliest, latest))
        return self._initial

    def getDefaultReadLimit(self) -> ReadLimit:
        if self._opts.max_per_trigger is None:
            return ReadAllAvailable()
        return ReadMaxRows(self._opts.max_per_trigger)

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = current_offsets(self._opts)[1]

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        self._latest = current_offsets(self._opts)[1]
        cap = limit.max_rows if isinstance(limit, ReadMaxRows) else None
        return offsets_to_json(next_end(offsets_from_json(start), self._latest, self._target, cap))

    def reportLatestOffset(self) -> dict | None:
        return None if self._latest is None else offsets_to_json(self._latest)

    def partitions(self, start: dict, end: dict) -> list[KafkaRange]:
        ranges = plan_ranges(offsets_from_json(start), offsets_from_json(end))
        return [KafkaRange(tp.topic, tp.partition, a, b) for tp, a, b in ranges]

    def read(self, partition: KafkaRange) -> Iterator[pa.RecordBatch]:
        schema = to_arrow_schema(self._schema, timezone="UTC")
        for records in fetch_range(self._opts, partition):
            yield records_to_batch(records, schema, self._opts.include_headers)


class KafkaDataSource(DataSource):
    """``spark.readStream.format("streamrec-kafka")`` once registered with ``spark.dataSource.register``."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> StructType:
        return kafka_schema(parse_options(self.options).include_headers)

    def streamReader(self, schema: StructType) -> KafkaStreamReader:
        opts = parse_options(self.options)
        expected = kafka_schema(opts.include_headers)
        if schema != expected:
            raise KafkaSourceError(f"the {SOURCE_NAME} source has a fixed schema ({expected.simpleString()}); do not set one")
        return KafkaStreamReader(opts, schema)
