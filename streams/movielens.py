"""MovieLens ML-100k / ML-1M from a user-given directory, as a watch-event log and a catalog.

MovieLens files are never stored in the repository; the user downloads them and
passes the directory. The mapping of a rating to the event contract:

- ``user_id`` "ml{user}", ``item_id`` "ml{movie}", ``ts`` = rating time × 1000;
- every rating becomes one ``watch`` event: rating r (1..5) means the user watched
  r/5 of the film, so ``watch_seconds`` = r/5 × the item's nominal running time
  (MovieLens has none; ``streams.world.typical_minutes`` of its genres);
- ``device`` "desktop": MovieLens ratings were entered on a web site (1996-2003);
- ``session_id`` "ml{user}-s{n}": a user's n-th run of ratings with gaps of at most 30 min;
- ``event_id`` uuid5 of user/item/ts, so a re-conversion gives identical ids;
- the log is in time order, and ratings with the same second keep their order in the ratings file: the log's line
  order is the tie rule every reader of the log uses (``models.data``; 77 % of ML-1M ratings share a second with
  another of the same user's, so the rule decides many held-out items).

User attributes (``user_attributes``, for the fairness audit; never part of the event log): gender, age bucket
and occupation name per ``user_id``. ML-1M codes age as the start of a bracket (``AGE_GROUPS``) and occupation as a
number (``OCCUPATIONS_1M``); ML-100k's ages in years are put in the same brackets, its occupations kept as named.

The catalog (items.jsonl, beside the event log) has the generator's fields;
``year`` comes from the title's "(1995)" (else the release date) and may be null,
``genres`` may be empty or hold more than three, and ``popularity`` is
(ratings + 1) / (mean ratings per item + 1).
"""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from streamrec.errors import UserError
from streamrec.vocabulary import GENRES
from streams.world import typical_minutes

LAYOUTS: dict[str, dict[str, str]] = {
    "ml-100k": {"ratings": "u.data", "items": "u.item", "users": "u.user"},
    "ml-1m": {"ratings": "ratings.dat", "items": "movies.dat", "users": "users.dat"},
}
SESSION_GAP_MS = 30 * 60_000
DEVICE = "desktop"
EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "streamrec:movielens")

_YEAR_IN_TITLE = re.compile(r"\s*\((\d{4})\)\s*$")
# "Shawshank Redemption, The" -> "The Shawshank Redemption" (an alternative title in brackets may follow).
_TRAILING_ARTICLE = re.compile(r"^(.*), (The|A|An)((?: \(.*\))?)$")
_RELEASE_DATE = re.compile(r"\d{2}-[A-Za-z]{3}-(\d{4})")

RATING_COLUMNS = ["user", "item", "rating", "timestamp"]
ITEM_COLUMNS = ["item", "title", "genres", "year"]
USER_COLUMNS = ["user", "gender", "age", "occupation", "zip"]
# ML-1M's age codes (the lower bound of each bracket in years) and their labels; ML-100k ages go in the same ones.
AGE_GROUPS = {1: "<18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
# ML-1M's occupation codes 0..20, as its README names them.
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)
GENDERS = ("F", "M")


# ---- pure line parsing: fields in, a row out, ValueError with a precise message ----

def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an integer") from None


def _rating_row(fields: list[str]) -> tuple:
    user, item = _int(fields[0], "user id"), _int(fields[1], "item id")
    rating, ts = _int(fields[2], "rating"), _int(fields[3], "timestamp")
    if not 1 <= rating <= 5:
        raise ValueError(f"rating {rating} is outside 1..5")
    return user, item, rating, ts


def split_title(raw: str) -> tuple[str, int | None]:
    """'Shawshank Redemption, The (1994)' -> ('The Shawshank Redemption', 1994)."""
    m = _YEAR_IN_TITLE.search(raw)
    title, year = (raw[:m.start()], int(m.group(1))) if m else (raw.strip(), None)
    article = _TRAILING_ARTICLE.match(title)
    if article:
        title = f"{article.group(2)} {article.group(1)}{article.group(3)}"
    return title, year


