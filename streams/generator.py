"""Sample a synthetic world (catalog, users, sessions, events) and write it to a directory.

The distributions are ``streams.world``'s; this module only draws from them with
one seeded RNG tree (no global RNG, no wall clock), so the same seed gives
byte-identical files. Each user draws from its own child stream (SeedSequence.spawn),
so the result does not depend on the order users are simulated in.
"""
from __future__ import annotations

import bisect
import json
import math
import uuid
from pathlib import Path

import numpy as np
from tqdm import tqdm

from streamrec.errors import UserError
from streamrec.vocabulary import DEVICES, GENRES, daypart, is_weekend, local_time
from streams.world import (
    CONTEXT_RULES,
    DEVICE_RULES,
    HOUR_WEIGHTS,
    Context,
    ModelParams,
    World,
    device_distribution,
    intent_distribution,
    item_logits,
    item_record,
    length_preference,
    long_term_genres,
    pool_distribution,
    session_mix,
    typical_minutes,
    user_record,
    watch_fit,
    world_record,
)

DEFAULT_START_MS = 1_767_571_200_000  # 2026-01-05T00:00Z, a Monday
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SESSION_GAP_MS = 30 * 60_000  # sessions are separated by more than this; events inside by less

# Genre frequency in MovieLens-100k (items per genre): Drama and Comedy common, Film-Noir and Western rare.
GENRE_FREQUENCY = np.array([251, 135, 42, 122, 505, 109, 50, 725, 22, 24, 92, 56, 61, 247, 101, 251, 71, 27], float)
GENRE_PRIOR = GENRE_FREQUENCY / GENRE_FREQUENCY.sum()
GENRES_PER_ITEM_P = (0.5, 0.35, 0.15)  # 1, 2 or 3 genres
TASTE_CONCENTRATION = 3.0  # Dirichlet total mass: small, so tastes are sparse (a few genres dominate)
TASTE_FLOOR = 0.1  # share of the genre prior mixed in, so every genre stays possible
DEVICE_ALPHA = np.array([2.0, 0.8, 1.6, 1.2])  # phone, tablet, tv, desktop
SESSIONS_PER_DAY = 2.4  # mean activity
MAX_PICKS = 15

_ADJECTIVES = (
    "Silent", "Broken", "Golden", "Hidden", "Last", "Crimson", "Distant", "Frozen", "Burning", "Wild",
    "Midnight", "Lost", "Endless", "Hollow", "Bright", "Secret", "Iron", "Quiet", "Savage", "Velvet",
    "Forgotten", "Restless", "Shattered", "Electric", "Northern", "Painted", "Lonely", "Scarlet", "Sudden", "Little",
)
_NOUNS = (
    "Harbor", "Kingdom", "River", "Promise", "Shadow", "Garden", "Horizon", "Letter", "Station", "Summer",
    "Empire", "Voyage", "Island", "Mirror", "Storm", "Orchard", "Signal", "Frontier", "Lantern", "Witness",
    "Circus", "Planet", "Highway", "Bridge", "Echo", "Winter", "Crown", "Compass", "Desert", "Heart",
)
_PLACES = ("Avalon", "Brooklyn", "Casablanca", "Dover", "Eldridge", "Marrakesh", "Kyoto", "Sierra Vista",
           "Lake Tahoe", "Rio", "the North", "Mars", "Paris", "Pine Hollow", "the Valley", "Saturn")
_NAMES = ("Anna", "Jack", "Marlowe", "Rosa", "Theo", "Nadia", "Oscar", "Lucy", "Mateo", "Ivy", "Grace", "Hugo")


def _title(rng: np.random.Generator) -> str:
    adj, noun = _ADJECTIVES[rng.integers(len(_ADJECTIVES))], _NOUNS[rng.integers(len(_NOUNS))]
    place, name = _PLACES[rng.integers(len(_PLACES))], _NAMES[rng.integers(len(_NAMES))]
    pattern = rng.integers(5)
    return (f"The {adj} {noun}", f"{noun} of {place}", f"{name}'s {noun}", f"Return to {place}",
            f"{adj} {noun}s")[pattern]


