"""The labelled request set and the intent accuracy measure (pure)."""
from __future__ import annotations

import json

import pytest

from serving.rerank.intent import NO_GENRE, Intent
from serving.rerank.intent_accuracy import LabelledRequest, accuracy, field_hits, load_labelled
from serving.rerank.prompt import request_text
from serving.rerank.validate import InvalidOutput, mentions, parse_intent

LABELLED = load_labelled()


def test_the_set_is_large_and_varied_enough():
    assert len(LABELLED) >= 72
    assert len({label.request.lower() for label in LABELLED}) == len(LABELLED)
    assert sum(label.genre is not None for label in LABELLED) >= 20
    assert sum(label.avoid_genre is not None for label in LABELLED) >= 10
    assert sum(label.lengths != ("any",) for label in LABELLED) >= 15
    mood_only = [label for label in LABELLED if "any" not in label.moods and label.genre is None
                 and label.avoid_genre is None and label.lengths == ("any",)]
    assert len(mood_only) >= 10


@pytest.mark.parametrize("label", LABELLED, ids=lambda label: label.request[:40])
def test_every_labelled_genre_is_mentioned_by_its_request(label):
    # parse_intent drops a genre the request does not mention, so such a label could never be met.
    for genre in (label.genre, label.avoid_genre):
        assert genre is None or mentions(label.request, genre)


@pytest.mark.parametrize("label", LABELLED, ids=lambda label: label.request[:40])
def test_a_perfect_answer_scores_all_fields_through_the_guards(label):
    answer = json.dumps({"mood": label.moods[0], "genre": label.genre or NO_GENRE,
                         "avoid_genre": label.avoid_genre or NO_GENRE, "preferred_length": label.lengths[0],
                         "reason": "as asked"})
    try:
        intent = parse_intent(answer, request_text(label.request))  # the request as the re-ranker passes it
    except InvalidOutput as e:
        assert e.reason == "empty"  # a request with no direction: the perfect answer asks for nothing
        intent = None
    assert all(field_hits(intent, label).values()), field_hits(intent, label)


LIGHT = LabelledRequest("something light, no horror", ("light", "funny"), None, "Horror", ("any",))
COMEDY = LabelledRequest("a short comedy", ("funny", "any"), "Comedy", None, ("short",))
NOTHING = LabelledRequest("surprise me", ("any",), None, None, ("any",))


def test_field_hits_accept_any_listed_mood_and_length():
    assert field_hits(Intent(mood="funny", avoid_genre="Horror"), LIGHT) == dict.fromkeys(
        ("mood", "genre", "avoid_genre", "preferred_length"), True)
    assert field_hits(Intent(mood="dark", genre="Horror", preferred_length="long"), LIGHT) == {
        "mood": False, "genre": False, "avoid_genre": False, "preferred_length": False}


def test_no_usable_intent_counts_as_the_neutral_one():
    assert all(field_hits(None, NOTHING).values())
    assert field_hits(None, COMEDY) == {"mood": True, "genre": False, "avoid_genre": True, "preferred_length": False}


def test_accuracy_is_the_fraction_right_per_field_and_overall():
    pairs = [
        (LIGHT, Intent(mood="light", avoid_genre="Horror")),  # all right
        (COMEDY, Intent(mood="funny", genre="Comedy", preferred_length="medium")),  # length wrong
        (NOTHING, None),  # all right
        (COMEDY, None),  # genre and length wrong
    ]
    assert accuracy(pairs) == {"mood": 1.0, "genre": 0.75, "avoid_genre": 1.0, "preferred_length": 0.5,
                               "all_fields": 0.5, "n": 4}
    assert accuracy(iter(pairs)) == accuracy(pairs)
    with pytest.raises(ValueError):
        accuracy([])


GOOD = {"request": "a short comedy", "expect": {"mood": ["funny"], "genre": "Comedy", "avoid_genre": "none",
                                                 "preferred_length": ["short"]}}


def test_a_good_file_loads(tmp_path):
    path = tmp_path / "labelled.json"
    path.write_text(json.dumps([GOOD]))
    assert load_labelled(path) == [LabelledRequest("a short comedy", ("funny",), "Comedy", None, ("short",))]


@pytest.mark.parametrize("change, message", [
    ({"mood": ["cheerful"]}, "mood"),
    ({"mood": []}, "mood"),
    ({"mood": "funny"}, "mood"),
    ({"genre": "Cooking"}, "genre"),
    ({"avoid_genre": "comedy"}, "avoid_genre"),
    ({"preferred_length": ["epic"]}, "preferred_length"),
    ({"extra": 1}, "exactly the fields"),
])
def test_a_bad_entry_is_named(tmp_path, change, message):
    path = tmp_path / "labelled.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "request": "the bad one", "expect": {**GOOD["expect"], **change}}]))
    with pytest.raises(ValueError, match=rf"entry 1 \('the bad one'\): .*{message}"):
        load_labelled(path)


@pytest.mark.parametrize("entries", [{"request": "x"}, [{"expect": GOOD["expect"]}], [{**GOOD, "request": " "}],
                                     [{"request": "x", "expect": {"mood": ["any"]}}], ["a string"]])
def test_a_malformed_file_raises(tmp_path, entries):
    path = tmp_path / "labelled.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(ValueError):
        load_labelled(path)
