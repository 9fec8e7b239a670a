"""Checking LLM answers, and the gate that lets only candidates through (pure)."""
from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.rerank.context import Candidate
from serving.rerank.intent import Intent
from serving.rerank.schema import MAX_ANSWER_CHARS, MAX_ANSWER_DEPTH, MAX_REASON_CHARS
from serving.rerank.validate import (
    InvalidOutput,
    clean_reason,
    complete_order,
    mentions,
    parse_intent,
    parse_object,
    parse_ranking,
)

CANDIDATES = [Candidate(f"i{n}", f"Movie {n}", ("Comedy",), 2000, 90.0, 1.0 - n / 10, 0.0) for n in range(1, 6)]
IDS = [c.item_id for c in CANDIDATES]
# The documented id-like rule: letters then digits, as a whole word.
ID_LIKE = re.compile(r"\b[^\W\d_]+\d+\b")


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


@pytest.mark.parametrize("text", ['{"a": 1}' + " " * MAX_ANSWER_CHARS, '{"a": 1}' + "x" * 1_000_000,
                                  "[" * 100_000 + '{"a": 1}'])
def test_an_answer_longer_than_the_cap_is_invalid_output(text):
    with pytest.raises(InvalidOutput) as err:
        parse_object(text)
    assert err.value.reason == "invalid_output"
    assert err.value.detail == f"answer of {len(text)} characters, at most {MAX_ANSWER_CHARS}"


@pytest.mark.parametrize("text", [
    '{"a":' * 5000,
    '{"a": ' + "[" * 10_000,
    '{"a": ' + "[" * (MAX_ANSWER_DEPTH + 1) + "]" * (MAX_ANSWER_DEPTH + 1) + "}",
    'Note" {"k": ' + "[" * 10_000 + '"',  # a stray quote before the object must not hide its brackets
    '{"k": "\\\\", "v": ' + "[" * 10_000,  # nor an escaped backslash before a closing quote
])
def test_an_answer_nested_too_deep_is_invalid_output_not_a_recursion_error(text):
    with pytest.raises(InvalidOutput) as err:
        parse_object(text)
    assert err.value.reason == "invalid_output" and f"deeper than {MAX_ANSWER_DEPTH}" in err.value.detail


def test_nesting_counts_only_what_decoding_reads():
    deep = MAX_ANSWER_DEPTH - 1
    assert parse_object('{"a": ' + "[" * deep + "]" * deep + "}") == {"a": json.loads("[" * deep + "]" * deep)}
    in_strings = '{"r": "' + "[" * 40 + '", "s": "\\"]]]]]]]]]]]]]]]]]]]][[[[[[[[[[[[[[[[[[[["}'
    assert parse_object("[" * 40 + " " + in_strings) == json.loads(in_strings)


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


def test_reasons_lose_ids_newlines_and_length():
    text = ranking(("i2", "Better than i1 and i3,\nand i10 too; " + "very " * 40))
    (item_id, reason), = parse_ranking(text, CANDIDATES)
    assert item_id == "i2"
    assert "\n" not in reason and len(reason) <= MAX_REASON_CHARS
    assert reason.startswith("Better than and , and too; very")  # i10 is no candidate, but id-like
    assert ID_LIKE.search(reason) is None


def test_a_hostile_reason_is_served_as_plain_text():
    text = ranking(("i2", "i99999 <script>alert(1)</script>"), ("i3", "<b>Witty</b>, [more](https://evil.example)"))
    assert parse_ranking(text, CANDIDATES) == [("i2", ""), ("i3", "Witty, more")]


