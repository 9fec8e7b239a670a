"""Checking LLM answers, and the gate that lets only candidates through (pure)."""
from __future__ import annotations

import json
import re

import pytest

from serving.rerank.context import Candidate
from serving.rerank.intent import Intent
from serving.rerank.schema import MAX_REASON_CHARS
from serving.rerank.validate import (
    InvalidOutput, clean_reason, complete_order, mentions, parse_intent, parse_object, parse_ranking,
)

CANDIDATES = [Candidate(f"i{n}", f"Movie {n}", ("Comedy",), 2000, 90.0, 1.0 - n / 10, 0.0) for n in range(1, 6)]
IDS = [c.item_id for c in CANDIDATES]


def ranking(*entries) -> str:
    return json.dumps({"ranking": [{"id": i, "reason": r} for i, r in entries]})


def reason_of(text: str, **kw) -> str:
    with pytest.raises(InvalidOutput) as err:
        parse_object(text, **kw)
    return err.value.reason


# --- parse_object -------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    '{"a": 1}',
    '```json\n{"a": 1}\n```',
    'Here is the JSON:\n{"a": 1}\nHope it helps {',
    '[1, 2] {"a": 1}',
    '{broken {"a": 1}',
])
def test_the_first_json_object_is_taken_from_its_wrapping(text):
    assert parse_object(text) == {"a": 1}


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("  \n ", "empty"),
    (None, "empty"),
    ("I'm sorry, but I can't help with that.", "refusal"),
    ("As an AI I cannot rank movies.", "refusal"),
    ("lorem ipsum dolor", "invalid_output"),
    ('{"ranking": [', "invalid_output"),
    ("[1, 2, 3]", "invalid_output"),
])
def test_unusable_text_gets_a_typed_reason(text, reason):
    assert reason_of(text) == reason


def test_the_api_refusal_field_wins_over_content():
    assert reason_of('{"a": 1}', refusal="I can't help with that") == "refusal"


# --- listwise -----------------------------------------------------------------------------

def test_ranking_drops_unknown_ids_and_repeats():
    text = ranking(("i3", "funny"), ("x99", "not a candidate"), ("i3", "again"), ("i1", "classic"))
    assert parse_ranking(text, CANDIDATES) == [("i3", "funny"), ("i1", "classic")]


def test_ranking_tolerates_malformed_entries_around_good_ones():
    text = json.dumps({"ranking": ["i2", {"id": 5}, {"id": ["i1"]}, {"id": "i4"}, {"id": "i5", "reason": 7}]})
    assert parse_ranking(text, CANDIDATES) == [("i4", ""), ("i5", "")]


@pytest.mark.parametrize("text, reason", [
    (ranking(("x1", "a"), ("x2", "b")), "invalid_output"),
    ('{"ranking": []}', "empty"),
    ('{"order": ["i1"]}', "invalid_output"),
    ('{"ranking": "i1,i2"}', "invalid_output"),
])
def test_ranking_without_usable_ids_is_rejected(text, reason):
    with pytest.raises(InvalidOutput) as err:
        parse_ranking(text, CANDIDATES)
    assert err.value.reason == reason


def test_reasons_lose_other_ids_newlines_and_length():
    text = ranking(("i2", "Better than i1 and i3,\nand i10 too; " + "very " * 40))
    (item_id, reason), = parse_ranking(text, CANDIDATES)
    assert item_id == "i2"
    assert "\n" not in reason and len(reason) <= MAX_REASON_CHARS
    assert reason.startswith("Better than and , and i10 too; very")  # i10 is no candidate, so it is just text
    assert re.findall(r"\bi\d\b", reason) == []


def test_clean_reason_keeps_words_that_merely_contain_an_id():
    assert clean_reason("i1 hid i1-like hi1 (i1)", ["i1"]) == "hid i1-like hi1 ()"
    assert clean_reason(None, IDS) == ""