def _item_row_100k(fields: list[str]) -> tuple:
    flags = fields[5:]
    if any(f not in ("0", "1") for f in flags):
        raise ValueError(f"genre flags must be 0 or 1, got {'|'.join(flags)!r}")
    title, year = split_title(fields[1])
    if year is None and (date := _RELEASE_DATE.fullmatch(fields[2])):
        year = int(date.group(1))
    # Flag 0 is MovieLens's "unknown"; flags 1..18 are GENRES in order.
    return _int(fields[0], "item id"), title, [g for g, f in zip(GENRES, flags[1:]) if f == "1"], year


def _item_row_1m(fields: list[str]) -> tuple:
    genres = [g for g in fields[2].split("|") if g]
    unknown = [g for g in genres if g not in GENRES]
    if unknown:
        raise ValueError(f"unknown genre {unknown[0]!r}")
    title, year = split_title(fields[1])
    return _int(fields[0], "item id"), title, genres, year


def _gender(value: str) -> str:
    if value not in GENDERS:
        raise ValueError(f"gender {value!r} is not one of {', '.join(GENDERS)}")
    return value


def _user_row_100k(fields: list[str]) -> tuple:
    age = _int(fields[1], "age")
    if not 0 < age < 130:
        raise ValueError(f"age {age} is not an age in years")
    return _int(fields[0], "user id"), _gender(fields[2]), age, fields[3], fields[4]


def _user_row_1m(fields: list[str]) -> tuple:
    # ML-1M codes age as a bracket start (1, 18, 25, ...) and occupation as a number.
    age, occupation = _int(fields[2], "age"), _int(fields[3], "occupation")
    if age not in AGE_GROUPS:
        raise ValueError(f"age code {age} is not one of {', '.join(map(str, AGE_GROUPS))}")
    if not 0 <= occupation < len(OCCUPATIONS_1M):
        raise ValueError(f"occupation code {occupation} is outside 0..{len(OCCUPATIONS_1M) - 1}")
    return _int(fields[0], "user id"), _gender(fields[1]), age, fields[3], fields[4]


# Per format and file: separator, field count, row parser.
_PARSERS: dict[str, dict[str, tuple[str, int, Callable[[list[str]], tuple]]]] = {
    "ml-100k": {"ratings": ("\t", 4, _rating_row), "items": ("|", 24, _item_row_100k),
                "users": ("|", 5, _user_row_100k)},
    "ml-1m": {"ratings": ("::", 4, _rating_row), "items": ("::", 3, _item_row_1m),
              "users": ("::", 5, _user_row_1m)},
}


# ---- files ----

def detect_format(directory: Path) -> str:
    """Which MovieLens layout the directory holds, by its ratings file."""
    found = [fmt for fmt, files in LAYOUTS.items() if (directory / files["ratings"]).is_file()]
    if len(found) > 1:
        raise UserError(f"{directory} holds both ML-100k and ML-1M files; pass the format explicitly")
    if not found:
        nested = [p.name for p in sorted(directory.iterdir()) if p.is_dir() and p.name.lower().startswith("ml-")]
        hint = f"; did you mean {directory / nested[0]}?" if nested else ""
        raise UserError(f"no MovieLens files in {directory}: expected u.data (ML-100k) or ratings.dat (ML-1M){hint}")
    return found[0]


