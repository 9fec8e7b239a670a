"""The faiss IVF index behind the common contract (best first, exclusions, -1 padding, save/load), its nprobe tuning,
and the ``auto`` choice by catalog size."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.baselines import BPR
from models.retrieval import CandidateGenerator
from models.retrieval import index as index_module
from models.retrieval.index import (
    AUTO_APPROXIMATE_FROM,
    TARGET_RECALL,
    ExactIndex,
    FaissIVFIndex,
    build_index,
    choose_kind,
    exact_search,
    load_index,
    recall,
)
from streamrec.errors import UserError
from tests.unit.test_retrieval import TV_EVENING, _catalog, _clustered, _ids, _live, _log


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return _clustered(rng, 3000), _clustered(rng, 300)


@pytest.fixture(scope="module")
def tuned(data):
    vectors, queries = data
    return FaissIVFIndex.build(_ids(3000), vectors, n_lists=30, queries=queries[:150], k=50)


def test_the_faiss_ivf_probing_every_list_is_exact_and_best_first(data, tuned):
    vectors, queries = data
    every = FaissIVFIndex(_ids(3000), tuned.index, nprobe=30)
    codes, scores = every.search(queries, 50)
    truth, truth_scores = ExactIndex(_ids(3000), vectors).search(queries, 50)
    assert recall(codes, truth) == 1.0
    assert scores == pytest.approx(truth_scores, rel=1e-5, abs=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_the_tuned_nprobe_is_the_fewest_lists_reaching_the_target_recall(data, tuned):
    vectors, queries = data
    truth = exact_search(vectors, queries[:150], 50)[0]
    assert 1 < tuned.nprobe < 30
    assert recall(tuned.search(queries[:150], 50)[0], truth) >= TARGET_RECALL
    fewer = FaissIVFIndex(_ids(3000), tuned.index, tuned.nprobe - 1)
    assert recall(fewer.search(queries[:150], 50)[0], truth) < TARGET_RECALL
    # Held-out queries from the same distribution land near the target too.
    held_out = exact_search(vectors, queries[150:], 50)[0]
    assert recall(tuned.search(queries[150:], 50)[0], held_out) >= TARGET_RECALL - 0.03


def test_the_faiss_ivf_honours_exclusions_and_pads_when_items_run_out():
    rng = np.random.default_rng(8)
    vectors, queries = rng.standard_normal((40, 6)), rng.standard_normal((4, 6))
    index = FaissIVFIndex.build(_ids(40), vectors, n_lists=2, nprobe=2)  # every list: exact
    best = index.search(queries, 40)[0]
    assert (best >= 0).all() and all(sorted(row) == list(range(40)) for row in best)
    exclude = [best[0, :3], np.array([], np.int64), best[2, ::2], best[3, :35]]
    codes, scores = index.search(queries, 10, exclude)
    assert np.array_equal(codes[0], best[0, 3:13]) and np.array_equal(codes[1], best[1, :10])
    assert np.array_equal(codes[2], best[2, 1::2][:10])
    assert np.array_equal(codes[3, :5], best[3, 35:])
    assert (codes[3, 5:] == -1).all() and np.isneginf(scores[3, 5:]).all()
    # More asked for than there are items: padded likewise.
    codes, scores = index.search(queries[:1], 50)
    assert (codes[0, 40:] == -1).all() and np.isneginf(scores[0, 40:]).all()


def test_equal_scores_come_back_in_code_order():
    vectors = np.vstack([np.ones((6, 4)), np.zeros((30, 4))]).astype(np.float32)
    index = FaissIVFIndex.build(_ids(36), vectors, n_lists=3, nprobe=3)
    codes, scores = index.search(np.ones((1, 4)), 6)
    assert codes[0].tolist() == list(range(6)) and (scores == 4).all()


def test_faiss_ivf_save_load_round_trip(tmp_path, data, tuned):
    _, queries = data
    tuned.save(tmp_path)
    loaded = load_index(tmp_path)
    assert type(loaded) is FaissIVFIndex and loaded.nprobe == tuned.nprobe and loaded.ids.tolist() == _ids(3000)
    exclude = [np.arange(q, 3000, 7) for q in range(20)]
    for a, b in zip(tuned.search(queries[:20], 30, exclude), loaded.search(queries[:20], 30, exclude)):
        assert np.array_equal(a, b)


def test_auto_is_exact_below_the_threshold_and_the_tuned_faiss_ivf_from_it(data, monkeypatch):
    assert choose_kind(AUTO_APPROXIMATE_FROM - 1) == "exact" and choose_kind(AUTO_APPROXIMATE_FROM) == "faiss_ivf"
    vectors, queries = data
    monkeypatch.setattr(index_module, "AUTO_APPROXIMATE_FROM", 3001)
    assert type(build_index("auto", _ids(3000), vectors, queries=queries)) is ExactIndex
    monkeypatch.setattr(index_module, "AUTO_APPROXIMATE_FROM", 3000)
    built = build_index("auto", _ids(3000), vectors, queries=queries, k=50)
    assert type(built) is FaissIVFIndex and built.nprobe < built.index.nlist


def test_fit_defaults_to_auto_and_serves_the_faiss_ivf_for_a_large_catalog(tmp_path, monkeypatch):
    bpr = BPR(factors=8, epochs=10, progress=False)
    assert type(CandidateGenerator.fit(_log(), _catalog(), bpr=bpr).index) is ExactIndex
    monkeypatch.setattr(index_module, "AUTO_APPROXIMATE_FROM", 10)  # the log's 18 MF items count as large
    fitted = CandidateGenerator.fit(_log(), _catalog(), bpr=BPR(factors=8, epochs=10, progress=False), index_k=5)
    assert type(fitted.index) is FaissIVFIndex
    loaded = CandidateGenerator.load(fitted.save(tmp_path / "retrieval"))
    assert type(loaded.index) is FaissIVFIndex and loaded.index.nprobe == fitted.index.nprobe
    found = loaded.candidates("action-u1", _live(comedy=1.0), TV_EVENING, 10, {"action-2"})
    assert found == fitted.candidates("action-u1", _live(comedy=1.0), TV_EVENING, 10, {"action-2"})
    assert found[0].source == "embedding" and "action-2" not in {c.item_id for c in found}


def test_bad_faiss_ivf_parameters_are_clear_errors(data, tuned):
    vectors, _ = data
    with pytest.raises(UserError, match="index must be one of"):
        build_index("hnsw", _ids(3000), vectors)
    with pytest.raises(UserError, match="needs nprobe, or queries"):
        FaissIVFIndex.build(_ids(3000), vectors, n_lists=30)
    with pytest.raises(UserError, match="nprobe must be in 1..30"):
        FaissIVFIndex(_ids(3000), tuned.index, 31)
    with pytest.raises(UserError, match="one vector per item id"):
        FaissIVFIndex(_ids(2999), tuned.index, 3)
    with pytest.raises(UserError, match="tuning queries"):
        FaissIVFIndex.build(_ids(3000), vectors, n_lists=30, queries=np.ones((3, 5)))


def test_faiss_runs_one_openmp_thread_in_worker_threads_by_default():
    # What the API's request threads get: faiss.omp_set_num_threads in the main thread would not reach them.
    code = ("from concurrent.futures import ThreadPoolExecutor\n"
            "from models.retrieval.index import import_faiss\n"
            "print(ThreadPoolExecutor(1).submit(import_faiss().omp_get_max_threads).result())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[2], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "1"
