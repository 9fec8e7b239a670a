"""Item-KNN on scipy.sparse gives the numbers of the former dense implementation, and ``neighbours=None`` counts
every neighbour."""
import numpy as np
import pandas as pd
import pytest

from models.baselines import ItemKNN
from streamrec.errors import UserError


def _dense_reference(train: pd.DataFrame, n_users: int, n_items: int, neighbours: int):
    """The dense numpy item-KNN this module replaced, kept as the reference: (sim, score function)."""
    x = np.zeros((n_users, n_items), np.float32)
    x[train["user_idx"], train["item_idx"]] = 1.0
    norms = np.sqrt(x.sum(axis=0))
    norms[norms == 0] = 1.0
    sim = np.zeros((n_items, n_items), dtype=np.float32)
    keep = min(neighbours, n_items - 1)
    block_size = 1024
    for lo in range(0, n_items, block_size):
        cols = slice(lo, min(lo + block_size, n_items))
        block = (x.T @ x[:, cols]) / np.outer(norms, norms[cols])
        block[np.arange(lo, cols.stop), np.arange(cols.stop - lo)] = 0.0
        if keep > 0:
            top = np.argpartition(-block, keep - 1, axis=0)[:keep]
            np.put_along_axis(sim[:, cols], top, np.take_along_axis(block, top, axis=0), axis=0)
    return sim, lambda users: x[users] @ sim


def _random_train(n_users=300, n_items=1500, per_user=40, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1)
    pop /= pop.sum()
    rows = [(u, i) for u in range(n_users) for i in rng.choice(n_items, per_user, replace=False, p=pop)]
    return pd.DataFrame(rows, columns=["user_idx", "item_idx"]).assign(ts_ms=0)


@pytest.mark.parametrize("neighbours", [1, 5, 100, 1498, 1499, 5000])
def test_same_numbers_as_the_dense_reference(neighbours):
    # 1500 items: two similarity blocks; an item nobody has (the tail) keeps zero similarities
    train = _random_train()
    ref_sim, ref_score = _dense_reference(train, 300, 1500, neighbours)
    model = ItemKNN(neighbours=neighbours).fit(train, 300, 1500)
    assert np.array_equal(model.sim, ref_sim)
    users = np.arange(0, 300, 7)
    assert np.array_equal(model.score(users), ref_score(users))


def test_none_counts_every_neighbour():
    train = _random_train(n_users=50, n_items=80, per_user=10, seed=1)
    every = ItemKNN(neighbours=None).fit(train, 50, 80)
    assert np.array_equal(every.sim, ItemKNN(neighbours=79).fit(train, 50, 80).sim)
    assert (np.count_nonzero(every.sim, axis=0) > 10).any()
    assert np.all(np.diag(every.sim) == 0)
    assert every.sim == pytest.approx(every.sim.T)


def test_bad_neighbours_are_refused():
    for bad in (0, -3, 1.5, "10", True):
        with pytest.raises(UserError, match="neighbours"):
            ItemKNN(neighbours=bad)
