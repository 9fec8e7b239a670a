"""``streamrec bench broker``: what the embedded broker (noida-db) loses on a clean restart and on kill -9.

Every run starts a broker of its own (``infra.broker`` on a free loopback port, a temporary data dir
removed afterwards), never the user's stack. Records are ``VALUE_BYTES`` long, keyed by 50 users.

- clean: produce ``--records`` with acks=all, close the producer, stop the broker (SIGTERM, as
  ``infra down``), start it again and read everything back: acknowledged records missing or changed
  at their offsets, stop and start-to-ready seconds, the snapshot's size.
- kill: send at ``--rate`` records/s for ``--seconds``, noting when each was acknowledged; SIGKILL the
  broker while still sending, restart it and read back: acknowledged records lost and the window they
  span (the oldest lost one's ack to the kill); then whether new records land on the lost offsets.
  ``--preload`` fills the log first (the broker rewrites its whole snapshot about every second).

Progress goes to stderr; stdout is the JSON summary alone (per run, and the min and max across runs).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

from infra import broker, process
from streamrec.config import KafkaConfig, Settings
from streamrec.errors import UserError

VALUE_BYTES = 150  # about a small event; the snapshot holds ~4x the payload
NEW_RECORDS = 20  # sent after the restart that followed the kill, to see where they land

Pos = tuple[int, int]  # (partition, offset)


def _number(kind: type, allow_zero: bool = False):
    """An argparse type: a finite ``kind`` above zero (or zero too), so a bad value is refused by name."""
    what = f"{'non-negative' if allow_zero else 'positive'} {'integer' if kind is int else 'number'}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=_number(int), default=20_000, help="records per clean run (default: 20000)")
    parser.add_argument("--runs", type=_number(int), default=3, help="runs of each kind (default: 3)")
    parser.add_argument("--rate", type=_number(float), default=1000.0, help="records/s sent in a kill run (default: 1000)")
    parser.add_argument("--seconds", type=_number(float), default=20.0, help="sending before the kill (default: 20)")
    parser.add_argument("--preload", type=_number(int, allow_zero=True), default=0,
                        help="records put in the log before a kill run's sending (default: 0)")
    parser.add_argument("--only", choices=("clean", "kill"), help="run one kind only")


def missing(acked: Mapping[Pos, bytes], kept: Mapping[Pos, bytes]) -> list[Pos]:
    """Acknowledged positions that no longer hold their record (gone, or another record took the offset)."""
    return [pos for pos, value in acked.items() if kept.get(pos) != value]


@dataclasses.dataclass
class KillLoss:
    acked: int  # records acknowledged before the kill
    lost: list[Pos]  # of those, the ones the restarted broker does not hold
    window_s: float  # from the oldest lost record's ack to the kill; 0 when none was lost
    newest_kept_s: float | None  # from the newest kept record's ack to the kill; None when none was kept


def kill_loss(acks: Mapping[Pos, tuple[float, bytes]], kept: Mapping[Pos, bytes], t_kill: float) -> KillLoss:
    """What the kill cost, from each acknowledged position's (ack time, value) and what the broker holds after."""
    before = {pos: (t, value) for pos, (t, value) in acks.items() if t <= t_kill}
    lost = missing({pos: value for pos, (_, value) in before.items()}, kept)
    lost_set = set(lost)
    kept_times = [t for pos, (t, _) in before.items() if pos not in lost_set]
    return KillLoss(
        acked=len(before),
        lost=lost,
        window_s=t_kill - min(before[pos][0] for pos in lost) if lost else 0.0,
        newest_kept_s=t_kill - max(kept_times) if kept_times else None,
    )


def spread(runs: list[dict]) -> dict:
    """The runs, with the min and max across them of every numeric figure."""
    keys = dict.fromkeys(k for r in runs for k, v in r.items() if isinstance(v, (int, float)))
    values = {k: [r[k] for r in runs if isinstance(r.get(k), (int, float))] for k in keys}
    return {"runs": runs, "min": {k: min(v) for k, v in values.items()}, "max": {k: max(v) for k, v in values.items()}}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _key(i: int) -> bytes:
    return f"u{i % 50}".encode()


