"""MovieLens loading and conversion, on tiny invented fixtures in both layouts (never real MovieLens data)."""
from __future__ import annotations

import json

import pytest

from streamrec.errors import UserError
from streamrec.events import parse_event
from streams.movielens import age_group, convert, load, load_user_attributes, resolve_format, split_title
from streams.world import typical_minutes

T0 = 880_000_000  # 1997-11-20, epoch seconds

# (user, item, rating, seconds): user 1 has a tie with user 2 at T0 and a 31-minute gap (two sessions);
# user 2 rates two items in the same second.
RATINGS = [
    (1, 1, 5, T0), (2, 3, 4, T0), (2, 2, 1, T0), (1, 2, 3, T0 + 600), (1, 3, 2, T0 + 600 + 31 * 60),
    (3, 4, 5, T0 - 50), (2, 1, 2, T0 + 30 * 60),
]
# 18 genre flags in GENRES order, after MovieLens's leading "unknown" flag.
FLAGS = {
    1: "0|0|0|1|1|1" + "|0" * 13,        # Animation, Children's, Comedy
    2: "0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0|0",  # Adventure, Sci-Fi
    3: "0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0",  # Drama
    4: "1" + "|0" * 18,                  # only "unknown"
}
ML100K_ITEMS = [
    "1|Toy Story (1995)|01-Jan-1995||http://example.invalid/1|" + FLAGS[1],
    "2|Cité des enfants perdus, La (1995)|01-Jan-1995||http://example.invalid/2|" + FLAGS[2],
    "3|Shawshank Redemption, The|14-Oct-1994||http://example.invalid/3|" + FLAGS[3],
    "4|unknown||||" + FLAGS[4],
]
ML1M_ITEMS = [
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "2::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi",
    "3::Shawshank Redemption, The (1994)::Drama",
    "4::Señor Nobody (a.k.a. Nadie) (2001)::",
]


def _write(path, lines):
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


@pytest.fixture
def ml100k(tmp_path):
    d = tmp_path / "ml-100k"
    d.mkdir()
    _write(d / "u.data", [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in RATINGS])
    _write(d / "u.item", ML100K_ITEMS)
    _write(d / "u.user", ["1|24|M|technician|85711", "2|53|F|other|94043", "3|33|F|writer|15213"])
    return d


@pytest.fixture
def ml1m(tmp_path):
    d = tmp_path / "ml-1m"
    d.mkdir()
    _write(d / "ratings.dat", [f"{u}::{i}::{r}::{t}" for u, i, r, t in RATINGS])
    _write(d / "movies.dat", ML1M_ITEMS)
    _write(d / "users.dat", ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117"])
    return d


def test_split_title_moves_the_article_and_takes_the_year():
    assert split_title("Shawshank Redemption, The (1994)") == ("The Shawshank Redemption", 1994)
    assert split_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)") == (
        "The City of Lost Children (Cité des enfants perdus, La)", 1995)
    assert split_title("unknown") == ("unknown", None)


def test_load_ml100k(ml100k):
    ratings, items, users = load(ml100k, "ml-100k")
    assert sorted(map(tuple, ratings.to_numpy().tolist())) == sorted(RATINGS)
    by_id = items.set_index("item")
    assert by_id.loc[1, "genres"] == ["Animation", "Children's", "Comedy"]
    assert by_id.loc[2, "title"] == "Cité des enfants perdus, La" and by_id.loc[2, "genres"] == ["Adventure", "Sci-Fi"]
    assert (by_id.loc[3, "title"], by_id.loc[3, "year"]) == ("The Shawshank Redemption", 1994)  # year from the date
    assert by_id.loc[4, "genres"] == [] and items["year"].isna().sum() == 1
    assert users.set_index("user").loc[2].tolist() == ["F", 53, "other", "94043"]


def test_load_ml1m(ml1m):
    ratings, items, users = load(ml1m, "ml-1m")
    assert sorted(map(tuple, ratings.to_numpy().tolist())) == sorted(RATINGS)
    by_id = items.set_index("item")
    assert by_id.loc[1, "genres"] == ["Animation", "Children's", "Comedy"]
    assert (by_id.loc[4, "title"], by_id.loc[4, "year"]) == ("Señor Nobody (a.k.a. Nadie)", 2001)
    assert by_id.loc[4, "genres"] == []
    assert users.set_index("user").loc[1].tolist() == ["F", 1, "10", "48067"]


