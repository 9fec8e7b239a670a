"""``serving.pipeline.with_new_items``: the shortlist places kept for items added since training."""
from __future__ import annotations

from serving.pipeline import with_new_items


def test_new_items_take_the_last_places_and_the_rest_keep_their_order():
    assert with_new_items([4, 0, 2, 7], [9, 8, 5], 2) == [4, 0, 9, 8]


def test_a_new_item_already_shortlisted_counts_towards_the_slots():
    assert with_new_items([4, 9, 2, 7], [9, 8, 5], 2) == [4, 9, 2, 8]
    assert with_new_items([9, 8, 2], [9, 8, 5], 2) == [9, 8, 2]


def test_no_slots_no_new_items_or_a_short_list_change_nothing_they_should_not():
    assert with_new_items([4, 0], [9], 0) == [4, 0]
    assert with_new_items([4, 0], [], 2) == [4, 0]
    assert with_new_items([], [9], 2) == []
    assert with_new_items([4], [9, 8], 2) == [9]
