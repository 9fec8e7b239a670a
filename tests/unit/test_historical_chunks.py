"""Feast's point-in-time join is asked in parts that each hold whole keys, about ``limit`` rows a part."""
from __future__ import annotations

import pandas as pd

from features.store import _by_keys


def test_parts_hold_whole_keys_and_every_row_once():
    rows = pd.DataFrame({"user_id": list("aabbbcdddde"), "n": range(11)})
    parts = _by_keys(rows, "user_id", limit=4)
    assert [list(p["user_id"]) for p in parts] == [list("aabb" "b"), list("cddd" "d"), ["e"]]
    assert sorted(pd.concat(parts)["n"]) == list(range(11))
    assert [len(p) for p in _by_keys(rows, "user_id", limit=100)] == [11]