def _value(tag: str, i: int) -> bytes:
    return f"{tag}{i}".encode().ljust(VALUE_BYTES, b".")


@contextlib.contextmanager
def _own_broker(settings: Settings) -> Iterator[tuple[Settings, process.Service]]:
    """A fresh broker on a free port, its data in a temporary dir; stopped and removed on the way out."""
    from streams.kafka_util import ensure_topics

    with tempfile.TemporaryDirectory(prefix="streamrec-bench-broker-") as tmp:
        # The user's client options (security) are for their cluster, not this loopback broker.
        kafka = dataclasses.replace(settings.kafka, bootstrap_servers=f"127.0.0.1:{process.free_port()}", client_options={})
        own = dataclasses.replace(settings, data_dir=tmp, kafka=kafka)
        svc = broker.broker_service(own)
        try:
            process.start(svc)
            ensure_topics(kafka, [kafka.events_topic])
            yield own, svc
        finally:
            process.stop(svc)


def _produce(kafka: KafkaConfig, n: int, tag: str) -> dict[Pos, bytes]:
    """``n`` records through the project's producer (acks=all), which is closed before returning; position -> value."""
    from streams.producer import open_kafka_producer

    producer = open_kafka_producer(kafka)
    try:
        futures = []
        for i in range(n):
            value = _value(tag, i)
            futures.append((value, producer.send(kafka.events_topic, key=_key(i), value=value)))
        producer.flush()
    finally:
        producer.close()
    acked = {}
    for value, future in futures:
        meta = future.get(timeout=0)
        acked[(meta.partition, meta.offset)] = value
    return acked


def _preload(kafka: KafkaConfig, n: int) -> dict[Pos, bytes]:
    """``n`` records through librdkafka: kafka-python manages ~8k/s here, too slow for 100,000s."""
    from confluent_kafka import Producer

    from streams.kafka_util import librdkafka_config

    acked: dict[Pos, bytes] = {}

    def delivered(err, msg):
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()

    producer = Producer({**librdkafka_config(kafka), "acks": "all", "linger.ms": 20})
    for i in range(n):
        while True:
            try:
                producer.produce(kafka.events_topic, _value("p", i), key=_key(i), on_delivery=delivered)
                break
            except BufferError:  # its local queue is full: let deliveries drain it
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise UserError(f"preloading: the broker did not acknowledge {n - len(acked)} of {n} records within 120 s")
    return acked


def _stored(kafka: KafkaConfig) -> dict[Pos, bytes]:
    from streams.kafka_util import read_topic

    # Per partition: kafka-python takes a while over a large preload.
    return {(r.partition, r.offset): r.value for r in read_topic(kafka, kafka.events_topic, timeout_s=120)}


def _snapshot_mb(own: Settings) -> float:
    return round((own.data_path / "broker" / "kafka.json").stat().st_size / 1e6, 1)


def clean_run(settings: Settings, n: int, label: str) -> dict:
    with _own_broker(settings) as (own, svc):
        _say(f"{label}: producing {n} records")
        acked = _produce(own.kafka, n, "c")
        _say(f"{label}: restarting the broker (SIGTERM)")
        t0 = time.monotonic()
        process.stop(svc)
        t1 = time.monotonic()
        snapshot_mb = _snapshot_mb(own)
        process.start(svc)
        t2 = time.monotonic()
        lost = missing(acked, _stored(own.kafka))
        result = {"acked": len(acked), "lost": len(lost), "stop_s": round(t1 - t0, 2),
                  "start_to_ready_s": round(t2 - t1, 2), "snapshot_mb": snapshot_mb}
    _say(f"{label}: lost {result['lost']} of {result['acked']}; stop {result['stop_s']:.2f} s, "
         f"start to ready {result['start_to_ready_s']:.2f} s, snapshot {result['snapshot_mb']} MB")
    return result


def _send_at_rate(producer, topic: str, rate: float, stop: threading.Event, acks: dict) -> int:
    """Send until ``stop`` is set, ``rate`` records/s; each ack lands in ``acks`` as position -> (time, value)."""
    from kafka.errors import KafkaError

    def acked(value, meta):
        acks[(meta.partition, meta.offset)] = (time.monotonic(), value)

    start, i = time.monotonic(), 0
    while not stop.is_set():
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        value = _value("k", i)
        try:
            producer.send(topic, key=_key(i), value=value).add_callback(acked, value)
        except KafkaError:  # the broker is gone; the record counts as sent, never acknowledged
            pass
        i += 1
    return i


