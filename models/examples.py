"""Examples for the Wide & Deep ranker: labelled entity rows for Feast, and model inputs from feature rows.

Labels. A positive is a user's first watch of an item (``models.data``: a click alone is not a like). Its label
time is the *pick*: a watch reported right after a click on the same item (no other event of that user between)
was picked at that click, as the generator and real players log click-then-watch; otherwise at the watch itself
(MovieLens has no clicks). Features are read strictly before the label time, so neither the click nor the watch
is in them, as at serving time, where the request comes before the pick. A negative is a catalog item the user had
not interacted with (no click, no watch) up to the positive's pick, ``k`` per positive, drawn with a seed of its
own per user and stamped with the positive's time and device. What a negative may be is what was knowable then: a
user's later interactions, their test items among them, can be negatives of an earlier positive, as they would be
for a model trained at that time (drawing only from items never touched anywhere in the log kept every test item
out of the negatives: a leak). Clicks count as interactions, never as labels: an
item clicked before the pick is not a negative.

Inputs. ``model_inputs`` turns a frame of feature rows (one row per user-item pair, with the request's time and
device) into the model's named arrays: the item's (``item_inputs``) and the request's (``context_inputs``), which
training and evaluation take separately, from a table of requests and one of items (``models.example_set``);
``serving_inputs`` builds the same arrays for one user and many candidates from online rows. All of them go
through these functions, so they cannot drift apart.
Pass the *stored* session row: the time since its last event is computed here from ``last_event_ts_ms``, and the
genre affinities enter the model normalized, so ageing them first (``decay_features_to``) changes nothing.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.data import LOG_ORDER
from streamrec.errors import UserError
from streamrec.vocabulary import GENRE_SLUGS, GENRES, daypart, local_time

AFFINITY_COLUMNS = tuple(f"aff_{s}" for s in GENRE_SLUGS)
SHARE_COLUMNS = tuple(f"share_{s}" for s in GENRE_SLUGS)
# A user with no session row (never seen, or idle past the session view's 30-day TTL) looks this long idle.
NO_SESSION_SECONDS = 30 * 86_400.0
# Neutral stand-ins for catalog fields a source may lack (MovieLens has titles without a year).
ITEM_DEFAULTS = {"year": 2000.0, "duration_minutes": 110.0, "popularity": 1.0}
_DAYPART_OF_HOUR = np.array([daypart(h) for h in range(24)], dtype=object)

# name -> (dtype, width): width 1 is a (batch, 1) column, None a (batch, any) string list padded with "".
ITEM_INPUTS: dict[str, tuple[str, int | None]] = {
    "user_id": ("string", 1),
    "item_id": ("string", 1),
    "item_genres": ("string", None),
    "year": ("float32", 1),
    "duration_minutes": ("float32", 1),
    "popularity": ("float32", 1),
    "profile_shares": ("float32", len(GENRES)),
    "profile_events": ("float32", 1),
}
# The live part: the request's context and the stream's session features; the ablation drops all of it.
LIVE_INPUTS: dict[str, tuple[str, int | None]] = {
    "device": ("string", 1),
    "daypart": ("string", 1),
    "is_weekend": ("int64", 1),
    "affinity": ("float32", len(GENRES)),
    "session_events": ("float32", 1),
    "session_length_s": ("float32", 1),
    "time_since_last_event_s": ("float32", 1),
    "prev_gap_s": ("float32", 1),
    "events_total": ("float32", 1),
    "last_items": ("string", None),
}


def input_spec(live: bool = True) -> dict[str, tuple[str, int | None]]:
    """The model's inputs, name -> (dtype, width); what ``model_inputs`` returns for the same ``live``."""
    return {**ITEM_INPUTS, **LIVE_INPUTS} if live else dict(ITEM_INPUTS)


@dataclass(frozen=True)
class RequestContext:
    """Who asks, when (epoch ms) and on what device; ``timezone`` sets day-part and weekend (features.timezone)."""

    user_id: str
    ts_ms: int
    device: str
    timezone: str = "UTC"


# ---------------------------------------------------------------- labelled entity rows


def event_frame(events: Iterable[Mapping]) -> pd.DataFrame:
    """Events (``features.offline.read_event_log``) as a frame in fold order: user, then time, then event_id;
    ``seq`` is each event's position in the log (``models.data``'s tie rule)."""
    columns = ["event_id", "event_type", "user_id", "item_id", "ts_ms", "device", "watch_seconds"]
    df = pd.DataFrame(list(events), columns=columns)
    if df.empty:
        raise UserError("the event log has no events")
    df[LOG_ORDER] = np.arange(len(df))
    # The fold's order (features.user_state.event_order) within each user.
    return df.sort_values(["user_id", "ts_ms", "event_id"], kind="stable").reset_index(drop=True)


