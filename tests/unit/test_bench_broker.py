"""The broker benchmark's arithmetic and arguments, without a broker."""
from __future__ import annotations

import argparse

import pytest

from benchmarks.broker import add_arguments, kill_loss, missing, spread


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_missing_counts_gone_and_overwritten_records():
    acked = {(0, 0): b"a", (0, 1): b"b", (1, 0): b"c"}
    kept = {(0, 0): b"a", (0, 1): b"other", (2, 5): b"new"}  # (0, 1) reused by another record, (1, 0) gone
    assert missing(acked, kept) == [(0, 1), (1, 0)]
    assert missing(acked, acked) == []


def test_kill_loss_spans_from_the_oldest_lost_ack_to_the_kill():
    acks = {(0, 0): (10.0, b"a"), (0, 1): (11.0, b"b"), (0, 2): (12.5, b"c"), (1, 0): (13.0, b"d"),
            (1, 1): (20.0, b"late")}  # acknowledged after the kill: not counted
    kept = {(0, 0): b"a", (0, 1): b"b", (1, 0): b"d"}
    loss = kill_loss(acks, kept, t_kill=14.0)
    assert loss.acked == 4
    assert loss.lost == [(0, 2)]
    assert loss.window_s == pytest.approx(1.5)
    assert loss.newest_kept_s == pytest.approx(1.0)  # a kept ack may be newer than a lost one (other partition)


def test_kill_loss_with_nothing_lost_or_nothing_kept():
    acks = {(0, 0): (1.0, b"a"), (0, 1): (2.0, b"b")}
    none_lost = kill_loss(acks, {(0, 0): b"a", (0, 1): b"b"}, t_kill=3.0)
    assert (none_lost.lost, none_lost.window_s, none_lost.newest_kept_s) == ([], 0.0, pytest.approx(1.0))
    all_lost = kill_loss(acks, {}, t_kill=3.0)
    assert (len(all_lost.lost), all_lost.window_s, all_lost.newest_kept_s) == (2, pytest.approx(2.0), None)


def test_spread_takes_min_and_max_of_numeric_figures_only():
    runs = [{"lost": 3, "window_s": 0.5, "newest_s": None, "note": "x"},
            {"lost": 1, "window_s": 0.9, "newest_s": 0.2, "note": "y"}]
    assert spread(runs) == {
        "runs": runs,
        "min": {"lost": 1, "window_s": 0.5, "newest_s": 0.2},
        "max": {"lost": 3, "window_s": 0.9, "newest_s": 0.2},
    }


def test_defaults():
    args = parse()
    assert (args.records, args.runs, args.rate, args.seconds, args.preload, args.only) == (20_000, 3, 1000.0, 20.0, 0, None)


@pytest.mark.parametrize("argv", [
    ("--records", "0"), ("--records", "1.5"), ("--runs", "-1"), ("--rate", "0"), ("--rate", "nan"),
    ("--seconds", "inf"), ("--seconds", "x"), ("--preload", "-1"), ("--only", "both"),
])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)
    assert f"argument {argv[0]}" in capsys.readouterr().err


def test_zero_preload_and_fractional_rates_are_fine():
    args = parse("--preload", "0", "--rate", "0.5", "--seconds", "2.5", "--only", "kill")
    assert (args.preload, args.rate, args.seconds, args.only) == (0, 0.5, 2.5, "kill")