def kill_run(settings: Settings, seconds: float, rate: float, preload: int, label: str) -> dict:
    from streams.producer import open_kafka_producer

    with _own_broker(settings) as (own, svc):
        kafka = own.kafka
        if preload:
            _say(f"{label}: preloading {preload} records")
        preloaded = _preload(kafka, preload) if preload else {}
        _say(f"{label}: sending {rate:g} records/s for {seconds:g} s, then kill -9")
        # Records not acknowledged by the kill fail within 3 s, while the broker is down: closing the producer
        # cannot deliver them to the restarted one, where they could take lost offsets. Not idempotent: that
        # producer waits for a new producer id after a failed request, and with no broker it never expires
        # its batches (close hung). Acknowledged is acknowledged either way.
        producer = open_kafka_producer(kafka, enable_idempotence=False, request_timeout_ms=2000, delivery_timeout_ms=3000)
        acks: dict = {}
        stop = threading.Event()
        try:
            with ThreadPoolExecutor(1) as pool:
                sending = pool.submit(_send_at_rate, producer, kafka.events_topic, rate, stop, acks)
                try:
                    time.sleep(seconds)
                    pid = process.running_pid(svc)
                    if pid is None:
                        raise UserError(f"the broker died while records were sent:\n{process.log_tail(svc)}")
                    t_kill = time.monotonic()  # before the signal: an ack noted by then came from the live broker
                    os.kill(pid, signal.SIGKILL)
                finally:
                    stop.set()
            sent = sending.result()
        finally:
            producer.close(timeout=30)  # bounded: a producer that never lets go of its records fails the run, not hangs it
        while process.running_pid(svc) is not None:
            time.sleep(0.05)
        snapshot_mb = _snapshot_mb(own)
        _say(f"{label}: restarting the broker")
        t0 = time.monotonic()
        process.start(svc)
        restart_s = time.monotonic() - t0
        kept = _stored(kafka)
        loss = kill_loss(acks, kept, t_kill)
        after = _produce(kafka, NEW_RECORDS, "n")
        result = {
            "sent": sent, "acked": loss.acked, "lost": len(loss.lost), "lost_window_s": round(loss.window_s, 2),
            "newest_kept_ack_s": None if loss.newest_kept_s is None else round(loss.newest_kept_s, 2),
            "preload_lost": len(missing(preloaded, kept)), "snapshot_mb": snapshot_mb,
            "restart_to_ready_s": round(restart_s, 2), "new_on_lost_offsets": len(set(after) & set(loss.lost)),
        }
    _say(f"{label}: sent {sent}, acknowledged before the kill {loss.acked}, lost {result['lost']} = the last "
         f"{result['lost_window_s']:.2f} s of acks; preload lost {result['preload_lost']}; restart to ready "
         f"{result['restart_to_ready_s']:.2f} s; {result['new_on_lost_offsets']} of {NEW_RECORDS} new records "
         f"took lost offsets")
    return result


def run(args: argparse.Namespace, settings: Settings) -> int:
    from importlib.metadata import version

    kinds = [args.only] if args.only else ["clean", "kill"]
    summary: dict = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "broker": f"noida-db {version('noida-db')}",
        "settings": {"records": args.records, "runs": args.runs, "rate": args.rate, "seconds": args.seconds,
                     "preload": args.preload, "value_bytes": VALUE_BYTES, "partitions": settings.kafka.partitions},
    }
    _say(f"bench broker ({summary['broker']}): {', '.join(kinds)}; {args.runs} run(s) each")
    if "clean" in kinds:
        summary["clean"] = spread([clean_run(settings, args.records, f"clean {k}/{args.runs}")
                                   for k in range(1, args.runs + 1)])
    if "kill" in kinds:
        summary["kill"] = spread([kill_run(settings, args.seconds, args.rate, args.preload, f"kill {k}/{args.runs}")
                                  for k in range(1, args.runs + 1)])
    print(json.dumps(summary, indent=2))
    return 0
