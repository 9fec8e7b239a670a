"""Top-K maximum-inner-product indexes over item vectors: exact and IVF in numpy, and the IVF in faiss.

All answer ``search(queries, k, exclude)`` with item codes (rows of the vectors; -1 pads a row that has fewer than
k eligible items) and scores, best first. ``ExactIndex`` scores every item with one matmul per block of queries and
keeps the top k with ``argpartition`` (linear in the catalog, no full sort); equal scores go by lower code.
``IVFIndex`` clusters the items with k-means and scores only the items of the ``nprobe`` lists whose centroids have
the highest inner product with the query: fewer items scored, at some loss of recall. ``FaissIVFIndex`` is the same
algorithm in faiss (``IndexIVFFlat``), exclusions applied inside its scan; its nprobe is tuned at build time to the
fewest lists reaching ``TARGET_RECALL`` on the queries it will serve. The approximate indexes order the equal
scores they return by code, but which items tied at the k-th score make the cut is theirs.

Which index serves (``index="auto"``), measured with ``streamrec bench retrieval --hnsw 32,400`` (synthetic 65-dim
clustered vectors, k=200 as served, one thread each, 2 shared cores under other jobs; 2026-11-29, 5 runs): p50 µs of
a single query, the range over runs and rounds; the approximate ones at the fewest probes reaching recall 0.95.

    items   exact   faiss flat   ivf       faiss_ivf   faiss HNSW M32 ef400 (recall)
    1k      77-184  46-66        166-391   107-218     210-359 (1.00)
    10k     171-568 144-292      273-568   150-305     433-1337 (0.99)
    20k     342-796 228-462      361-698   194-359     745-1043 (0.98)
    30k     1035-1555 639-1034   475-793   266-385     920-1066 (0.97)
    100k    3253-11567 2498-7424 517-1065  376-667     876-1388 (0.95)

- faiss's IVF beats ours at the same lists and probes (same recall, to 0.005) by 1.3-2x per query and 2x in
  batches, and builds no slower (100k: 5-7 s with tuning, ours 5-12 s): the approximate index is faiss's.
- HNSW (inner product) needs efSearch 400 to reach 0.95 at 100k and is then 2x slower than the IVF per query and
  4-6x slower to build (22-45 s): not adopted.
- Exact against the faiss IVF: a tie up to 10k, the IVF 1.5-2x faster at 20k, 3-4x at 30k, 6-17x at 100k. So
  ``auto`` serves exact (recall 1, no cost in latency) below ``AUTO_APPROXIMATE_FROM`` = 20k items, the IVF from
  there. The exact index stays ours: faiss's flat scan is some tens of µs faster below 20k but breaks ties
  arbitrarily.
- On trained vectors (BPR on a generated world, 19k items, 2.9k users) the tuned IVF probes 8 of 139 lists for
  recall@200 0.956 on all users; tuned on half of them, 0.956 on the other half.
- p99 follows the machine's other jobs (4-9 ms of preemption in most rounds, any kind, any size); in the calmest
  run, at 100k: faiss_ivf 0.7-0.9 ms, ivf 1.0-1.2, HNSW 1.7-2.0, exact 5.6-9.8.

An index saves to a directory as ``index.npz`` (arrays; for faiss, its serialized index) and ``index.json`` (kind,
parameters, item ids).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from streamrec.config import ServingConfig
from streamrec.errors import UserError

_FORMAT_VERSION = 1
# Floats of query x item scores held at once by an exact search: bounds memory whatever the catalog size.
_SCORE_BUDGET = 1 << 23
_KMEANS_SAMPLE_PER_LIST = 256  # k-means trains on at most this many items per list (the usual IVF practice)
_TUNE_QUERIES = 512  # queries sampled to tune a faiss IVF's nprobe: its recall to within about 0.005
INDEX_KINDS = ("auto", "exact", "ivf", "faiss_ivf")
TARGET_RECALL = 0.95  # recall@k against exact an approximate index must reach (the bar)
AUTO_APPROXIMATE_FROM = 20_000  # items: ``auto`` serves exact below, the faiss IVF from here (module docstring)


def top_k(scores: np.ndarray, k: int, banned: np.ndarray | None = None) -> np.ndarray:
    """Codes of the k best of one row of scores, best first, equal scores by lower code; banned codes never."""
    scores = np.asarray(scores)
    eligible = scores > -np.inf if banned is None else (scores > -np.inf) & ~banned
    # Select among the eligible only: np.partition slows ~25x on a row mostly of one value, as a ban of most of
    # the catalog would leave (4 ms against 0.15 ms at 100k items, measured).
    codes = np.flatnonzero(eligible)
    k = min(k, len(codes))
    if k <= 0:
        return np.empty(0, np.int64)
    kept = scores[codes]
    threshold = np.partition(kept, len(kept) - k)[len(kept) - k]
    above = codes[kept > threshold]
    # codes are in code order, so the lowest codes win a tie at the threshold.
    chosen = np.concatenate([above, codes[kept == threshold][: k - len(above)]])
    return chosen[np.lexsort((chosen, -scores[chosen]))]


class _Index:
    """The contract: ``search(queries, k, exclude)`` -> (codes, scores), best first, -1 / -inf padding."""

    kind = ""
    dim: int

    def __init__(self, ids: Sequence[str], n_vectors: int):
        self.ids = np.asarray(ids, dtype=object)
        if n_vectors != len(self.ids) or not len(self.ids):
            raise UserError(f"an index needs one vector per item id, got {len(self.ids)} ids, {n_vectors} vectors")
        if len(set(self.ids.tolist())) != len(self.ids):
            raise UserError("an index's item ids must be distinct")

    def __len__(self) -> int:
        return len(self.ids)

    def _check_query(self, queries: np.ndarray, k: int, exclude) -> np.ndarray:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}), got shape {queries.shape}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise UserError(f"k must be a positive integer, got {k!r}")
        if exclude is not None and len(exclude) != len(queries):
            raise ValueError(f"exclude needs one code array per query ({len(queries)}), got {len(exclude)}")
        return queries

    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _params(self) -> dict:
        return {}

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # numpy's stub types savez's **kwds apart from allow_pickle: bool, and mypy matches a dict against both
        np.savez(directory / "index.npz", **self._arrays())  # type: ignore[arg-type]
        meta = {"version": _FORMAT_VERSION, "kind": self.kind, **self._params(), "item_ids": self.ids.tolist()}
        (directory / "index.json").write_text(json.dumps(meta), encoding="utf-8")


class _VectorIndex(_Index):
    """An index over its own float32 copy of the item vectors (the numpy indexes)."""

    def __init__(self, ids: Sequence[str], vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.vectors.ndim != 2:
            raise UserError(f"item vectors must be (items, dim), got shape {self.vectors.shape}")
        self.dim = self.vectors.shape[1]
        super().__init__(ids, len(self.vectors))

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self.vectors}


class ExactIndex(_VectorIndex):
    kind = "exact"

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int] | np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(codes, scores), each (n_queries, k); ``exclude[q]``: codes query q must not get."""
        return exact_search(self.vectors, self._check_query(queries, k, exclude), k, exclude)


