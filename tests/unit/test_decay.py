import numpy as np
import pytest

from features.decay import DecayedVector, decay_factor

MIN = 60_000
H = 30 * MIN  # half-life 30 min


def scalar(events):
    v = DecayedVector(1)
    for ts, w in events:
        v.add(ts, np.array([w]), H)
    return v


def test_hand_computed_value_read_later():
    # weight 1 at t=0, weight 2 at t=30min, read at t=60min: 1*2^-2 + 2*2^-1 = 0.25 + 1 = 1.25
    v = scalar([(0, 1.0), (30 * MIN, 2.0)])
    assert v.value_at(60 * MIN, H)[0] == pytest.approx(1.25, rel=1e-15)


def test_value_is_kept_at_the_latest_event_time():
    # at t=30min: 1*2^-1 + 2 = 2.5
    v = scalar([(0, 1.0), (30 * MIN, 2.0)])
    assert v.ref_ms == 30 * MIN
    assert v.values[0] == pytest.approx(2.5, rel=1e-15)
    assert v.value_at(30 * MIN, H)[0] == v.values[0]


def test_late_event_is_decayed_to_the_reference_time():
    # weight 2 at t=30min, then weight 1 stamped t=0 arrives: 2 + 1*2^-1 = 2.5, reference stays 30min
    v = scalar([(30 * MIN, 2.0), (0, 1.0)])
    assert v.ref_ms == 30 * MIN
    assert v.values[0] == pytest.approx(2.5, rel=1e-15)


def test_quarter_half_life_steps():
    # weight 4 at t=0, weight 1 at t=15min, read at t=45min: 4*2^-1.5 + 1*2^-1 = 1.4142135623730951 + 0.5
    v = scalar([(0, 4.0), (15 * MIN, 1.0)])
    assert v.value_at(45 * MIN, H)[0] == pytest.approx(2**0.5 + 0.5, rel=1e-15)


def test_order_independent_with_shuffled_late_events():
    rng = np.random.default_rng(7)
    ts = rng.integers(0, 24 * 60 * MIN, 300)
    weights = rng.random((300, 3)) * 5
    in_order = DecayedVector(3)
    for i in np.argsort(ts, kind="stable"):
        in_order.add(int(ts[i]), weights[i], H)
    for seed in range(5):
        shuffled = DecayedVector(3)
        for i in np.random.default_rng(seed).permutation(300):
            shuffled.add(int(ts[i]), weights[i], H)
        assert shuffled.ref_ms == in_order.ref_ms == ts.max()
        np.testing.assert_allclose(shuffled.values, in_order.values, rtol=1e-12)
    # and both equal the closed form sum of w * 2^-((T - t)/h)
    closed = (weights * np.exp2(-(ts.max() - ts) / H)[:, None]).sum(axis=0)
    np.testing.assert_allclose(in_order.values, closed, rtol=1e-12)


def test_long_idle_gaps_neither_overflow_nor_produce_nan():
    # 10,000 half-lives apart: the old weight underflows to 0, nothing is ever scaled up
    far = 10_000 * H
    v = scalar([(0, 1e300), (far, 3.0), (1, 1e300)])
    assert v.values[0] == 3.0
    assert v.value_at(far + 2 * H, H)[0] == pytest.approx(0.75, rel=1e-15)


def test_empty_vector_reads_zero():
    assert DecayedVector(2).value_at(123, H).tolist() == [0.0, 0.0]


def test_reading_before_the_reference_time_is_refused():
    v = scalar([(10 * MIN, 1.0)])
    with pytest.raises(ValueError, match="elapsed"):
        v.value_at(5 * MIN, H)


def test_decay_factor_rejects_bad_half_life():
    with pytest.raises(ValueError, match="half-life"):
        decay_factor(1.0, 0.0)


def test_vector_size_is_checked():
    with pytest.raises(ValueError, match="expected 3 values"):
        DecayedVector(3, [1.0, 2.0])