def pick_positives(log: pd.DataFrame, positives: pd.DataFrame) -> pd.DataFrame:
    """``positives`` (user_id, item_id, ts_ms of the first watch, seq) with each one's pick time ``ts_ms`` and
    ``device``, sorted by user, pick time and seq. ``log``: ``event_frame``."""
    prev = log.groupby("user_id", sort=False)[["item_id", "event_type", "ts_ms"]].shift()
    picked_at_click = (prev["event_type"] == "click") & (prev["item_id"] == log["item_id"])
    watches = log.assign(pick_ms=np.where(picked_at_click, prev["ts_ms"], log["ts_ms"]).astype(np.int64))
    watches = watches[watches["event_type"] == "watch"].drop_duplicates(["user_id", "item_id", "ts_ms"])
    out = positives[["user_id", "item_id", "ts_ms", LOG_ORDER]].merge(
        watches[["user_id", "item_id", "ts_ms", "pick_ms", "device"]], on=["user_id", "item_id", "ts_ms"], how="left"
    )
    if out["pick_ms"].isna().any():
        first = out[out["pick_ms"].isna()].iloc[0]
        raise ValueError(f"positive {first['user_id']}/{first['item_id']} at {first['ts_ms']} is no watch of the log")
    out = out.assign(ts_ms=out["pick_ms"].astype(np.int64)).drop(columns="pick_ms")
    return out.sort_values(["user_id", "ts_ms", LOG_ORDER], kind="stable").reset_index(drop=True)


def entity_rows(
    positives: pd.DataFrame, log: pd.DataFrame, item_ids: Sequence[str], negatives: int, seed: int
) -> pd.DataFrame:
    """Feast entity rows: each positive (user_id, item_id, ts_ms, device; a user's rows in time order) followed by
    ``negatives`` distinct items the user had not interacted with at or before its ``ts_ms`` (``log``: user_id,
    item_id, ts_ms of every event), same time and device.

    Draws are made positive by positive from a generator seeded by (``seed``, user), so a positive's negatives
    depend on nothing after it: not on the user's later events, nor on other users'.

    Columns: group (the positive's number), user_id, item_id, event_timestamp, device, label (1 or 0).
    """
    if negatives < 1:
        raise UserError(f"negatives per positive must be >= 1, got {negatives}")
    catalog = pd.Index(sorted(set(item_ids)))
    first = (log[log["item_id"].isin(catalog)].groupby(["user_id", "item_id"], sort=False)["ts_ms"].min()
             .reset_index())
    first_item, first_ts = catalog.get_indexer(first["item_id"]), first["ts_ms"].to_numpy(np.float64)
    first_rows = first.groupby("user_id", sort=False).indices
    drawn = np.empty((len(positives), negatives), dtype=np.int64)
    bounds = positives.groupby("user_id", sort=False).indices
    for user, rows in bounds.items():
        # When each catalog item was first touched by the user (never: +inf).
        touched = np.full(len(catalog), np.inf)
        seen = first_rows.get(user, [])
        touched[first_item[seen]] = first_ts[seen]
        rng = np.random.default_rng([seed, zlib.crc32(str(user).encode())])
        own = catalog.get_indexer(positives["item_id"].to_numpy()[rows])
        drawn[rows] = [_draw(rng, touched, t, item, negatives, user)
                       for t, item in zip(positives["ts_ms"].to_numpy()[rows], own)]
    n = len(positives)
    group = np.repeat(np.arange(n), negatives + 1)
    items = np.concatenate([positives["item_id"].to_numpy(dtype=object)[:, None],
                            catalog.to_numpy(dtype=object)[drawn]], axis=1).ravel()
    return pd.DataFrame({
        "group": group,
        "user_id": positives["user_id"].to_numpy(dtype=object)[group],
        "item_id": items,
        "event_timestamp": pd.to_datetime(positives["ts_ms"].to_numpy()[group], unit="ms", utc=True),
        "device": positives["device"].to_numpy(dtype=object)[group],
        "label": np.tile(np.r_[1, np.zeros(negatives, np.int64)], n),
    })


