"""Record fingerprints: what the stream read at an offset, kept to tell a reused offset from the record read."""
import pyarrow as pa
import pytest
from kafka import TopicPartition
from pyspark.sql.pandas.types import to_arrow_schema

from streamrec.config import Settings
from streamrec.errors import UserError
from streams.kafka_source import (
    KEEP_FINGERPRINTS,
    Fingerprints,
    KafkaSourceError,
    fingerprint,
    fingerprint_before,
    kafka_schema,
    last_fingerprints,
)
from streams.kafka_util import BrokerUnavailable


def test_a_fingerprint_changes_with_timestamp_key_and_value():
    base = fingerprint(1_700_000_000_000, b"u1", b'{"event_id": "a"}')
    assert base == fingerprint(1_700_000_000_000, b"u1", b'{"event_id": "a"}')
    others = {
        fingerprint(1_700_000_000_001, b"u1", b'{"event_id": "a"}'),
        fingerprint(1_700_000_000_000, b"u2", b'{"event_id": "a"}'),
        fingerprint(1_700_000_000_000, None, b'{"event_id": "a"}'),
        fingerprint(1_700_000_000_000, b"", b'{"event_id": "a"}'),
        fingerprint(1_700_000_000_000, b"u1", b'{"event_id": "b"}'),
        fingerprint(1_700_000_000_000, b"u1u", b'1{"event_id": "a"}'),  # the key/value boundary counts
    }
    assert base not in others and len(others) == 6


def test_the_last_record_of_each_partition_is_fingerprinted():
    schema = to_arrow_schema(kafka_schema(), timezone="UTC")
    rows = [("t", 0, 5, b"k", b"v5"), ("t", 1, 9, b"k", b"w9"), ("t", 0, 6, None, b"v6"), ("u", 0, 1, b"x", b"y")]
    table = pa.table({
        "key": [r[3] for r in rows], "value": [r[4] for r in rows], "topic": [r[0] for r in rows],
        "partition": pa.array([r[1] for r in rows], pa.int32()), "offset": [r[2] for r in rows],
        "timestamp": pa.array([1000 * r[2] for r in rows], schema.field("timestamp").type),  # us: offset ms
        "timestampType": pa.array([0] * len(rows), pa.int32()),
    }, schema=schema)
    assert last_fingerprints(table) == {
        TopicPartition("t", 0): (6, fingerprint(6, None, b"v6")),
        TopicPartition("t", 1): (9, fingerprint(9, b"k", b"w9")),
        TopicPartition("u", 0): (1, fingerprint(1, b"x", b"y")),
    }
    assert last_fingerprints(table.slice(0, 0)) == {}


def test_the_file_keeps_the_newest_per_partition_and_forgets_a_replaced_future(tmp_path):
    fps = Fingerprints(tmp_path / "cp" / "fingerprints.json")
    assert fps.load() == {}
    t0, t1 = TopicPartition("t", 0), TopicPartition("t", 1)
    for offset in range(10, 10 + KEEP_FINGERPRINTS + 2):
        fps.add({t0: (offset, offset * 7)})
    fps.add({t1: (3, 33)})
    fps.add({})
    known = fps.load()
    assert known[t0] == [(o, o * 7) for o in range(12, 10 + KEEP_FINGERPRINTS + 2)]
    assert known[t1] == [(3, 33)]
    # A replayed batch whose records differ from its first attempt's: its entry replaces what came after.
    fps.add({t0: (13, 1)})
    assert fps.load()[t0] == [(12, 84), (13, 1)]
    assert fingerprint_before(known, t0, 14) == (13, 91)  # the newest before a range starting at 14
    assert fingerprint_before(known, t0, 12) is None and fingerprint_before(known, TopicPartition("x", 0), 5) is None


def test_a_damaged_file_says_so(tmp_path):
    path = tmp_path / "fingerprints.json"
    path.write_text("{half")
    with pytest.raises(KafkaSourceError, match="not a fingerprint file"):
        Fingerprints(path).load()


@pytest.mark.parametrize("error, restartable", [
    (BrokerUnavailable("no Kafka broker answers at 127.0.0.1:1"), True),
    (UserError("kafka.client_options: security_protocol 'BOGUS' is not one of ..."), False),
])
def test_the_offset_check_retries_an_absent_broker_not_a_bad_setting(tmp_path, monkeypatch, error, restartable):
    """A broker that is not up yet is an outage the supervisor waits out; a bad setting stays final (no crash loop)."""
    import streams.kafka_source
    from features.stream_job import BrokerUnreachable, check_offsets

    settings = Settings(data_dir=str(tmp_path))

    def verify(cfg, known):
        raise error
    monkeypatch.setattr(streams.kafka_source, "verify_fingerprints", verify)
    with pytest.raises(BrokerUnreachable if restartable else UserError) as raised:
        check_offsets(settings, echo=lambda *_: None, attempts=1, wait_s=0)
    assert isinstance(raised.value, BrokerUnreachable) == restartable
