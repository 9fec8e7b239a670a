"""Intent mode: the LLM's small structured intent re-scores the candidates deterministically (pure).

A small local model is good enough at "what kind of film does this viewer want right now" but
poor at ranking twenty titles, so it only picks a mood, the genre a request names, a genre to
avoid and a length; the blend below does the ranking. final = W&D score (min-max over the
candidates) + genre match + length match, and items of the avoided genre go below all others.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from serving.rerank.context import Candidate, LiveContext

MOODS: tuple[str, ...] = (
    "any", "light", "funny", "exciting", "intense", "dark", "romantic", "thoughtful", "family", "scary",
)
LENGTHS: tuple[str, ...] = ("any", "short", "medium", "long")
# What the LLM decides of an intent (``Intent`` also carries its own reason and whether a request shaped it).
INTENT_FIELDS = ("mood", "genre", "avoid_genre", "preferred_length")
NO_GENRE = "none"

# Genres a mood implies (weight 0..1); the genre a request names counts 1.
MOOD_GENRES: dict[str, dict[str, float]] = {
    "any": {},
    "light": {"Comedy": 0.5, "Animation": 0.5, "Musical": 0.5, "Romance": 0.5},
    "funny": {"Comedy": 1.0, "Animation": 0.5},
    "exciting": {"Action": 0.5, "Adventure": 0.5, "Sci-Fi": 0.5},
    "intense": {"Thriller": 0.5, "Crime": 0.5, "War": 0.5, "Action": 0.5},
    "dark": {"Film-Noir": 0.5, "Crime": 0.5, "Thriller": 0.5, "Horror": 0.5},
    "romantic": {"Romance": 1.0},
    "thoughtful": {"Drama": 0.5, "Documentary": 0.5, "Mystery": 0.5},
    "family": {"Children's": 1.0, "Animation": 0.5, "Adventure": 0.5},
    "scary": {"Horror": 1.0, "Thriller": 0.5},
}

# Words that show a request is about a genre (also matched with a plural s/es). A genre the LLM
# names, or wants avoided, only counts when the request contains one of them: a small model
# often fills those fields with genres nobody asked for.
GENRE_WORDS: dict[str, tuple[str, ...]] = {
    "Action": ("action",), "Adventure": ("adventure",),
    "Animation": ("animation", "animated", "cartoon", "anime"),
    "Children's": ("kid", "kids", "child", "children", "family"),
    "Comedy": ("comedy", "comedies", "funny", "laugh", "humor", "humour"),
    "Crime": ("crime", "heist", "gangster", "mafia", "detective"),
    "Documentary": ("documentary", "documentaries", "doc", "true story"),
    "Drama": ("drama",), "Fantasy": ("fantasy", "magic", "dragon"), "Film-Noir": ("noir",),
    "Horror": ("horror", "scary", "gore", "gory", "zombie"), "Musical": ("musical", "singing"),
    "Mystery": ("mystery", "mysteries", "whodunit"), "Romance": ("romance", "romantic", "love story"),
    "Sci-Fi": ("sci-fi", "scifi", "science fiction", "space", "alien", "robot"),
    "Thriller": ("thriller", "suspense"), "War": ("war",), "Western": ("western", "cowboy"),
}

# Blend weights on the W&D score (0..1 after min-max): a genre at weight 1 (named, or central to
# the mood) lifts an item above every item without one, as the viewer asked; weight 0.5 is worth
# 60% of the W&D range, so the W&D order still decides close calls; length fit adds up to 0.2.
GENRE_WEIGHT = 1.2
LENGTH_WEIGHT = 0.2
# An intent read from the context alone (no request) knows nothing the W&D model does not: its wide part crosses
# day-part, weekend and device with the item's genres. At full weight such intents cost 3-10 % NDCG@10 on
# context-shifted sessions (`streamrec evaluate --rerank`, README "The LLM re-rank, measured"), so they only
# break near-ties.
CONTEXT_ONLY_SCALE = 0.1
# Running-time scale, as the synthetic world's (streams.world.ModelParams): centre and spread in minutes.
DURATION_MEAN = 110.0
DURATION_SCALE = 25.0

DAYPART_WORDS = {"late_night": "late night", "morning": "the morning", "afternoon": "the afternoon",
                 "evening": "the evening"}
DEVICE_WORDS = {"phone": "on your phone", "tablet": "on your tablet", "tv": "on the TV", "desktop": "at your desk"}


@dataclass(frozen=True)
class Intent:
    mood: str = "any"
    genre: str | None = None  # the genre the request names
    avoid_genre: str | None = None  # the genre the request rules out
    preferred_length: str = "any"
    reason: str = ""
    asked: bool = False  # shaped by a free-text request, not by the context alone

    def genre_weights(self) -> dict[str, float]:
        """Genre -> 0..1: the mood's genres, and the named genre at full weight."""
        weights = dict(MOOD_GENRES.get(self.mood, {}))
        if self.genre is not None:
            weights[self.genre] = 1.0
        return weights

    def may_avoid(self, genre: str) -> bool:
        """False for a genre asked for at full weight (named, or central to the mood: "a scary movie" must not
        avoid horror); a genre the mood only leans to may be ruled out ("something funny, no cartoons")."""
        return self.genre_weights().get(genre, 0.0) < 1.0

    def is_empty(self) -> bool:
        """True when it would leave the W&D order as it is."""
        return not self.genre_weights() and self.avoid_genre is None and self.preferred_length == "any"


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    score: float
    reason: str


