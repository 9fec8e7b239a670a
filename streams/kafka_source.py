"""A Kafka source for Spark Structured Streaming, written as a PySpark Python data source.

Used where Spark's own connector (spark-sql-kafka) is not on the classpath. Read it with
``spark.readStream.format("streamrec-kafka")`` and the native source's option names:
``kafka.bootstrap.servers``, ``subscribe`` (comma-separated topics), ``startingOffsets``
(``earliest`` | ``latest`` | ``{"topic": {"0": 23}}`` with -2/-1 for earliest/latest),
``maxOffsetsPerTrigger``, ``includeHeaders``, ``kafkaConsumer.pollTimeoutMs``, ``tasksPerBatch``
(Spark tasks that read a batch, default 1: see ``group_ranges``), ``fingerprintFile`` (see below) and any
kafka-python client option as ``kafka.<name with dots>`` (``kafka.security.protocol``).
Rows have the native source's columns and types.

Offsets are Kafka offsets per partition, checkpointed as ``{"topic": {"0": 42}}`` (the
native format). No consumer group is used: partitions are assigned and sought. The driver
plans batches with kafka-python; the latest offset comes from a fetch's high watermark,
because some brokers (Tansu) answer ``end_offsets`` wrongly. Executors read records with confluent-kafka
(librdkafka, ~50x cheaper per record than kafka-python's Python decoding), one consumer per
Python worker kept across batches. Offset arithmetic is in pure functions at the top of this module.

Unlike the native source, the resolved ``startingOffsets`` live only in the running query:
a query stopped before its first batch resolves ``latest`` anew when restarted (a Python
source cannot write to the checkpoint).

Offsets alone do not say a partition still holds what the stream read: a topic recreated (or a
broker that lost its tail) reuses offsets, and once refilled past the checkpoint a resumed query
would silently skip the new records. So with the ``fingerprintFile`` option the source checks,
before each range it reads, that the last record read before it (kept by the stream's sink in a
``Fingerprints`` file: offset and a CRC of timestamp, key and value) is still the record at that
offset, and fails with ``OffsetMismatchError`` otherwise. ``verify_fingerprints`` makes the same
check without Spark, before a job starts.
"""
from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
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
from streams.kafka_util import (
    LIBRDKAFKA_LOG,
    assigned_consumer,
    high_watermarks,
    librdkafka_config,
    partitions_of,
    records_at,
)
from streams.storage import Location

SOURCE_NAME = "streamrec-kafka"
EARLIEST, LATEST = -2, -1  # the native source's markers inside a startingOffsets JSON

Offsets = dict[TopicPartition, int]

# Client settings the source itself depends on (no group, no reset, raw bytes).
RESERVED_CLIENT_OPTIONS = {
    "group_id", "enable_auto_commit", "auto_offset_reset", "key_deserializer", "value_deserializer",
}
POLL_RECORDS = 10_000  # records per poll, and so per Arrow batch
RETRIES = 3  # consecutive retriable client errors tolerated by the driver's offset lookups
RETRY_BACKOFF_S = 1.0
# The driver's offset lookups fetch one small batch per partition just to learn its high
# watermark; a small limit keeps that cheap on big topics.
OFFSET_FETCH_BYTES = 64 * 1024


class KafkaSourceError(UserError):
    """The source cannot go on: bad options, or Kafka does not answer as needed."""


class DataLossError(KafkaSourceError):
    """Records the stream must read are no longer in Kafka, or are not the records it read."""


class OffsetMismatchError(DataLossError):
    """A partition's offsets now hold other records than the stream read there (topic recreated, broker reset)."""


RESUME_HINT = (
    "Choose where to resume: 'streamrec stream --reset-offsets earliest' (read what the topic holds now) "
    "or 'streamrec stream --reset-offsets latest' (skip to its end); the per-user state is kept."
)


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
            f"lost its data, or startingOffsets points past the end. {RESUME_HINT}"
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


