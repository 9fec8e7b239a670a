"""SASRec: learns a planted next-item rule from train row order, scores each user's latest items, is deterministic
by seed."""
import numpy as np
import pandas as pd
import pytest

from models.baselines import Recommender, SASRec
from models.baselines.sequential import _training_windows
from streamrec.errors import UserError

N_USERS, N_ITEMS = 80, 20


def _cycle_log(seed=0, length=10) -> pd.DataFrame:
    """Users walk the cycle 0 -> 1 -> ... -> 19 -> 0 from a random start, all at the same time stamp: only the row
    order tells the sequence. Item codes run against it, so a model that sorted by item would learn nothing."""
    rng = np.random.default_rng(seed)
    rows = [(u, (start + t) % N_ITEMS) for u, start in enumerate(rng.integers(0, N_ITEMS, N_USERS))
            for t in range(length)]
    return pd.DataFrame(rows, columns=["user_idx", "item_idx"]).assign(ts_ms=0)


def _small(**kw):
    return SASRec(**{"max_len": 8, "dim": 16, "blocks": 1, "epochs": 8, "batch_size": 16, "lr": 1e-2, "dropout": 0.1,
                            "negatives": 8, "progress": False, **kw})


@pytest.fixture(scope="module")
def fitted():
    train = _cycle_log()
    return train, _small().fit(train, N_USERS, N_ITEMS)


def test_sasrec_is_a_recommender():
    assert isinstance(SASRec(), Recommender)


def test_windows_cover_every_next_item_once():
    items = np.array([1, 2, 3, 4, 5, 6, 7, 8])
    x, y = _training_windows(items, np.array([0, 5, 7]), np.array([5, 7, 8]), 3)
    assert x.tolist() == [[2, 3, 4], [0, 0, 1], [0, 0, 6]]
    assert y.tolist() == [[3, 4, 5], [0, 0, 2], [0, 0, 7]]


def test_the_next_item_ranks_first(fitted):
    train, model = fitted
    assert model.losses[-1] < 0.5 * model.losses[0]
    latest = train.groupby("user_idx")["item_idx"].last().to_numpy()
    scores = model.score(np.arange(N_USERS))
    assert scores.shape == (N_USERS, N_ITEMS)
    assert (scores.argmax(axis=1) == (latest + 1) % N_ITEMS).mean() > 0.9  # chance: 1 / 20


def test_same_seed_same_scores(fitted):
    train, model = fitted
    users = np.arange(N_USERS)
    again = _small().fit(train, N_USERS, N_ITEMS)
    assert np.array_equal(model.score(users), again.score(users))
    other = _small(seed=1).fit(train, N_USERS, N_ITEMS)
    assert not np.array_equal(model.score(users), other.score(users))


def test_candidates_shapes_and_errors(fitted):
    _, model = fitted
    users = np.array([3, 0, 3])
    cands = np.tile(np.arange(6), (3, 1))
    full = model.score(users)
    assert model.score(users, cands) == pytest.approx(full[:, :6], abs=1e-5)
    assert model.score(np.array([], int)).shape == (0, N_ITEMS)
    with pytest.raises(ValueError, match="item_idx"):
        model.score(users, cands[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        SASRec().score(users)
    for bad in ({"max_len": 0}, {"epochs": 0}, {"dim": 10, "heads": 3}, {"dropout": 1.0}, {"lr": 0},
                {"negatives": 0}, {"batch_size": 1.5}):
        with pytest.raises(UserError):
            SASRec(**bad)
    with pytest.raises(UserError, match="grouped by user"):
        SASRec().fit(_cycle_log().iloc[::-1], N_USERS, N_ITEMS)