def _unique_titles(rng: np.random.Generator, n: int) -> list[str]:
    seen: dict[str, int] = {}
    titles = []
    for _ in range(n):
        t = _title(rng)
        seen[t] = seen.get(t, 0) + 1
        titles.append(t if seen[t] == 1 else f"{t} {seen[t]}")  # repeats read as sequels
    return titles


def sample_world(rng: np.random.Generator, *, users: int, items: int, days: float, seed: int, start_ms: int) -> World:
    """Draw the catalog and the users' ground truth (no events yet)."""
    item_genres = np.zeros((items, len(GENRES)), dtype=bool)
    for i in range(items):
        k = rng.choice(3, p=GENRES_PER_ITEM_P) + 1
        item_genres[i, rng.choice(len(GENRES), size=k, replace=False, p=GENRE_PRIOR)] = True
    typical = np.array([typical_minutes([GENRES[g] for g in np.flatnonzero(row)]) for row in item_genres])
    durations = np.clip(np.rint(typical + rng.normal(0, 12, items)), 70, 200).astype(int)
    years = np.clip(2025 - np.floor(rng.exponential(15, items)), 1925, 2025).astype(int)
    noir = item_genres[:, GENRES.index("Film-Noir")]
    years[noir] = rng.integers(1940, 1959, noir.sum())
    popularity = np.maximum(np.round(rng.lognormal(0, 0.8, items), 4), 1e-4)
    titles = _unique_titles(rng, items)

    taste = rng.dirichlet(TASTE_CONCENTRATION * GENRE_PRIOR, size=users)
    taste = np.round((1 - TASTE_FLOOR) * taste + TASTE_FLOOR * GENRE_PRIOR, 4)
    device_pref = np.round(rng.dirichlet(DEVICE_ALPHA, size=users), 4)
    sigma = 0.6
    activity = np.round(rng.lognormal(math.log(SESSIONS_PER_DAY) - sigma**2 / 2, sigma, users), 3)

    return World(
        seed=seed, start_ms=start_ms, end_ms=start_ms + round(days * DAY_MS),
        item_ids=tuple(f"i{n:05d}" for n in range(items)), titles=tuple(titles), years=years,
        item_genres=item_genres, durations=durations, popularity=popularity,
        user_ids=tuple(f"u{n:04d}" for n in range(users)), taste=taste, device_pref=device_pref, activity=activity,
        params={"users": users, "items": items, "days": days}, model=ModelParams(),
        hour_weights=HOUR_WEIGHTS, device_rules=DEVICE_RULES, context_rules=CONTEXT_RULES,
    )


