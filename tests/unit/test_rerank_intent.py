"""Intent mode's deterministic re-scoring (pure)."""
from __future__ import annotations

import pytest

from serving.rerank.context import Candidate, LiveContext
from serving.rerank.intent import GENRE_WEIGHT, Intent, genre_match, length_match, rescore

CTX = LiveContext(daypart="late_night", device="phone")

# W&D order: dramas and thrillers first, the comedies last.
CANDIDATES = [
    Candidate("d1", "Drama One", ("Drama",), 1995, 130.0, 0.90, 0.0),
    Candidate("t1", "Thriller One", ("Thriller", "Horror"), 1996, 110.0, 0.85, 0.0),
    Candidate("d2", "Drama Two", ("Drama", "Romance"), 1997, 125.0, 0.80, 0.0),
    Candidate("c1", "Comedy One", ("Comedy",), 1998, 88.0, 0.60, 0.0),
    Candidate("c2", "Comedy Two", ("Comedy", "Romance"), 1999, 100.0, 0.55, 0.0),
]


def order(intent: Intent, candidates=CANDIDATES) -> list[str]:
    return [s.candidate.item_id for s in rescore(intent, candidates, CTX)]


def test_a_neutral_intent_keeps_the_wd_order():
    assert order(Intent()) == ["d1", "t1", "d2", "c1", "c2"]


def test_wanting_comedy_moves_comedies_up():
    new = order(Intent(genre_weights={"Comedy": 1.0}))
    assert new[:2] == ["c1", "c2"]
    assert new[2:] == ["d1", "t1", "d2"]  # the rest keep their relative order


def test_the_funny_mood_alone_moves_comedies_up():
    assert order(Intent(mood="funny"))[:2] == ["c1", "c2"]


def test_explicit_weights_override_the_mood():
    assert order(Intent(mood="funny", genre_weights={"Comedy": -1.0}))[-2:] == ["c1", "c2"]


def test_an_unwanted_genre_moves_down():
    assert order(Intent(genre_weights={"Drama": -1.0}))[-2:] == ["d1", "d2"]


def test_excluded_genres_go_below_everything_else():
    new = order(Intent(genre_weights={"Horror": 1.0, "Comedy": 1.0}, exclude_genres=frozenset({"Horror"})))
    assert new[-1] == "t1"  # wanted by weight, but excluded wins
    assert new[:2] == ["c1", "c2"]


@pytest.mark.parametrize("length, first", [("short", "c1"), ("long", "d1"), ("medium", "t1")])
def test_length_preference_breaks_close_calls(length, first):
    # equal W&D scores, so only the length decides
    same = [Candidate(c.item_id, c.title, c.genres, c.year, c.duration_minutes, 0.5, 0.0) for c in CANDIDATES]
    assert order(Intent(preferred_length=length), same)[0] == first


def test_the_wd_score_still_counts():
    # a weak comedy wish does not lift the last comedy over a much stronger drama
    strong = [CANDIDATES[0], Candidate("c9", "Weak", ("Comedy",), 2000, 95.0, 0.0, 0.0)] + CANDIDATES[1:3]
    assert order(Intent(genre_weights={"Comedy": 0.5}), strong)[0] == "d1"


def test_scores_are_the_sort_key():
    scored = rescore(Intent(genre_weights={"Comedy": 1.0}), CANDIDATES, CTX)
    assert [s.score for s in scored] == sorted((s.score for s in scored), reverse=True)
    assert scored[0].score == pytest.approx((0.60 - 0.55) / (0.90 - 0.55) + GENRE_WEIGHT)


def test_matches():
    assert genre_match({"Comedy": 1.0, "Drama": -0.5}, ("Comedy", "Drama")) == 0.5
    assert genre_match({"Comedy": 0.5}, ("Comedy", "Romance")) == 0.5  # not diluted by other genres
    assert genre_match({}, ("Comedy",)) == 0.0
    assert length_match("short", 60) == 1.0 and length_match("short", 200) == -1.0
    assert length_match("any", 60) == 0.0 and length_match("long", None) == 0.0


def test_reasons_come_from_the_intent_and_the_context():
    scored = {s.candidate.item_id: s.reason for s in rescore(
        Intent(genre_weights={"Comedy": 0.5}, mood="light", preferred_length="short",
               exclude_genres=frozenset({"Horror"})), CANDIDATES, CTX)}
    assert scored["c1"] == "Light comedy (88 min) for late night on your phone"
    assert scored["t1"] == "Lower for now: avoiding horror"
    assert scored["d1"] == "Recommended from your viewing history"
    assert scored["d2"] == "Light romance for late night on your phone"  # from the mood's genres
    unknown = rescore(Intent(genre_weights={"Drama": 1.0}), CANDIDATES[:1], LiveContext())
    assert unknown[0].reason == "Drama"
