"""The synthetic world's ground truth: catalog, users and context rules, as pure functions.

The generator samples events from exactly these distributions, and evaluations
call the same functions (``pick_probabilities``, ``preference_score``) to ask
what a user *really* prefers in a context, so the two can never drift apart.

How a pick happens (all data lives in ``world.json`` / ``users.jsonl`` / ``items.jsonl``):
- a session starts at an hour drawn from ``hour_weights``; its device is the
  user's device preference times ``device_rules`` for that day-part/weekend;
- its *intent* genre is drawn from taste × the ``context_rules`` genre boosts;
- each pick takes the intent genre with probability ``intent_share``, else a
  genre from long-term taste, then an item of that genre by a softmax over
  affinity, popularity and the context's length preference.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from streamrec.catalog import load_items
from streamrec.errors import UserError
from streamrec.vocabulary import DAYPARTS, DEVICES, GENRE_INDEX, GENRES, daypart, is_weekend, local_time

DEVICE_INDEX = {d: i for i, d in enumerate(DEVICES)}

# Typical running time by genre (minutes): comedies and animation short, action, sci-fi and war long.
GENRE_MINUTES: dict[str, int] = {
    "Action": 124, "Adventure": 122, "Animation": 86, "Children's": 90, "Comedy": 97, "Crime": 114,
    "Documentary": 94, "Drama": 116, "Fantasy": 112, "Film-Noir": 98, "Horror": 96, "Musical": 112,
    "Mystery": 108, "Romance": 108, "Sci-Fi": 126, "Thriller": 112, "War": 138, "Western": 114,
}

# Sessions started per hour of day (UTC), relative: evenings busiest, some late night, more at weekends.
HOUR_WEIGHTS: dict[str, list[float]] = {
    "weekday": [0.9, 0.5, 0.3, 0.2, 0.15, 0.2, 0.5, 0.8, 0.8, 0.6, 0.5, 0.6,
                0.9, 0.8, 0.6, 0.6, 0.8, 1.1, 1.8, 2.6, 3.0, 2.8, 2.0, 1.4],
    "weekend": [1.3, 0.9, 0.6, 0.35, 0.2, 0.2, 0.3, 0.5, 0.8, 1.0, 1.2, 1.3,
                1.4, 1.5, 1.5, 1.5, 1.6, 1.8, 2.4, 3.2, 3.6, 3.3, 2.6, 1.9],
}

# A rule applies when every key of ``when`` matches (a missing key matches anything);
# boosts of all matching rules multiply, length preferences add (-1 short .. +1 long).
DEVICE_RULES: list[dict] = [
    {"name": "late_night_phone", "when": {"daypart": ["late_night"]},
     "device_boost": {"phone": 3.0, "tv": 0.5, "desktop": 0.7}},
    {"name": "weekend_evening_tv", "when": {"daypart": ["evening"], "weekend": True}, "device_boost": {"tv": 3.0}},
    {"name": "weekday_evening_tv", "when": {"daypart": ["evening"], "weekend": False}, "device_boost": {"tv": 1.8}},
    {"name": "weekday_morning_commute", "when": {"daypart": ["morning"], "weekend": False},
     "device_boost": {"phone": 1.6, "desktop": 1.3, "tv": 0.5}},
    {"name": "weekday_afternoon_desk", "when": {"daypart": ["afternoon"], "weekend": False},
     "device_boost": {"desktop": 2.0}},
]

CONTEXT_RULES: list[dict] = [
    {"name": "late_night_phone", "when": {"daypart": ["late_night"], "device": ["phone"]},
     "genre_boost": {"Comedy": 5.0, "Animation": 5.0}, "length": -1},
    {"name": "weekend_tv_evening", "when": {"daypart": ["evening"], "device": ["tv"], "weekend": True},
     "genre_boost": {"Action": 5.0, "Sci-Fi": 5.0, "Adventure": 4.0}, "length": 1},
    {"name": "morning", "when": {"daypart": ["morning"]}, "genre_boost": {"Documentary": 6.0, "Children's": 2.5}},
    {"name": "late_night", "when": {"daypart": ["late_night"]}, "genre_boost": {"Horror": 4.0, "Thriller": 2.5}},
    {"name": "weekend_afternoon", "when": {"daypart": ["afternoon"], "weekend": True},
     "genre_boost": {"Children's": 4.0, "Animation": 3.0, "Musical": 2.0}},
    {"name": "weekday_evening", "when": {"daypart": ["evening"], "weekend": False},
     "genre_boost": {"Drama": 2.0, "Crime": 2.0, "Mystery": 1.8}},
    {"name": "commute_phone", "when": {"daypart": ["morning"], "device": ["phone"], "weekend": False},
     "genre_boost": {"Comedy": 2.0}, "length": -1},
]


@dataclass(frozen=True)
class ModelParams:
    intent_share: float = 0.7        # share of in-session picks from the session's intent genre
    affinity_weight: float = 4.0     # item logit per unit of taste mass on the item's genres
    popularity_weight: float = 1.0   # item logit per unit of log popularity
    length_weight: float = 1.0       # item logit per unit of length preference × standardized duration
    duration_mean: float = 110.0     # minutes; centre and scale that standardize durations
    duration_scale: float = 25.0
    watch_base: float = 0.15         # P(watch | click) = base + slope × fit, fit = session-mix mass on the item
    watch_slope: float = 0.75
    repick_avoidance: float = 0.9    # chance to redraw an item the user has already picked


@dataclass(frozen=True)
class Context:
    daypart: str
    weekend: bool
    device: str

    def __post_init__(self):
        if self.daypart not in DAYPARTS:
            raise ValueError(f"daypart must be one of {DAYPARTS}, got {self.daypart!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")


def context_at(ts_ms: int, device: str) -> Context:
    """The live context of a moment (UTC day-part and weekend) on a device."""
    dt = local_time(ts_ms)
    return Context(daypart(dt.hour), is_weekend(dt), device)


@dataclass(frozen=True, eq=False)
class World:
    seed: int
    start_ms: int
    end_ms: int
    item_ids: tuple[str, ...]
    titles: tuple[str, ...]
    years: np.ndarray           # (items,) int
    item_genres: np.ndarray     # (items, 18) bool
    durations: np.ndarray       # (items,) int minutes
    popularity: np.ndarray      # (items,) float, latent base popularity
    user_ids: tuple[str, ...]
    taste: np.ndarray           # (users, 18) float, long-term genre weights (sum ≈ 1)
    device_pref: np.ndarray     # (users, 4) float, over DEVICES
    activity: np.ndarray        # (users,) float, expected sessions per day
    params: dict                # users/items/days as asked
    model: ModelParams
    hour_weights: dict          # {"weekday"|"weekend": 24 relative session-start weights}
    device_rules: list
    context_rules: list
    item_index: dict = field(init=False, repr=False)
    user_index: dict = field(init=False, repr=False)
    pool_sizes: np.ndarray = field(init=False, repr=False)  # (18,) items per genre

    def __post_init__(self):
        # Derived lookups; frozen, so set through object.__setattr__.
        object.__setattr__(self, "item_index", {i: n for n, i in enumerate(self.item_ids)})
        object.__setattr__(self, "user_index", {u: n for n, u in enumerate(self.user_ids)})
        object.__setattr__(self, "pool_sizes", self.item_genres.sum(axis=0))


def typical_minutes(genres: list[str] | tuple[str, ...]) -> int:
    """Nominal running time of an item with these genres (the mean of their typical times)."""
    known = [GENRE_MINUTES[g] for g in genres if g in GENRE_MINUTES]
    return round(sum(known) / len(known)) if known else round(ModelParams.duration_mean)


def rule_matches(when: dict, daypart_: str, weekend: bool, device: str | None = None) -> bool:
    if "daypart" in when and daypart_ not in when["daypart"]:
        return False
    if "weekend" in when and weekend != when["weekend"]:
        return False
    return not ("device" in when and device not in when["device"])


def device_distribution(world: World, user: int, daypart_: str, weekend: bool) -> np.ndarray:
    """P(device) for a session this user starts at this day-part."""
    w = world.device_pref[user].astype(float)
    for rule in world.device_rules:
        if rule_matches(rule["when"], daypart_, weekend):
            for device, boost in rule["device_boost"].items():
                w[DEVICE_INDEX[device]] *= boost
    return w / w.sum()


def genre_boost(world: World, ctx: Context) -> np.ndarray:
    boost = np.ones(len(GENRES))
    for rule in world.context_rules:
        if rule_matches(rule["when"], ctx.daypart, ctx.weekend, ctx.device):
            for genre, b in rule.get("genre_boost", {}).items():
                boost[GENRE_INDEX[genre]] *= b
    return boost


def length_preference(world: World, ctx: Context) -> float:
    """-1 prefers short items, +1 long ones, 0 indifferent."""
    pref = sum(rule.get("length", 0) for rule in world.context_rules
               if rule_matches(rule["when"], ctx.daypart, ctx.weekend, ctx.device))
    return float(np.clip(pref, -1, 1))


def _normalized_over_pools(world: World, weights: np.ndarray) -> np.ndarray:
    # A genre without items can never be picked, so it gets no mass.
    w = np.where(world.pool_sizes > 0, weights, 0.0)
    return w / w.sum()


def long_term_genres(world: World, user: int) -> np.ndarray:
    """P(genre) of a pick that follows long-term taste rather than the session intent."""
    return _normalized_over_pools(world, world.taste[user])


def intent_distribution(world: World, user: int, ctx: Context) -> np.ndarray:
    """P(session intent genre): taste × the context rules' boosts."""
    return _normalized_over_pools(world, world.taste[user] * genre_boost(world, ctx))


