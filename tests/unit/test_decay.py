import numpy as np
import pytest

from features.decay import decay_factor, fold_decayed

MIN = 60_000
H = 30 * MIN  # half-life 30 min


def fold(events, sums=None, ref=-1):
    """One user's (ts, weight) events folded in one call; returns (sums, ref)."""
    ts = np.array([t for t, _ in events], dtype=np.int64)
    deltas = np.array([[w] for _, w in events], dtype=float)
    start = np.zeros((1, 1)) if sums is None else np.array([sums], dtype=float)
    new, new_ref = fold_decayed(start, np.array([ref]), deltas, ts, np.array([0]), H)
    return new[0], int(new_ref[0])


def one_by_one(events):
    sums, ref = None, -1
    for event in events:
        sums, ref = fold([event], sums, ref)
    return sums, ref


def test_hand_computed_value_kept_at_the_latest_event_time():
    # weight 1 at t=0, weight 2 at t=30min: at t=30min 1*2^-1 + 2 = 2.5; read at 60min: 2.5*2^-1 = 1.25
    for sums, ref in (fold([(0, 1.0), (30 * MIN, 2.0)]), one_by_one([(0, 1.0), (30 * MIN, 2.0)])):
        assert ref == 30 * MIN
        assert sums[0] == pytest.approx(2.5, rel=1e-15)
        assert sums[0] * decay_factor(60 * MIN - ref, H) == pytest.approx(1.25, rel=1e-15)


def test_late_event_is_decayed_to_the_reference_time():
    # weight 2 at t=30min, then weight 1 stamped t=0 arrives: 2 + 1*2^-1 = 2.5, reference stays 30min
    sums, ref = one_by_one([(30 * MIN, 2.0), (0, 1.0)])
    assert ref == 30 * MIN
    assert sums[0] == pytest.approx(2.5, rel=1e-15)


def test_quarter_half_life_steps():
    # weight 4 at t=0, weight 1 at t=15min, read at t=45min: 4*2^-1.5 + 1*2^-1
    sums, ref = fold([(0, 4.0), (15 * MIN, 1.0)])
    assert sums[0] * decay_factor(45 * MIN - ref, H) == pytest.approx(2**0.5 + 0.5, rel=1e-15)


def test_order_and_batching_do_not_matter_and_equal_the_closed_form():
    rng = np.random.default_rng(7)
    ts = rng.integers(0, 24 * 60 * MIN, 300)
    weights = rng.random(300) * 5
    closed = (weights * np.exp2(-(ts.max() - ts) / H)).sum()
    whole, ref = fold(list(zip(ts.tolist(), weights)))
    assert ref == ts.max()
    assert whole[0] == pytest.approx(closed, rel=1e-12)
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(300)
        sums, ref = None, -1
        for chunk in np.array_split(order, 7):  # shuffled, in batches, late events included
            sums, ref = fold([(int(ts[i]), weights[i]) for i in chunk], sums, ref)
        assert ref == ts.max()
        assert sums[0] == pytest.approx(closed, rel=1e-12)


def test_many_users_in_one_call_equal_one_call_each():
    rng = np.random.default_rng(3)
    users = [[(int(t), float(w)) for t, w in zip(rng.integers(0, 10 * H, n), rng.random(n))] for n in (1, 4, 2, 7)]
    prior = rng.random((4, 2))
    refs = np.array([-1, 5 * H, 20 * H, 0])  # a new user, older and newer references than the events
    prior[0] = 0.0
    ts = np.array([t for events in users for t, _ in events])
    deltas = np.array([[w, 2 * w] for events in users for _, w in events])
    starts = np.cumsum([0] + [len(e) for e in users[:-1]])
    sums, new_refs = fold_decayed(prior, refs, deltas, ts, starts, H)
    for u, events in enumerate(users):
        alone, ref = fold_decayed(prior[u:u + 1], refs[u:u + 1], deltas[starts[u]:starts[u] + len(events)],
                                  ts[starts[u]:starts[u] + len(events)], np.array([0]), H)
        np.testing.assert_allclose(sums[u], alone[0], rtol=1e-15)
        assert new_refs[u] == ref[0] == max(refs[u], max(t for t, _ in events))


def test_long_idle_gaps_neither_overflow_nor_produce_nan():
    # 10,000 half-lives apart: the old weight underflows to 0, nothing is ever scaled up
    far = 10_000 * H
    sums, ref = one_by_one([(0, 1e300), (far, 3.0), (1, 1e300)])
    assert sums[0] == 3.0
    assert sums[0] * decay_factor(far + 2 * H - ref, H) == pytest.approx(0.75, rel=1e-15)


def test_decay_factor_refuses_reading_back_in_time_and_bad_half_life():
    with pytest.raises(ValueError, match="elapsed"):
        decay_factor(-1.0, H)
    with pytest.raises(ValueError, match="half-life"):
        decay_factor(1.0, 0.0)
    with pytest.raises(ValueError, match="half-life"):
        fold_decayed(np.zeros((1, 1)), np.array([-1]), np.ones((1, 1)), np.array([0]), np.array([0]), 0.0)
