"""User ids as pseudonyms: a keyed hash made at the edge, so no store past it holds the id a person gave.

``pseudonym = "p-" + hex(HMAC-SHA256(key, user_id))[:32]`` (128 bits: no collision among any number of users
a deployment will see; 34 characters, within the id rule of ``streamrec.ids``). Keyed, so that without the
key (``privacy.key``, or ``<data_dir>/secrets/pseudonym.key``) nobody can test a guessed id against the stores;
deterministic, so one person's events, features and requests meet under one pseudonym.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path

from streamrec.config import Settings
from streamrec.key_files import configured_or_file

MIN_KEY_BYTES = 32
PREFIX = "p-"


def key_path(settings: Settings) -> Path:
    return settings.data_path / "secrets" / "pseudonym.key"


def pseudonym(key: bytes, user_id: str) -> str:
    return PREFIX + hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def pseudonymizer(settings: Settings) -> Callable[[str], str]:
    """The edge's id rule: ``pseudonym`` under the deployment's key, or the id itself when
    ``privacy.pseudonymize`` is off."""
    if not settings.privacy.pseudonymize:
        return str
    key = configured_or_file(settings.privacy.key, "privacy.key", key_path(settings), MIN_KEY_BYTES)
    return lambda user_id: pseudonym(key, user_id)
