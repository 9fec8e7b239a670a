"""A/B assignment, exploration's propensities, the outcome join and the report's statistics (pure)."""
from __future__ import annotations

import numpy as np
import pytest

from serving.experiments import stats
from serving.experiments.assignment import DEFAULT, assign, check, shares
from serving.experiments.exploration import epsilon_greedy, greedy, request_rng
from serving.experiments.exposure import BadExposure, Exposure, Shown, parse_exposure
from serving.experiments.outcomes import Outcome, join
from serving.experiments.report import render, summarize
from streamrec.config import ConfigError, ExperimentConfig, VariantConfig
from streamrec.events import Event

AB = ExperimentConfig(name="mmr", variants={"control": VariantConfig(), "low": VariantConfig(mmr_lambda=0.2, weight=3)})


def test_assignment_is_sticky_weighted_and_salted():
    users = [f"u{n:05d}" for n in range(20_000)]
    first = [assign(AB, u)[0] for u in users]
    assert first == [assign(AB, u)[0] for u in users]  # no state: the same answer every time, in any process
    assert abs(first.count("low") / len(users) - 0.75) < 0.015
    assert assign(AB, "u00001")[1] is AB.variants[first[1]]
    other = ExperimentConfig(name="mmr", salt="again", variants=AB.variants)
    moved = sum(a != assign(other, u)[0] for a, u in zip(first, users, strict=True))
    assert 0.3 < moved / len(users) < 0.45  # independent draws: P(differ) = 2 · 0.75 · 0.25
    assert shares(AB) == {"control": 0.25, "low": 0.75}


def test_no_experiment_is_the_default_variant_and_bad_ones_are_refused():
    assert assign(ExperimentConfig(), "u1") == (DEFAULT, VariantConfig())
    with pytest.raises(ConfigError, match="at least two variants"):
        check(ExperimentConfig(name="x", variants={"only": VariantConfig()}))
    with pytest.raises(ConfigError, match="name the experiment"):
        check(ExperimentConfig(variants={"a": VariantConfig(), "b": VariantConfig()}))


def test_epsilon_greedy_shows_each_item_as_often_as_its_logged_propensity():
    ranked = [f"i{n}" for n in range(8)]
    k, eps, runs = 3, 0.3, 30_000
    seen: dict[tuple[str, int], int] = {}
    logged: dict[tuple[str, int], float] = {}
    rng = np.random.default_rng(7)
    for _ in range(runs):
        slate = epsilon_greedy(ranked, k, eps, rng)
        assert len({s.item_id for s in slate}) == k  # never a repeat
        for p, s in enumerate(slate):
            seen[s.item_id, p] = seen.get((s.item_id, p), 0) + 1
            logged[s.item_id, p] = s.propensity
            assert s.explored == (s.item_id != ranked[p])
    for key, count in seen.items():
        assert abs(count / runs - logged[key]) < 0.01, key
    assert logged["i0", 0] == pytest.approx(0.7) and logged["i5", 1] == pytest.approx(0.3 / 5)


def test_exploration_with_a_small_pool_or_none():
    slate = epsilon_greedy(["a", "b", "c", "d"], 3, 1.0, np.random.default_rng(0))
    assert [s.item_id for s in slate][1:] == ["b", "c"] and slate[0].item_id == "d"  # one pool item: one slot
    assert [s.propensity for s in slate] == [1.0, 1.0, 1.0]
    assert epsilon_greedy(["a", "b"], 3, 0.5, np.random.default_rng(0)) == greedy(["a", "b"], 3)
    assert [s.item_id for s in epsilon_greedy(list("abcdefgh"), 3, 0.5, request_rng("ab" * 16))] == \
        [s.item_id for s in epsilon_greedy(list("abcdefgh"), 3, 0.5, request_rng("ab" * 16))]


def test_ips_and_snips_recover_the_greedy_policy_from_exploring_logs():
    """Clicks drawn from a known model: the greedy list's true clicks per list against the estimates."""
    rng = np.random.default_rng(3)
    ranked = [f"i{n}" for n in range(10)]
    ctr = {f"i{n}": 0.5 / (n + 1) for n in range(10)}
    bias = [1.0, 0.7, 0.5]
    truth = sum(ctr[ranked[p]] * bias[p] for p in range(3))
    outcomes = []
    for n in range(6000):
        slate = epsilon_greedy(ranked, 3, 0.4, rng)
        shown = tuple(Shown(s.item_id, p + 1, s.propensity, s.explored) for p, s in enumerate(slate))
        engaged = tuple(bool(rng.random() < ctr[s.item_id] * bias[p]) for p, s in enumerate(slate))
        outcomes.append(Outcome(Exposure(str(n), 0, f"u{n % 600}", "x", "explore", shown), engaged, 0.0))
    report = summarize("x", outcomes, {"explore": 1.0}, 30)
    (v,) = report.variants
    assert v.metrics["clicks"].high < truth  # exploring costs clicks
    assert v.ips is not None and v.snips is not None
    assert v.ips.low < truth < v.ips.high and v.snips.low < truth < v.snips.high
    assert "greedy, SNIPS" in render(report)