def test_auto_detects_the_layout(ml100k, ml1m, tmp_path):
    assert resolve_format(ml100k) == "ml-100k" and resolve_format(ml1m) == "ml-1m"
    with pytest.raises(UserError, match=r"u.data \(ML-100k\) or ratings.dat \(ML-1M\); did you mean .*ml-100k"):
        resolve_format(tmp_path)
    (ml100k / "ratings.dat").write_text("")
    with pytest.raises(UserError, match="both ML-100k and ML-1M"):
        resolve_format(ml100k)


@pytest.mark.parametrize("layout", ["ml100k", "ml1m"])
def test_convert_writes_a_time_ordered_watch_log_and_catalog(layout, request, tmp_path):
    src = request.getfixturevalue(layout)
    out = tmp_path / "out" / "events.jsonl"
    summary = convert(src, out)
    lines = out.read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    assert summary["format"] == {"ml100k": "ml-100k", "ml1m": "ml-1m"}[layout]
    assert (summary["events"], summary["users"], summary["items"], summary["sessions"]) == (7, 3, 4, 4)
    # Time order; same-second ratings keep the ratings file's order (user 2's item 3 before its item 2).
    assert [(e["ts"], e["user_id"], e["item_id"]) for e in events] == sorted(
        ((t * 1000, f"ml{u}", f"ml{i}") for u, i, _, t in RATINGS), key=lambda row: row[0])
    assert [e["item_id"] for e in events if e["ts"] == T0 * 1000] == ["ml1", "ml3", "ml2"]
    assert summary["first_ts"] == events[0]["ts"] and summary["last_ts"] == events[-1]["ts"]
    catalog_lines = (tmp_path / "out" / "items.jsonl").read_text("utf-8").splitlines()
    catalog = {it["item_id"]: it for it in map(json.loads, catalog_lines)}
    for e in events:
        assert parse_event(e).to_dict() == e
        assert (e["event_type"], e["device"]) == ("watch", "desktop")
        rating = next(r for u, i, r, t in RATINGS if f"ml{u}" == e["user_id"] and f"ml{i}" == e["item_id"])
        assert e["watch_seconds"] == pytest.approx(rating / 5 * catalog[e["item_id"]]["duration_minutes"] * 60)
    sessions = {(e["user_id"], e["item_id"]): e["session_id"] for e in events}
    # User 1: 10 minutes apart -> one session; then 31 minutes -> a new one. User 2: exactly 30 minutes -> same.
    assert sessions["ml1", "ml1"] == sessions["ml1", "ml2"] == "ml1-s0" and sessions["ml1", "ml3"] == "ml1-s1"
    assert sessions["ml2", "ml2"] == sessions["ml2", "ml1"] == "ml2-s0"
    assert catalog["ml2"]["title"] == "Cité des enfants perdus, La"
    assert catalog["ml1"]["duration_minutes"] == typical_minutes(["Animation", "Children's", "Comedy"])
    assert set(catalog["ml1"]) == {"item_id", "title", "genres", "year", "duration_minutes", "popularity"}
    assert catalog["ml1"]["popularity"] > catalog["ml4"]["popularity"] > 0  # 2 ratings vs 1
    # Re-conversion gives the same bytes, ids included.
    first = out.read_bytes()
    convert(src, out)
    assert out.read_bytes() == first and len({e["event_id"] for e in events}) == len(events)


@pytest.mark.parametrize("file, line_no, bad, message", [
    ("u.data", 3, "2\t2\t1", "expected 4 fields separated by '\\\\t', got 3"),
    ("u.data", 2, "2\t3\tfour\t880000000", "rating 'four' is not an integer"),
    ("u.data", 1, "1\t1\t7\t880000000", "rating 7 is outside 1..5"),
    ("u.item", 4, "4|unknown||||1|0|2" + "|0" * 16, "genre flags must be 0 or 1"),
])
def test_corrupt_ml100k_line_names_file_and_line(ml100k, file, line_no, bad, message):
    lines = (ml100k / file).read_text(encoding="latin-1").splitlines()
    lines[line_no - 1] = bad
    _write(ml100k / file, lines)
    with pytest.raises(UserError, match=rf"{file}:{line_no}: {message}"):
        load(ml100k)


def test_corrupt_ml1m_lines_name_file_and_line(ml1m):
    _write(ml1m / "movies.dat", ML1M_ITEMS[:2] + ["3::Shawshank Redemption, The (1994)::Drama|Noir"] + ML1M_ITEMS[3:])
    with pytest.raises(UserError, match=r"movies.dat:3: unknown genre 'Noir'"):
        load(ml1m)
    _write(ml1m / "movies.dat", ML1M_ITEMS)
    _write(ml1m / "ratings.dat", ["1::1::5::880000000", "", "1:2:5:880000100"])
    with pytest.raises(UserError, match=r"ratings.dat:3: expected 4 fields separated by '::', got 1"):
        load(ml1m)