# ---------------------------------------------------------------- fingerprints

KEEP_FINGERPRINTS = 4  # per partition: a replayed batch checks against the one before it


def fingerprint(timestamp_ms: int, key: bytes | None, value: bytes | None) -> int:
    """A record's identity at its offset: CRC-32 of its timestamp, key and value.

    A record written into a reused offset differs (another event id, another append time).
    """
    crc = zlib.crc32(int(timestamp_ms).to_bytes(8, "big", signed=True))
    crc = zlib.crc32(b"-" if key is None else b"+%d:" % len(key) + key, crc)
    return zlib.crc32(value or b"", crc)


def last_fingerprints(table: pa.Table) -> dict[TopicPartition, tuple[int, int]]:
    """(offset, fingerprint) of each partition's last record in a table with the source's columns."""
    if table.num_rows == 0:
        return {}
    where = table.select(["topic", "partition", "offset"]).to_pandas()
    last = where.groupby(["topic", "partition"], sort=False)["offset"].idxmax()  # a batch's offsets are unique
    stamps = table.column("timestamp").cast(pa.int64())  # microseconds
    keys, values = table.column("key"), table.column("value")
    return {
        TopicPartition(topic, int(part)): (int(where["offset"].iat[row]),
                                           fingerprint(stamps[row].as_py() // 1000, keys[row].as_py(), values[row].as_py()))
        for (topic, part), row in last.items()
    }


def fingerprint_before(known: Mapping[TopicPartition, list], tp: TopicPartition, offset: int) -> tuple[int, int] | None:
    """The newest known (offset, fingerprint) of ``tp`` before ``offset``, if any."""
    return max((tuple(f) for f in known.get(tp, ()) if f[0] < offset), default=None)


class Fingerprints:
    """The last records a stream read, per partition: ``{"topic": {"0": [[offset, fingerprint], ...]}}``
    in a JSON file (the newest ``KEEP_FINGERPRINTS``), a path or URI beside the checkpoint (``streams.storage``).
    The sink adds a batch's after processing it."""

    def __init__(self, where: str | os.PathLike | Location):
        self.file = Location.of(where, "fingerprintFile")
        self._known: dict | None = None  # what add wrote last: the sink is the file's only writer while it runs

    def load(self) -> dict[TopicPartition, list[tuple[int, int]]]:
        try:
            data = json.loads(self.file.read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise KafkaSourceError(f"{self.file}: not a fingerprint file ({e}); remove it to skip the check once") from None
        return {TopicPartition(t, int(p)): [tuple(f) for f in fs] for t, parts in data.items() for p, fs in parts.items()}

    def add(self, latest: Mapping[TopicPartition, tuple[int, int]]) -> None:
        """Merge ``latest`` in and write the file whole (a crash leaves the old one or the new one)."""
        if not latest:
            return
        known = self._known if self._known is not None else self.load()
        for tp, entry in latest.items():
            kept = [f for f in known.get(tp, []) if f[0] < entry[0]]
            known[tp] = (kept + [tuple(entry)])[-KEEP_FINGERPRINTS:]
        out: dict = {}
        for tp in sorted(known):
            out.setdefault(tp.topic, {})[str(tp.partition)] = [list(f) for f in known[tp]]
        self.file.write_atomic(json.dumps(out).encode())
        self._known = known


def mismatch(tp: TopicPartition, offset: int, present: bool, end: int | None = None) -> str:
    """One line naming the partition, the offset and what is there now."""
    if present:
        now = "another record is there"
    else:
        now = "no record is there" + (f" (the partition now ends at offset {end})" if end is not None else "")
    return f"{tp.topic}[{tp.partition}] offset {offset}: the stream read a record there, but {now}"


def verify_fingerprints(cfg: KafkaConfig, known: Mapping[TopicPartition, list]) -> list[str]:
    """What no longer matches: for each partition, the newest record the stream read must still be at its
    offset (checked without Spark, before a job resumes). A record gone by retention is not a mismatch."""
    newest = {tp: max(map(tuple, fs)) for tp, fs in known.items() if fs}
    if not newest:
        return []
    found, begins, ends = records_at(cfg, {tp: f[0] for tp, f in newest.items()})
    problems = []
    for tp, (offset, expected) in sorted(newest.items()):
        if offset < begins[tp]:
            continue  # deleted by retention
        r = found[tp]
        if r is None:
            problems.append(mismatch(tp, offset, False, ends[tp]))
        elif fingerprint(r.timestamp, r.key, r.value) != expected:
            problems.append(mismatch(tp, offset, True))
    return problems


# ---------------------------------------------------------------- options

@dataclass(frozen=True)
class SourceOptions:
    kafka: KafkaConfig
    topics: tuple[str, ...]
    starting: str | Offsets
    max_per_trigger: int | None
    include_headers: bool
    poll_timeout_s: float
    tasks: int = 1
    fingerprints: str | None = None  # a path or URI, read by the driver only (``partitions``)


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
    out: dict[str, object] = {}
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
        tasks=_parse_positive_int("tasksPerBatch", opts.get("tasksperbatch", "1")),
        fingerprints=opts.get("fingerprintfile") or None,
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
class KafkaRanges(InputPartition):
    """One Spark task: offsets ``[start, end)`` of one or more Kafka partitions, as (topic, partition, start, end),
    and the records expected before them, as (topic, partition, offset, fingerprint)."""
    ranges: tuple[tuple[str, int, int, int], ...]
    expect: tuple[tuple[str, int, int, int], ...] = ()


def group_ranges(ranges: list[tuple[TopicPartition, int, int]], tasks: int) -> list[KafkaRanges]:
    """At most ``tasks`` Spark tasks; each partition, largest first, goes to the task with the fewest records.

    A task has a fixed cost here (~40 ms: a Python worker round, the first fetch), more than
    reading thousands of records with librdkafka, so a batch is read by few tasks.
    """
    groups: list[list] = [[] for _ in range(min(tasks, len(ranges)))]
    sizes = [0] * len(groups)
    for tp, a, b in sorted(ranges, key=lambda r: r[2] - r[1], reverse=True):
        n = sizes.index(min(sizes))
        groups[n].append((tp.topic, tp.partition, a, b))
        sizes[n] += b - a
    return [KafkaRanges(tuple(sorted(g))) for g in groups]


def current_offsets(opts: SourceOptions) -> tuple[Offsets, Offsets]:
    """(earliest, latest) offsets of every partition of the subscribed topics, retrying client errors."""
    return topic_offsets(opts.kafka, opts.topics)


def topic_offsets(cfg: KafkaConfig, topics: Iterable[str]) -> tuple[Offsets, Offsets]:
    """(earliest, latest) offsets of every partition of ``topics``, retrying client errors."""
    topics = tuple(topics)
    for attempt in range(1, RETRIES + 2):
        try:
            return _topic_offsets(cfg, topics)
        except KafkaError as e:
            if attempt > RETRIES:
                raise KafkaSourceError(f"cannot read the offsets of {', '.join(topics)} from {cfg.bootstrap_servers}: {e}") from e
            time.sleep(RETRY_BACKOFF_S * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _topic_offsets(cfg: KafkaConfig, topics: tuple[str, ...]) -> tuple[Offsets, Offsets]:
    # A fresh consumer each time: a reused one reports the high watermark cached from its previous fetch.
    consumer = assigned_consumer(cfg, max_partition_fetch_bytes=OFFSET_FETCH_BYTES, fetch_max_bytes=OFFSET_FETCH_BYTES)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in partitions_of(consumer, t)]
        earliest = consumer.beginning_offsets(tps)
        return earliest, high_watermarks(consumer, tps)
    finally:
        consumer.close()


# Only the read path's own settings: a client of the reading side, never a member of a group.
_READER_CONFIG = {
    "group.id": "streamrec-spark-source",  # librdkafka insists on one; assign() never joins it, nothing is committed
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    "auto.offset.reset": "error",
    "fetch.wait.max.ms": 10,  # a micro-batch waits on its last fetch: keep the broker's long poll short
}
_readers: dict[tuple, object] = {}


def _reader(opts: SourceOptions):
    """A librdkafka consumer for this Python worker, kept across tasks (Spark reuses its Python workers).

    The executors read with confluent-kafka (librdkafka): kafka-python decodes records in Python,
    ~40-70 µs a record here, where librdkafka takes ~1 µs; the read was the largest cost of a batch.
    """
    from confluent_kafka import Consumer, KafkaException

    key = (opts.kafka.bootstrap_servers, tuple(sorted((k, str(v)) for k, v in opts.kafka.client_options.items())))
    if key not in _readers:
        config = {**librdkafka_config(opts.kafka), **_READER_CONFIG}
        try:
            _readers[key] = Consumer(config, logger=LIBRDKAFKA_LOG)
        except (KafkaException, ValueError) as e:
            raise KafkaSourceError(f"cannot create a Kafka reader for {opts.kafka.bootstrap_servers}: {e}") from None
    return _readers[key]


def fetch_ranges(opts: SourceOptions, part: KafkaRanges) -> Iterator[list]:
    """The records (confluent-kafka messages) of each range ``[start, end)``, in chunks, each partition's
    in offset order; one consumer fetches all of them at once.

    Where ``part.expect`` names the record read before a range, reading starts there and that record
    must have the same fingerprint, else ``OffsetMismatchError`` (if it is gone by retention while the
    range is not, there is nothing to compare and the range is read). Stops at each ``end`` even if
    more has arrived; offsets missing inside a range (compaction, transaction markers) are skipped as
    Kafka does. librdkafka reconnects by itself; records that are gone raise ``DataLossError``, no
    progress for ``kafkaConsumer.pollTimeoutMs`` a clear error.
    """
    from confluent_kafka import KafkaError as RdKafkaError
    from confluent_kafka import TopicPartition as RdPartition

    todo = {(t, p): [a, b] for t, p, a, b in part.ranges if b > a}  # (topic, partition) -> [next offset, end]
    if not todo:
        return
    checks = {(t, p): (offset, fp) for t, p, offset, fp in part.expect if (t, p) in todo and offset < todo[(t, p)][0]}

    def assign() -> None:
        consumer.assign([RdPartition(t, p, checks[(t, p)][0] if (t, p) in checks else a) for (t, p), (a, _) in todo.items()])

    def check(key: tuple[str, int], m) -> None:
        offset, expected = checks.pop(key)
        present = m is not None and m.offset() == offset
        if not present or fingerprint(m.timestamp()[1], m.key(), m.value()) != expected:
            raise OffsetMismatchError(f"{mismatch(TopicPartition(*key), offset, present)}. {RESUME_HINT}")

    consumer = _reader(opts)
    assign()
    failed = True
    try:
        progressed_at = time.monotonic()
        while todo:
            chunk = []
            wanted = min(POLL_RECORDS, sum(end - next_offset for next_offset, end in todo.values()) + len(checks))
            for m in consumer.consume(num_messages=wanted, timeout=0.5):  # returns once ``wanted`` arrived
                error = m.error()
                key = (m.topic(), m.partition())
                if error is not None:
                    where = f"{m.topic()}[{m.partition()}]"
                    if error.code() in (RdKafkaError.OFFSET_OUT_OF_RANGE, RdKafkaError._AUTO_OFFSET_RESET):
                        if key in checks:  # the record before the range is gone by retention: read the range
                            checks.pop(key)
                            assign()
                            continue
                        raise DataLossError(
                            f"{where}: records of this batch are no longer in Kafka (deleted by retention, "
                            f"or the topic was recreated). {RESUME_HINT}"
                        )
                    if error.fatal() or not error.retriable():
                        raise KafkaSourceError(f"{where}: reading failed: {error.str()}")
                    continue  # transient: librdkafka retries
                if key in checks:
                    check(key, m)
                span = todo.get(key)
                if span is None or not span[0] <= m.offset() < span[1]:
                    continue  # the checked record, or fetched past the range
                chunk.append(m)
                span[0] = m.offset() + 1
                if span[0] >= span[1]:
                    del todo[key]
            if chunk:
                progressed_at = time.monotonic()
                yield chunk
                continue
            for (t, p), span in list(todo.items()):
                position = consumer.position([RdPartition(t, p)])[0].offset
                if (t, p) in checks and position > checks[(t, p)][0]:
                    check((t, p), None)  # moved past the checked offset without a record there
                if position > span[0]:  # moved past offsets that hold no record
                    span[0], progressed_at = position, time.monotonic()
                    if position >= span[1]:
                        del todo[(t, p)]
            if todo and time.monotonic() - progressed_at > opts.poll_timeout_s:
                for (t, p), (_, end) in todo.items():
                    _, hw = consumer.get_watermark_offsets(RdPartition(t, p), cached=True)
                    if 0 <= hw < end:
                        raise DataLossError(
                            f"{t}[{p}] now ends at offset {hw}, but this batch must read up to {end}: "
                            f"the topic was recreated or the broker lost its data. {RESUME_HINT}"
                        )
                (t, p), (next_offset, end) = next(iter(todo.items()))
                raise KafkaSourceError(
                    f"{t}[{p}]: no records at offset {next_offset} for {opts.poll_timeout_s:g}s "
                    f"(batch range ..{end}); is the broker at {opts.kafka.bootstrap_servers} healthy?"
                )
        failed = False
    finally:
        consumer.unassign()  # drops what was fetched past the ranges
        if failed:  # a reader that failed (broker gone, say) is not kept for the next task
            _readers.pop(next(k for k, v in _readers.items() if v is consumer), None)
            consumer.close()


# librdkafka's timestamp types (1 create, 2 log append) as Kafka's (0, 1), as Spark's source reports them.
_TIMESTAMP_TYPE = {0: -1, 1: 0, 2: 1}


def records_to_batch(records: list, schema: pa.Schema, include_headers: bool) -> pa.RecordBatch:
    stamps = [r.timestamp() for r in records]
    columns = [
        pa.array([r.key() for r in records], pa.binary()),
        pa.array([r.value() for r in records], pa.binary()),
        pa.array([r.topic() for r in records], pa.string()),
        pa.array([r.partition() for r in records], pa.int32()),
        pa.array([r.offset() for r in records], pa.int64()),
        pa.array([ms * 1000 for _, ms in stamps], schema.field("timestamp").type),  # ms -> us
        pa.array([_TIMESTAMP_TYPE[kind] for kind, _ in stamps], pa.int32()),
    ]
    if include_headers:
        headers = [[{"key": k, "value": v} for k, v in r.headers() or ()] for r in records]
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

    def partitions(self, start: dict, end: dict) -> list[KafkaRanges]:
        groups = group_ranges(plan_ranges(offsets_from_json(start), offsets_from_json(end)), self._opts.tasks)
        if self._opts.fingerprints is None:
            return groups
        known = Fingerprints(self._opts.fingerprints).load()
        for group in groups:
            expect = ((t, p, fingerprint_before(known, TopicPartition(t, p), a)) for t, p, a, _ in group.ranges)
            group.expect = tuple((t, p, *f) for t, p, f in expect if f is not None)
        return groups

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, KafkaRanges)  # Spark hands back what partitions() returned
        schema = to_arrow_schema(self._schema, timezone="UTC")
        for records in fetch_ranges(self._opts, partition):
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
