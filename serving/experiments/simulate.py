"""``streamrec ab simulate``: the users of a synthetic world asking the API for lists and answering them from
the world's ground truth, so an experiment's report can be checked against what is truly better.

Each round, every user asks (on the device the world would have them use at that hour) and looks down the
list. The world's pick probability ``p_i`` of each shown item in that context (``streams.world``), as an
attractiveness ``a_i = N·p_i`` (1 on average over the N items), and a position bias give the chance to click
the item in place ``k`` (from 1):

    P(click) = a_i / (a_i + HALF) / log2(k + 1)

and a click is followed by a watch with probability ``a_i / (a_i + 1)``, for 30–100 % of the item's length.
The clicks and watches are published as events through the SDK (``streams.producer``), so the report joins
them from the event stream like any other. The draws are seeded by (seed, user, round): a rerun answers a
list the same way.
"""
from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamrec.vocabulary import DEVICES, daypart, is_weekend, latest_at_hour, local_time
from streams.world import World, context_at, device_distribution, pick_probabilities

HALF = 12.0  # the attractiveness at which an examined item is clicked half the time

# (user id, device, hour) -> the item ids of the list served
Recommend = Callable[[str, str, int], Sequence[str]]


@dataclass
class Tally:
    lists: int = 0
    clicks: int = 0
    watches: int = 0
    expected_clicks: list[float] = field(default_factory=list)  # each list's true worth, in the order asked


def _rng(seed: int, user_id: str, round_: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x1f{user_id}\x1f{round_}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def attractiveness(world: World, user: int, items: Sequence[str], ts_ms: int, device: str) -> np.ndarray:
    """``a = N·p`` of each shown item in the context of ``ts_ms`` on ``device`` (0 for an item the world lacks)."""
    p = pick_probabilities(world, user, context_at(ts_ms, device))
    return np.array([len(p) * p[world.item_index[i]] if i in world.item_index else 0.0 for i in items])


def click_probabilities(a: np.ndarray) -> np.ndarray:
    """P(click) of each place of a list whose items have attractiveness ``a``: the list's true worth."""
    return a / (a + HALF) / np.log2(np.arange(len(a)) + 2)


def answer(world: World, user: int, items: Sequence[str], ts_ms: int, device: str, rng: np.random.Generator
           ) -> list[tuple[str, float | None]]:
    """What the user does with a list shown at ``ts_ms``: (item id, seconds watched or None for a click only)."""
    a = attractiveness(world, user, items, ts_ms, device)
    done = []
    for item_id, a_i, click in zip(items, a, click_probabilities(a), strict=True):
        if rng.random() < click:
            watched = rng.random() < a_i / (a_i + 1.0)
            minutes = float(world.durations[world.item_index[item_id]])
            done.append((item_id, minutes * 60 * rng.uniform(0.3, 1.0) if watched else None))
    return done


def events_of(user_id: str, device: str, session_id: str, done: Sequence[tuple[str, float | None]],
              ts_ms: int) -> list[dict]:
    """The events of a user's answer, a millisecond apart from ``ts_ms``: a click, then the watch if any."""
    out: list[dict] = []
    for item_id, seconds in done:
        base = {"user_id": user_id, "item_id": item_id, "device": device, "session_id": session_id}
        out.append({**base, "event_id": str(uuid.uuid4()), "event_type": "click", "ts": ts_ms + len(out)})
        if seconds is not None:
            out.append({**base, "event_id": str(uuid.uuid4()), "event_type": "watch", "ts": ts_ms + len(out),
                        "watch_seconds": round(seconds, 1)})
    return out


def simulate(world: World, recommend: Recommend, publish: Callable[[dict], object], *, users: Sequence[str],
             rounds: int, hour: int, seed: int = 0, progress: Callable[[str], None] = lambda _: None) -> Tally:
    """``rounds`` lists for each of ``users`` (ids of ``world``) as at ``hour``, answered and published."""
    tally = Tally()
    at = latest_at_hour(int(time.time() * 1000), hour, "UTC")
    part, weekend = daypart(local_time(at).hour), is_weekend(local_time(at))
    for r in range(rounds):
        for user_id in users:
            u = world.user_index[user_id]
            rng = _rng(seed, user_id, r)
            device = DEVICES[int(rng.choice(len(DEVICES), p=device_distribution(world, u, part, weekend)))]
            items = recommend(user_id, device, hour)
            done = answer(world, u, items, at, device, rng)
            tally.expected_clicks.append(float(click_probabilities(attractiveness(world, u, items, at, device)).sum()))
            for event in events_of(user_id, device, f"{user_id}-ab{seed}-{r}", done, int(time.time() * 1000)):
                publish(event)
            tally.lists += 1
            tally.clicks += len(done)
            tally.watches += sum(s is not None for _, s in done)
        progress(f"round {r + 1}/{rounds}: {tally.lists} lists, {tally.clicks} clicks, {tally.watches} watches")
    return tally