def _read_rows(path: Path, fmt: str, kind: str) -> list[tuple]:
    sep, n_fields, parse = _PARSERS[fmt][kind]
    rows = []
    try:
        # MovieLens is latin-1 ("Cité des enfants perdus"); every byte decodes, so errors are about format only.
        with path.open(encoding="latin-1", newline="") as f:
            lines = tqdm(f, desc=f"reading {path.name}", unit="line", unit_scale=True, mininterval=1.0,
                         disable=kind != "ratings")
            for n, line in enumerate(lines, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split(sep)
                try:
                    if len(fields) != n_fields:
                        raise ValueError(f"expected {n_fields} fields separated by {sep!r}, got {len(fields)}")
                    rows.append(parse(fields))
                except ValueError as e:
                    raise UserError(f"{path}:{n}: {e}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    return rows


def _unique(rows: list[tuple], path: Path, what: str) -> None:
    ids = [r[0] for r in rows]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise UserError(f"{path}: {what} {dup} appears more than once")


def resolve_format(path: Path, fmt: str = "auto") -> str:
    """The layout to read: ``fmt`` checked, or detected when "auto"."""
    directory = Path(path)
    if fmt != "auto" and fmt not in LAYOUTS:
        raise UserError(f"unknown MovieLens format {fmt!r}; expected auto, {', '.join(LAYOUTS)}")
    if not directory.is_dir():
        raise UserError(f"MovieLens directory {directory} does not exist or is not a directory")
    return detect_format(directory) if fmt == "auto" else fmt


def load(path: Path, fmt: str = "auto") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(ratings, items, users) with MovieLens's integer ids.

    ratings: user, item, rating, timestamp (epoch seconds); items: item, title,
    genres (list), year (nullable); users: user, gender, age, occupation, zip
    (empty when the users file is absent: the event log does not need it).
    """
    directory = Path(path)
    fmt = resolve_format(directory, fmt)
    files = {kind: directory / name for kind, name in LAYOUTS[fmt].items()}
    missing = [files[k].name for k in ("ratings", "items") if not files[k].is_file()]
    if missing:
        raise UserError(f"{directory} is not an {fmt} directory: missing {', '.join(missing)}")

    item_rows = _read_rows(files["items"], fmt, "items")
    _unique(item_rows, files["items"], "item id")
    items = pd.DataFrame(item_rows, columns=ITEM_COLUMNS)
    items["year"] = items["year"].astype("Int64")
    ratings = pd.DataFrame(_read_rows(files["ratings"], fmt, "ratings"), columns=RATING_COLUMNS)
    unknown = ~ratings["item"].isin(items["item"])
    if unknown.any():
        first = ratings[unknown].iloc[0]
        raise UserError(
            f"{files['ratings']}: item {first['item']} (user {first['user']}) is not in {files['items'].name}")
    if files["users"].is_file():
        user_rows = _read_rows(files["users"], fmt, "users")
        _unique(user_rows, files["users"], "user id")
        users = pd.DataFrame(user_rows, columns=USER_COLUMNS)
    else:
        users = pd.DataFrame(columns=USER_COLUMNS)
    return ratings, items, users


def load_user_attributes(path: Path, fmt: str = "auto") -> pd.DataFrame:
    """The users file's attributes by ``user_id`` (``user_attributes``); a UserError when there is no users file."""
    directory = Path(path)
    fmt = resolve_format(directory, fmt)
    users_file = directory / LAYOUTS[fmt]["users"]
    if not users_file.is_file():
        raise UserError(f"{directory} has no {users_file.name}: the user attributes come from it")
    rows = _read_rows(users_file, fmt, "users")
    _unique(rows, users_file, "user id")
    return user_attributes(pd.DataFrame(rows, columns=USER_COLUMNS), fmt)


# ---- conversion (pure) ----

def age_group(age: int) -> str:
    """The ML-1M bracket of an age in years: the label of the largest code in ``AGE_GROUPS`` at or below it."""
    starts = list(AGE_GROUPS)
    return AGE_GROUPS[starts[max(int(np.searchsorted(starts, age, side="right")) - 1, 0)]]


def user_attributes(users: pd.DataFrame, fmt: str) -> pd.DataFrame:
    """``load``'s users as the audit's groups: user_id ("ml{user}", the event log's), gender, age (an
    ``AGE_GROUPS`` label) and occupation (a name in both layouts)."""
    if fmt == "ml-1m":
        ages = users["age"].map(AGE_GROUPS)
        occupations = users["occupation"].astype(int).map(dict(enumerate(OCCUPATIONS_1M)))
    else:
        ages, occupations = users["age"].map(age_group), users["occupation"]
    return pd.DataFrame({"user_id": "ml" + users["user"].astype(str), "gender": users["gender"],
                         "age": ages, "occupation": occupations}).reset_index(drop=True)


def assign_sessions(ratings: pd.DataFrame) -> pd.Series:
    """Per-user session number: a new session after a gap of more than 30 minutes."""
    ordered = ratings.sort_values(["user", "timestamp", "item"], kind="stable")
    gap_ms = ordered.groupby("user")["timestamp"].diff() * 1000
    new_session = gap_ms.isna() | (gap_ms > SESSION_GAP_MS)
    return new_session.astype(int).groupby(ordered["user"]).cumsum().sub(1).reindex(ratings.index)


def relative_popularity(counts: np.ndarray) -> np.ndarray:
    """The catalog's ``popularity`` from interaction counts: (count + 1) / (mean count + 1), 1 = a typical item."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.round((counts + 1) / (counts.mean() + 1), 4)


def item_catalog(items: pd.DataFrame, ratings: pd.DataFrame) -> pd.DataFrame:
    """Items in the generator's catalog format."""
    counts = ratings["item"].value_counts().reindex(items["item"], fill_value=0).to_numpy()
    return pd.DataFrame({
        "item_id": "ml" + items["item"].astype(str),
        "title": items["title"],
        "genres": items["genres"],
        "year": items["year"],
        "duration_minutes": [typical_minutes(g) for g in items["genres"]],
        "popularity": relative_popularity(counts),
    })


def events(ratings: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """Time-ordered watch events in the contract's columns; equal times keep the ratings file's order."""
    minutes = dict(zip(catalog["item_id"], catalog["duration_minutes"]))
    df = pd.DataFrame({
        "user_id": "ml" + ratings["user"].astype(str),
        "item_id": "ml" + ratings["item"].astype(str),
        "ts": ratings["timestamp"].astype("int64") * 1000,
        "session": assign_sessions(ratings),
        "rating": ratings["rating"],
        "user": ratings["user"],
        "item": ratings["item"],
    }).sort_values("ts", kind="stable")
    df["session_id"] = df["user_id"] + "-s" + df["session"].astype(str)
    df["watch_seconds"] = np.round(df["rating"] / 5 * df["item_id"].map(minutes) * 60, 1)
    df["event_id"] = [str(uuid.uuid5(EVENT_NAMESPACE, f"{u}/{i}/{t}"))
                      for u, i, t in zip(df["user_id"], df["item_id"], df["ts"])]
    return df[["event_id", "user_id", "item_id", "ts", "session_id", "watch_seconds"]].reset_index(drop=True)


# ---- writing ----

def convert(path: Path, out_path: Path, fmt: str = "auto") -> dict:
    """Write the event log to ``out_path`` and the catalog to items.jsonl beside it; return a summary."""
    out_path = Path(out_path)
    if out_path.is_dir():
        raise UserError(f"{out_path} is a directory; give the event log's file name (e.g. {out_path / 'events.jsonl'})")
    fmt = resolve_format(path, fmt)
    ratings, items, _users = load(path, fmt)
    catalog = item_catalog(items, ratings)
    log = events(ratings, catalog)
    items_path = out_path.with_name("items.jsonl")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with out_path.open("w", encoding="utf-8") as f:
            rows = zip(log["event_id"], log["user_id"], log["item_id"], log["ts"].tolist(), log["session_id"],
                       log["watch_seconds"].tolist())
            for event_id, user_id, item_id, ts, session_id, seconds in tqdm(
                    rows, total=len(log), desc="writing events", unit="event", unit_scale=True, mininterval=1.0):
                f.write(json.dumps({
                    "event_id": event_id, "event_type": "watch", "user_id": user_id, "item_id": item_id,
                    "ts": ts, "device": DEVICE, "session_id": session_id, "watch_seconds": seconds,
                }, separators=(",", ":")) + "\n")
        with items_path.open("w", encoding="utf-8") as f:
            for row in catalog.to_dict("records"):
                row["year"] = None if pd.isna(row["year"]) else int(row["year"])
                f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {e.filename}: {e.strerror}") from None
    return {
        "format": fmt,
        "events": len(log), "users": int(ratings["user"].nunique()), "items": len(catalog),
        "sessions": int(log["session_id"].nunique()),
        "first_ts": int(log["ts"].iloc[0]) if len(log) else None,
        "last_ts": int(log["ts"].iloc[-1]) if len(log) else None,
        "paths": {"events": str(out_path), "items": str(items_path)},
    }
