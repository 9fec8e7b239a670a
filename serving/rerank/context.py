"""What the re-ranker is given: the candidates, a live-context snapshot, and their signatures (pure).

``live_context`` reads a user's online feature row (``features.user_state.FEATURE_COLUMNS``)
at serving time. ``context_signature`` names the context coarsely: it changes when the
context changes materially (day-part, weekend, device, the strongest genres and their order,
a new session, its stage) and not with decay, so a cached re-rank stays valid while the user's situation
does, and the refresh worker can tell which users' re-ranks went stale.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from streamrec.config import FeatureConfig
from streamrec.vocabulary import GENRE_SLUGS, GENRES, daypart, is_weekend, local_time

TOP_GENRES = 3
# Genres under this share of the user's affinity are noise; leaving them out keeps their
# small swings from changing the signature.
MIN_GENRE_SHARE = 0.1
RECENT_ITEMS = 5
# A session younger than this has "just started".
SESSION_STARTED_MIN = 10


@dataclass(frozen=True)
class Candidate:
    """One item to re-rank, with its Wide & Deep and retrieval scores."""

    item_id: str
    title: str
    genres: tuple[str, ...]
    year: int | None
    duration_minutes: float | None
    wd_score: float
    retrieval_score: float


@dataclass(frozen=True)
class RecentItem:
    title: str
    genres: tuple[str, ...]


@dataclass(frozen=True)
class LiveContext:
    """The user's situation now; every field may be unknown (a user without features)."""

    daypart: str | None = None
    local_hour: int | None = None
    is_weekend: bool | None = None
    device: str | None = None
    top_genres: tuple[tuple[str, float], ...] = ()  # (genre, share of affinity), strongest first
    recent_items: tuple[RecentItem, ...] = ()  # latest first
    session_id: str | None = None  # None when the last session has ended
    session_events: int = 0
    session_length_s: float = 0.0
    time_since_last_event_s: float | None = None


def top_genres(features: Mapping[str, Any], k: int = TOP_GENRES) -> tuple[tuple[str, float], ...]:
    """The strongest genres by share of the decayed affinities.

    Shares do not move with decay (every affinity decays by the same factor), only with new events.
    """
    affinity = {g: max(float(features.get(f"aff_{slug}") or 0.0), 0.0) for g, slug in zip(GENRES, GENRE_SLUGS)}
    total = sum(affinity.values())
    if total <= 0:
        return ()
    ranked = sorted(((g, a / total) for g, a in affinity.items()), key=lambda ga: (-ga[1], ga[0]))
    return tuple((g, round(share, 3)) for g, share in ranked[:k] if share >= MIN_GENRE_SHARE)


def live_context(
    features: Mapping[str, Any] | None,
    catalog: Mapping[str, Mapping[str, Any]],
    now_ms: int,
    cfg: FeatureConfig,
    device: str | None = None,
) -> LiveContext:
    """The snapshot at ``now_ms`` from a feature row (None: a user without one).

    Time of day is the request's, not the last event's; ``device`` (the request's) wins over the
    last event's; ``catalog`` maps item ids to records with ``title`` and ``genres``.
    """
    local = local_time(now_ms, cfg.timezone)
    now = LiveContext(daypart=daypart(local.hour), local_hour=local.hour, is_weekend=is_weekend(local), device=device)
    if not features:
        return now
    since_s = max(now_ms - int(features["last_event_ts_ms"]), 0) / 1000.0
    in_session = since_s <= cfg.session_gap_minutes * 60.0
    recent = []
    for item_id in list(features.get("last_items") or ())[:RECENT_ITEMS]:
        record = catalog.get(item_id)
        if record is not None:
            recent.append(RecentItem(str(record["title"]), tuple(g for g in record["genres"] if g in GENRES)))
    return replace(
        now,
        device=device or features.get("last_device"),
        top_genres=top_genres(features),
        recent_items=tuple(recent),
        session_id=features.get("session_id") if in_session else None,
        session_events=int(features.get("session_events") or 0) if in_session else 0,
        session_length_s=float(features.get("session_length_s") or 0.0) if in_session else 0.0,
        time_since_last_event_s=since_s,
    )


def session_stage(ctx: LiveContext) -> str | None:
    """How far into a session, coarsely: None (no session), "just started", "under an hour in", "over an hour in"."""
    if ctx.session_id is None:
        return None
    minutes = ctx.session_length_s / 60
    return "just started" if minutes < SESSION_STARTED_MIN else "under an hour in" if minutes < 60 else "over an hour in"


def context_signature(ctx: LiveContext) -> str:
    """A short stable hash of the material parts of the context (everything an intent prompt reads among them)."""
    material = [ctx.daypart, ctx.is_weekend, ctx.device, [g for g, _ in ctx.top_genres], ctx.session_id,
                session_stage(ctx)]
    return _digest(json.dumps(material, separators=(",", ":")))


def candidate_set_hash(candidates: Sequence[Candidate]) -> str:
    """Order-free: a cached ranking is re-applied to the current order, so only the set matters."""
    return _digest("\x1f".join(sorted(c.item_id for c in candidates)))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
