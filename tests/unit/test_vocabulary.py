"""The request-time helper: "at hour H" is the latest H:00 not after now, in the configured zone."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamrec.vocabulary import daypart, latest_at_hour, local_time


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.mark.parametrize("now, hour, tz, expected", [
    ("2026-11-29T10:30:00+00:00", 8, "UTC", "2026-11-29T08:00:00+00:00"),  # earlier today
    ("2026-11-29T10:30:00+00:00", 20, "UTC", "2026-11-28T20:00:00+00:00"),  # later: yesterday's
    ("2026-11-29T10:00:00+00:00", 10, "UTC", "2026-11-29T10:00:00+00:00"),  # this very hour
    # 03:30 UTC is 22:30 the day before in New York: 21:00 there is that same local evening.
    ("2026-11-29T03:30:00+00:00", 21, "America/New_York", "2026-11-28T21:00:00-05:00"),
])
def test_latest_at_hour(now, hour, tz, expected):
    at = latest_at_hour(ms(now), hour, tz)
    assert at == ms(expected)
    assert local_time(at, tz).hour == hour and at <= ms(now)
    assert daypart(local_time(at, tz).hour) == daypart(hour)


def test_latest_at_hour_rejects_a_bad_hour():
    with pytest.raises(ValueError, match="0..23"):
        latest_at_hour(ms("2026-11-29T10:30:00+00:00"), 24, "UTC")


def test_latest_at_hour_is_in_epoch_ms():
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    assert latest_at_hour(int(now.timestamp() * 1000), 12) == int(now.timestamp() * 1000)
