"""Session item-KNN: scores from the user's latest items only, recency-weighted, in train row order."""
import numpy as np
import pandas as pd
import pytest

from models.baselines import ItemKNN, Recommender, SessionKNN
from streamrec.errors import UserError


def _cycle_log(n_users=60, n_items=30, length=12, seed=0) -> pd.DataFrame:
    """Each user walks the item cycle 0 -> 1 -> ... -> n_items - 1 -> 0 from a random start: the next item after
    the latest one is always latest + 1."""
    rng = np.random.default_rng(seed)
    rows = [(u, (start + t) % n_items, t) for u, start in enumerate(rng.integers(0, n_items, n_users))
            for t in range(length)]
    return pd.DataFrame(rows, columns=["user_idx", "item_idx", "ts_ms"])


def test_session_knn_is_a_recommender():
    assert isinstance(SessionKNN(), Recommender)


def test_the_next_item_on_a_cycle_ranks_first():
    train = _cycle_log()
    model = SessionKNN(last_n=3).fit(train, 60, 30)
    users = np.arange(60)
    scores = model.score(users)
    latest = train.groupby("user_idx")["item_idx"].last().to_numpy()
    seen = np.zeros((60, 30), bool)
    seen[train["user_idx"], train["item_idx"]] = True
    scores[seen] = -np.inf
    # chance: 1 / 18 unseen items
    assert (scores.argmax(axis=1) == (latest + 1) % 30).mean() > 0.9


def test_only_the_latest_items_count_and_recency_weights_them():
    # items 0, 1 co-occur (users 1, 2); items 2, 3 co-occur (users 3, 4). User 0: 0 then 2 (row order, same time).
    train = pd.DataFrame({"user_idx": [0, 0, 1, 1, 2, 2, 3, 3, 4, 4], "item_idx": [0, 2, 0, 1, 0, 1, 2, 3, 2, 3],
                          "ts_ms": [5, 5, 1, 2, 1, 2, 1, 2, 1, 2]})
    last1 = SessionKNN(last_n=1).fit(train, 5, 4).score(np.array([0]))[0]
    assert last1[1] == 0.0 and last1[3] > 0  # only item 2 (the later row) speaks
    both = SessionKNN(last_n=2).fit(train, 5, 4).score(np.array([0]))[0]
    assert both[3] > both[1] > 0  # item 2 weighs 1, item 0 weighs 1/2; sim(0, 1) = sim(2, 3) = 2 / sqrt(6)
    assert both[3] == pytest.approx(2 * both[1])
    flat = SessionKNN(last_n=2, recency=False).fit(train, 5, 4).score(np.array([0]))[0]
    assert flat[1] == pytest.approx(flat[3])


def test_all_history_without_recency_is_item_knn_with_every_neighbour():
    train = _cycle_log(n_users=20, n_items=12, length=5, seed=3)
    users = np.arange(20)
    session = SessionKNN(last_n=100, recency=False).fit(train, 20, 12).score(users)
    assert session == pytest.approx(ItemKNN(neighbours=None).fit(train, 20, 12).score(users), abs=1e-5)


def test_candidates_shapes_and_errors():
    train = _cycle_log()
    model = SessionKNN().fit(train, 60, 30)
    users, cands = np.arange(4), np.tile(np.arange(5), (4, 1))
    full = model.score(users)
    assert full.shape == (4, 30)
    assert model.score(users, cands) == pytest.approx(full[:, :5])
    with pytest.raises(ValueError, match="item_idx"):
        model.score(users, cands[0])
    for bad in (0, -1, 2.5, None, True):
        with pytest.raises(UserError):
            SessionKNN(last_n=bad)
    with pytest.raises(RuntimeError, match="not fitted"):
        SessionKNN().score(users)
    with pytest.raises(UserError, match="grouped by user"):
        SessionKNN().fit(train.iloc[::-1], 60, 30)