def _exposure(eid: str, user: str, ts: int, items: list[str], variant: str = "a") -> Exposure:
    return Exposure(eid, ts, user, "x", variant, tuple(Shown(i, p, 1.0, False) for p, i in enumerate(items, 1)))


def _event(user: str, item: str, ts: int, kind: str = "click", seconds: float | None = None) -> Event:
    return Event(event_id="e", event_type=kind, user_id=user, item_id=item, ts_ms=ts, device="tv",
                 session_id="s", watch_seconds=seconds)


def test_an_event_is_the_outcome_of_the_latest_list_that_showed_it_within_the_window():
    first, second = _exposure("1", "u", 1000, ["a", "b", "c"]), _exposure("2", "u", 2000, ["c", "d"])
    other = _exposure("3", "v", 1000, ["a"])
    events = [_event("u", "c", 2500), _event("u", "c", 2600, "watch", 120.0), _event("u", "b", 1500),
              _event("u", "a", 999),  # before any list
              _event("u", "d", 2000 + 60_000),  # past the window
              _event("w", "a", 1500)]  # another user
    o1, o2, o3 = join([first, second, other], events, window_ms=60_000)
    assert o1.engaged == (False, True, False) and o1.watch_seconds == 0.0
    assert o2.engaged == (True, False) and o2.watch_seconds == 120.0 and o2.ndcg == 1.0
    assert not o3.clicked and o3.ndcg == 0.0
    assert Outcome(first, (False, True, True), 0.0).ndcg == pytest.approx(
        (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3)))


def test_the_delta_method_interval_covers_as_often_as_it_says():
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(400):
        n = rng.integers(1, 20, size=200)  # lists per user
        p = rng.beta(2, 5, size=200)  # users differ: exposures of one user are alike
        y = rng.binomial(n, p)
        e = stats.ratio_estimate(y, n)
        covered += e.low < 2 / 7 < e.high
    assert 0.92 < covered / 400 < 0.98


def test_the_comparison_rejects_at_its_level_under_the_null_and_finds_a_real_difference():
    rng = np.random.default_rng(5)

    def arm(p: float) -> tuple[np.ndarray, np.ndarray]:
        n = rng.integers(5, 15, size=300)
        return rng.binomial(n, rng.beta(30 * p, 30 * (1 - p), size=300)), n

    null = [stats.compare(arm(0.3), arm(0.3)).significant for _ in range(400)]
    assert 0.02 < np.mean(null) < 0.09
    better = [stats.compare(arm(0.3), arm(0.36)) for _ in range(100)]
    assert np.mean([c.significant and c.diff.value > 0 for c in better]) > 0.8


def test_sample_ratio_mismatch():
    assert stats.sample_ratio_mismatch({"a": 500, "b": 520}, {"a": 0.5, "b": 0.5}) > 0.5
    assert stats.sample_ratio_mismatch({"a": 500, "b": 620}, {"a": 0.5, "b": 0.5}) < stats.SRM_ALPHA
    assert stats.sample_ratio_mismatch({"a": 250, "b": 750}, {"a": 0.25, "b": 0.75}) > 0.5


def test_the_report_compares_with_the_first_variant_and_flags_a_mismatch():
    outcomes = []
    for n in range(400):
        variant = "a" if n < 100 else "b"  # 1:3 where 1:1 was asked
        e = _exposure(str(n), f"u{n}", 0, ["i1", "i2"], variant)
        outcomes.append(Outcome(e, (n % 2 == 0, False), 10.0))
    report = summarize("x", outcomes, {"a": 0.5, "b": 0.5}, 30)
    assert [v.name for v in report.variants] == ["a", "b"] and report.variants[0].vs_control == {}
    assert report.variants[1].vs_control["ctr"].p_value > 0.05 and report.srm
    text = render(report)
    assert "sample-ratio mismatch**" in text and "| b | 300 | 300 |" in text


def test_parse_exposure_refuses_what_is_not_one():
    good = b'{"exposure_id":"r","ts":1,"user_id":"u","experiment":"x","variant":"a","model_version":1,' \
           b'"rerank":"disabled","items":[{"item_id":"i","position":1,"propensity":0.5,"explored":true}]}'
    assert parse_exposure(good).items == (Shown("i", 1, 0.5, True),)
    for bad in (b"{", b'{"exposure_id":"r"}', good.replace(b"0.5", b"0")):
        with pytest.raises(BadExposure):
            parse_exposure(bad)
