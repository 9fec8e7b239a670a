"""``streamrec evaluate --fairness`` end to end, with a real Feast in a temp data dir: Wide & Deep on a small
synthetic world (users grouped by activity and preferred device) and on an invented MovieLens-100k-format
directory with user attributes (gender, age, occupation), written here and never real MovieLens data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from models.cli import register
from streamrec.config import Settings
from streamrec.errors import UserError
from streamrec.vocabulary import DEVICES, GENRES
from streams.generator import generate_world
from streams.movielens import AGE_GROUPS
from tests.fixtures.feast import sqlite_settings
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

WORLD = {"users": 120, "items": 300, "days": 7, "seed": 11}
PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = ("fairness_quality.png", "fairness_exposure.png", "fairness_tradeoff.png")
OCCUPATIONS = ("engineer", "student", "writer", "retired")
ML_USERS, ML_ITEMS = 60, 160
T0 = 880_000_000


def cli(settings: Settings, *argv: str) -> int:
    return run_cli(register, settings, *argv)


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return sqlite_settings(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def world_report(settings, tmp_path_factory):
    world, out = tmp_path_factory.mktemp("world"), tmp_path_factory.mktemp("fairness-world")
    generate_world(world, **WORLD)
    assert cli(settings, "evaluate", "--world", str(world), "--fairness", "--fairness-strengths", "0.1,0.5",
               "--fairness-min-users", "5", "--out", str(out), "-q") == 0
    return out


def write_movielens(d) -> None:
    """An invented ML-100k directory: users who each favour a genre (so there is something to learn), their
    attributes cycling through genders, ages and occupations; latin-1 like the real files."""
    rng = np.random.default_rng(4)
    d.mkdir()
    genre = rng.integers(0, len(GENRES), ML_ITEMS)
    items = [f"{i + 1}|Invented film {i + 1} ({1980 + i % 20})|01-Jan-{1980 + i % 20}||http://example.invalid/|0|"
             + "|".join("1" if g == genre[i] else "0" for g in range(len(GENRES))) for i in range(ML_ITEMS)]
    weight = np.linspace(3, 0.2, ML_ITEMS)  # a popularity tail
    ratings = []
    for u in range(1, ML_USERS + 1):
        liked = u % len(GENRES)
        p = weight * np.where(genre == liked, 6.0, 1.0)
        picks = rng.choice(ML_ITEMS, size=int(rng.integers(12, 30)), replace=False, p=p / p.sum())
        ts = T0 + u * 10_000 + np.sort(rng.integers(0, 5_000_000, picks.size))
        ratings += [f"{u}\t{i + 1}\t{rng.integers(1, 6)}\t{t}" for i, t in zip(picks, ts)]
    users = [f"{u}|{(13, 20, 30, 40, 47, 52, 60)[u % 7]}|{'FM'[u % 2]}|{OCCUPATIONS[u % 4]}|{10000 + u}"
             for u in range(1, ML_USERS + 1)]
    for name, lines in (("u.item", items), ("u.data", ratings), ("u.user", users)):
        (d / name).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


@pytest.fixture(scope="module")
def movielens(tmp_path_factory):
    d = tmp_path_factory.mktemp("ml") / "ml-100k"
    write_movielens(d)
    return d


@pytest.fixture(scope="module")
def movielens_report(settings, movielens, tmp_path_factory):
    out = tmp_path_factory.mktemp("fairness-ml")
    assert cli(settings, "evaluate", "--data", "movielens-100k", "--path", str(movielens), "--fairness",
               "--epochs", "2", "--out", str(out), "-q") == 0
    return out


def _figures(out) -> dict:
    assert (out / "fairness.md").is_file()
    for plot in PLOTS:
        assert (out / plot).read_bytes()[:8] == PNG, plot
    return json.loads((out / "fairness.json").read_text(encoding="utf-8"))


def _check_consistent(summary: dict) -> None:
    """Every grouping covers every tested user; group means add up to the overall; exposure shares to 1."""
    tested, k = summary["tested_users"], summary["k"]
    for run in [summary["base"], *summary["mitigation"]["runs"].values()]:
        for metric, block in run["quality"].items():
            for name, q in block["by"].items():
                groups = q["groups"].values()
                assert sum(g["users"] for g in groups) == tested, (metric, name)
                assert sum(g["users"] * g["mean"] for g in groups) / tested == pytest.approx(block["overall"])
        e = run["exposure"]
        assert list(e["groups"]) == [f"D{n}" for n in range(1, 11)]
        assert sum(g["exposure_share"] for g in e["groups"].values()) == pytest.approx(1.0)
        assert sum(g["catalog_share"] for g in e["groups"].values()) == pytest.approx(1.0)
        assert e["slots"] == tested * k  # every user had k unseen items to show
        assert 0 <= e["distance"]["value"] <= 1


def _low_share(exposure: dict) -> float:
    return sum(g["exposure_share"] for g in list(exposure["groups"].values())[:5])


def test_world_audit_groups_by_activity_and_device(world_report):
    summary = _figures(world_report)
    _check_consistent(summary)
    assert summary["model"] == "wide-deep" and summary["dataset"]["name"] == "world"
    assert summary["groupings"] == ["activity", "preferred_device"]
    devices = summary["base"]["quality"]["ndcg@10"]["by"]["preferred_device"]["groups"]
    assert set(devices) <= set(DEVICES) and len(devices) >= 3
    activity = list(summary["base"]["quality"]["ndcg@10"]["by"]["activity"]["groups"])
    assert activity == sorted(activity, key=lambda b: int(b.split("-")[0].rstrip("+")))  # in activity order
    disparity = summary["base"]["quality"]["ndcg@10"]["by"]["preferred_device"]["disparity"]
    assert 0 < disparity["ratio"] <= 1 and disparity["ci"][0] <= disparity["ratio"] <= disparity["ci"][1]
    assert summary["min_group_users"] == 5
    activity_groups = summary["base"]["quality"]["ndcg@10"]["by"]["activity"]["groups"].values()
    small = [g for g in activity_groups if g["users"] < 5]
    assert small and all(g["ratio_to_all"] is None and g["mean_ci"] is None for g in small)


def test_world_rerank_moves_exposure_to_the_tail_and_prices_it(world_report):
    summary = _figures(world_report)
    base, runs = summary["base"], summary["mitigation"]["runs"]
    assert list(runs) == ["0.1", "0.5"]
    assert _low_share(base["exposure"]) < _low_share(runs["0.1"]["exposure"]) < _low_share(runs["0.5"]["exposure"])
    assert runs["0.5"]["exposure"]["distance"]["value"] < base["exposure"]["distance"]["value"]
    for run in runs.values():
        cost = run["cost"]["ndcg@10"]
        assert cost["base"] == pytest.approx(base["quality"]["ndcg@10"]["overall"])
        assert cost["treated"] == pytest.approx(run["quality"]["ndcg@10"]["overall"])
    report = (world_report / "fairness.md").read_text(encoding="utf-8")
    assert "| users by preferred_device |" in report and "## Mitigation: exposure re-rank" in report
    assert all(f"![{p}]({p})" in report for p in PLOTS)


def test_movielens_audit_groups_by_gender_age_and_occupation(movielens_report):
    summary = _figures(movielens_report)
    _check_consistent(summary)
    assert summary["dataset"]["name"] == "movielens-100k"
    assert summary["groupings"] == ["activity", "gender", "age", "occupation"]
    by = summary["base"]["quality"]["hr@10"]["by"]
    assert set(by["gender"]["groups"]) == {"F", "M"}
    assert set(by["occupation"]["groups"]) == set(OCCUPATIONS)
    ages = list(by["age"]["groups"])
    assert ages == [a for a in AGE_GROUPS.values() if a in ages] and len(ages) == 7  # in bracket order
    # Every invented user has >= 12 positives and 130+ unrated items, so all are tested; users 1..60 alternate
    # M and F and cycle through the occupations: the group sizes are known.
    assert summary["tested_users"] == ML_USERS
    assert {g: v["users"] for g, v in by["gender"]["groups"].items()} == {"F": 30, "M": 30}
    assert {g: v["users"] for g, v in by["occupation"]["groups"].items()} == dict.fromkeys(OCCUPATIONS, 15)


@pytest.mark.parametrize("argv, message", [
    (["--fairness", "--seeds", "0,1"], "--fairness audits one seed"),
    (["--fairness", "--rerank"], "--rerank and --fairness are separate"),
    (["--fairness", "--fairness-strengths", "0.1,x"], "--fairness-strengths takes comma-separated numbers"),
    (["--fairness", "--fairness-strengths", "0,0.1"], "re-rank strengths must be > 0"),
    (["--fairness", "--fairness-model", "nope"], "unknown model 'nope'"),
    (["--fairness", "--fairness-min-users", "1"], "at least 2 users to resample"),
])
def test_fairness_options_are_checked(argv, message, settings, world_report, tmp_path):
    world = tmp_path / "world"
    generate_world(world, users=20, items=120, days=2, seed=1)
    with pytest.raises(UserError, match=message):
        cli(settings, "evaluate", "--world", str(world), "--out", str(tmp_path / "out"), "-q", *argv)


def test_movielens_without_users_file_is_a_clear_error(settings, movielens, tmp_path):
    d = tmp_path / "ml-100k"
    d.mkdir()
    for name in ("u.data", "u.item"):
        (d / name).write_bytes((movielens / name).read_bytes())
    with pytest.raises(UserError, match="has no u.user: the user attributes come from it"):
        cli(settings, "evaluate", "--data", "movielens-100k", "--path", str(d), "--fairness", "-q")