def session_mix(world: World, user: int, intent: int) -> np.ndarray:
    """P(genre) of each pick in a session with this intent."""
    share = world.model.intent_share
    mix = (1 - share) * long_term_genres(world, user)
    mix[intent] += share
    return mix


def item_logits(world: World, user: int, length_pref: float) -> np.ndarray:
    """Within-genre softmax logits of every item for this user under a length preference."""
    m = world.model
    affinity = world.item_genres @ world.taste[user]
    z = (world.durations - m.duration_mean) / m.duration_scale
    return (m.affinity_weight * affinity + m.popularity_weight * np.log(world.popularity)
            + m.length_weight * length_pref * z)


def pool_distribution(world: World, logits: np.ndarray, genre: int) -> tuple[np.ndarray, np.ndarray]:
    """(item indices of the genre, their pick probabilities given the genre)."""
    idx = np.flatnonzero(world.item_genres[:, genre])
    e = np.exp(logits[idx] - logits[idx].max())
    return idx, e / e.sum()


def pick_probabilities(world: World, user: int, ctx: Context, intent: int | None = None) -> np.ndarray:
    """Ground truth P(item) of one pick by ``user`` in ``ctx``, over all items.

    With ``intent`` (a genre index) it is the in-session distribution once the
    intent is known (what live session features can recover); without, it is
    averaged over the intents the context makes likely. Ignores the avoidance of
    items already picked.
    """
    if intent is None:
        share = world.model.intent_share
        mix = share * intent_distribution(world, user, ctx) + (1 - share) * long_term_genres(world, user)
    else:
        mix = session_mix(world, user, intent)
    logits = item_logits(world, user, length_preference(world, ctx))
    e = np.exp(logits - logits.max())
    pool_mass = e @ world.item_genres
    per_genre = np.divide(mix, pool_mass, out=np.zeros_like(mix), where=pool_mass > 0)
    return e * (world.item_genres @ per_genre)


