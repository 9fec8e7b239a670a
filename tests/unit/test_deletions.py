"""The deletion record's contract."""
from __future__ import annotations

import pytest

from streams.deletions import BadDeletion, Deletion, parse_deletion


def test_a_deletion_record_parses_and_anything_else_is_refused():
    assert parse_deletion(b'{"user_id": "p-1", "deleted_at": 5, "deletion_id": "d"}') == Deletion("p-1", 5, "d")
    for bad in (None, b"", b"[]", b'{"user_id": "p-1"}', b'{"user_id": "p", "deleted_at": "x", "deletion_id": "d"}'):
        with pytest.raises(BadDeletion):
            parse_deletion(bad)
