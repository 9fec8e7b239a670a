"""``streamrec bench retrieval``: single-query top-K latency, build time and recall@k against exact of every
retrieval index as the catalog grows: ours (numpy exact and IVF) and faiss (flat, IVF, optionally HNSW), and which
one ``index="auto"`` serves at each size.

Vectors are synthetic, not trained: items and queries drawn from one Gaussian mixture (``--clusters`` components,
unit-variance centres, noise of scale ``--spread``) in ``--dim`` dimensions, the size of BPR's 64 factors plus the
bias. Speed does not depend on the values; an approximate index's recall does, and clustered vectors are kinder to
it than isotropic noise and harder than well-separated clusters, so read the recall as indicative. Latency is one
query per call, as the API asks for one user at a time: p50 and p99 over ``--queries`` calls, in ``--rounds`` rounds
that take the indexes in a fresh random order each, printed as the range over rounds (other jobs on the machine
move the tail; the range shows by how much). Throughput is queries per second in calls of ``--batch`` queries.

The faiss IVF is built as ``auto`` builds it: lists about sqrt(items), nprobe tuned for recall@k >= 0.95 on
tuning queries drawn apart from the timed ones (so its recall here is out of sample), then also run at the IVF
probe counts for a like-for-like row. The faiss flat and HNSW rows are comparisons only, not index kinds.

Single-query latency depends heavily on threads: on a busy machine a multi-threaded OpenBLAS or OpenMP call waits
for its threads (about 8 ms a call on 2 shared cores, measured), so serving runs with ``OPENBLAS_NUM_THREADS=1``
and faiss with one OpenMP thread; the header shows the settings in force.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

from streamrec.config import ServingConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1000,10000,100000", help="catalog sizes (default: 1000,10000,100000)")
    parser.add_argument("--dim", type=int, default=65, help="vector dimension (default: 65 = 64 factors + bias)")
    parser.add_argument("--k", type=int, default=ServingConfig.candidates,
                        help=f"candidates per query (default: {ServingConfig.candidates}, the serving default)")
    parser.add_argument("--queries", type=int, default=300, help="single-query calls timed per round (default: 300)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (default: 3)")
    parser.add_argument("--batch", type=int, default=256, help="queries per batched call (default: 256)")
    parser.add_argument("--batches", type=int, default=4, help="batched calls timed (default: 4)")
    parser.add_argument("--clusters", type=int, default=50, help="mixture components of the vectors (default: 50)")
    parser.add_argument("--spread", type=float, default=1.5, help="noise scale around a component (default: 1.5)")
    parser.add_argument("--n-lists", type=int, default=None, help="IVF lists (default: about sqrt(items))")
    parser.add_argument("--nprobe", default=None,
                        help="IVF lists probed, comma-separated (default: lists/16, lists/8, lists/4), run by both "
                             "IVFs beside the faiss IVF's tuned count")
    parser.add_argument("--hnsw", default=None, metavar="M,EF",
                        help="also faiss HNSW with M links and efSearch EF, e.g. 32,400 (slow to build: off by "
                             "default)")
    parser.add_argument("--seed", type=int, default=0)


def _vectors(rng, centres, n: int, spread: float):
    import numpy as np

    picks = rng.integers(len(centres), size=n)
    return (centres[picks] + spread * rng.standard_normal((n, centres.shape[1]))).astype(np.float32)


class _Bare:
    """A bare faiss index behind the search signature of ours, for the comparison rows that are not index kinds."""

    def __init__(self, index):
        self.index = index

    def search(self, queries, k: int):
        scores, codes = self.index.search(queries, k)
        return codes, scores


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(build, *args, **kwargs):
    started = time.perf_counter()
    return build(*args, **kwargs), time.perf_counter() - started


def _latency_us(index, queries, k: int) -> tuple[float, float]:
    """(p50, p99) of single-query calls, in µs."""
    import numpy as np

    times = []
    for q in queries:
        started = time.perf_counter()
        index.search(q[None], k)
        times.append(time.perf_counter() - started)
    p50, p99 = np.percentile(times, [50, 99]) * 1e6
    return float(p50), float(p99)


def _throughput(index, queries, k: int, batch: int) -> float:
    started = time.perf_counter()
    for lo in range(0, len(queries), batch):
        index.search(queries[lo : lo + batch], k)
    return len(queries) / (time.perf_counter() - started)


def run(args: argparse.Namespace, settings) -> int:
    import numpy as np

    from models.retrieval.index import (
        AUTO_APPROXIMATE_FROM,
        ExactIndex,
        FaissIVFIndex,
        IVFIndex,
        choose_kind,
        import_faiss,
        recall,
    )
    from streamrec.errors import UserError

    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        probes = None if args.nprobe is None else [int(p) for p in args.nprobe.split(",")]
        hnsw = None if args.hnsw is None else [int(v) for v in args.hnsw.split(",")]
    except ValueError:
        raise UserError(f"--sizes, --nprobe and --hnsw must be comma-separated integers, got {args.sizes!r}, "
                        f"{args.nprobe!r}, {args.hnsw!r}") from None
    if hnsw is not None and (len(hnsw) != 2 or min(hnsw) < 1):
        raise UserError(f"--hnsw is M,EF with both >= 1, got {args.hnsw!r}")
    counts = (args.k, args.dim, args.queries, args.rounds, args.batch, args.batches, args.clusters)
    if min(sizes) < args.k or min(counts) < 1:
        raise UserError("--k, --dim, --queries, --rounds, --batch, --batches and --clusters must be >= 1, "
                        "and sizes >= k")
    faiss = import_faiss()
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim))
    print(f"synthetic vectors: {args.dim} dims, {args.clusters}-component Gaussian mixture (spread {args.spread}); "
          f"k={args.k}; latency over {args.queries} single queries x {args.rounds} rounds (range over rounds), "
          f"throughput in batches of {args.batch}; OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, faiss OpenMP threads {faiss.omp_get_max_threads()}; "
          f"auto: exact below {AUTO_APPROXIMATE_FROM:,} items, faiss_ivf from there")
    header = (f"{'items':>7} {'index':<30} {'build s':>8} {'p50 µs':>13} {'p99 µs':>13} {'batch q/s':>10} "
              f"{'recall@' + str(args.k):>10}  auto")
    print(header)
    print("-" * len(header))
    for n in sizes:
        items = _vectors(rng, centres, n, args.spread)
        queries = _vectors(rng, centres, max(args.queries, args.batch * args.batches), args.spread)
        tuning = _vectors(rng, centres, 512, args.spread)
        ids = [f"i{i}" for i in range(n)]
        _progress(f"[{n:,} items] building: exact, faiss flat")
        exact, exact_s = _timed(ExactIndex, ids, items)
        flat = faiss.IndexFlatIP(args.dim)
        _, flat_s = _timed(flat.add, items)
        built = {"exact": (exact, exact_s), "faiss flat": (_Bare(flat), flat_s)}
        _progress(f"[{n:,} items] building: faiss ivf (tuning nprobe for recall >= 0.95)")
        tuned, tuned_s = _timed(FaissIVFIndex.build, ids, items, args.n_lists, queries=tuning, k=args.k,
                                  seed=args.seed)
        n_lists = tuned.index.nlist
        auto_name = f"faiss_ivf {n_lists} lists/{tuned.nprobe} probe"
        _progress(f"[{n:,} items] building: ivf ({n_lists} lists)")
        ivf, ivf_s = _timed(IVFIndex.build, ids, items, n_lists, seed=args.seed)
        for nprobe in sorted({min(p, n_lists) for p in probes or (math.ceil(n_lists / d) for d in (16, 8, 4))}
                             | {tuned.nprobe}):
            # Same lists, another probe count: no rebuild needed.
            built[f"ivf {n_lists} lists/{nprobe} probe"] = (
                IVFIndex(ids, items, ivf.centroids, ivf.assignment, nprobe), ivf_s)
            built[f"faiss_ivf {n_lists} lists/{nprobe} probe"] = (FaissIVFIndex(ids, tuned.index, nprobe), tuned_s)
        if hnsw is not None:
            _progress(f"[{n:,} items] building: faiss hnsw M={hnsw[0]}")
            graph = faiss.IndexHNSWFlat(args.dim, hnsw[0], faiss.METRIC_INNER_PRODUCT)
            _, hnsw_s = _timed(graph.add, items)
            graph.hnsw.efSearch = hnsw[1]
            built[f"faiss hnsw M{hnsw[0]}/ef{hnsw[1]}"] = (_Bare(graph), hnsw_s)
        timed = queries[: args.queries]
        latencies: dict[str, list[tuple[float, float]]] = {name: [] for name in built}
        for r in range(args.rounds):
            _progress(f"[{n:,} items] timing round {r + 1}/{args.rounds}")
            for name in rng.permutation(list(built)):
                index = built[name][0]
                index.search(timed[:1], args.k)  # warm-up: first-call allocations are not query cost
                latencies[name].append(_latency_us(index, timed, args.k))
        truth, _ = exact.search(queries, args.k)
        auto = "exact" if choose_kind(n) == "exact" else auto_name
        for name, (index, seconds) in built.items():
            p50, p99 = np.array(latencies[name]).T
            qps = _throughput(index, queries[: args.batch * args.batches], args.k, args.batch)
            found, _ = index.search(queries, args.k)
            print(f"{n:>7} {name:<30} {seconds:>8.2f} {p50.min():>6.0f}-{p50.max():<6.0f} "
                  f"{p99.min():>6.0f}-{p99.max():<6.0f} {qps:>10,.0f} {recall(found, truth):>10.3f}"
                  f"  {'<- auto' if name == auto else ''}", flush=True)
    return 0
