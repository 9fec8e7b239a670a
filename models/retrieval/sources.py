"""Candidate sources, as pure functions over arrays: MF vectors for inner-product retrieval, genre content vectors
matched against a user's live affinities, and popularity per context.

Items are rows (catalog codes) throughout; the mixer (``models.retrieval.generator``) maps ids to codes.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from models.baselines import BPR
from models.baselines.recommender import check_fitted
from streamrec.errors import UserError
from streamrec.vocabulary import DAYPARTS, GENRE_INDEX, GENRE_SLUGS

AFFINITY_COLUMNS: tuple[str, ...] = tuple(f"aff_{s}" for s in GENRE_SLUGS)
CONTEXT_FIELDS: tuple[str, ...] = ("daypart", "device", "is_weekend")
# Popularity levels, coarse to fine; each level's fields extend its parent's, so a key's parent is its prefix.
LEVELS: tuple[tuple[str, ...], ...] = ((), ("daypart", "device"), CONTEXT_FIELDS)
_PARENT_LENGTH = {len(LEVELS[n]): len(LEVELS[n - 1]) for n in range(1, len(LEVELS))}


# ---------------------------------------------------------------- embedding


def mips_vectors(bpr: BPR) -> tuple[np.ndarray, np.ndarray]:
    """(user vectors, item vectors) whose inner product is BPR's score <p_u, q_i> + b_i: the item bias rides in
    one extra dimension, against a constant 1 on the user side."""
    check_fitted(bpr, "user_f")
    assert bpr.user_f is not None and bpr.item_f is not None and bpr.item_b is not None  # set together by fit()
    users = mips_query(bpr.user_f)
    items = np.hstack([bpr.item_f, bpr.item_b[:, None]])
    return users, items


def mips_query(user_factors: np.ndarray) -> np.ndarray:
    """User factors (one row, or rows) as index queries: the constant 1 that meets the item bias appended."""
    user_factors = np.atleast_2d(np.asarray(user_factors, np.float32))
    return np.hstack([user_factors, np.ones((len(user_factors), 1), np.float32)])


# ---------------------------------------------------------------- content


def genre_vectors(items: Mapping[str, Mapping], ids) -> np.ndarray:
    """(len(ids), genres) unit rows over each item's known genres; an item without any stays a zero row."""
    out = np.zeros((len(ids), len(GENRE_INDEX)), np.float32)
    for row, item_id in enumerate(ids):
        known = [GENRE_INDEX[g] for g in items[item_id].get("genres") or () if g in GENRE_INDEX]
        out[row, known] = 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=out, where=norms > 0)


def live_affinity(live: Mapping | None) -> np.ndarray | None:
    """The live decayed genre affinities (``aff_<slug>``) as a unit vector; None when they carry no signal."""
    if not live:
        return None
    values = np.array([live.get(c) or 0.0 for c in AFFINITY_COLUMNS], np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise UserError(f"live genre affinities must be finite and >= 0, got {dict(zip(AFFINITY_COLUMNS, values))}")
    norm = np.linalg.norm(values)
    return values / norm if norm > 0 else None


def content_scores(genres: np.ndarray, affinity: np.ndarray) -> np.ndarray:
    """Cosine of each item's genres with the user's affinities."""
    return genres @ affinity.astype(np.float32)


# ---------------------------------------------------------------- popularity per context


def context_key(context: Mapping, level: tuple[str, ...]) -> tuple | None:
    """The context's key at one level, or None when a field of that level is unknown."""
    values = tuple(context.get(f) for f in level)
    return None if any(v is None for v in values) else values


def normalized_context(context: Mapping) -> dict:
    """``daypart`` / ``device`` / ``is_weekend`` checked; a missing or None field is unknown (popularity backs off)."""
    if not isinstance(context, Mapping):
        raise UserError(f"context must be a mapping of {CONTEXT_FIELDS}, got {type(context).__name__}")
    part, device, weekend = (context.get(f) for f in CONTEXT_FIELDS)
    if part is not None and part not in DAYPARTS:
        raise UserError(f"context daypart must be one of {DAYPARTS}, got {part!r}")
    if device is not None and not isinstance(device, str):
        raise UserError(f"context device must be a string, got {device!r}")
    return {"daypart": part, "device": device, "is_weekend": None if weekend is None else bool(weekend)}


class ContextPopularity:
    """Distinct users who watched each item, overall and per context key.

    A context's score for an item is its share of the context's watches, shrunk towards the parent level's score
    with ``prior`` pseudo-watches: (count + prior * parent) / (total + prior). A thin context so leans on its
    parent, and a context never seen falls back to the finest level that was seen.
    """

    def __init__(self, keys: list[tuple], counts: np.ndarray, prior: float):
        if prior < 0:
            raise UserError(f"popularity prior must be >= 0, got {prior}")
        self.keys, self.counts, self.prior = keys, np.asarray(counts, np.float32), float(prior)
        self._row = {key: n for n, key in enumerate(keys)}
        if () not in self._row or len(self._row) != len(keys) or self.counts.shape[0] != len(keys):
            raise UserError("context popularity needs distinct keys, the overall key () among them, and one row each")
        self._scores = self._smoothed()

    @classmethod
    def from_positives(cls, positives: pd.DataFrame, n_items: int, prior: float) -> ContextPopularity:
        """``positives``: user_id, item (catalog code) and the CONTEXT_FIELDS columns, one row per positive."""
        keys, rows = [], []
        for level in LEVELS:
            pairs = positives.drop_duplicates([*level, "user_id", "item"])
            for key, group in pairs.groupby(list(level), sort=True) if level else [((), pairs)]:
                keys.append(tuple(v.item() if isinstance(v, np.generic) else v for v in key))
                rows.append(np.bincount(group["item"].to_numpy(), minlength=n_items))
        return cls(keys, np.vstack(rows), prior)

    def _smoothed(self) -> np.ndarray:
        scores = np.empty_like(self.counts)
        for n in sorted(range(len(self.keys)), key=lambda n: len(self.keys[n])):  # parents before children
            key, total = self.keys[n], self.counts[n].sum()
            if key == ():
                scores[n] = self.counts[n] / total if total else 0.0
            else:
                parent = scores[self._row[key[: _PARENT_LENGTH[len(key)]]]]
                scores[n] = (self.counts[n] + self.prior * parent) / (total + self.prior)
        return scores

    def scores(self, context: Mapping) -> tuple[tuple, np.ndarray]:
        """(the key used, its item scores) for a normalized context: the finest level whose key was seen."""
        best = ()
        for level in LEVELS[1:]:
            key = context_key(context, level)
            if key not in self._row:
                break
            best = key
        return best, self._scores[self._row[best]]
