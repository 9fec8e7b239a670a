"""Top-K maximum-inner-product indexes over item vectors (numpy only): exact, and IVF (approximate).

Both answer ``search(queries, k, exclude)`` with item codes (rows of the vectors; -1 pads a row that has fewer than
k eligible items) and scores, best first, ties in score by lower code. ``ExactIndex`` scores every item with one
matmul per block of queries and keeps the top k with ``argpartition`` (linear in the catalog, no full sort).
``IVFIndex`` clusters the items with k-means and scores only the items of the ``nprobe`` lists whose centroids have
the highest inner product with the query: fewer items scored, at some loss of recall.

An index saves to a directory as ``index.npz`` (arrays) and ``index.json`` (kind, parameters, item ids).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from streamrec.errors import UserError

_FORMAT_VERSION = 1
# Floats of query x item scores held at once by an exact search: bounds memory whatever the catalog size.
_SCORE_BUDGET = 1 << 23
_KMEANS_SAMPLE_PER_LIST = 256  # k-means trains on at most this many items per list (the usual IVF practice)


def top_k(scores: np.ndarray, k: int, banned: np.ndarray | None = None) -> np.ndarray:
    """Codes of the k best of one row of scores, best first, equal scores by lower code; banned codes never."""
    scores = np.where(banned, -np.inf, scores) if banned is not None else np.asarray(scores)
    eligible = int(np.count_nonzero(scores > -np.inf))
    k = min(k, eligible)
    if k <= 0:
        return np.empty(0, np.int64)
    threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
    above = np.flatnonzero(scores > threshold)
    # flatnonzero is in code order, so the lowest codes win a tie at the threshold.
    chosen = np.concatenate([above, np.flatnonzero(scores == threshold)[: k - len(above)]])
    return chosen[np.lexsort((chosen, -scores[chosen]))]


class _Index:
    kind = ""

    def __init__(self, ids: Sequence[str], vectors: np.ndarray):
        self.ids = np.asarray(ids, dtype=object)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.ids) or not len(self.ids):
            raise UserError(f"an index needs one vector per item id, got {len(self.ids)} ids, "
                            f"vectors of shape {self.vectors.shape}")
        if len(set(self.ids.tolist())) != len(self.ids):
            raise UserError("an index's item ids must be distinct")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def _check_query(self, queries: np.ndarray, k: int, exclude) -> np.ndarray:
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}), got shape {queries.shape}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise UserError(f"k must be a positive integer, got {k!r}")
        if exclude is not None and len(exclude) != len(queries):
            raise ValueError(f"exclude needs one code array per query ({len(queries)}), got {len(exclude)}")
        return queries

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self.vectors}

    def _params(self) -> dict:
        return {}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "index.npz", **self._arrays())
        meta = {"version": _FORMAT_VERSION, "kind": self.kind, **self._params(), "item_ids": self.ids.tolist()}
        (directory / "index.json").write_text(json.dumps(meta), encoding="utf-8")


class ExactIndex(_Index):
    kind = "exact"

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(codes, scores), each (n_queries, k); ``exclude[q]``: codes query q must not get."""
        queries = self._check_query(queries, k, exclude)
        n = len(self.ids)
        kk = min(k, n)
        codes = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        block = max(1, _SCORE_BUDGET // n)
        for lo in range(0, len(queries), block):
            s = queries[lo : lo + block] @ self.vectors.T
            if exclude is not None:
                _mask(s, exclude[lo : lo + block])
            # Partition for the k largest in place of negating: no copy of the score block.
            top = np.argpartition(s, n - kk, axis=1)[:, n - kk :] if kk < n else np.tile(np.arange(n), (len(s), 1))
            top_s = np.take_along_axis(s, top, axis=1)
            order = np.lexsort((top, -top_s), axis=1)
            codes[lo : lo + block, :kk] = np.take_along_axis(top, order, axis=1)
            scores[lo : lo + block, :kk] = np.take_along_axis(top_s, order, axis=1)
        codes[np.isneginf(scores)] = -1
        return codes, scores


def _mask(scores: np.ndarray, exclude: Sequence[Sequence[int]]) -> None:
    lens = [len(e) for e in exclude]
    if sum(lens):
        rows = np.repeat(np.arange(len(exclude)), lens)
        scores[rows, np.concatenate([np.asarray(e, np.int64) for e in exclude])] = -np.inf


class IVFIndex(_Index):
    kind = "ivf"

    def __init__(self, ids, vectors, centroids: np.ndarray, assignment: np.ndarray, nprobe: int):
        super().__init__(ids, vectors)
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.assignment = np.asarray(assignment, np.int64)
        n_lists = len(self.centroids)
        if self.assignment.shape != (len(self.ids),) or not (0 <= self.assignment).all() or (
            self.assignment >= n_lists
        ).any():
            raise UserError(f"IVF index: assignment must give each item a list in 0..{n_lists - 1}")
        if not 1 <= nprobe <= n_lists:
            raise UserError(f"nprobe must be in 1..{n_lists} (the number of lists), got {nprobe}")
        self.nprobe = int(nprobe)
        # Items grouped by list, vectors in that order, so one list's items are one contiguous slice.
        self._order = np.argsort(self.assignment, kind="stable")
        self._sorted = self.vectors[self._order]
        self._offsets = np.concatenate([[0], np.cumsum(np.bincount(self.assignment, minlength=n_lists))])

    @classmethod
    def build(
        cls, ids: Sequence[str], vectors: np.ndarray, n_lists: int | None = None, nprobe: int | None = None,
        iters: int = 20, seed: int = 0,
    ) -> IVFIndex:
        """Cluster the items into ``n_lists`` (default about sqrt(items)); probe ``nprobe`` (default n_lists / 8)."""
        vectors = np.asarray(vectors, np.float32)
        n_lists = n_lists or max(1, round(math.sqrt(len(vectors))))
        if not 1 <= n_lists <= len(vectors):
            raise UserError(f"n_lists must be in 1..{len(vectors)} (the number of items), got {n_lists}")
        centroids = kmeans(vectors, n_lists, iters, seed)
        nprobe = nprobe or max(1, math.ceil(n_lists / 8))
        return cls(ids, vectors, centroids, nearest(vectors, centroids), min(nprobe, n_lists))

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check_query(queries, k, exclude)
        codes = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        nprobe = self.nprobe
        lists = queries @ self.centroids.T
        if nprobe < len(self.centroids):
            lists = np.argpartition(-lists, nprobe - 1, axis=1)[:, :nprobe]
        else:
            lists = np.tile(np.arange(nprobe), (len(queries), 1))
        for q, probes in enumerate(lists):
            slices = [slice(self._offsets[p], self._offsets[p + 1]) for p in probes]
            cand = np.concatenate([self._order[s] for s in slices])
            s = np.concatenate([self._sorted[sl] for sl in slices]) @ queries[q]
            banned = np.isin(cand, np.asarray(exclude[q], np.int64)) if exclude is not None else None
            best = top_k(s, k, banned)
            codes[q, : len(best)], scores[q, : len(best)] = cand[best], s[best]
        # Ties: top_k broke them by position in the probed lists, so put equal scores back in code order.
        order = np.lexsort((np.where(codes < 0, np.iinfo(np.int64).max, codes), -scores), axis=1)
        return np.take_along_axis(codes, order, axis=1), np.take_along_axis(scores, order, axis=1)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self.vectors, "centroids": self.centroids, "assignment": self.assignment}

    def _params(self) -> dict:
        return {"nprobe": self.nprobe}