def exact_search(
    vectors: np.ndarray, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int] | np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``ExactIndex.search`` on bare float32 arrays (unchecked)."""
    n = len(vectors)
    kk = min(k, n)
    codes = np.full((len(queries), k), -1, np.int64)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    block = max(1, _SCORE_BUDGET // n)
    for lo in range(0, len(queries), block):
        s = queries[lo : lo + block] @ vectors.T
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


def _mask(scores: np.ndarray, exclude: Sequence[Sequence[int] | np.ndarray]) -> None:
    lens = [len(e) for e in exclude]
    if sum(lens):
        rows = np.repeat(np.arange(len(exclude)), lens)
        scores[rows, np.concatenate([np.asarray(e, np.int64) for e in exclude])] = -np.inf


class IVFIndex(_VectorIndex):
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
        self, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int] | np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check_query(queries, k, exclude)
        codes = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        nprobe = self.nprobe
        centroid_scores = queries @ self.centroids.T
        if nprobe < len(self.centroids):
            lists = np.argpartition(-centroid_scores, nprobe - 1, axis=1)[:, :nprobe]
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


def import_faiss():
    """faiss, imported on first use (0.3 s). Its OpenMP runs one thread unless OMP_NUM_THREADS says otherwise:
    at 100k items on 2 busy cores, two threads against one gave the same IVF p50 (0.4-0.6 ms) but a p99 of 4-56 ms
    against 0.8-12, an IVF build of 5-17 s against 1-1.5, and a flat scan of 25-46 ms against 3 (measured). It has
    to be the environment: ``faiss.omp_set_num_threads`` binds only the calling thread, and the API searches in
    worker threads."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import faiss

    return faiss


