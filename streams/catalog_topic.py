"""The catalog topic: publishing item changes (``streamrec catalog add|update FILE``) and following them.

Changes are keyed by item id, so one item's changes stay in order in one partition. A line that is no valid
change goes to ``kafka.catalog_dlq_topic`` with its bytes and headers ``reason``, ``detail`` (file:line) and
``source``, like a bad event; nothing is dropped.

``CatalogFollower`` reads the whole topic from its beginning and then each new change, without a consumer group:
every reader (each API replica, the re-rank worker, the stream job) sees every change and so holds the same
catalog. The topic is the catalog's history since the last ``streamrec train`` and must keep it (production:
``retention.ms=-1``; not compaction, as an ``update`` holds only the fields it changes).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from kafka import KafkaProducer

from streamrec.catalog import RefusedChange, change_record, parse_change
from streamrec.config import Settings
from streamrec.errors import UserError
from streams.kafka_util import TopicFollower, ensure_topics
from streams.producer import DLQ_VALUE_LIMIT, DeliveryError, open_kafka_producer

log = logging.getLogger(__name__)


@dataclass
class Published:
    changes: int = 0
    dead: int = 0


def publish_changes(settings: Settings, path: str | os.PathLike, op: str, *, source: str = "cli",
                    echo: Callable[[str], None] = print) -> Published:
    """Every line of ``path`` (JSON item records) as an ``op`` change, or to the catalog DLQ with why not."""
    cfg = settings.kafka
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    ensure_topics(cfg, [cfg.catalog_topic, cfg.catalog_dlq_topic])
    producer = open_kafka_producer(cfg)
    out = Published()
    futures = []
    try:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except ValueError as e:
                futures.append(dead_letter(producer, settings, line, "not_json", f"{where}: not JSON: {e}", source))
                out.dead += 1
                continue
            try:
                change = change_record(op, record)
            except RefusedChange as e:
                futures.append(dead_letter(producer, settings, line, e.reason, f"{where}: {e}", source))
                out.dead += 1
                continue
            futures.append(producer.send(cfg.catalog_topic, json.dumps(change).encode(),
                                         key=record["item_id"].encode()))
            out.changes += 1
        delivered(producer, futures, cfg.request_timeout_ms / 1000)
    finally:
        producer.close()
    echo(f"catalog: {out.changes} change(s) ({op}) to {cfg.catalog_topic}"
         + (f", {out.dead} refused to {cfg.catalog_dlq_topic}" if out.dead else ""))
    return out


def dead_letter(producer: KafkaProducer, settings: Settings, value: bytes, reason: str, detail: str, source: str):
    """Send a refused catalog record to ``kafka.catalog_dlq_topic`` as it came, with why (a future)."""
    headers = [("reason", reason.encode()), ("detail", detail.encode("utf-8", "backslashreplace")),
               ("source", source.encode("utf-8", "backslashreplace"))]
    if len(value) > DLQ_VALUE_LIMIT:
        headers.append(("truncated_from", str(len(value)).encode("ascii")))
        value = value[:DLQ_VALUE_LIMIT]
    return producer.send(settings.kafka.catalog_dlq_topic, value, headers=headers)


def delivered(producer: KafkaProducer, futures: list, timeout_s: float) -> None:
    """Wait for ``futures``' records; DeliveryError unless the broker took them all."""
    producer.flush(timeout=timeout_s)
    failed = [f.exception for f in futures if f.failed()]
    if failed or not all(f.is_done for f in futures):
        raise DeliveryError(f"{len(failed) or 'some'} catalog record(s) not delivered; first error: "
                            f"{failed[0] if failed else 'unacknowledged'}")


@dataclass(frozen=True)
class Change:
    op: str
    item: dict  # the change's fields (a whole record for add)
    source: str  # topic/partition/offset


@dataclass(frozen=True)
class BadChange:
    value: bytes
    error: RefusedChange
    source: str


class CatalogFollower:
    """Reads the catalog topic from its beginning; ``poll`` gives the changes (and bad records) since the last."""

    def __init__(self, settings: Settings):
        cfg = settings.kafka
        ensure_topics(cfg, [cfg.catalog_topic, cfg.catalog_dlq_topic])
        self._follower = TopicFollower(cfg, cfg.catalog_topic)
        self.topic = cfg.catalog_topic

    def poll(self, timeout_s: float = 0.0) -> tuple[list[Change], list[BadChange]]:
        """What arrived since the last call (``TopicFollower.poll``)."""
        changes: list[Change] = []
        bad: list[BadChange] = []
        for rec in self._follower.poll(timeout_s):
            source = f"{rec.topic}/{rec.partition}/{rec.offset}"
            try:
                op, item = parse_change(rec.value)
            except RefusedChange as e:
                bad.append(BadChange(rec.value or b"", e, source))
                continue
            changes.append(Change(op, item, source))
        return changes, bad

    def close(self) -> None:
        self._follower.close()
