"""Tokens (streamrec.auth): what each scope allows, binding to a user, signature, expiry, the secret file."""
from __future__ import annotations

import stat

import pytest

from streamrec.auth import AuthError, anonymous, load_secret, mint, secret_path, verify
from streamrec.config import Settings
from streamrec.errors import UserError

SECRET = b"s" * 32


def test_a_user_token_reads_that_user_only():
    p = verify(SECRET, mint(SECRET, ["recommend:read"], user="u1"))
    assert (p.subject, p.user_bound, p.client) == ("u1", True, "u1")
    assert p.can_read("u1") and not p.can_read("u2")
    with pytest.raises(AuthError) as err:
        p.require_read("u2")
    assert err.value.status == 403 and "'u1' only" in err.value.detail


def test_a_trusted_token_reads_anyone_and_is_limited_per_user():
    p = verify(SECRET, mint(SECRET, ["recommend:any", "ops:read"], name="web"))
    assert p.can_read("u1") and p.can_read("u2") and p.client is None
    p.require("ops:read")
    with pytest.raises(AuthError, match="events:write"):
        p.require("events:write")


def test_a_named_token_with_recommend_read_cannot_pass_for_its_namesake():
    p = verify(SECRET, mint(SECRET, ["events:write"], name="u1"))
    assert not p.can_read("u1")


@pytest.mark.parametrize("scopes, user, says", [
    (["recommend:read"], None, "needs --user"),
    (["root"], None, "unknown scope root"),
    ([], None, "(none given)"),
    (["events:write"], "a b", "has ' '"),
])
def test_minting_refuses_what_could_not_work(scopes, user, says):
    with pytest.raises(UserError, match=says.replace("(", r"\(").replace(")", r"\)")):
        mint(SECRET, scopes, user=user)


@pytest.mark.parametrize("token, says", [
    (mint(b"x" * 32, ["recommend:any"]), "Signature verification failed"),
    (mint(SECRET, ["recommend:any"], ttl_days=1, now=0), "expired"),
    ("not.a.token", "invalid token"),
])
def test_tokens_this_deployment_did_not_sign_or_that_expired_are_401(token, says):
    with pytest.raises(AuthError) as err:
        verify(SECRET, token)
    assert err.value.status == 401 and says in err.value.detail


def test_unknown_scopes_in_a_token_grant_nothing():
    import jwt

    token = jwt.encode({"iss": "streamrec", "sub": "x", "scope": "admin recommend:any", "iat": 0, "exp": 2**40},
                       SECRET, algorithm="HS256")
    assert verify(SECRET, token).scopes == {"recommend:any"}


def test_anonymous_has_every_scope_and_counts_as_its_address():
    p = anonymous("10.0.0.7")
    assert p.can_read("anyone") and p.client == "anonymous@10.0.0.7"


def test_the_secret_is_made_once_private_and_shared(tmp_path):
    settings = Settings(data_dir=str(tmp_path))
    first = load_secret(settings)
    assert len(first) >= 32 and load_secret(settings) == first
    assert stat.S_IMODE(secret_path(settings).stat().st_mode) == 0o600
    settings.auth.secret = "short"
    with pytest.raises(UserError, match="at least 32"):
        load_secret(settings)
    settings.auth.secret = "k" * 40
    assert load_secret(settings) == b"k" * 40
