import numpy as np
import pytest

from features.sessions import Session, sessionize

GAP = 30 * 60_000


def test_gap_exactly_equal_stays_in_the_session_one_more_splits():
    ts = [0, GAP, 2 * GAP + 1, 2 * GAP + 6]  # gaps: GAP (same), GAP + 1 (new), 5 ms (same)
    s = sessionize(ts, GAP)
    assert s.index.tolist() == [0, 0, 1, 1]
    assert s.start_ms.tolist() == [0, 2 * GAP + 1]
    assert s.end_ms.tolist() == [GAP, 2 * GAP + 6]
    assert s.length_ms.tolist() == [GAP, 5]
    assert s.count.tolist() == [2, 2]


def test_single_event_is_one_session_of_length_zero():
    s = sessionize([1234], GAP)
    assert (s.index.tolist(), s.length_ms.tolist(), s.count.tolist()) == ([0], [0], [1])


def test_every_event_alone_when_all_gaps_exceed():
    s = sessionize([0, GAP + 1, 2 * GAP + 2], GAP)
    assert s.index.tolist() == [0, 1, 2]
    assert s.count.tolist() == [1, 1, 1]


def test_equal_timestamps_share_a_session():
    s = sessionize([5, 5, 5], GAP)
    assert (s.index.tolist(), s.count.tolist(), s.length_ms.tolist()) == ([0, 0, 0], [3], [0])


def test_no_events_no_sessions():
    s = sessionize([], GAP)
    assert len(s.index) == len(s.count) == 0


def test_unsorted_input_is_refused():
    with pytest.raises(ValueError, match="sorted"):
        sessionize([10, 5], GAP)


def test_incremental_session_matches_the_last_batch_session():
    rng = np.random.default_rng(3)
    for _ in range(50):
        ts = np.sort(rng.integers(0, 12 * GAP, rng.integers(1, 40)))
        current = Session(int(ts[0]), int(ts[0]))
        for t in ts[1:]:
            current.add(int(t), GAP)
        batch = sessionize(ts, GAP)
        assert (current.start_ms, current.last_ms, current.count) == (
            batch.start_ms[-1], batch.end_ms[-1], batch.count[-1]
        )


def test_incremental_gap_rule_exactly_gap():
    s = Session(0, 0)
    s.add(GAP, GAP)
    assert (s.start_ms, s.count) == (0, 2)
    s.add(2 * GAP + 1, GAP)
    assert (s.start_ms, s.last_ms, s.count, s.length_ms) == (2 * GAP + 1, 2 * GAP + 1, 1, 0)


def test_late_event_inside_the_span_counts_without_changing_it():
    s = Session(100, 500, 2)
    s.add(300, GAP)
    assert (s.start_ms, s.last_ms, s.count) == (100, 500, 3)


def test_late_event_within_a_gap_before_the_start_moves_the_start_back():
    s = Session(GAP + 100, GAP + 500, 2)
    s.add(100, GAP)  # exactly GAP before the start
    assert (s.start_ms, s.last_ms, s.count) == (100, GAP + 500, 3)


def test_late_event_from_an_earlier_session_is_ignored():
    s = Session(GAP + 100, GAP + 500, 2)
    s.add(99, GAP)  # GAP + 1 before the start
    assert (s.start_ms, s.last_ms, s.count) == (GAP + 100, GAP + 500, 2)
