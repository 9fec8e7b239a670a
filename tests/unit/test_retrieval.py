"""Candidate retrieval: exact and IVF top-K (the faiss IVF and ``auto``: test_index.py), the content and
contextual-popular sources, the mixer, persistence, and recall on a time split."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.user_state import UserState, feature_columns
from features.user_vector import ITEM_FACTORS_FILE, FoldIn, ItemFactors
from models.baselines import BPR
from models.data import make_split
from models.retrieval import (
    CandidateGenerator,
    ExactIndex,
    IVFIndex,
    MixerConfig,
    load_event_log,
    load_index,
    recall_at_k_report,
    train_events,
)
from models.retrieval import index as index_module
from models.retrieval.index import build_index, top_k
from models.text_embedding import DIM
from streamrec.catalog import load_items
from streamrec.config import FeatureConfig
from streamrec.errors import UserError
from streams.generator import generate_world

LATE_NIGHT_MS = 1_767_654_000_000  # Monday 2026-01-05 23:00 UTC
EVENING_MS = 1_767_639_600_000  # Monday 2026-01-05 19:00 UTC
PHONE_NIGHT = {"daypart": "late_night", "device": "phone", "is_weekend": False}
TV_EVENING = {"daypart": "evening", "device": "tv", "is_weekend": False}


def _ids(n: int) -> list[str]:
    return [f"i{i:05d}" for i in range(n)]


def _clustered(rng, n: int, dim: int = 16, clusters: int = 40) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim))
    return (centres[rng.integers(clusters, size=n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)


# ---------------------------------------------------------------- indexes


def test_exact_index_returns_the_true_top_k_in_order_across_score_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    vectors, queries = rng.standard_normal((500, 8)), rng.standard_normal((40, 8))
    index = ExactIndex(_ids(500), vectors)
    full = queries.astype(np.float32) @ index.vectors.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :10]
    codes, scores = index.search(queries, 10)
    assert np.array_equal(codes, expected)
    assert scores == pytest.approx(np.take_along_axis(full, expected, axis=1))
    monkeypatch.setattr(index_module, "_SCORE_BUDGET", 1500)  # 3 queries per block
    assert np.array_equal(index.search(queries, 10)[0], expected)


def test_exact_index_honours_exclusions_and_pads_when_items_run_out():
    rng = np.random.default_rng(1)
    index = ExactIndex(_ids(30), rng.standard_normal((30, 4)))
    queries = rng.standard_normal((5, 4))
    best = index.search(queries, 30)[0]
    exclude = [row[:3] for row in best]  # each query's own top three
    codes, scores = index.search(queries, 5, exclude)
    assert np.array_equal(codes, best[:, 3:8])
    excluded_20 = [row[:20] for row in best]
    codes, scores = index.search(queries, 15, excluded_20)
    assert np.array_equal(codes[:, :10], best[:, 20:])
    assert (codes[:, 10:] == -1).all() and np.isneginf(scores[:, 10:]).all()


def test_top_k_breaks_ties_by_lower_code_and_skips_banned():
    scores = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.0])
    assert top_k(scores, 4).tolist() == [1, 3, 2, 4]
    banned = np.zeros(7, bool)
    banned[[1, 4]] = True
    assert top_k(scores, 3, banned).tolist() == [3, 2, 5]
    assert top_k(scores, 10, banned).tolist() == [3, 2, 5, 0, 6]


def test_top_k_matches_a_stable_sort_when_most_codes_are_banned():
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 40, 5000).astype(np.float32)  # many ties
    banned = rng.random(5000) < 0.9
    allowed = np.flatnonzero(~banned)
    expected = allowed[np.argsort(-scores[allowed], kind="stable")]
    assert top_k(scores, 50, banned).tolist() == expected[:50].tolist()
    assert top_k(scores, 10_000, banned).tolist() == expected.tolist()
    assert top_k(scores, 5, np.ones(5000, bool)).tolist() == []


def test_ivf_finds_most_of_the_exact_top_k_on_clustered_vectors_and_all_of_it_probing_every_list():
    rng = np.random.default_rng(2)
    vectors, queries = _clustered(rng, 4000), _clustered(rng, 200)
    exact = ExactIndex(_ids(4000), vectors)
    ivf = IVFIndex.build(_ids(4000), vectors, n_lists=40, nprobe=5)
    truth = exact.search(queries, 50)[0]
    found = ivf.search(queries, 50)[0]
    recall = np.mean([len(np.intersect1d(f, t)) / 50 for f, t in zip(found, truth)])
    assert recall >= 0.9
    every_list = IVFIndex(_ids(4000), vectors, ivf.centroids, ivf.assignment, nprobe=40)
    exclude = [t[::2] for t in truth]
    assert np.array_equal(every_list.search(queries, 50)[0], truth)
    assert np.array_equal(every_list.search(queries, 25, exclude)[0], exact.search(queries, 25, exclude)[0])


@pytest.mark.parametrize("kind", ["exact", "ivf", "faiss_ivf"])
def test_index_save_load_round_trip(tmp_path, kind):
    rng = np.random.default_rng(3)
    vectors, queries = _clustered(rng, 600), _clustered(rng, 20)
    index = build_index(kind, _ids(600), vectors, n_lists=12, nprobe=3)
    index.save(tmp_path)
    loaded = load_index(tmp_path)
    assert type(loaded) is type(index) and loaded.ids.tolist() == _ids(600)
    for a, b in zip(index.search(queries, 30), loaded.search(queries, 30)):
        assert np.array_equal(a, b)


def test_loading_an_index_from_an_empty_directory_says_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="index.json is missing"):
        load_index(tmp_path)


# ---------------------------------------------------------------- a log with context and new items


def _catalog() -> dict[str, dict]:
    items = {}
    for n in range(6):
        items[f"comedy-{n}"] = {"item_id": f"comedy-{n}", "genres": ["Comedy"], "duration_minutes": 90}
        items[f"action-{n}"] = {"item_id": f"action-{n}", "genres": ["Action"], "duration_minutes": 130}
        items[f"doc-{n}"] = {"item_id": f"doc-{n}", "genres": ["Documentary"], "duration_minutes": 95}
    # Nobody has watched these yet: only the content source can place them. ("comedy-*" sort before "new-comedy",
    # so a content source that ignored newness would pick them first.)
    for genre in ("Comedy", "Horror", "Drama"):
        items[f"new-{genre.lower()}"] = {"item_id": f"new-{genre.lower()}", "genres": [genre], "duration_minutes": 100}
    return items


def _log() -> pd.DataFrame:
    """300 users watch comedies late at night on phones, 600 watch action on TV evenings (so action is the more
    popular overall), 100 watch documentaries anywhere; plus watches of an item missing from the catalog."""
    rng = np.random.default_rng(4)
    rows = []
    groups = (("comedy", 300, LATE_NIGHT_MS, "phone"), ("action", 600, EVENING_MS, "tv"),
              ("doc", 100, EVENING_MS, "tablet"))
    for prefix, users, ts, device in groups:
        for u in range(users):
            for n in sorted(rng.choice(6, size=4, replace=False)):
                rows.append((f"{prefix}-u{u}", f"{prefix}-{n}", ts + 60_000 * int(n), device, True))
    rows += [("doc-u0", "gone-item", EVENING_MS, "tablet", True), ("doc-u1", "gone-item", EVENING_MS, "tv", True)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts_ms", "device", "label"])


@pytest.fixture(scope="module")
def generator() -> CandidateGenerator:
    return CandidateGenerator.fit(_log(), _catalog(), bpr=BPR(factors=8, epochs=10, progress=False))


def _live(**affinities: float) -> dict:
    return {f"aff_{genre}": value for genre, value in affinities.items()}


def test_a_cold_user_gets_what_users_in_their_context_watch(generator):
    night = generator.candidates(None, None, PHONE_NIGHT, 6)
    evening = generator.candidates(None, None, TV_EVENING, 6)
    assert {c.item_id for c in night} == {f"comedy-{n}" for n in range(6)}
    assert {c.item_id for c in evening} == {f"action-{n}" for n in range(6)}
    assert {c.source for c in night + evening} == {"popular"}
    assert generator.popularity.scores(PHONE_NIGHT)[0] == ("late_night", "phone", False)
    # A device nobody used backs off to overall popularity, where action leads.
    fridge = generator.candidates(None, None, {**PHONE_NIGHT, "device": "fridge"}, 6)
    assert {c.item_id for c in fridge} == {f"action-{n}" for n in range(6)}


def test_content_candidates_follow_the_users_live_top_genre(generator):
    # Unknown user binging comedies on a TV evening: half the list is content, all comedies, the rest popular.
    found = generator.candidates("someone-new", _live(comedy=3.0, drama=0.2), TV_EVENING, 10)
    content = [c.item_id for c in found if c.source == "content"]
    assert content == ["comedy-0", "comedy-1", "comedy-2", "comedy-3", "comedy-4"]
    # Known user: the content slots go to new items (not to comedy-1, 4, 5, which MF left out), best match first.
    for k, expected in ((10, ["new-comedy"]), (20, ["new-comedy", "new-drama"])):
        known = generator.candidates("action-u0", _live(comedy=3.0, drama=0.2), TV_EVENING, k)
        assert [c.item_id for c in known if c.source == "content"] == expected
    horror = generator.candidates("action-u0", _live(horror=1.0), TV_EVENING, 10)
    assert [c.item_id for c in horror if c.source == "content"] == ["new-horror"]
    # Without live affinities there are no content candidates.
    assert "content" not in {c.source for c in generator.candidates("action-u0", _live(), TV_EVENING, 20)}


def test_a_known_user_gets_mf_candidates_first(generator):
    found = generator.candidates("action-u1", None, PHONE_NIGHT, 8)
    assert [c.source for c in found] == ["embedding"] * 8
    assert sum(c.item_id.startswith("action-") for c in found[:4]) >= 3


def _session_after(watched: list[str], factors: ItemFactors) -> dict:
    """The session row the stream job writes after a new user watched ``watched`` (live vector folded in)."""
    state = UserState()
    state.apply([{"event_id": f"e{n}", "event_type": "watch", "item_id": item, "ts_ms": EVENING_MS + n * 60_000,
                  "device": "tv", "session_id": "s", "watch_seconds": 3000, "genres": [], "duration_minutes": 90}
                 for n, item in enumerate(watched)], FeatureConfig())
    columns = feature_columns([("newcomer", state)], FoldIn.of(factors, FeatureConfig()))
    return {name: values[0] for name, values in columns.items()}


@pytest.fixture(scope="module")
def converged() -> CandidateGenerator:
    """Trained to convergence: the ten epochs of ``generator`` leave MF scores mostly item bias."""
    return CandidateGenerator.fit(_log(), _catalog(), bpr=BPR(factors=8, epochs=100, progress=False))


def test_a_new_users_live_vector_gets_mf_candidates_like_what_they_just_watched(converged):
    generator = converged
    assert generator.item_factors is not None
    # Without one, a new user with no affinities gets popular items only (action: the most watched).
    assert {c.source for c in generator.candidates("newcomer", None, TV_EVENING, 6)} == {"popular"}
    session = _session_after(["doc-0", "doc-1"], generator.item_factors)
    found = generator.candidates("newcomer", session, TV_EVENING, 6, exclude=["doc-0", "doc-1"])
    assert [c.source for c in found] == ["embedding"] * 6
    assert sum(c.item_id.startswith("doc-") for c in found[:4]) == 4
    # A known user keeps the trained vector (it predicted next watches better): the action watcher's MF
    # candidates stay what they were.
    assert generator.candidates("action-u1", session, TV_EVENING, 4) == generator.candidates(
        "action-u1", None, TV_EVENING, 4)


def test_a_live_vector_folded_on_other_factors_is_ignored(generator):
    other = ItemFactors.of(generator.item_factors.ids, generator.item_factors.factors + 1.0)
    stale = _session_after(["doc-0", "doc-1"], other)  # folded before a retraining
    assert {c.source for c in generator.candidates("newcomer", stale, TV_EVENING, 6)} == {"popular"}
    assert generator.candidates("action-u1", stale, TV_EVENING, 8) == generator.candidates(
        "action-u1", None, TV_EVENING, 8)
    with pytest.raises(UserError, match="live user vector"):
        generator.live_query({"user_vector": [0.0, 1.0], "user_vector_model": generator.item_factors.version})


def test_the_item_factors_are_saved_beside_the_generator_for_the_stream_job(tmp_path, generator):
    directory = generator.save(tmp_path / "retrieval")
    saved = ItemFactors.load(directory / ITEM_FACTORS_FILE)
    assert saved.version == generator.item_factors.version
    assert CandidateGenerator.load(directory).item_factors.version == saved.version
    # MF's items, each with the index's vector less the bias dimension.
    assert set(saved.ids) == set(generator.index.ids) and saved.dim + 1 == generator.index.dim


@pytest.mark.parametrize("user_id", ["comedy-u3", "doc-u5", "unknown-user", None])
@pytest.mark.parametrize("k", [1, 7, 40])
def test_the_mixer_returns_k_distinct_catalog_ids_deterministically(generator, user_id, k):
    catalog = set(_catalog())
    exclude = {"action-0", "comedy-1", "gone-item", "never-heard-of"}
    live = _live(comedy=1.0, documentary=0.5)
    found = generator.candidates(user_id, live, PHONE_NIGHT, k, exclude)
    ids = [c.item_id for c in found]
    assert len(ids) == min(k, len(catalog - exclude)) == len(set(ids))
    assert set(ids) <= catalog - exclude
    assert generator.candidates(user_id, live, PHONE_NIGHT, k, exclude) == found
    assert generator.candidates(user_id, live, PHONE_NIGHT, 0) == []


def test_the_same_log_and_seed_give_the_same_generator(generator):
    again = CandidateGenerator.fit(_log(), _catalog(), bpr=BPR(factors=8, epochs=10, progress=False))
    for user_id in ("action-u2", None):
        assert again.candidates(user_id, _live(comedy=1.0), TV_EVENING, 15) == generator.candidates(
            user_id, _live(comedy=1.0), TV_EVENING, 15)
    assert generator.info["dropped_not_in_catalog"] == 2


@pytest.mark.parametrize("index", ["exact", "ivf", "faiss_ivf"])
def test_save_load_round_trip_gives_identical_candidates(tmp_path, index):
    fitted = CandidateGenerator.fit(_log(), _catalog(), bpr=BPR(factors=8, epochs=10, progress=False), index=index,
                                    n_lists=4, nprobe=2, config=MixerConfig(content_share=0.2))
    loaded = CandidateGenerator.load(fitted.save(tmp_path / "retrieval"))
    assert type(loaded.index) is type(fitted.index)
    for user_id, live, context in (("comedy-u0", None, PHONE_NIGHT), ("action-u9", _live(horror=2.0), TV_EVENING),
                                   (None, _live(comedy=1.0), {"daypart": "morning"}), (None, None, {})):
        assert loaded.candidates(user_id, live, context, 12, {"action-3"}) == fitted.candidates(
            user_id, live, context, 12, {"action-3"})


def test_bad_inputs_are_clear_errors(generator, tmp_path):
    with pytest.raises(UserError, match="device"):
        CandidateGenerator.fit(_log().drop(columns="device"), _catalog())
    with pytest.raises(UserError, match="daypart"):
        generator.candidates(None, None, {"daypart": "teatime"}, 5)
    with pytest.raises(UserError, match="k must be"):
        generator.candidates(None, None, PHONE_NIGHT, -1)
    with pytest.raises(UserError, match="affinities"):
        generator.candidates(None, _live(comedy=float("nan")), PHONE_NIGHT, 5)
    with pytest.raises(UserError, match="no trained candidate generator"):
        CandidateGenerator.load(tmp_path)


# ---------------------------------------------------------------- recall on a time split


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_world(out, users=40, items=60, days=4, seed=3)
    events = load_event_log(out / "events.jsonl")
    return events, load_items(out / "items.jsonl"), make_split(events, "time_global", train_frac=0.75)


def test_recall_report_on_a_time_split(world):
    events, items, split = world
    generator = CandidateGenerator.fit(train_events(events, split), items, bpr=BPR(factors=8, epochs=5, progress=False))
    report = recall_at_k_report(generator, split, events, items, ks=(10, 60))
    tested = split.users.decode(np.unique(split.test["user_idx"]))
    assert report["n_users"] == len(tested) and sorted(report["per_user"]["user_id"]) == sorted(tested)
    assert 0 < report["recall@10"] < 1
    # 60 slots hold the whole catalog but each user's train positives, and no test positive is one of those.
    assert report["recall@60"] == 1.0 and report["next_session"]["recall@60"] == 1.0
    assert report["as_unknown"]["recall@60"] == 1.0
    assert set(report["hit_sources@10"]) <= {"embedding", "content", "popular"}


def test_recall_refuses_a_generator_that_saw_the_test_period(world):
    events, items, split = world
    leaky = CandidateGenerator.fit(events, items, bpr=BPR(factors=8, epochs=1, progress=False))
    with pytest.raises(UserError, match="train_events"):
        recall_at_k_report(leaky, split, events, items)


# ---------------------------------------------------------------- items added after training


def test_an_item_added_after_training_is_a_content_candidate_at_once(generator):
    added = generator.with_items({"new-western": {"item_id": "new-western", "genres": ["Western"],
                                                  "duration_minutes": 100}})
    live = _live(western=1.0)
    for user in ("comedy-u1", "stranger"):  # a known user's new-item slots, an unknown user's content slots
        got = {c.item_id: c for c in added.candidates(user, live, {}, 10)}
        assert got["new-western"][1:] == (pytest.approx(1.0), "content")
    assert "new-western" not in {c.item_id for c in generator.candidates("stranger", live, {}, 30)}  # unchanged
    # Its learned parts are as they were: no popularity, no positive user; the old items keep theirs.
    codes = added.catalog.encode(["new-western", "action-0"])
    assert added.item_users[codes[0]] == 0 and added.popularity.counts[:, codes[0]].sum() == 0
    assert added.popularity.counts[0, codes[1]] == generator.popularity.counts[0, generator.catalog.encode(["action-0"])[0]]


def test_a_changed_item_is_placed_by_its_new_genres(generator):
    changed = generator.with_items({"new-horror": {"item_id": "new-horror", "genres": ["Western"],
                                                   "duration_minutes": 100}})
    assert changed.candidates("stranger", _live(western=1.0), {}, 2)[0][::2] == ("new-horror", "content")
    assert len(changed.catalog) == len(generator.catalog)


def test_text_places_a_new_item_beside_what_the_session_just_watched(generator):
    """Two new items of the same genre: the one whose text is like the last items' comes first."""
    texts = {i: np.eye(DIM, dtype=np.float32)[n % 3] for n, i in enumerate(generator.catalog.ids)}
    with_texts = generator.with_items({}, texts)
    added = with_texts.with_items(
        {"new-a": {"item_id": "new-a", "genres": ["Western"], "duration_minutes": 90},
         "new-b": {"item_id": "new-b", "genres": ["Western"], "duration_minutes": 90}},
        {"new-a": np.eye(DIM, dtype=np.float32)[7], "new-b": texts["doc-0"]})
    live = {**_live(western=1.0), "last_items": ["doc-0"]}
    assert [c.item_id for c in added.candidates("stranger", live, {}, 4)][:2] == ["new-b", "new-a"]
    assert [c.item_id for c in added.candidates("stranger", _live(western=1.0), {}, 4)][:2] == ["new-a", "new-b"]