@pytest.mark.parametrize("raw, plain", [
    ("Fun <script>alert(1)</script>for all", "Fun for all"),
    ("Fun <SCRIPT type=x>alert(1)", "Fun"),
    ('<img src=x onerror="alert(1)">Witty and warm', "Witty and warm"),
    ("A classic [watch it](https://evil.example/x?i=1) tonight", "A classic watch it tonight"),
    ("&lt;script&gt;alert(1)&lt;/script&gt;Witty", "Witty"),
    ("&#60;b&#62;Bold&#60;/b&#62; and warm", "Bold and warm"),
    ("&amp;lt;b&amp;gt;Bold", "b Bold"),  # double-encoded: the entities go, their words are harmless
    ("＜b＞Bold＜/b＞", "Bold"),  # fullwidth brackets are brackets
    ("**Bold**, `quirky` and ## fun <3", "Bold, quirky and fun 3"),
    ("See www.evil.example or http://evil.example/a now", "See or now"),
])
def test_clean_reason_drops_markup(raw, plain):
    assert clean_reason(raw, IDS) == plain


@pytest.mark.parametrize("raw, plain", [
    ("Like i99999 and ml7, for u0001", "Like and , for"),  # no candidates, but id-like
    ("Better than i3 and i3-", "Better than and"),  # a hyphen does not hide an id
    ("Like i_42, `i`42 or i\u200b42", "Like , or"),  # nor markup or invisible characters in it
    ("Like tenant:42, but funnier", "Like , but funnier"),  # a candidate id of any shape goes
])
def test_clean_reason_drops_ids(raw, plain):
    assert clean_reason(raw, [*IDS, "tenant:42"]) == plain


def test_a_cut_that_leaves_an_id_like_word_drops_it():
    assert clean_reason("Great tv123x", [], 11) == "Great …"


@pytest.mark.parametrize("reason", [
    "A light comedy for a late night, under 2 hours — like Amélie",
    "1990s cult classic; 80s vibes, Se7en-level twists (3D!)",
    "Tom & Jerry style fun: 100% silly, ages 6+ / PG-13",
    "“Witty” and ‘warm’ – it's a crowd-pleaser?",
])
def test_plain_reasons_pass_unchanged(reason):
    assert clean_reason(reason, IDS) == reason


def test_clean_reason_of_no_text_is_empty():
    assert clean_reason(None, IDS) == "" and clean_reason(7, IDS) == ""


HOSTILE = ["<script>", "</script>", "<b>", "<img src=x onerror=", "&lt;", "&#60;", "&amp;", "`", "**", "](",
           "http://", "www.", "i9", "ml", "42", "_", "-", " ", "\n", "\u200b", "＜", "…"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(HOSTILE) | st.text(max_size=3)).map("".join), st.integers(2, 100))
def test_any_reason_comes_out_plain(raw, max_chars):
    reason = clean_reason(raw, IDS, max_chars)
    assert len(reason) <= max_chars and "\n" not in reason
    assert not set(reason) & set("<>`[]{}*_#=\\")
    assert ID_LIKE.search(reason) is None and re.search(r"&#?\w+;", reason) is None


# --- intent -------------------------------------------------------------------------------

def intent_text(**fields) -> str:
    answer = {"mood": "funny", "genre": "Comedy", "avoid_genre": "Horror", "preferred_length": "short",
              "reason": "Something funny and short"}
    return json.dumps({**answer, **fields})


def test_intent_is_parsed():
    assert parse_intent(intent_text(), request="a short comedy, no horror") == Intent(
        mood="funny", genre="Comedy", avoid_genre="Horror", preferred_length="short", reason="Something funny and short",
        asked=True)


def test_the_intent_reason_is_plain_text():
    intent = parse_intent(intent_text(reason="<b>Funny</b> like ml1193"), request="a comedy")
    assert intent.reason == "Funny like"


@pytest.mark.parametrize("text", ['{"ranking": ' + "[" * 5000, ranking(("i1", "x" * MAX_ANSWER_CHARS))])
def test_ranking_and_intent_reject_oversized_and_deep_answers(text):
    with pytest.raises(InvalidOutput) as err:
        parse_ranking(text, CANDIDATES)
    assert err.value.reason == "invalid_output"
    with pytest.raises(InvalidOutput) as err:
        parse_intent(text, request="a comedy")
    assert err.value.reason == "invalid_output"


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
