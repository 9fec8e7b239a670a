"""Retrieval recall@K on a ``time_global`` split: how many of a user's future positives the candidate list holds.

Each user is asked once, as the recommend API would ask when they come back after the cut: at the time and on the
device of their first event after it, with their live features folded from their events before it (aged to that
time), excluding their train positives. ``recall@K`` counts all of the user's test positives (the split's truth);
``next_session`` counts only those of that first session, the request the context describes. Tested users are the
split's; *cold* users (first positive after the cut, left out of the split) are measured apart, since only the
popular and content sources can serve them.

A generator under evaluation must have learned from ``train_events(events, split)`` only.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from features.offline import compute_features
from features.user_state import decay_features_to
from models.data import FullSplit
from models.retrieval.generator import CandidateGenerator
from streamrec.config import FeatureConfig
from streamrec.errors import UserError
from streamrec.vocabulary import daypart, is_weekend, local_time


def split_cut_ms(split: FullSplit) -> int:
    """The split's cut time: no train positive is at or after it, every test positive is."""
    if split.protocol != "time_global":
        raise UserError(f"retrieval recall needs a time_global split (one cut time for all), got {split.protocol}")
    return int(split.test["ts_ms"].min())


def train_events(events: pd.DataFrame, split: FullSplit) -> pd.DataFrame:
    """The log strictly before the split's cut: what a generator evaluated on it may learn from."""
    return events[events["ts_ms"] < split_cut_ms(split)]


def recall_at_k_report(
    generator: CandidateGenerator, split: FullSplit, events: pd.DataFrame, items: Mapping[str, Mapping],
    ks: Sequence[int] = (100, 200), features: FeatureConfig | None = None,
) -> dict:
    """``recall@K`` (mean over tested users), ``new_item_recall@K`` (over test positives on items the generator
    treats as new), ``hit_sources@K`` (share of hits per source), ``n_users``, ``per_user`` and ``next_session``
    (the same for the query's session only); ``as_unknown`` (tested users asked without their id: the cold-start
    path, measured on many users); ``cold_users`` (as for tested users); the split's ``skipped``.
    ``events``: the whole labelled log (``models.retrieval.log.load_event_log``); ``items``: the catalog, for the
    feature fold; ``features``: its settings (``settings.features``)."""
    cut = split_cut_ms(split)
    if generator.info["last_event_ms"] >= cut:
        raise UserError("the generator learned from events at or after the split's cut: fit it on train_events()")
    features = features or FeatureConfig()
    positives = events[events["label"]]
    first_positive = positives.groupby("user_id")["ts_ms"].min()
    cold_users = first_positive.index[first_positive >= cut]
    tested = pd.Index(split.users.decode(np.unique(split.test["user_idx"])))
    asked = _queries(events, cut, tested.union(cold_users), items, features)
    train = pd.DataFrame({"user_id": split.users.decode(split.train["user_idx"]),
                          "item_id": split.items.decode(split.train["item_idx"])})
    seen = train.groupby("user_id")["item_id"].agg(set).to_dict()
    test = pd.DataFrame({"user_id": split.users.decode(split.test["user_idx"]),
                         "item_id": split.items.decode(split.test["item_idx"])})
    later = positives[(positives["ts_ms"] >= cut) & positives["user_id"].isin(cold_users)]
    window = test.groupby("user_id")["item_id"].agg(set)
    cold_window = later.groupby("user_id")["item_id"].agg(set)
    return {
        **_evaluate_group(generator, asked, positives, window, seen, ks),
        "as_unknown": _evaluate(generator, asked, window, seen, ks, anonymous=True),
        "cold_users": _evaluate_group(generator, asked, positives, cold_window, {}, ks),
        "skipped": dict(split.skipped),
    }


def _evaluate_group(generator, asked: dict, positives: pd.DataFrame, window: pd.Series, seen: dict, ks) -> dict:
    report = _evaluate(generator, asked, window, seen, ks)
    report["next_session"] = _evaluate(generator, asked, _next_session(positives, asked, window), seen, ks)
    return report


def _next_session(positives: pd.DataFrame, asked: dict, window: pd.Series) -> pd.Series:
    """Each user's window positives that fall in the session of their query."""
    session = {user_id: asked[user_id][2] for user_id in window.index}
    mine = positives[positives["user_id"].map(session).eq(positives["session_id"])]
    items = mine.groupby("user_id")["item_id"].agg(set)
    truth = pd.Series({u: items[u] & window[u] for u in items.index}, dtype=object)
    return truth[truth.map(len) > 0]


def _queries(events: pd.DataFrame, cut: int, users: pd.Index, items, cfg: FeatureConfig) -> dict[str, tuple]:
    """user_id -> (live features or None, context, session_id) as of the user's first event after the cut."""
    mine = events[events["user_id"].isin(users)]
    before, after = mine[mine["ts_ms"] < cut], mine[mine["ts_ms"] >= cut]
    rows = compute_features(before, items, cfg).set_index("user_id", drop=False) if len(before) else None
    first = after.sort_values(["ts_ms", "event_id"]).groupby("user_id").first()
    asked = {}
    for user_id, event in first.iterrows():
        ts = int(event["ts_ms"])
        local = local_time(ts, cfg.timezone)
        live = None
        if rows is not None and user_id in rows.index:
            live = decay_features_to(rows.loc[user_id].to_dict(), ts, cfg)
        context = {"daypart": daypart(local.hour), "device": event["device"], "is_weekend": is_weekend(local)}
        asked[user_id] = (live, context, event["session_id"])
    return asked


def _evaluate(generator: CandidateGenerator, asked: dict, truth: pd.Series, seen: dict, ks, anonymous=False) -> dict:
    """Recall of ``truth`` (user_id -> item ids); ``anonymous`` asks without the user id (the cold path)."""
    if truth.empty:
        return {"n_users": 0}
    new_items = set(generator.catalog.decode(np.flatnonzero(generator.new_items)))
    per_user = {"user_id": list(truth.index), "n_test": [len(t) for t in truth]}
    report: dict = {}
    n_new = sum(len(t & new_items) for t in truth)
    for k in ks:
        recalls, new_hits = [], 0
        sources: dict[str, int] = {}
        for user_id, wanted in truth.items():
            live, context, _ = asked[user_id]
            found = generator.candidates(None if anonymous else user_id, live, context, k, seen.get(user_id, ()))
            hits = [c for c in found if c.item_id in wanted]
            recalls.append(len(hits) / len(wanted))
            new_hits += sum(c.item_id in new_items for c in hits)
            for c in hits:
                sources[c.source] = sources.get(c.source, 0) + 1
        per_user[f"recall@{k}"] = recalls
        report[f"recall@{k}"] = float(np.mean(recalls))
        report[f"new_item_recall@{k}"] = new_hits / n_new if n_new else None
        total = sum(sources.values())
        report[f"hit_sources@{k}"] = {s: n / total for s, n in sorted(sources.items())} if total else {}
    report.update(n_users=len(truth), n_new_item_positives=n_new, per_user=pd.DataFrame(per_user))
    return report