def _hour_bins(world: World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, length and normalized session-start weight of each hour of the window."""
    starts = np.arange(world.start_ms, world.end_ms, HOUR_MS, dtype=np.int64)
    lengths = np.minimum(HOUR_MS, world.end_ms - starts)
    weights = np.array([
        world.hour_weights["weekend" if is_weekend(dt) else "weekday"][dt.hour]
        for dt in (local_time(int(s)) for s in starts)
    ]) * lengths / HOUR_MS
    return starts, lengths, weights / weights.sum()


def _draw(rng: np.random.Generator, cdf: list[float]) -> int:
    """Index drawn from a cumulative distribution (a list: bisect beats numpy on single draws)."""
    return min(bisect.bisect_right(cdf, rng.random() * cdf[-1]), len(cdf) - 1)


def _cdf(p: np.ndarray) -> list[float]:
    return np.cumsum(p).tolist()


class _UserSampler:
    """Per-user caches of the distributions a session needs; they depend only on a few context keys."""

    def __init__(self, world: World, user: int):
        self.world, self.user = world, user
        self.long_term_cdf = _cdf(long_term_genres(world, user))
        self._devices: dict[tuple[str, bool], list[float]] = {}
        self._intent: dict[Context, list[float]] = {}
        self._fits: dict[int, list[float]] = {}
        self._logits: dict[float, np.ndarray] = {}
        self._pools: dict[tuple[int, float], tuple[list[int], list[float]]] = {}

    def device_cdf(self, part: str, weekend: bool) -> list[float]:
        if (part, weekend) not in self._devices:
            self._devices[part, weekend] = _cdf(device_distribution(self.world, self.user, part, weekend))
        return self._devices[part, weekend]

    def intent_cdf(self, ctx: Context) -> list[float]:
        if ctx not in self._intent:
            self._intent[ctx] = _cdf(intent_distribution(self.world, self.user, ctx))
        return self._intent[ctx]

    def fits(self, intent: int) -> list[float]:
        """Each item's fit to a session with this intent."""
        if intent not in self._fits:
            self._fits[intent] = watch_fit(self.world, session_mix(self.world, self.user, intent)).tolist()
        return self._fits[intent]

    def pool(self, genre: int, length_pref: float) -> tuple[list[int], list[float]]:
        key = (genre, length_pref)
        if key not in self._pools:
            if length_pref not in self._logits:
                self._logits[length_pref] = item_logits(self.world, self.user, length_pref)
            idx, p = pool_distribution(self.world, self._logits[length_pref], genre)
            self._pools[key] = (idx.tolist(), _cdf(p))
        return self._pools[key]


def simulate_user(world: World, user: int, rng: np.random.Generator, bins) -> tuple[dict, list[dict]]:
    """One user's events (numpy columns, in time order) and session ground truth over the world's window."""
    m = world.model
    sampler = _UserSampler(world, user)
    bin_starts, bin_lengths, bin_p = bins
    n_sessions = rng.poisson(world.activity[user] * (world.end_ms - world.start_ms) / DAY_MS)
    chosen = rng.choice(len(bin_p), size=n_sessions, p=bin_p)
    starts = np.sort(bin_starts[chosen] + (rng.random(n_sessions) * bin_lengths[chosen]).astype(np.int64))

    ts, watch, item_of, session_of = [], [], [], []
    sessions: list[dict] = []
    picked: set[int] = set()

    def emit(t: int, item: int, seconds: float | None) -> None:  # seconds: None on clicks
        ts.append(t)
        watch.append(seconds)
        item_of.append(item)
        session_of.append(len(sessions))

    for start in starts.tolist():
        if ts and start - ts[-1] <= SESSION_GAP_MS:
            continue  # would merge into the previous session
        dt = local_time(start)
        part, weekend = daypart(dt.hour), is_weekend(dt)
        device = DEVICES[_draw(rng, sampler.device_cdf(part, weekend))]
        ctx = Context(part, weekend, device)
        intent = _draw(rng, sampler.intent_cdf(ctx))
        fits = sampler.fits(intent)
        length_pref = length_preference(world, ctx)
        n_picks = min(MAX_PICKS, 1 + int(rng.poisson(4)))
        t = start
        for _ in range(n_picks):
            genre = intent if rng.random() < m.intent_share else _draw(rng, sampler.long_term_cdf)
            idx, cdf = sampler.pool(genre, length_pref)
            item = idx[_draw(rng, cdf)]
            for _retry in range(3):  # rarely pick the same item twice
                if item not in picked or rng.random() >= m.repick_avoidance:
                    break
                item = idx[_draw(rng, cdf)]
            picked.add(item)
            emit(t, item, None)
            fit = fits[item]
            if rng.random() < m.watch_base + m.watch_slope * fit:
                # The contract has no end time, so the watch report follows its click closely
                # (which keeps in-session gaps short); its length carries the engagement.
                t += int(rng.integers(5_000, 60_000))
                fraction = min(1.0, max(0.02, 0.15 + 0.8 * fit + rng.normal(0, 0.12)))
                seconds = round(float(world.durations[item]) * 60 * fraction, 1)
                emit(t, item, seconds)
            t += 20_000 + min(int(rng.exponential(150_000)), 20 * 60_000)
        sessions.append({
            "session_id": f"{world.user_ids[user]}-s{len(sessions):03d}", "user_id": world.user_ids[user],
            "start_ts": start, "end_ts": ts[-1], "device": device, "daypart": part, "weekend": weekend,
            "intent": GENRES[intent], "picks": n_picks,
        })
    # Compact columns: a 10k-user world has over a million events.
    cols = {
        "ts": np.array(ts, dtype=np.int64),
        "item": np.array(item_of, dtype=np.int32),
        "session": np.array(session_of, dtype=np.int32),
        "watch": np.array([np.nan if w is None else w for w in watch], dtype=float),
        "event_id": rng.bytes(16 * len(ts)),  # uuid bytes, 16 per event
    }
    return cols, sessions


def _event_line(world: World, user: int, cols: dict, k: int, sessions: list[dict]) -> str:
    watch_seconds = cols["watch"][k]
    session = sessions[cols["session"][k]]
    event = {
        "event_id": str(uuid.UUID(bytes=cols["event_id"][16 * k:16 * k + 16], version=4)),
        "event_type": "click" if math.isnan(watch_seconds) else "watch",
        "user_id": world.user_ids[user],
        "item_id": world.item_ids[cols["item"][k]],
        "ts": int(cols["ts"][k]),
        "device": session["device"],
        "session_id": session["session_id"],
    }
    if not math.isnan(watch_seconds):
        event["watch_seconds"] = float(watch_seconds)
    return json.dumps(event, separators=(",", ":"))


def _write_jsonl(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            f.write("\n")


def generate_world(out_dir: Path, *, users: int, items: int, days: float, seed: int,
                   start_ms: int | None = None) -> dict:
    """Write items.jsonl, users.jsonl, events.jsonl, sessions.jsonl and world.json; return a summary."""
    if users < 1 or items < 1:
        raise UserError(f"a world needs at least one user and one item (got users={users}, items={items})")
    if not days > 0:
        raise UserError(f"days must be positive, got {days}")
    start_ms = DEFAULT_START_MS if start_ms is None else start_ms
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {out_dir}: {e.strerror}") from None

    world_seq, events_seq = np.random.SeedSequence(seed).spawn(2)
    world = sample_world(np.random.default_rng(world_seq), users=users, items=items, days=days,
                         seed=seed, start_ms=start_ms)
    bins = _hour_bins(world)
    per_user = []
    for u, child in enumerate(tqdm(events_seq.spawn(users), desc="simulating", unit="user")):
        per_user.append(simulate_user(world, u, np.random.default_rng(child), bins))

    # Global time order; ties go to the lower user, then to the user's own order.
    ts = np.concatenate([cols["ts"] for cols, _ in per_user])
    owner = np.repeat(np.arange(users), [len(cols["ts"]) for cols, _ in per_user])
    seq = np.concatenate([np.arange(len(cols["ts"])) for cols, _ in per_user])
    order = np.lexsort((seq, owner, ts))
    all_sessions = sorted((s for _, ss in per_user for s in ss), key=lambda s: (s["start_ts"], s["user_id"]))

    paths = {name: out_dir / f"{name}.jsonl" for name in ("items", "users", "events", "sessions")}
    paths["world"] = out_dir / "world.json"
    _write_jsonl(paths["items"], (item_record(world, i) for i in range(items)))
    _write_jsonl(paths["users"], (user_record(world, u) for u in range(users)))
    _write_jsonl(paths["events"], (
        _event_line(world, u, per_user[u][0], k, per_user[u][1])
        for u, k in tqdm(zip(owner[order].tolist(), seq[order].tolist()), total=len(order),
                         desc="writing events", unit="event", unit_scale=True, mininterval=1.0)
    ))
    _write_jsonl(paths["sessions"], all_sessions)
    paths["world"].write_text(json.dumps(world_record(world), indent=2) + "\n", encoding="utf-8")

    watches = int(sum(np.count_nonzero(~np.isnan(cols["watch"])) for cols, _ in per_user))
    return {
        "users": users, "items": items, "events": len(ts), "clicks": len(ts) - watches, "watches": watches,
        "sessions": len(all_sessions), "start_ms": world.start_ms, "end_ms": world.end_ms,
        "first_ts": int(ts.min()) if len(ts) else None, "last_ts": int(ts.max()) if len(ts) else None,
        "paths": {name: str(p) for name, p in paths.items()},
    }