def read_saved(directory: Path, stem: str, missing: str) -> tuple[dict, dict[str, np.ndarray]]:
    """``<stem>.json`` and the arrays of ``<stem>.npz``; ``missing`` starts the error when either is absent."""
    try:
        meta = json.loads((directory / f"{stem}.json").read_text(encoding="utf-8"))
        with np.load(directory / f"{stem}.npz", allow_pickle=False) as npz:
            return meta, {name: npz[name] for name in npz.files}
    except FileNotFoundError as e:
        raise UserError(f"{missing} in {directory} ({Path(e.filename).name} is missing)") from None


def load_index(directory: str | Path) -> ExactIndex | IVFIndex:
    directory = Path(directory)
    meta, arrays = read_saved(directory, "index", "no saved index")
    if meta.get("version") != _FORMAT_VERSION:
        raise UserError(f"{directory}: unsupported index format version {meta.get('version')!r}")
    if meta["kind"] == ExactIndex.kind:
        return ExactIndex(meta["item_ids"], arrays["vectors"])
    if meta["kind"] == IVFIndex.kind:
        return IVFIndex(meta["item_ids"], arrays["vectors"], arrays["centroids"], arrays["assignment"], meta["nprobe"])
    raise UserError(f"{directory}: unknown index kind {meta['kind']!r}")


# ---------------------------------------------------------------- k-means (the IVF coarse quantizer)


def kmeans(x: np.ndarray, n_clusters: int, iters: int = 20, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means (L2) on a seeded sample of ``x``; an emptied cluster restarts at the worst-fitted point."""
    rng = np.random.default_rng(seed)
    sample_size = min(len(x), _KMEANS_SAMPLE_PER_LIST * n_clusters)
    sample = x[np.sort(rng.choice(len(x), sample_size, replace=False))]
    centroids = sample[rng.choice(sample_size, n_clusters, replace=False)].copy()
    assignment = None
    for _ in range(iters):
        new = nearest(sample, centroids)
        if assignment is not None and np.array_equal(new, assignment):
            break
        assignment = new
        counts = np.bincount(assignment, minlength=n_clusters)
        # One weighted bincount per dimension: far faster than np.add.at over rows.
        sums = np.stack([np.bincount(assignment, weights=col, minlength=n_clusters) for col in sample.T], axis=1)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        if not filled.all():
            errors = ((sample - centroids[assignment]) ** 2).sum(axis=1)
            centroids[~filled] = sample[np.argsort(-errors, kind="stable")[: int((~filled).sum())]]
    return centroids


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of each row's nearest centroid (L2), in blocks of rows to bound memory."""
    c_sq = (centroids**2).sum(axis=1)
    out = np.empty(len(x), np.int64)
    block = max(1, _SCORE_BUDGET // len(centroids))
    for lo in range(0, len(x), block):
        out[lo : lo + block] = np.argmin(c_sq - 2 * (x[lo : lo + block] @ centroids.T), axis=1)
    return out