def genre_match(weights: Mapping[str, float], genres: Sequence[str]) -> float:
    """The best-weighted genre of the item, 0..1; a multi-genre item is not diluted."""
    return max((weights[g] for g in genres if g in weights), default=0.0)


def length_match(preferred: str, minutes: float | None) -> float:
    """-1..1: how well a running time fits the preferred length; 0 when either is unknown."""
    if minutes is None or not minutes > 0 or preferred == "any":
        return 0.0
    z = (minutes - DURATION_MEAN) / DURATION_SCALE
    fit = {"short": -z, "long": z, "medium": 1.0 - abs(z)}[preferred]
    return min(max(fit, -1.0), 1.0)


def rescore(intent: Intent, candidates: Sequence[Candidate], ctx: LiveContext) -> list[Scored]:
    """The candidates in their new order, best first; ties keep the W&D order."""
    weights = intent.genre_weights()
    scale = 1.0 if intent.asked else CONTEXT_ONLY_SCALE
    wd = [c.wd_score for c in candidates]
    lo, hi = min(wd, default=0.0), max(wd, default=0.0)
    scored = []
    for pos, c in enumerate(candidates):
        base = (c.wd_score - lo) / (hi - lo) if hi > lo else 0.5
        score = base + scale * GENRE_WEIGHT * genre_match(weights, c.genres) + scale * LENGTH_WEIGHT * length_match(
            intent.preferred_length, c.duration_minutes)
        excluded = intent.avoid_genre in c.genres
        scored.append((excluded, -score, pos, Scored(c, round(score, 6), item_reason(intent, weights, c, ctx))))
    return [s for *_, s in sorted(scored, key=lambda t: t[:3])]


def item_reason(intent: Intent, weights: Mapping[str, float], c: Candidate, ctx: LiveContext) -> str:
    """A short line for the viewer: facts of the item and the context (``reasons.fact_reason``),
    what the request avoids, or the history for an item that matches nothing asked for."""
    from serving.rerank.reasons import (
        fact_reason,  # here, not above: reasons builds on this module's words
    )

    if intent.avoid_genre is not None and intent.avoid_genre in c.genres:
        return f"Lower for now: avoiding {intent.avoid_genre.lower()}"
    matched = sorted((g for g in c.genres if weights.get(g, 0.0) > 0), key=lambda g: -weights[g])
    fits = length_match(intent.preferred_length, c.duration_minutes) > 0
    if not matched and not fits:
        return "Recommended from your viewing history"
    return fact_reason(c, ctx, matched_genres=matched, length=intent.preferred_length if fits else None)
