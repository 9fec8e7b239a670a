"""The held-out sessions of a synthetic world the re-rank is judged on (pure).

The world's timeline is split at a cutoff: W&D trains on what happened before it, and the sessions starting
after it are scored at their start. A session is *context-shifted* when its (day-part, weekend, device) differs
from the user's most frequent one before the cutoff: there the long-term history W&D learnt from points the
wrong way, which is the case the re-rank is meant for. Users without a session before the cutoff have no usual
context and are left out (counted). A session's *context type* names the world's ``CONTEXT_RULES`` that match
it ("no_rule" when none does), joined with "+", so the lift can be broken down by what the context asks for.

Relevant items are the ones the user watched in the session (the world's picks that stuck) and had never
interacted with before the session started: those are the only ones a list of unseen items can hold.
A session with none has no defined NDCG and is left out (counted).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from streamrec.errors import UserError
from streams.world import rule_matches

NO_RULE = "no_rule"
CONTEXT_KEYS = ["daypart", "weekend", "device"]
SESSION_FIELDS = ("session_id", "user_id", "start_ts", "end_ts", "device", "daypart", "weekend", "intent")


def read_sessions(path: Path) -> pd.DataFrame:
    """The generator's sessions.jsonl (one row per session, with its context and intent genre)."""
    try:
        with Path(path).open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except OSError as e:
        raise UserError(f"cannot read sessions {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not JSON lines: {e.msg}") from None
    frame = pd.DataFrame(rows, columns=list(SESSION_FIELDS) if not rows else None)
    missing = sorted(set(SESSION_FIELDS) - set(frame.columns))
    if missing:
        raise UserError(f"{path}: sessions lack fields {missing} (generate the world again with `streamrec generate`)")
    return frame[list(SESSION_FIELDS)]


def context_type(daypart: str, weekend: bool, device: str, rules: list[dict]) -> str:
    """The names of the rules matching this context, "+"-joined in the rules' order; NO_RULE when none does."""
    names = [r["name"] for r in rules if rule_matches(r["when"], daypart, bool(weekend), device)]
    return "+".join(names) or NO_RULE


def usual_contexts(sessions: pd.DataFrame) -> pd.DataFrame:
    """Per user (index), the most frequent (daypart, weekend, device) of ``sessions``; ties go to the context
    seen first, so the choice does not depend on how the values sort."""
    counts = (sessions.sort_values("start_ts", kind="stable")
              .groupby(["user_id", *CONTEXT_KEYS], sort=False).agg(n=("start_ts", "size"), first=("start_ts", "min"))
              .reset_index())
    best = counts.sort_values(["user_id", "n", "first"], ascending=[True, False, True], kind="stable")
    return best.drop_duplicates("user_id").set_index("user_id")[CONTEXT_KEYS]


def held_out_sessions(sessions: pd.DataFrame, events: pd.DataFrame, cutoff_ms: int, rules: list[dict]) -> tuple[pd.DataFrame, dict]:
    """The context-shifted sessions starting at or after ``cutoff_ms`` that have relevant items, and counts of
    what was left out.

    ``sessions``: ``read_sessions``; ``events``: user_id, item_id, ts_ms, event_type (click|watch).
    Returns one row per session: its ``SESSION_FIELDS``, ``context_type``, ``usual`` (the user's usual context
    as "daypart/weekday|weekend/device") and ``relevant`` (a tuple of item ids), ordered by start time.
    """
    if sessions.empty:
        raise UserError("the world has no sessions")
    before = sessions[sessions["end_ts"] < cutoff_ms]
    after = sessions[sessions["start_ts"] >= cutoff_ms].sort_values(["start_ts", "user_id"], kind="stable")
    if after.empty:
        raise UserError(f"no session starts after the cutoff ({cutoff_ms}): hold out a later part of the world")
    usual = usual_contexts(before)
    known = after[after["user_id"].isin(usual.index)]
    shifted = known[(known[CONTEXT_KEYS].to_numpy() != usual.loc[known["user_id"], CONTEXT_KEYS].to_numpy()).any(axis=1)]
    relevant = _relevant_items(shifted, events)
    kept = shifted.assign(relevant=shifted["session_id"].map(relevant))
    kept = kept[kept["relevant"].notna()]
    kept = kept.assign(
        context_type=[context_type(d, w, v, rules) for d, w, v in kept[CONTEXT_KEYS].itertuples(index=False)],
        usual=[_label(*usual.loc[u, CONTEXT_KEYS]) for u in kept["user_id"]],
    ).reset_index(drop=True)
    counts = {
        "held_out": len(after),
        "no_history": len(after) - len(known),
        "usual_context": len(known) - len(shifted),
        "no_new_watch": len(shifted) - len(kept),
        "kept": len(kept),
    }
    return kept, counts


def _relevant_items(sessions: pd.DataFrame, events: pd.DataFrame) -> pd.Series:
    """session_id -> tuple of the items watched inside the session and untouched by the user before it began."""
    if sessions.empty:
        return pd.Series(dtype=object)
    mine = events[events["user_id"].isin(sessions["user_id"])]
    # A user's sessions do not overlap (the generator separates them by a gap), so an event belongs to the
    # latest session that started at or before it, if it has not ended yet.
    spans = sessions[["session_id", "user_id", "start_ts", "end_ts"]].sort_values("start_ts")
    located = pd.merge_asof(mine.sort_values("ts_ms"), spans, left_on="ts_ms", right_on="start_ts", by="user_id")
    inside = located[located["session_id"].notna() & (located["ts_ms"] <= located["end_ts"])]
    watched = inside[inside["event_type"] == "watch"][["session_id", "user_id", "item_id", "start_ts"]].drop_duplicates()
    first_touch = mine.groupby(["user_id", "item_id"], as_index=False)["ts_ms"].min()
    new = watched.merge(first_touch, on=["user_id", "item_id"])
    new = new[new["ts_ms"] >= new["start_ts"]]
    return new.sort_values("item_id").groupby("session_id")["item_id"].agg(tuple)


def _label(daypart: str, weekend: bool, device: str) -> str:
    return f"{daypart}/{'weekend' if weekend else 'weekday'}/{device}"
