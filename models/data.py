"""Offline data for the recommenders: event log -> implicit positives -> id codes -> train/test splits.

The log is read by the one reader, ``features.offline.read_event_log`` (the event contract's validator);
``models.retrieval.log.load_event_log`` reads and labels it.

What counts as a positive: a ``watch`` event, and when ``min_watch_fraction`` > 0 only a watch that covered at least
that fraction of the title's ``duration_minutes`` (from the items catalog). A ``click`` is never a positive: a click
without a watch says the user looked and did not commit, which is too noisy to call a like and too uncertain to call a
dislike. Clicks still count as *interactions*: leave-last-out never samples a clicked item as a negative.

A user-item pair is one positive, timed at its first qualifying watch, so a re-watch cannot put the same item on both
sides of a split. Users and items are those with at least one positive.

The tie rule: events with the same time are in the order of the recorded log (``seq``, the event's position in it;
a frame without ``seq`` is taken to be in log order). It decides a pair's first positive, a user's last positive and
the side of a split a tied positive falls on. The log's order is the producer's (``streams.movielens`` keeps the
ratings file's order among ratings of the same second); any order by id would be arbitrary ("ml99" sorts after
"ml1000"), and on MovieLens, with its many ratings in one second, it would pick many held-out items.

Two protocols, both free of leakage (no train interaction of a user happens after one of their test interactions):

- ``loo``: each user's last positive is the test item, ranked against ``n_negatives`` items the user never interacted
  with (He et al. 2017, "Neural Collaborative Filtering"; HR@k, NDCG@k).
- ``time_global`` / ``time_user``: full ranking over every item the user has no train positive for; the test set is
  the positives at or after the time that splits all positives ``train_frac`` / rest (``time_global``), or each user's
  own last ``1 - train_frac`` of positives (``time_user``).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from streamrec.errors import UserError

LOG_ORDER = "seq"  # an event's position in its log: the tie rule for equal times
PROTOCOLS = ("loo", "time_global", "time_user")


# ---------------------------------------------------------------- labels


def label_positives(events: pd.DataFrame, durations: pd.Series | None, min_watch_fraction: float) -> pd.DataFrame:
    """Add ``label``: a watch, covering at least ``min_watch_fraction`` of the title when that is > 0 (``durations``:
    each title's seconds by item_id)."""
    if not 0 <= min_watch_fraction <= 1:
        raise UserError(f"min_watch_fraction must be in [0, 1], got {min_watch_fraction}")
    watch = events["event_type"].eq("watch").to_numpy()
    if min_watch_fraction > 0:
        seconds = events["item_id"].map(durations).to_numpy()
        missing = watch & np.isnan(seconds)
        if missing.any():
            unknown = sorted(set(events["item_id"][missing]))
            raise UserError(
                f"{len(unknown)} watched item(s) have no duration_minutes in the catalog, e.g. {unknown[:3]}")
        # Producers round watch_seconds to 0.1 s (MovieLens: rating/5 of the title), so allow half of that.
        watch = watch & (events["watch_seconds"].to_numpy() + 0.05 >= min_watch_fraction * seconds)
    return events.assign(label=watch)


# ---------------------------------------------------------------- ids and per-user item sets


class IdEncoder:
    """String ids <-> contiguous ints 0..n-1 in sorted id order: the same id set always gets the same codes."""

    def __init__(self, ids: Iterable[str]):
        self.ids = np.array(sorted(set(ids)), dtype=object)
        self._index = pd.Index(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=object)
        codes = self._index.get_indexer(ids)
        if (codes < 0).any():
            unknown = sorted(set(ids[codes < 0]))
            raise UserError(f"{len(unknown)} unknown id(s), e.g. {unknown[:3]}")
        return codes.astype(np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.ids[np.asarray(codes)]


@dataclass(frozen=True)
class UserItems:
    """Each user's set of items, CSR-like: one sorted key ``user * n_items + item`` per pair, and row pointers."""

    keys: np.ndarray
    indptr: np.ndarray
    n_items: int

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> UserItems:
        keys = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(keys // n_items, minlength=n_users))])
        return cls(keys, indptr, n_items)

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def of(self, user: int) -> np.ndarray:
        return self.keys[self.indptr[user] : self.indptr[user + 1]] % self.n_items

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        wanted = np.asarray(users, np.int64) * self.n_items + np.asarray(items, np.int64)
        if not len(self.keys):
            return np.zeros(wanted.shape, dtype=bool)
        pos = np.minimum(np.searchsorted(self.keys, wanted), len(self.keys) - 1)
        return self.keys[pos] == wanted

    def dense(self, users: np.ndarray) -> np.ndarray:
        """Boolean (len(users), n_items) membership matrix for a batch of users."""
        users = np.asarray(users, np.int64)
        starts, lens = self.indptr[users], self.indptr[users + 1] - self.indptr[users]
        rows = np.repeat(np.arange(len(users)), lens)
        offsets = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        out = np.zeros((len(users), self.n_items), dtype=bool)
        out[rows, self.keys[np.repeat(starts, lens) + offsets] % self.n_items] = True
        return out


# ---------------------------------------------------------------- splits


class _Sized:
    """``n_users``/``n_items`` of a split, from its encoders."""

    users: IdEncoder
    items: IdEncoder

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class LooSplit(_Sized):
    """Leave-last-out: ``train`` positives (user_idx, item_idx, ts_ms, seq), and per test user one row of
    ``candidates``: the held-out item at a seeded random column among ``n_negatives`` never-interacted items, so that a model that
    ties scores ranks the held-out item like a random draw."""

    protocol: str
    train: pd.DataFrame
    users: IdEncoder
    items: IdEncoder
    test_users: np.ndarray
    test_items: np.ndarray
    candidates: np.ndarray
    skipped: dict[str, int]


@dataclass(frozen=True)
class FullSplit(_Sized):
    """Full ranking: ``train`` and ``test`` positives (user_idx, item_idx, ts_ms, seq); every user in ``test`` has
    train history. ``skipped`` counts users left out of the test, by reason."""

    protocol: str
    train: pd.DataFrame
    test: pd.DataFrame
    users: IdEncoder
    items: IdEncoder
    skipped: dict[str, int]


def make_split(events: pd.DataFrame, protocol: str, **options) -> LooSplit | FullSplit:
    """Split by protocol name: ``loo`` (options n_negatives, seed), ``time_global`` or ``time_user`` (train_frac)."""
    if protocol == "loo":
        return split_loo(events, **options)
    if protocol in ("time_global", "time_user"):
        return split_by_time(events, per_user=protocol == "time_user", **options)
    raise UserError(f"unknown split protocol {protocol!r}; choose one of {PROTOCOLS}")


def split_loo(events: pd.DataFrame, n_negatives: int = 99, seed: int = 0) -> LooSplit:
    """Hold out each user's last positive. Users with fewer than 2 positives are not tested (their one positive
    still trains), nor are users with fewer than ``n_negatives`` never-interacted items; ``skipped`` counts both."""
    if n_negatives < 1:
        raise UserError(f"n_negatives must be >= 1, got {n_negatives}")
    pos, users, items = encoded_positives(events)
    counts = np.bincount(pos["user_idx"], minlength=len(users))
    last_row = np.cumsum(counts) - 1  # pos is sorted by user, then time: a user's last row is their latest positive
    tested = counts >= 2
    interacted = _interacted(events, users, items)
    rng = np.random.default_rng(seed)
    test_users, test_items, candidates = [], [], []
    too_few = 0
    for u in np.flatnonzero(tested):
        pool = np.ones(len(items), dtype=bool)
        pool[interacted.of(int(u))] = False
        pool = np.flatnonzero(pool)
        if len(pool) < n_negatives:
            too_few += 1
            continue
        held_out = pos["item_idx"].iat[last_row[u]]
        row = rng.choice(pool, size=n_negatives, replace=False)
        test_users.append(u)
        test_items.append(held_out)
        candidates.append(np.insert(row, rng.integers(n_negatives + 1), held_out))
    skipped = {"fewer_than_2_positives": int((~tested).sum()), "too_few_negatives": too_few}
    if not test_users:
        raise UserError(f"leave-last-out has no test user (skipped: {skipped})")
    train = pos.drop(index=pos.index[last_row[np.asarray(test_users)]]).reset_index(drop=True)
    return LooSplit(
        "loo", train, users, items, np.asarray(test_users), np.asarray(test_items), np.vstack(candidates), skipped
    )


def split_by_time(events: pd.DataFrame, per_user: bool, train_frac: float = 0.75) -> FullSplit:
    """Time-ordered train/test split for full ranking, across all users at one cut time or per user."""
    if not 0 < train_frac < 1:
        raise UserError(f"train_frac must be in (0, 1), got {train_frac}")
    pos, users, items = encoded_positives(events)
    if per_user:
        protocol = "time_user"
        counts = np.bincount(pos["user_idx"], minlength=len(users))
        n = counts[pos["user_idx"]]
        rank = pos.groupby("user_idx").cumcount().to_numpy()
        # At least one positive on each side; a one-positive user only trains.
        n_train = np.clip(np.floor(train_frac * n).astype(np.int64), 1, np.maximum(n - 1, 1))
        is_train = (rank < n_train) | (n < 2)
        skipped = {"fewer_than_2_positives": int((counts < 2).sum())}
    else:
        protocol = "time_global"
        ts = np.sort(pos["ts_ms"].to_numpy())
        cut = ts[int(np.floor(train_frac * len(ts)))]
        is_train = pos["ts_ms"].to_numpy() < cut
        if not is_train.any():
            raise UserError(f"no positive precedes the {train_frac:.0%} time cut; the log needs more spread in time")
        user = pos["user_idx"].to_numpy()
        # A user first seen after the cut has nothing to rank from: not tested, and not train either (future).
        cold = ~(np.bincount(user[is_train], minlength=len(users)) > 0)[user]
        skipped = {"no_train_history": len(np.unique(user[cold]))}
        pos, is_train = pos[~cold], is_train[~cold]
    train = pos[is_train].reset_index(drop=True)
    test = pos[~is_train].reset_index(drop=True)
    if test.empty:
        raise UserError(f"{protocol} split has no test user (skipped: {skipped})")
    return FullSplit(protocol, train, test, users, items, skipped)


def encoded_positives(events: pd.DataFrame) -> tuple[pd.DataFrame, IdEncoder, IdEncoder]:
    """One row per positive user-item pair at its first time: user_idx, item_idx, ts_ms and seq (its position in
    the log), sorted by user, time and seq (the tie rule)."""
    order = events[LOG_ORDER].to_numpy() if LOG_ORDER in events else np.arange(len(events))
    label = events["label"].to_numpy(bool)
    pos = events.loc[label, ["user_id", "item_id", "ts_ms"]].assign(**{LOG_ORDER: order[label]})
    if pos.empty:
        raise UserError("the event log has no positive interaction (watch)")
    pos = pos.sort_values(["ts_ms", LOG_ORDER], kind="stable").drop_duplicates(["user_id", "item_id"])
    users, items = IdEncoder(pos["user_id"]), IdEncoder(pos["item_id"])
    out = pd.DataFrame({
        "user_idx": users.encode(pos["user_id"]), "item_idx": items.encode(pos["item_id"]),
        "ts_ms": pos["ts_ms"].to_numpy(), LOG_ORDER: pos[LOG_ORDER].to_numpy(),
    })
    return out.sort_values(["user_idx", "ts_ms", LOG_ORDER], kind="stable").reset_index(drop=True), users, items


def _interacted(events: pd.DataFrame, users: IdEncoder, items: IdEncoder) -> UserItems:
    """Every (user, item) with any event, clicks included, among known users and items."""
    known = events["user_id"].isin(users.ids) & events["item_id"].isin(items.ids)
    seen = events.loc[known]
    return UserItems.from_pairs(users.encode(seen["user_id"]), items.encode(seen["item_id"]), len(users), len(items))
