"""Baselines: popularity ranks by count, item-KNN keeps top-k cosine neighbours, and the personal models beat
popularity where there is structure to learn; all of it the same for the same seed."""
import numpy as np
import pandas as pd
import pytest

from models.baselines import BPR, ItemKNN, MostPopular, Recommender
from models.data import make_split
from models.protocols import run


def _train(pairs) -> pd.DataFrame:
    users, items = zip(*pairs)
    return pd.DataFrame({"user_idx": users, "item_idx": items})


def _clustered_events(users_per_cluster=60, items_per_cluster=100, per_user=25, noise=0.1, seed=0) -> pd.DataFrame:
    """Two user clusters that watch disjoint halves of the catalog (a Zipf-like taste within the half), plus
    ``noise`` of watches anywhere, at random times over a week. Globally the two halves are equally popular, so
    popularity cannot tell a user's half; a model of the user can."""
    rng = np.random.default_rng(seed)
    taste = 1.0 / np.arange(1, items_per_cluster + 1) ** 0.8
    taste /= taste.sum()
    rows = []
    for c in range(2):
        for n in range(users_per_cluster):
            own = c * items_per_cluster + rng.choice(items_per_cluster, per_user, replace=False, p=taste)
            anywhere = rng.choice(2 * items_per_cluster, per_user, replace=False)
            items = dict.fromkeys(np.where(rng.random(per_user) < noise, anywhere, own).tolist())
            for item, ts in zip(items, np.sort(rng.integers(0, 7 * 86_400_000, len(items)))):
                rows.append((f"u{c}-{n}", f"i{item}", int(ts), "watch", 600.0, True))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts_ms", "event_type", "watch_seconds", "label"])


@pytest.fixture(scope="module")
def events():
    return _clustered_events()


def test_every_baseline_is_a_recommender():
    for model in (MostPopular(), ItemKNN(), BPR()):
        assert isinstance(model, Recommender)


def test_popularity_ranks_the_most_watched_first():
    # item 2: 3 users, item 0: 2, item 1: 1, item 3: none
    model = MostPopular().fit(_train([(0, 2), (1, 2), (2, 2), (0, 0), (1, 0), (2, 1)]), n_users=3, n_items=4)
    full = model.score(np.array([0, 1]))
    assert full.shape == (2, 4)
    assert np.argsort(-full[0], kind="stable").tolist() == [2, 0, 1, 3]
    assert model.score(np.array([2]), np.array([[3, 0]])).tolist() == [[0.0, 2.0]]


def test_item_knn_counts_only_each_candidates_top_neighbours():
    # items 0: users {0, 3}; 1: {1, 2}; 2: {0, 1, 2}.
    # cos(0, 2) = 1 / sqrt(2 * 3) = 0.408; cos(1, 2) = 2 / sqrt(6) = 0.816; cos(0, 1) = 0
    train = _train([(0, 0), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2), (3, 0)])
    user_3 = np.array([3])  # has only item 0
    wide = ItemKNN(neighbours=2).fit(train, 4, 3)
    assert wide.score(user_3)[0] == pytest.approx([0.0, 0.0, 1 / np.sqrt(6)])
    # with one neighbour, item 2 listens only to item 1, which user 3 lacks
    narrow = ItemKNN(neighbours=1).fit(train, 4, 3)
    assert narrow.score(user_3)[0] == pytest.approx([0.0, 0.0, 0.0])
    # user 1 has items 1 and 2: item 0 hears item 2, items 1 and 2 hear each other
    assert narrow.score(np.array([1]))[0] == pytest.approx([1 / np.sqrt(6), 2 / np.sqrt(6), 2 / np.sqrt(6)])


@pytest.mark.parametrize("model", [ItemKNN(), BPR(progress=False)], ids=["item-knn", "bpr"])
def test_personal_models_beat_popularity_on_clustered_users(events, model):
    loo, full = make_split(events, "loo", seed=0), make_split(events, "time_user")
    pop_loo, pop_full = run(MostPopular(), loo), run(MostPopular(), full)
    mine_loo, mine_full = run(model, loo), run(model, full)
    # popularity is about 0.08 / 0.09 here, each personal model above 0.2
    assert mine_loo["ndcg@10"] > 2 * pop_loo["ndcg@10"]
    assert mine_loo["hr@10"] > 1.5 * pop_loo["hr@10"]
    assert mine_full["ndcg@10"] > 2 * pop_full["ndcg@10"]
    assert mine_full["recall@10"] > 1.5 * pop_full["recall@10"]


def test_bpr_learns_and_is_deterministic_by_seed(events):
    split = make_split(events, "loo", seed=0)
    a, b = BPR(epochs=10, seed=1, progress=False), BPR(epochs=10, seed=1, progress=False)
    ra, rb = run(a, split), run(b, split)
    assert a.losses[-1] < 0.8 * a.losses[0]
    assert np.array_equal(a.item_f, b.item_f)
    assert ra["ndcg@10"] == rb["ndcg@10"]
    c = BPR(epochs=10, seed=2, progress=False)
    run(c, split)
    assert not np.array_equal(a.item_f, c.item_f)


def test_candidate_scores_agree_with_full_scores(events):
    split = make_split(events, "loo", seed=0)
    users, cands = split.test_users[:5], split.candidates[:5]
    for model in (MostPopular(), ItemKNN(), BPR(epochs=2, progress=False)):
        model.fit(split.train, split.n_users, split.n_items)
        full = model.score(users)
        assert full.shape == (5, split.n_items)
        assert model.score(users, cands) == pytest.approx(np.take_along_axis(full, cands, axis=1), abs=1e-5)
        with pytest.raises(ValueError, match="item_idx"):
            model.score(users, cands[0])


def test_unfitted_model_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        BPR().score(np.array([0]))
