"""``streamrec bench retrieval``: top-K query latency of the exact and the IVF index as the catalog grows, and the
IVF's recall against exact.

Vectors are synthetic, not trained: items and queries drawn from one Gaussian mixture (``--clusters`` components,
unit-variance centres, noise of scale ``--spread``) in ``--dim`` dimensions, the size of BPR's 64 factors plus the
bias. Speed does not depend on the values; the IVF's recall does, and clustered vectors are kinder to it than
isotropic noise and harder than well-separated clusters, so read the recall as indicative. Latency is one query per
call (p50/p95 over ``--queries`` calls); throughput is queries per second in calls of ``--batch`` queries.

Single-query latency depends heavily on BLAS threads: on a busy machine a multi-threaded OpenBLAS call waits for
its threads (about 8 ms a call on 2 shared cores, measured), so serving should run with ``OPENBLAS_NUM_THREADS=1``;
the header shows the setting in force.
"""
from __future__ import annotations

import argparse
import math
import os
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1000,10000,100000", help="catalog sizes (default: 1000,10000,100000)")
    parser.add_argument("--dim", type=int, default=65, help="vector dimension (default: 65 = 64 factors + bias)")
    parser.add_argument("--k", type=int, default=100, help="candidates per query (default: 100)")
    parser.add_argument("--queries", type=int, default=300, help="single-query calls timed (default: 300)")
    parser.add_argument("--batch", type=int, default=256, help="queries per batched call (default: 256)")
    parser.add_argument("--batches", type=int, default=4, help="batched calls timed (default: 4)")
    parser.add_argument("--clusters", type=int, default=50, help="mixture components of the vectors (default: 50)")
    parser.add_argument("--spread", type=float, default=1.5, help="noise scale around a component (default: 1.5)")
    parser.add_argument("--n-lists", type=int, default=None, help="IVF lists (default: about sqrt(items))")
    parser.add_argument("--nprobe", default=None,
                        help="IVF lists probed, comma-separated (default: lists/16, lists/8, lists/4)")
    parser.add_argument("--seed", type=int, default=0)


def _vectors(rng, centres, n: int, spread: float):
    import numpy as np

    picks = rng.integers(len(centres), size=n)
    return (centres[picks] + spread * rng.standard_normal((n, centres.shape[1]))).astype(np.float32)


def _latency_ms(index, queries, k: int) -> tuple[float, float]:
    import numpy as np

    index.search(queries[:1], k)  # warm-up: first-call allocations are not query cost
    times = []
    for q in queries:
        started = time.perf_counter()
        index.search(q[None], k)
        times.append(time.perf_counter() - started)
    p50, p95 = np.percentile(times, [50, 95]) * 1000
    return float(p50), float(p95)


def _throughput(index, queries, k: int, batch: int) -> float:
    started = time.perf_counter()
    for lo in range(0, len(queries), batch):
        index.search(queries[lo : lo + batch], k)
    return len(queries) / (time.perf_counter() - started)


def run(args: argparse.Namespace, settings) -> int:
    import numpy as np

    from models.retrieval.index import ExactIndex, IVFIndex
    from streamrec.errors import UserError

    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        probes = None if args.nprobe is None else [int(p) for p in args.nprobe.split(",")]
    except ValueError:
        raise UserError(f"--sizes and --nprobe must be comma-separated integers, got {args.sizes!r}, "
                        f"{args.nprobe!r}") from None
    if min(sizes) < args.k or min(args.k, args.dim, args.queries, args.batch, args.batches, args.clusters) < 1:
        raise UserError("--k, --dim, --queries, --batch, --batches and --clusters must be >= 1, and sizes >= k")
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim))
    print(f"synthetic vectors: {args.dim} dims, {args.clusters}-component Gaussian mixture (spread {args.spread}); "
          f"k={args.k}; latency over {args.queries} single queries, throughput in batches of {args.batch}; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    header = (f"{'items':>7} {'index':<22} {'build s':>8} {'p50 ms':>8} {'p95 ms':>8} {'batch q/s':>10} "
              f"{'recall@' + str(args.k):>10}")
    print(header)
    print("-" * len(header))
    for n in sizes:
        items = _vectors(rng, centres, n, args.spread)
        queries = _vectors(rng, centres, max(args.queries, args.batch * args.batches), args.spread)
        ids = [f"i{i}" for i in range(n)]
        started = time.perf_counter()
        exact = ExactIndex(ids, items)
        built = {"exact": (exact, time.perf_counter() - started)}
        started = time.perf_counter()
        ivf = IVFIndex.build(ids, items, args.n_lists, seed=args.seed)
        build_s = time.perf_counter() - started
        n_lists = len(ivf.centroids)
        for nprobe in sorted(set(probes or (math.ceil(n_lists / d) for d in (16, 8, 4)))):
            # Same lists, another probe count: no rebuild needed.
            probed = IVFIndex(ids, items, ivf.centroids, ivf.assignment, min(nprobe, n_lists))
            built[f"ivf {n_lists} lists/{probed.nprobe} probe"] = (probed, build_s)
        truth, _ = exact.search(queries, args.k)
        for name, (index, seconds) in built.items():
            p50, p95 = _latency_ms(index, queries[: args.queries], args.k)
            qps = _throughput(index, queries[: args.batch * args.batches], args.k, args.batch)
            found, _ = index.search(queries, args.k)
            recall = np.mean([len(np.intersect1d(f, t)) / args.k for f, t in zip(found, truth)])
            print(f"{n:>7} {name:<22} {seconds:>8.2f} {p50:>8.2f} {p95:>8.2f} {qps:>10,.0f} {recall:>10.3f}")
    return 0