def _draw(rng: np.random.Generator, touched: np.ndarray, ts_ms: int, own: int, k: int, user) -> np.ndarray:
    """``k`` distinct catalog positions untouched at ``ts_ms`` and other than ``own``: a few uniform draws
    filtered (the catalog is mostly untouched), else a uniform choice among every allowed position."""
    draws = rng.integers(len(touched), size=4 * k)
    allowed = (touched[draws] > ts_ms) & (draws != own)
    _, first = np.unique(draws, return_index=True)
    fresh = np.zeros(len(draws), dtype=bool)
    fresh[first] = True
    picked = draws[allowed & fresh]
    if len(picked) >= k:
        # np.unique's first-occurrence mask keeps draw order, so the first k are a uniform sample.
        return picked[:k]
    pool = np.flatnonzero(touched > ts_ms)
    pool = pool[pool != own]
    if len(pool) < k:
        raise UserError(f"user {user} had interacted with all but {len(pool)} of {len(touched)} catalog items at "
                        f"{ts_ms}: too few to draw {k} negatives per positive")
    return rng.choice(pool, size=k, replace=False)


# ---------------------------------------------------------------- model inputs


def model_inputs(frame: pd.DataFrame, timezone: str = "UTC", live: bool = True) -> dict[str, np.ndarray]:
    """Named arrays (see ``input_spec``) from feature rows: ``user_id``, ``item_id``, ``event_timestamp`` (the
    request time), ``device`` (the request's), the session view's columns, the item view's and the profile's.
    Missing values (a user without session or profile, an item without year) get neutral values."""
    if frame.empty:
        raise ValueError("no rows to build model inputs from")
    return item_inputs(frame) | context_inputs(frame, timezone, live)


