"""The one rule for ids (user, item, session), shared by ingest, the stream job and the API.

An id is 1 to ``MAX_ID_CHARS`` characters from ``[A-Za-z0-9_.:@-]``: enough for numeric ids,
e-mail-like and namespaced ones (``tenant:42``), and nothing that needs escaping in a URL, a
Redis key, a log line or a page. Ingest refuses what the API could never serve, so no
features are built for an id nobody can ask about.
"""
from __future__ import annotations

import re

MAX_ID_CHARS = 128
ID_CHARS = "A-Za-z0-9_.:@-"
# For OpenAPI/JSON Schema and FastAPI's validation, where ``$`` ends the text.
ID_PATTERN = rf"^[{ID_CHARS}]+$"
# For Python's ``re.search`` (msgspec's Meta(pattern=...)): its ``$`` also matches before a final newline.
ID_PATTERN_PY = rf"^[{ID_CHARS}]+\Z"
_ID = re.compile(rf"[{ID_CHARS}]+")


def id_problem(value: str) -> str | None:
    """Why the string ``value`` is not an id, as words that follow it ("is empty", "has ' ' ..."), or None."""
    if not value:
        return "is empty"
    if len(value) > MAX_ID_CHARS:
        return f"is {len(value)} characters, at most {MAX_ID_CHARS}"
    if not _ID.fullmatch(value):
        bad = next(ch for ch in value if not _ID.fullmatch(ch))
        return f"has {bad!r}: an id is letters, digits and _ . : @ - only"
    return None
