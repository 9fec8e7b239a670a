"""Long-term user profiles (pure): per user, the event count and each genre's share of the events."""
from __future__ import annotations

from datetime import datetime

import pandas as pd

from streamrec.vocabulary import GENRE_INDEX, GENRE_SLUGS


def _slug(genre: str) -> str | None:
    """A catalog genre (MovieLens name or slug) as its slug; None for one we do not track."""
    if genre in GENRE_INDEX:
        return GENRE_SLUGS[GENRE_INDEX[genre]]
    return genre if genre in GENRE_SLUGS else None


def user_profiles(events: pd.DataFrame, items: pd.DataFrame, cut: datetime) -> pd.DataFrame:
    """Per user, from events at or before ``cut``: the event count, each genre's share of the
    events (an item's weight split evenly over its genres; shares sum to 1) and the top genre.
    ``events``: user_id, item_id, ts_ms (epoch ms), as ``features.offline.read_event_log`` gives them."""
    missing = {"user_id", "item_id", "ts_ms"} - set(events.columns)
    if missing:
        raise ValueError(f"events lack columns {sorted(missing)}")
    at = pd.Timestamp(cut)
    at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
    ev = events.assign(user_id=events["user_id"].astype(str), item_id=events["item_id"].astype(str))
    ev = ev[pd.to_datetime(ev["ts_ms"], unit="ms", utc=True) <= at]
    genres = items.assign(slug=items["genres"].map(lambda gs: [s for s in map(_slug, gs) if s])).explode("slug")
    genres = genres.dropna(subset=["slug"])
    genres["weight"] = 1.0 / genres.groupby("item_id")["slug"].transform("size")
    weights = ev[["user_id", "item_id"]].merge(genres[["item_id", "slug", "weight"]], on="item_id")
    table = weights.pivot_table(index="user_id", columns="slug", values="weight", aggfunc="sum", fill_value=0.0)
    table = table.reindex(columns=list(GENRE_SLUGS), fill_value=0.0)
    totals = table.sum(axis=1)
    shares = table.div(totals.where(totals > 0), axis=0).fillna(0.0)
    counts = ev.groupby("user_id").size()
    out = pd.DataFrame({"user_id": counts.index, "profile_events": counts.to_numpy()})
    out = out.merge(shares.add_prefix("share_"), left_on="user_id", right_index=True, how="left").fillna(0.0)
    share_cols = [f"share_{s}" for s in GENRE_SLUGS]
    top = out[share_cols].to_numpy().argmax(axis=1)
    out["profile_top_genre"] = [GENRE_SLUGS[i] if row.max() > 0 else None for i, row in zip(top, out[share_cols].to_numpy())]
    out["event_timestamp"] = at
    return out
