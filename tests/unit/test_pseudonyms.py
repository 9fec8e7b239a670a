"""Pseudonyms: keyed, deterministic, valid ids; the key from the settings or a file made once."""
from __future__ import annotations

import dataclasses
import stat

import pytest

from streamrec.config import PrivacyConfig, Settings
from streamrec.errors import UserError
from streamrec.ids import id_problem
from streamrec.pseudonyms import key_path, pseudonym, pseudonymizer


def test_a_pseudonym_is_a_valid_id_that_only_the_key_links_to_the_user():
    a, b = b"k" * 32, b"j" * 32
    p = pseudonym(a, "alice@example.com")
    assert p == pseudonym(a, "alice@example.com") and p.startswith("p-") and len(p) == 34
    assert id_problem(p) is None
    assert p != pseudonym(b, "alice@example.com") and p != pseudonym(a, "alice@example.co")


def test_off_is_the_id_itself(tmp_path):
    hide = pseudonymizer(Settings(data_dir=str(tmp_path)))
    assert hide("u1") == "u1" and not key_path(Settings(data_dir=str(tmp_path))).exists()


def test_the_key_is_made_once_under_the_data_dir_or_taken_from_the_settings(tmp_path):
    settings = Settings(data_dir=str(tmp_path), privacy=PrivacyConfig(pseudonymize=True))
    first = pseudonymizer(settings)("u1")
    path = key_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pseudonymizer(settings)("u1") == first  # another process of the deployment: the same pseudonym
    given = dataclasses.replace(settings, privacy=PrivacyConfig(pseudonymize=True, key="s" * 40))
    assert pseudonymizer(given)("u1") == pseudonym(b"s" * 40, "u1") != first
    with pytest.raises(UserError, match="privacy.key is 5 bytes"):
        pseudonymizer(dataclasses.replace(settings, privacy=PrivacyConfig(pseudonymize=True, key="short")))
