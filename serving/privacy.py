"""``streamrec privacy delete-user ID``: a user removed from every store; ``streamrec privacy pseudonym ID``.

In order: the deletion record (``streams.deletions``: first, so the stream job folds none of the user's events
from its next batch on, and forgets its own state of them) with a tombstone on the features topic; the online
rows and the offline rows (``features.deletion``); the user's cached re-ranks in Redis (listwise decisions are
the user's; intent decisions belong to a situation, not a user). The stream job also deletes the online and
offline rows when it reads the record, after its last write of the user, so an event folded meanwhile leaves
nothing behind either.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from streamrec.config import Settings
from streamrec.pseudonyms import pseudonymizer


@dataclass(frozen=True)
class Forgotten:
    user_id: str  # as the stores hold it: the pseudonym with privacy.pseudonymize
    deleted_at_ms: int
    online_rows: int
    offline_rows: int
    cached_reranks: int | None  # None: the re-rank cache is in-process memory, which only its TTL clears


def delete_user(settings: Settings, user_id: str, now_ms: int | None = None) -> Forgotten:
    from features.deletion import forget_offline, forget_online
    from features.store import FeatureStoreClient
    from serving.rerank.cache import backend, forget_owner, redis_client
    from serving.rerank.reranker import REDIS_PREFIX
    from streams.deletions import publish_deletion

    stored = pseudonymizer(settings)(user_id)
    at_ms = int(time.time() * 1000) if now_ms is None else now_ms
    publish_deletion(settings, stored, at_ms)
    client = FeatureStoreClient(settings)
    online, offline = forget_online(client, stored), forget_offline(client, [stored])
    cached = None
    if backend(settings) == "redis":
        with redis_client(settings) as r:
            cached = forget_owner(r, REDIS_PREFIX, stored)
    return Forgotten(stored, at_ms, online, offline, cached)
