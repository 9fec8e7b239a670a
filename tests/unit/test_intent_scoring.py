"""Scored intent decoding (serving.rerank.intent_scoring) against a scripted next-token function."""
from __future__ import annotations

import math

import pytest

from serving.rerank.intent import MOODS, Intent
from serving.rerank.intent_scoring import (
    PRIOR_RATIO,
    choose,
    context_masses,
    field_masses,
    field_options,
    prefill,
    score_intent,
    tally,
)
from serving.rerank.validate import InvalidOutput, parse_intent


def lp(p: float) -> float:
    return math.log(p)


class Script:
    """Answers each prefill from a table (missing: the given default); records what was asked."""

    def __init__(self, table: dict[str, list[tuple[str, float]]], default=()):
        self.table, self.default, self.asked = table, list(default), []

    def __call__(self, answer_prefix: str):
        self.asked.append(answer_prefix)
        return [(piece, lp(p)) for piece, p in self.table.get(answer_prefix, self.default)]


def test_pieces_count_for_the_one_value_they_start_whatever_the_case():
    scores, shared = tally([("fun", lp(0.5)), ("Light", lp(0.2)), ("sc", lp(0.1)), ("{", lp(0.1))], MOODS)
    assert scores["funny"] == pytest.approx(0.5) and scores["light"] == pytest.approx(0.2)
    assert scores["scary"] == pytest.approx(0.1)
    assert sum(scores.values()) == pytest.approx(0.8) and not shared  # "{" starts no value


def test_a_piece_with_the_closing_quote_must_end_a_value_exactly():
    scores, _ = tally([('any"', lp(0.4)), ('an"', lp(0.3)), ('short",', lp(0.2))], ("any", "short", "long"))
    assert scores == pytest.approx({"any": 0.4, "short": 0.2, "long": 0.0})


def test_a_shared_piece_is_typed_and_split_when_it_could_decide():
    ask = Script({prefill("mood"): [("f", 0.6), ("light", 0.3)],
                  prefill("mood") + "f": [("amily", 0.9), ("unny", 0.1)]})
    choice = choose(*field_masses(ask, "mood", MOODS))
    assert choice.value == "family" and choice.calls == 2
    assert choice.mass == pytest.approx(0.54) and choice.probability == pytest.approx(0.54 / 0.9)  # funny: 0.06


def test_a_shared_piece_too_light_to_matter_costs_no_call():
    ask = Script({prefill("mood"): [("light", 0.7), ("f", 0.2)]})
    assert choose(*field_masses(ask, "mood", MOODS)).value == "light" and len(ask.asked) == 1


def test_no_allowed_value_among_the_top_tokens_is_invalid_output():
    with pytest.raises(InvalidOutput) as e:
        field_masses(Script({}, default=[("{", 0.9), ("The", 0.1)]), "mood", MOODS)
    assert e.value.reason == "invalid_output"


def test_genres_are_asked_only_among_those_the_request_names():
    assert field_options("genre", "a scary movie with zombies") == ("none", "Horror")
    assert field_options("avoid_genre", None) == ("none",)
    ask = Script({prefill("mood"): [("fun", 0.9)], prefill("preferred_length"): [("short", 0.8)]})
    intent, choices = score_intent(ask, "cheer me up, quickly")
    assert intent == Intent(mood="funny", preferred_length="short", asked=True)
    assert ask.asked == [prefill("mood"), prefill("preferred_length")]  # no genre named: no genre call
    assert choices["genre"].calls == 0


def test_a_genre_both_wanted_and_avoided_keeps_the_likelier_reading():
    table = {prefill("mood"): [("any", 0.9)], prefill("preferred_length"): [("any", 0.9)],
             prefill("genre"): [("Hor", 0.15)], prefill("avoid_genre"): [("Hor", 0.66)]}
    intent, _ = score_intent(Script(table), "anything but horror")
    assert (intent.genre, intent.avoid_genre) == (None, "Horror")
    table[prefill("genre")] = [("Hor", 0.8)]
    table[prefill("avoid_genre")] = [("Hor", 0.24)]
    intent, _ = score_intent(Script(table), "a horror movie")
    assert (intent.genre, intent.avoid_genre) == ("Horror", None)


@pytest.mark.parametrize("mood, avoided, kept", [("funny", "Animation", True), ("scary", "Horror", False)])
def test_what_the_mood_is_about_is_never_avoided(mood, avoided, kept):
    table = {prefill("mood"): [(mood, 0.9)], prefill("preferred_length"): [("any", 0.9)],
             prefill("genre"): [("none", 0.9)], prefill("avoid_genre"): [(avoided[:3], 0.9)]}
    request = f"something {mood}, no {avoided.lower()}"
    intent, _ = score_intent(Script(table), request)
    assert (intent.avoid_genre == avoided) is kept
    # the JSON parser follows the same rule
    answer = f'{{"mood": "{mood}", "genre": "none", "avoid_genre": "{avoided}", "preferred_length": "any"}}'
    assert (parse_intent(answer, request).avoid_genre == avoided) is kept


def test_an_intent_asking_nothing_is_empty():
    ask = Script({prefill("mood"): [("any", 0.9)], prefill("preferred_length"): [("any", 0.9)]})
    with pytest.raises(InvalidOutput) as e:
        score_intent(ask, "surprise me")
    assert e.value.reason == "empty"


def test_with_a_prior_a_request_must_lift_a_value_to_take_it():
    masses = {"any": 0.05, "short": 0.2, "medium": 0.25, "long": 0.5}
    assert choose(masses, 1).value == "long"  # the model's favourite
    prior = {"any": 0.05, "short": 0.1, "medium": 0.3, "long": 0.55}
    # "short" is 2x its share without the request: the request asked for it
    assert choose(masses, 1, prior).value == "short"
    # nothing lifted PRIOR_RATIO-fold: the neutral value
    assert choose(masses, 1, {"any": 0.05, "short": 0.15, "medium": 0.25, "long": 0.55}).value == "any"
    assert 0.2 / 0.15 < PRIOR_RATIO


def test_the_prior_is_asked_only_for_a_request_and_only_for_calibrated_fields():
    no_request = Script({prefill("mood"): [("exc", 0.6), ("light", 0.3)], prefill("preferred_length"): [("long", 0.9)]})
    assert set(context_masses(no_request)) == {"preferred_length"}
    asked = []

    def prior():
        asked.append(True)
        return context_masses(no_request)

    intent, _ = score_intent(no_request, None, prior)
    assert intent == Intent(mood="exciting", preferred_length="long") and not asked
    with_request = Script({prefill("mood"): [("exc", 0.3), ("light", 0.6)], prefill("preferred_length"): [("long", 0.9)]})
    intent, _ = score_intent(with_request, "something calm", prior)
    assert intent == Intent(mood="light", asked=True) and asked == [True]  # the mood by its probability; "long" not lifted