def item_inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The item's inputs (item_id, item_genres, year, duration_minutes, popularity) of each row of item rows
    (item_id, genres, year, duration_minutes, popularity)."""
    return {
        "item_id": _strings(frame["item_id"]),
        "item_genres": _padded(frame["genres"]),
        **{name: _floats(frame[name], fill) for name, fill in ITEM_DEFAULTS.items()},
    }


def context_inputs(frame: pd.DataFrame, timezone: str, live: bool) -> dict[str, np.ndarray]:
    """The inputs every candidate of a request shares (user, context, session, profile: REQUEST_INPUT_NAMES), one
    row per row of ``frame``."""
    out = {
        "user_id": _strings(frame["user_id"]),
        "profile_shares": _matrix(frame, SHARE_COLUMNS),
        "profile_events": _floats(frame["profile_events"], 0.0),
    }
    if not live:
        return out
    when = pd.to_datetime(frame["event_timestamp"], utc=True)
    local = when.dt.tz_convert(timezone)
    now_ms = (when - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    last_ms = pd.to_numeric(frame["last_event_ts_ms"], errors="coerce").to_numpy("float64", na_value=np.nan)
    # A session row stamped after the request (clock skew) ages nothing, like decay_features_to.
    idle_s = np.maximum(now_ms.to_numpy("float64") - last_ms, 0.0) / 1000.0
    return out | {
        "device": _strings(frame["device"]),
        "daypart": _DAYPART_OF_HOUR[local.dt.hour.to_numpy()].reshape(-1, 1),
        "is_weekend": (local.dt.weekday.to_numpy() >= 5).astype(np.int64).reshape(-1, 1),
        "affinity": _matrix(frame, AFFINITY_COLUMNS),
        "session_events": _floats(frame["session_events"], 0.0),
        "session_length_s": _floats(frame["session_length_s"], 0.0),
        "time_since_last_event_s": np.where(np.isnan(idle_s), NO_SESSION_SECONDS, idle_s).astype(np.float32)[:, None],
        "prev_gap_s": _floats(frame["prev_gap_s"], 0.0),
        "events_total": _floats(frame["events_total"], 0.0),
        "last_items": _padded(frame["last_items"]),
    }


def serving_inputs(
    session_row: Mapping | None,
    item_rows: Sequence[Mapping],
    profile_row: Mapping | None,
    context: RequestContext,
    *,
    live: bool = True,
) -> dict[str, np.ndarray]:
    """The model's inputs for one user and many candidate items, one row per item in order.

    ``session_row``: the user's stored session features (``FeatureStoreClient.online_features``; None or
    all-None for a user never seen); ``item_rows``: ``item_features`` rows (item_id, genres, year,
    duration_minutes, popularity); ``profile_row``: ``profile_features`` row or None. ``live`` must match the
    served model (metadata.json ``live``): the ablation model takes no context or session inputs.
    """
    if not item_rows:
        raise ValueError("no candidate items to score")
    items = item_frame(item_rows)
    # The user's columns are the same on every row: build them once and repeat them.
    per_user = request_inputs(session_row, profile_row, context, live=live)
    return item_inputs(items) | {name: np.repeat(a, len(items), axis=0) for name, a in per_user.items()}


def request_inputs(session_row: Mapping | None, profile_row: Mapping | None, context: RequestContext, *,
                   live: bool = True) -> dict[str, np.ndarray]:
    """The inputs that are the same for every candidate of one request (user, context, session, profile),
    each with one row: what the export's ``rank`` signature takes beside the candidates' ids.

    Built from the values directly, not through a one-row frame (~40 pandas conversions, ~8 ms a request);
    ``tests/unit/test_examples.py`` holds it equal to ``model_inputs`` on the same row."""
    user = {**(session_row or {}), **(profile_row or {})}
    out = {
        "user_id": _string_cell(context.user_id),
        "profile_shares": _float_row(user, SHARE_COLUMNS),
        "profile_events": _float_cell(user.get("profile_events"), 0.0),
    }
    if not live:
        return out
    local = local_time(int(context.ts_ms), context.timezone)
    last_ms = _number(user.get("last_event_ts_ms"))
    # A session row stamped after the request (clock skew) ages nothing, like decay_features_to.
    idle_s = NO_SESSION_SECONDS if last_ms is None else max(float(context.ts_ms) - last_ms, 0.0) / 1000.0
    return out | {
        "device": _string_cell(context.device),
        "daypart": np.array([[daypart(local.hour)]], dtype=object),
        "is_weekend": np.array([[int(local.weekday() >= 5)]], dtype=np.int64),
        "affinity": _float_row(user, AFFINITY_COLUMNS),
        **{name: _float_cell(user.get(name), 0.0) for name in _SESSION_NUMBERS},
        "time_since_last_event_s": np.array([[idle_s]], dtype=np.float32),
        "last_items": _padded([user.get("last_items")]),
    }


def item_frame(item_rows: Iterable[Mapping]) -> pd.DataFrame:
    """``item_features`` rows (item_id, genres, year, duration_minutes, popularity) as a frame."""
    return pd.DataFrame([{name: row.get(name) for name in ITEM_COLUMNS} for row in item_rows], columns=list(ITEM_COLUMNS))


def item_table(items: pd.DataFrame) -> dict[str, np.ndarray]:
    """The item inputs of every catalog item (``item_frame``), row 0 an unknown item's neutral values: the
    table the export's ``rank`` signature looks candidates up in (row n + 1 is the frame's row n)."""
    unknown = pd.DataFrame([{"item_id": "", "genres": None, **ITEM_DEFAULTS}])
    return item_inputs(pd.concat([unknown, items], ignore_index=True))


_SESSION_NUMBERS = ("session_events", "session_length_s", "prev_gap_s", "events_total")
ITEM_COLUMNS = ("item_id", "genres", "year", "duration_minutes", "popularity")
RANK_SIGNATURE = "rank"  # the export's per-request signature (models.export): request inputs once, item ids
REQUEST_INPUT_NAMES = tuple(name for name in (*ITEM_INPUTS, *LIVE_INPUTS) if name not in ITEM_COLUMNS and name != "item_genres")


def _strings(series: pd.Series) -> np.ndarray:
    return series.fillna("").astype(str).to_numpy(dtype=object).reshape(-1, 1)


def _floats(series: pd.Series, fill: float) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy("float64", na_value=np.nan)
    return np.where(np.isnan(values), fill, values).astype(np.float32).reshape(-1, 1)


def _matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    return np.hstack([_floats(frame[c], 0.0) for c in columns])


def _number(value) -> float | None:
    """One value as ``pd.to_numeric(errors="coerce")`` reads it: None for missing, NaN or not a number."""
    if value is None or isinstance(value, (list, tuple, dict)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def _float_cell(value, fill: float) -> np.ndarray:
    number = _number(value)
    return np.array([[fill if number is None else number]], dtype=np.float32)


def _float_row(values: Mapping, columns: Sequence[str]) -> np.ndarray:
    return np.array([[_number(values.get(c)) or 0.0 for c in columns]], dtype=np.float32)


def _string_cell(value) -> np.ndarray:
    return np.array([["" if value is None else str(value)]], dtype=object)


def _padded(series: Iterable) -> np.ndarray:
    """Lists of strings (None or NaN: empty) as a (rows, longest list, at least 1) array padded with ""."""
    lists = [[] if v is None or (isinstance(v, float) and np.isnan(v)) else list(v) for v in series]
    out = np.full((len(lists), max(1, max(map(len, lists)))), "", dtype=object)
    for n, values in enumerate(lists):
        out[n, : len(values)] = [str(v) for v in values]
    return out
