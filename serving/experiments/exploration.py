"""Epsilon-greedy exploration on the final slate, with the propensity of every item shown.

Each slot ``p`` of the top ``k`` keeps the ranked item ``ranked[p]`` with probability ``1 - ε``; otherwise it
shows an item drawn uniformly, without replacement among the explored slots, from the pool ``ranked[k:]``
(the rest of the shortlist). So the probability that the logging policy shows item ``a`` in slot ``p`` is

    π₀(a | p) = 1 - ε          if a = ranked[p]
              = ε / |pool|     if a is in the pool   (uniform by symmetry, whatever the other slots drew)

exactly, which is what inverse propensity scoring needs: under the greedy policy (ε = 0) the weight of a
shown item is ``1 / (1 - ε)`` when it is ``ranked[p]`` and 0 when explored (``stats.off_policy``). Pool items
never equal a ranked one, so the two cases cannot overlap. Only the first ``|pool|`` slots explore (a pool
smaller than the slate could not fill more without repeats); the others, and every slot when the pool is
empty, are greedy with propensity 1.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Slot:
    item_id: str
    propensity: float  # π₀(item | slot)
    explored: bool


def greedy(ranked: Sequence[str], k: int) -> list[Slot]:
    return [Slot(item, 1.0, False) for item in ranked[:k]]


def epsilon_greedy(ranked: Sequence[str], k: int, epsilon: float, rng: np.random.Generator) -> list[Slot]:
    """The slate shown: ``ranked[:k]`` with each slot explored with probability ``epsilon``."""
    top, pool = list(ranked[:k]), list(ranked[k:])
    if not pool or epsilon <= 0:
        return greedy(ranked, k)
    m = min(len(top), len(pool))
    explore = rng.random(m) < epsilon
    drawn = iter(rng.permutation(pool)[:int(explore.sum())].tolist())
    explored_p = epsilon / len(pool)
    slate = [Slot(next(drawn), explored_p, True) if e else Slot(item, 1.0 - epsilon, False)
             for item, e in zip(top, explore, strict=False)]
    return slate + greedy(top[m:], len(top) - m)


def request_rng(request_id: str) -> np.random.Generator:
    """The request's own draws: a replay of the same request id explores the same way."""
    return np.random.default_rng(int(request_id[:16], 16))
