"""Shared vocabulary of the live context: genres, day-parts, weekends.

The generator, the feature fold, the models and the re-ranker all speak these
names, so they live in one place.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

# The 18 MovieLens genres, in MovieLens order.
GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
GENRE_INDEX = {g: i for i, g in enumerate(GENRES)}
# Column-safe names: "Children's" -> "children", "Film-Noir" -> "film_noir", "Sci-Fi" -> "sci_fi".
GENRE_SLUGS: tuple[str, ...] = tuple(g.lower().replace("'s", "").replace("-", "_") for g in GENRES)

DAYPARTS: tuple[str, ...] = ("late_night", "morning", "afternoon", "evening")
DEVICES: tuple[str, ...] = ("phone", "tablet", "tv", "desktop")


def daypart(hour: int) -> str:
    """late_night 22-04, morning 05-11, afternoon 12-17, evening 18-21."""
    if not 0 <= hour <= 23:
        raise ValueError(f"hour must be 0..23, got {hour}")
    if hour >= 22 or hour < 5:
        return "late_night"
    if hour < 12:
        return "morning"
    if hour < 18:
        return "afternoon"
    return "evening"


def local_time(ts_ms: int, tz: str = "UTC") -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000.0, tz=UTC).astimezone(ZoneInfo(tz))


def is_weekend(dt: datetime) -> bool:
    return dt.weekday() >= 5


def latest_at_hour(now_ms: int, hour: int, tz: str = "UTC") -> int:
    """The latest moment at or before ``now_ms`` whose local time (``tz``) is ``hour``:00, in epoch ms:
    "this evening" asked in the morning is yesterday evening, so the features it reads are never from its future."""
    if not 0 <= hour <= 23:
        raise ValueError(f"hour must be 0..23, got {hour}")
    now = local_time(now_ms, tz)
    at = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if at > now:
        at = (now - timedelta(days=1)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return int(at.timestamp() * 1000)