def test_bad_references_and_duplicates_are_errors(ml1m):
    _write(ml1m / "ratings.dat", ["1::1::5::880000000", "2::99::3::880000100"])
    with pytest.raises(UserError, match=r"ratings.dat: item 99 \(user 2\) is not in movies.dat"):
        load(ml1m)
    _write(ml1m / "movies.dat", ML1M_ITEMS + ["1::Toy Story again (1995)::Comedy"])
    with pytest.raises(UserError, match=r"movies.dat: item id 1 appears more than once"):
        load(ml1m)


def test_missing_directory_files_and_unknown_format_are_clear_errors(ml100k, tmp_path):
    with pytest.raises(UserError, match=r"MovieLens directory .*nowhere does not exist"):
        convert(tmp_path / "nowhere", tmp_path / "events.jsonl")
    with pytest.raises(UserError, match=r"unknown MovieLens format 'ml-20m'; expected auto, ml-100k, ml-1m"):
        load(ml100k, "ml-20m")
    with pytest.raises(UserError, match=r"is not an ml-1m directory: missing ratings.dat, movies.dat"):
        load(ml100k, "ml-1m")
    (ml100k / "u.item").unlink()
    with pytest.raises(UserError, match=r"is not an ml-100k directory: missing u.item"):
        load(ml100k)
    with pytest.raises(UserError, match="is a directory"):
        convert(ml100k, tmp_path)


def test_users_file_is_optional(ml1m):
    (ml1m / "users.dat").unlink()
    ratings, _, users = load(ml1m)
    assert len(ratings) == len(RATINGS) and users.empty
    assert list(users.columns) == ["user", "gender", "age", "occupation", "zip"]


@pytest.mark.parametrize("age, bracket", [
    (7, "<18"), (17, "<18"), (18, "18-24"), (24, "18-24"), (25, "25-34"), (44, "35-44"), (45, "45-49"),
    (49, "45-49"), (50, "50-55"), (55, "50-55"), (56, "56+"), (73, "56+"),
])
def test_ages_in_years_fall_in_ml1m_brackets(age, bracket):
    assert age_group(age) == bracket


def test_user_attributes_of_both_layouts_use_the_event_logs_ids(ml100k, ml1m):
    small = load_user_attributes(ml100k).set_index("user_id")
    assert small.loc["ml1"].tolist() == ["M", "18-24", "technician"]
    assert small.loc["ml2"].tolist() == ["F", "50-55", "other"]
    assert small.loc["ml3"].tolist() == ["F", "25-34", "writer"]
    # ML-1M codes: age 1 is "Under 18", occupation 10 "K-12 student", 16 "self-employed", 15 "scientist".
    large = load_user_attributes(ml1m, "ml-1m").set_index("user_id")
    assert large.loc["ml1"].tolist() == ["F", "<18", "K-12 student"]
    assert large.loc["ml2"].tolist() == ["M", "56+", "self-employed"]
    assert large.loc["ml3"].tolist() == ["M", "25-34", "scientist"]
    assert set(small.index) == set(large.index) == {"ml1", "ml2", "ml3"}


@pytest.mark.parametrize("layout, file, bad, message", [
    ("ml1m", "users.dat", "2::M::20::16::70072", "age code 20 is not one of 1, 18, 25, 35, 45, 50, 56"),
    ("ml1m", "users.dat", "2::M::56::21::70072", r"occupation code 21 is outside 0..20"),
    ("ml1m", "users.dat", "2::X::56::16::70072", "gender 'X' is not one of F, M"),
    ("ml100k", "u.user", "2|0|F|other|94043", "age 0 is not an age in years"),
])
def test_corrupt_user_lines_name_file_and_line(layout, file, bad, message, request):
    d = request.getfixturevalue(layout)
    lines = (d / file).read_text(encoding="latin-1").splitlines()
    lines[1] = bad
    _write(d / file, lines)
    with pytest.raises(UserError, match=rf"{file}:2: {message}"):
        load_user_attributes(d)


def test_user_attributes_need_the_users_file(ml100k):
    (ml100k / "u.user").unlink()
    with pytest.raises(UserError, match="has no u.user: the user attributes come from it"):
        load_user_attributes(ml100k)
