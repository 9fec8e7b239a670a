"""Intent mode's deterministic re-scoring (pure)."""
from __future__ import annotations

import pytest

from serving.rerank.context import Candidate, LiveContext
from serving.rerank.intent import CONTEXT_ONLY_SCALE, GENRE_WEIGHT, Intent, genre_match, length_match, rescore

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


def test_naming_comedy_moves_comedies_up():
    new = order(Intent(asked=True, genre="Comedy"))
    assert new[:2] == ["c1", "c2"]
    assert new[2:] == ["d1", "t1", "d2"]  # the rest keep their relative order


def test_the_funny_mood_alone_moves_comedies_up():
    assert order(Intent(asked=True, mood="funny"))[:2] == ["c1", "c2"]


def test_a_named_genre_adds_to_the_mood():
    # comedies (the mood) and romances (named) first, among them the W&D order
    assert order(Intent(asked=True, mood="funny", genre="Romance")) == ["d2", "c1", "c2", "d1", "t1"]


def test_the_avoided_genre_goes_below_everything_else():
    assert order(Intent(avoid_genre="Drama")) == ["t1", "c1", "c2", "d1", "d2"]
    # even when the mood wants it (the parser drops such an answer; the order must still be sane)
    assert order(Intent(mood="scary", avoid_genre="Horror"))[-1] == "t1"


@pytest.mark.parametrize("length, first", [("short", "c1"), ("long", "d1"), ("medium", "t1")])
def test_length_preference_breaks_close_calls(length, first):
    # equal W&D scores, so only the length decides
    same = [Candidate(c.item_id, c.title, c.genres, c.year, c.duration_minutes, 0.5, 0.0) for c in CANDIDATES]
    assert order(Intent(preferred_length=length), same)[0] == first


def test_the_wd_score_still_counts():
    # a mood's side genre (weight 0.5) does not lift the weakest item over a much stronger one
    strong = [CANDIDATES[0], Candidate("a9", "Weak", ("Animation",), 2000, 95.0, 0.0, 0.0)] + CANDIDATES[1:3]
    assert order(Intent(asked=True, mood="funny"), strong)[0] == "d1"


def test_an_intent_of_the_context_alone_only_breaks_near_ties():
    # W&D already crosses the context with genres: without a request the mood does not override its order
    assert order(Intent(mood="funny")) == ["d1", "t1", "d2", "c1", "c2"]
    near = [Candidate("d1", "Drama One", ("Drama",), 1995, 130.0, 0.90, 0.0),
            Candidate("c1", "Comedy One", ("Comedy",), 1998, 88.0, 0.88, 0.0),
            Candidate("x1", "Last", ("War",), 1990, 140.0, 0.10, 0.0)]
    assert order(Intent(mood="funny"), near)[:2] == ["c1", "d1"]
    top = rescore(Intent(mood="funny"), near, CTX)[0]
    assert top.score == pytest.approx((0.88 - 0.10) / (0.90 - 0.10) + CONTEXT_ONLY_SCALE * GENRE_WEIGHT)


def test_scores_are_the_sort_key():
    scored = rescore(Intent(asked=True, genre="Comedy"), CANDIDATES, CTX)
    assert [s.score for s in scored] == sorted((s.score for s in scored), reverse=True)
    assert scored[0].score == pytest.approx((0.60 - 0.55) / (0.90 - 0.55) + GENRE_WEIGHT)


def test_matches():
    assert genre_match({"Comedy": 1.0, "Drama": 0.5}, ("Comedy", "Drama")) == 1.0
    assert genre_match({"Comedy": 0.5}, ("Comedy", "Romance")) == 0.5  # not diluted by other genres
    assert genre_match({}, ("Comedy",)) == 0.0
    assert length_match("short", 60) == 1.0 and length_match("short", 200) == -1.0
    assert length_match("any", 60) == 0.0 and length_match("long", None) == 0.0


def test_reasons_come_from_the_intent_and_the_context():
    scored = {s.candidate.item_id: s.reason for s in rescore(
        Intent(mood="light", preferred_length="short", avoid_genre="Horror"), CANDIDATES, CTX)}
    assert scored["c1"] == "Comedy, 88 min, short, for late night on your phone"
    assert scored["t1"] == "Lower for now: avoiding horror"
    assert scored["d1"] == "Recommended from your viewing history"
    assert scored["d2"] == "Romance/Drama, 1997, for late night on your phone"  # the mood's genre first
    unknown = rescore(Intent(genre="Drama"), CANDIDATES[:1], LiveContext())
    assert unknown[0].reason == "Drama, 1995"


def test_an_intent_without_genres_or_length_is_empty():
    assert Intent().is_empty() and Intent(mood="any", reason="x").is_empty()
    assert not Intent(mood="scary").is_empty() and not Intent(avoid_genre="War").is_empty()
    assert not Intent(preferred_length="short").is_empty()