def preference_score(world: World, user_id: str, item_id: str, ctx: Context, intent: str | None = None) -> float:
    """Ground-truth preference of a user for an item in a context: its pick probability."""
    try:
        user, item = world.user_index[user_id], world.item_index[item_id]
    except KeyError as e:
        raise KeyError(f"{e.args[0]!r} is not a user or item of this world") from None
    genre = None if intent is None else GENRE_INDEX[intent]
    return float(pick_probabilities(world, user, ctx, genre)[item])


def watch_fit(world: World, mix: np.ndarray) -> np.ndarray:
    """How well each item fits a session: the session mix's mass on the item's genres, at most 1."""
    return np.minimum(1.0, world.item_genres @ mix)


# ---- records: the JSON shape of items, users and world.json ----

def item_record(world: World, i: int) -> dict:
    return {
        "item_id": world.item_ids[i],
        "title": world.titles[i],
        "genres": [GENRES[g] for g in np.flatnonzero(world.item_genres[i])],
        "year": int(world.years[i]),
        "duration_minutes": int(world.durations[i]),
        "popularity": float(world.popularity[i]),
    }


def user_record(world: World, u: int) -> dict:
    return {
        "user_id": world.user_ids[u],
        "taste": {g: float(w) for g, w in zip(GENRES, world.taste[u]) if w > 0},
        "devices": {d: float(w) for d, w in zip(DEVICES, world.device_pref[u])},
        "activity": float(world.activity[u]),
    }