# --- intent -------------------------------------------------------------------------------

def intent_text(**fields) -> str:
    answer = {"mood": "funny", "genre": "Comedy", "avoid_genre": "Horror", "preferred_length": "short",
              "reason": "Something funny and short"}
    return json.dumps({**answer, **fields})


def test_intent_is_parsed():
    assert parse_intent(intent_text(), request="a short comedy, no horror") == Intent(
        mood="funny", genre="Comedy", avoid_genre="Horror", preferred_length="short", reason="Something funny and short")


def test_unknown_intent_values_become_none_or_any():
    intent = parse_intent(intent_text(mood="ecstatic", genre="Cooking", avoid_genre=3, reason="line\nbreak"),
                          request="cooking shows")
    assert (intent.mood, intent.genre, intent.avoid_genre, intent.preferred_length) == ("any", None, None, "short")
    assert intent.reason == "line break"
    assert parse_intent(intent_text(preferred_length="epic"), request="comedy").preferred_length == "any"


@pytest.mark.parametrize("request_text", [None, "", "something to watch", "anything but drama"])
def test_genres_the_request_does_not_mention_are_ignored(request_text):
    intent = parse_intent(intent_text(), request=request_text)
    assert (intent.mood, intent.genre, intent.avoid_genre) == ("funny", None, None)


@pytest.mark.parametrize("request_text, genre", [
    ("I want ACTION, no horror!", "Action"), ("westerns please", "Western"), ("some sci-fi", "Sci-Fi"),
    ("for the kids", "Children's"), ("science fiction", "Sci-Fi")])
def test_a_mentioned_genre_counts(request_text, genre):
    assert parse_intent(intent_text(genre=genre, avoid_genre="none"), request=request_text).genre == genre


def test_a_mention_is_a_whole_word():
    assert mentions("warm and cozy", "War") is False and mentions("a war film", "War") is True
    assert mentions("a funny one", "Comedy") is True and mentions("funnybones", "Comedy") is False


@pytest.mark.parametrize("answer, request_text", [
    (dict(mood="scary", genre="none", avoid_genre="Horror"), "a scary horror movie"),
    (dict(mood="any", genre="Horror", avoid_genre="Horror"), "horror!")])
def test_a_wanted_genre_is_never_avoided(answer, request_text):
    intent = parse_intent(intent_text(**answer), request=request_text)
    assert intent.avoid_genre is None and intent.genre_weights()["Horror"] == 1.0


def test_an_intent_that_asks_for_nothing_is_empty():
    with pytest.raises(InvalidOutput) as err:
        parse_intent(intent_text(mood="any", genre="none", avoid_genre="none", preferred_length="any"), request="x")
    assert err.value.reason == "empty"
    with pytest.raises(InvalidOutput) as err:
        parse_intent(intent_text(mood="any", preferred_length="any"), request=None)
    assert err.value.reason == "empty"


def test_intent_refusal_and_garbage():
    with pytest.raises(InvalidOutput) as err:
        parse_intent("I'm sorry, I can't do that.", request="x")
    assert err.value.reason == "refusal"
    with pytest.raises(InvalidOutput) as err:
        parse_intent("genre: comedy", request="x")
    assert err.value.reason == "invalid_output"


# --- the gate -------------------------------------------------------------------------------

def test_complete_order_returns_exactly_the_candidates():
    proposed = [("i4", "a"), ("evil", "x"), ("i4", "dup"), (None, "n"), (["i1"], "l"), ("i2", "b")]
    order = complete_order(proposed, CANDIDATES)
    assert [(c.item_id, r) for c, r in order] == [("i4", "a"), ("i2", "b"), ("i1", ""), ("i3", ""), ("i5", "")]


def test_complete_order_of_nothing_is_the_wd_order():
    assert [c.item_id for c, _ in complete_order([], CANDIDATES)] == IDS
    assert complete_order([("i1", "a")], []) == []
