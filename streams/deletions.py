"""The deletion record: a user removed by ``streamrec privacy delete-user``, on ``kafka.deletions_topic``
keyed by the user (their pseudonym with ``privacy.pseudonymize``), to be kept for good (a compacted topic):
``{"user_id", "deleted_at" (epoch ms), "deletion_id"}``. Every reader, now or replaying the events later,
folds none of the user's events at or before ``deleted_at`` (``DeletionFollower``); a later event starts the
user afresh.
"""
from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass

from streamrec.config import Settings
from streams.kafka_util import TopicFollower, ensure_topics
from streams.producer import DeliveryError, open_kafka_producer

log = logging.getLogger(__name__)


class BadDeletion(ValueError):
    """A record on the deletions topic that is not one."""


@dataclass(frozen=True)
class Deletion:
    user_id: str
    deleted_at_ms: int
    deletion_id: str


def parse_deletion(value: bytes | None) -> Deletion:
    try:
        r = json.loads(value or b"")
        return Deletion(str(r["user_id"]), int(r["deleted_at"]), str(r["deletion_id"]))
    except (ValueError, TypeError, KeyError) as e:
        raise BadDeletion(f"not a deletion record: {type(e).__name__}: {e}") from None


def publish_deletion(settings: Settings, user_id: str, at_ms: int) -> Deletion:
    """The record, acknowledged by the broker; and a tombstone (a null value) for the user's key on the features
    topic, so a compacted one drops their rows. ``DeliveryError`` unless both are stored."""
    cfg = settings.kafka
    ensure_topics(cfg, [cfg.deletions_topic, cfg.features_topic])
    deletion = Deletion(user_id, at_ms, uuid.uuid4().hex)
    value = json.dumps({"user_id": user_id, "deleted_at": at_ms, "deletion_id": deletion.deletion_id}).encode()
    producer = open_kafka_producer(cfg)
    try:
        futures = [producer.send(cfg.deletions_topic, value, key=user_id.encode()),
                   producer.send(cfg.features_topic, None, key=user_id.encode())]
        producer.flush(timeout=cfg.request_timeout_ms / 1000)
        for f in futures:
            if f.failed() or not f.is_done:
                raise DeliveryError(f"the deletion of {user_id!r} was not acknowledged: {f.exception}")
    finally:
        producer.close()
    return deletion


class DeletionFollower:
    """The deletions topic from its beginning: ``poll`` gives the deletions recorded since the last call."""

    def __init__(self, settings: Settings):
        cfg = settings.kafka
        ensure_topics(cfg, [cfg.deletions_topic])
        self._follower = TopicFollower(cfg, cfg.deletions_topic)

    def poll(self, timeout_s: float = 0.0) -> list[Deletion]:
        out = []
        for rec in self._follower.poll(timeout_s):
            try:
                out.append(parse_deletion(rec.value))
            except BadDeletion as e:  # nothing to act on; said, not fatal
                log.warning("%s/%s/%s: %s", rec.topic, rec.partition, rec.offset, e)
        return out

    def close(self) -> None:
        self._follower.close()