def world_record(world: World) -> dict:
    return {
        "seed": world.seed,
        "params": world.params,
        "start_time": local_time(world.start_ms).isoformat(),
        "start_ms": world.start_ms,
        "end_ms": world.end_ms,
        "model": asdict(world.model),
        "hour_weights": world.hour_weights,
        "device_rules": world.device_rules,
        "context_rules": world.context_rules,
    }


def world_from_records(meta: dict, items: list[dict], users: list[dict]) -> World:
    """Rebuild a World from its JSON records (KeyError/ValueError on a malformed record)."""
    genres = np.zeros((len(items), len(GENRES)), dtype=bool)
    for n, it in enumerate(items):
        genres[n, [GENRE_INDEX[g] for g in it["genres"]]] = True
    taste = np.zeros((len(users), len(GENRES)))
    for n, u in enumerate(users):
        for g, w in u["taste"].items():
            taste[n, GENRE_INDEX[g]] = w
    return World(
        seed=meta["seed"], start_ms=meta["start_ms"], end_ms=meta["end_ms"],
        item_ids=tuple(it["item_id"] for it in items),
        titles=tuple(it["title"] for it in items),
        years=np.array([it["year"] for it in items], dtype=int),
        item_genres=genres,
        durations=np.array([it["duration_minutes"] for it in items], dtype=int),
        popularity=np.array([it["popularity"] for it in items], dtype=float),
        user_ids=tuple(u["user_id"] for u in users),
        taste=taste,
        device_pref=np.array([[u["devices"][d] for d in DEVICES] for u in users], dtype=float),
        activity=np.array([u["activity"] for u in users], dtype=float),
        params=meta["params"], model=ModelParams(**meta["model"]), hour_weights=meta["hour_weights"],
        device_rules=meta["device_rules"], context_rules=meta["context_rules"],
    )


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows


def load_world(directory: Path) -> World:
    """Read a generated world (world.json, items.jsonl, users.jsonl) back into its ground truth."""
    directory = Path(directory)
    paths = [directory / name for name in ("world.json", "items.jsonl", "users.jsonl")]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"{directory} is not a generated world: missing {', '.join(missing)} (run the generator first)")
    try:
        meta = json.loads(paths[0].read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{paths[0]}: not valid JSON ({e.msg} at line {e.lineno})") from None
    try:
        # The items through the catalog's one parser (it keeps the world's own fields of each record).
        return world_from_records(meta, list(load_items(paths[1]).values()), _read_jsonl(paths[2]))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{directory}: malformed world record ({type(e).__name__}: {e})") from None
