"""Implicit ALS through the ``implicit`` library: learns co-occurrence, is deterministic by seed whatever the thread
count, and narrows to candidates like the other baselines."""
import warnings

import numpy as np
import pandas as pd
import pytest

from models.baselines import ALS, Recommender
from streamrec.errors import UserError


def _blocks(n_groups=4, users_per_group=30, items_per_group=25, per_user=12, seed=0):
    """Users of group g watch items of block g only; per user, 2 of their block's items are held out."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for g in range(n_groups):
        for n in range(users_per_group):
            u = g * users_per_group + n
            items = g * items_per_group + rng.choice(items_per_group, per_user, replace=False)
            train += [(u, i) for i in items[:-2]]
            held += [(u, i) for i in items[-2:]]
    def frame(rows):
        return pd.DataFrame(rows, columns=["user_idx", "item_idx"]).assign(ts_ms=0)

    return frame(train), frame(held), n_groups * users_per_group, n_groups * items_per_group


def test_als_is_a_recommender():
    assert isinstance(ALS(), Recommender)


def test_held_out_co_occurring_items_rank_far_above_random():
    train, held, n_users, n_items = _blocks()
    model = ALS(factors=8, iterations=10, progress=False).fit(train, n_users, n_items)
    scores = model.score(np.arange(n_users))
    scores[train["user_idx"], train["item_idx"]] = -np.inf
    ranks = (scores[held["user_idx"]] > scores[held["user_idx"], held["item_idx"]][:, None]).sum(axis=1)
    # a random ranking puts a held-out item at 45 on average among the 90 unseen ones; its block has 15 unseen
    assert np.mean(ranks < 15) > 0.9


def test_same_seed_same_factors_any_thread_count_other_seed_differs():
    train, _, n_users, n_items = _blocks(seed=1)
    a = ALS(factors=8, iterations=3, seed=5, num_threads=1, progress=False).fit(train, n_users, n_items)
    b = ALS(factors=8, iterations=3, seed=5, num_threads=2, progress=False).fit(train, n_users, n_items)
    c = ALS(factors=8, iterations=3, seed=6, progress=False).fit(train, n_users, n_items)
    assert np.array_equal(a.user_f, b.user_f) and np.array_equal(a.item_f, b.item_f)
    assert not np.array_equal(a.item_f, c.item_f)


def test_no_blas_thread_warning(monkeypatch):
    import implicit.utils

    monkeypatch.setattr(implicit.utils, "_checked_blas_config", False)  # implicit checks once per process
    train, _, n_users, n_items = _blocks()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ALS(factors=4, iterations=1, progress=False).fit(train, n_users, n_items)


def test_candidates_shapes_and_errors():
    train, _, n_users, n_items = _blocks()
    model = ALS(factors=4, iterations=2, progress=False).fit(train, n_users, n_items)
    users = np.arange(5)
    cands = np.random.default_rng(0).integers(0, n_items, (5, 7))
    full = model.score(users)
    assert full.shape == (5, n_items) and full.dtype == np.float32
    assert model.score(users, cands) == pytest.approx(np.take_along_axis(full, cands, axis=1), abs=1e-5)
    with pytest.raises(ValueError, match="item_idx"):
        model.score(users, cands[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        ALS().score(users)
    for bad in ({"factors": 0}, {"iterations": 0}, {"regularization": -1}, {"alpha": -1}, {"num_threads": -1}):
        with pytest.raises(UserError):
            ALS(**bad)