class FaissIVFIndex(_Index):
    """faiss ``IndexIVFFlat`` (inner product): the IVF of ``IVFIndex``, same lists and recall, scanned in C++."""

    kind = "faiss_ivf"

    def __init__(self, ids: Sequence[str], index, nprobe: int):
        super().__init__(ids, index.ntotal)
        if not 1 <= nprobe <= index.nlist:
            raise UserError(f"nprobe must be in 1..{index.nlist} (the number of lists), got {nprobe}")
        self.index, self.dim, self.nprobe = index, index.d, int(nprobe)
        # nprobe goes with each search, not into the faiss index: indexes that differ only in it can share one.
        self._probe = import_faiss().SearchParametersIVF(nprobe=self.nprobe)

    @classmethod
    def build(
        cls, ids: Sequence[str], vectors: np.ndarray, n_lists: int | None = None, nprobe: int | None = None, *,
        queries: np.ndarray | None = None, k: int = ServingConfig.candidates, target_recall: float = TARGET_RECALL,
        seed: int = 0,
    ) -> FaissIVFIndex:
        """Cluster the items into ``n_lists`` (default about sqrt(items)). ``nprobe`` unset: the fewest lists whose
        recall@k against exact reaches ``target_recall`` on (a sample of) ``queries``, which are then required."""
        faiss = import_faiss()
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.ndim != 2 or not len(vectors):
            raise UserError(f"item vectors must be (items, dim), got shape {vectors.shape}")
        n_lists = n_lists or max(1, round(math.sqrt(len(vectors))))
        if not 1 <= n_lists <= len(vectors):
            raise UserError(f"n_lists must be in 1..{len(vectors)} (the number of items), got {n_lists}")
        if not nprobe and queries is None:
            raise UserError("a faiss IVF index needs nprobe, or queries to choose it by recall")
        index = faiss.index_factory(vectors.shape[1], f"IVF{n_lists},Flat", faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(vectors)
        index.add(vectors)
        if not nprobe:
            assert queries is not None  # checked above
            nprobe = _tuned_nprobe(index, vectors, queries, k, target_recall, seed)
        return cls(ids, index, nprobe)

    def search(
        self, queries: np.ndarray, k: int, exclude: Sequence[Sequence[int] | np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check_query(queries, k, exclude)
        if exclude is None:
            scores, codes = self.index.search(queries, k, params=self._probe)
        else:
            faiss = import_faiss()
            scores = np.empty((len(queries), k), np.float32)
            codes = np.empty((len(queries), k), np.int64)
            for q, banned in enumerate(exclude):
                params = self._probe
                if len(banned):
                    # A selector names the codes a search may return: all but the banned, skipped in the scan
                    # itself, so k eligible items come back whatever the number banned. ``batch`` must outlive it.
                    batch = faiss.IDSelectorBatch(np.asarray(banned, np.int64))
                    params = faiss.SearchParametersIVF(sel=faiss.IDSelectorNot(batch), nprobe=self.nprobe)
                scores[q : q + 1], codes[q : q + 1] = self.index.search(queries[q : q + 1], k, params=params)
        scores[codes < 0] = -np.inf  # faiss pads with -FLT_MAX
        # faiss leaves equal scores in heap order: put them in code order, as the other indexes do.
        order = np.lexsort((np.where(codes < 0, np.iinfo(np.int64).max, codes), -scores), axis=1)
        return np.take_along_axis(codes, order, axis=1), np.take_along_axis(scores, order, axis=1)

    def _arrays(self) -> dict[str, np.ndarray]:
        # The serialized faiss index inside index.npz: every kind saves the same two files, loads through
        # read_saved, and a re-save of another kind leaves no stale file behind.
        return {"faiss": import_faiss().serialize_index(self.index)}

    def _params(self) -> dict:
        return {"nprobe": self.nprobe}


def _tuned_nprobe(index, vectors: np.ndarray, queries: np.ndarray, k: int, target: float, seed: int) -> int:
    """The fewest lists of a faiss IVF to probe for ``target`` recall@k on ``queries``: recall only grows with
    nprobe, so double it until the target is met, then bisect the last step (a search costs about its nprobe, so
    the cheap ones come first)."""
    faiss = import_faiss()
    queries = np.ascontiguousarray(queries, np.float32)
    if queries.ndim != 2 or queries.shape[1] != index.d or not len(queries):
        raise UserError(f"tuning queries must be (n >= 1, {index.d}), got shape {queries.shape}")
    if len(queries) > _TUNE_QUERIES:
        queries = queries[np.sort(np.random.default_rng(seed).choice(len(queries), _TUNE_QUERIES, replace=False))]
    truth = exact_search(vectors, queries, k)[0]

    def reaches(nprobe: int) -> bool:
        return recall(index.search(queries, k, params=faiss.SearchParametersIVF(nprobe=nprobe))[1], truth) >= target

    lo = hi = 1  # lo: the fewest not yet ruled out; hi: the fewest known to reach (all lists always do)
    while hi < index.nlist and not reaches(hi):
        lo, hi = hi + 1, min(2 * hi, index.nlist)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reaches(mid) else (mid + 1, hi)
    return hi


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of the share of each row's true codes (>= 0) that ``found`` holds."""
    shares = [np.intersect1d(f[f >= 0], t[t >= 0]).size / max(1, int(np.count_nonzero(t >= 0)))
              for f, t in zip(found, truth)]
    return float(np.mean(shares))


def choose_kind(n_items: int) -> str:
    """The ``auto`` index for a catalog of ``n_items`` vectors (the measured threshold: module docstring)."""
    return "exact" if n_items < AUTO_APPROXIMATE_FROM else "faiss_ivf"


def build_index(
    kind: str, ids: Sequence[str], vectors: np.ndarray, *, queries: np.ndarray | None = None,
    k: int = ServingConfig.candidates, n_lists: int | None = None, nprobe: int | None = None, seed: int = 0,
) -> ExactIndex | IVFIndex | FaissIVFIndex:
    """An index of ``kind`` (one of INDEX_KINDS; ``auto`` by catalog size). ``queries`` and ``k``: what the faiss
    IVF's nprobe is tuned on when not given (the users' vectors and the serving candidate count)."""
    if kind not in INDEX_KINDS:
        raise UserError(f"index must be one of {INDEX_KINDS}, got {kind!r}")
    if kind == "auto":
        kind = choose_kind(len(vectors))
    if kind == ExactIndex.kind:
        return ExactIndex(ids, vectors)
    if kind == IVFIndex.kind:
        return IVFIndex.build(ids, vectors, n_lists, nprobe, seed=seed)
    return FaissIVFIndex.build(ids, vectors, n_lists, nprobe, queries=queries, k=k, seed=seed)


def read_saved(directory: Path, stem: str, missing: str) -> tuple[dict, dict[str, np.ndarray]]:
    """``<stem>.json`` and the arrays of ``<stem>.npz``; ``missing`` starts the error when either is absent."""
    try:
        meta = json.loads((directory / f"{stem}.json").read_text(encoding="utf-8"))
        with np.load(directory / f"{stem}.npz", allow_pickle=False) as npz:
            return meta, {name: npz[name] for name in npz.files}
    except FileNotFoundError as e:
        raise UserError(f"{missing} in {directory} ({Path(e.filename).name} is missing)") from None


def load_index(directory: str | Path) -> ExactIndex | IVFIndex | FaissIVFIndex:
    directory = Path(directory)
    meta, arrays = read_saved(directory, "index", "no saved index")
    if meta.get("version") != _FORMAT_VERSION:
        raise UserError(f"{directory}: unsupported index format version {meta.get('version')!r}")
    if meta["kind"] == ExactIndex.kind:
        return ExactIndex(meta["item_ids"], arrays["vectors"])
    if meta["kind"] == IVFIndex.kind:
        return IVFIndex(meta["item_ids"], arrays["vectors"], arrays["centroids"], arrays["assignment"], meta["nprobe"])
    if meta["kind"] == FaissIVFIndex.kind:
        return FaissIVFIndex(meta["item_ids"], import_faiss().deserialize_index(arrays["faiss"]), meta["nprobe"])
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
