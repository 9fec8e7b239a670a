"""Who may write events and whose recommendations they may read: scoped, signed tokens.

A token is a JWT signed (HS256, with PyJWT) by the deployment's secret. Its claims:
``sub`` (the user for a user token, else the client's name), ``scope`` (space-separated,
as in OAuth 2), ``iat``, ``exp`` and ``iss`` = "streamrec". The scopes:

- ``events:write``: publish events over HTTP (``POST /events``);
- ``recommend:read``: read recommendations of the one user in ``sub``;
- ``recommend:any``: read any user's recommendations (trusted services);
- ``ops:read``: ``/metrics`` and the details of ``/healthz``.

The secret is ``auth.secret`` when set (clusters pass it from a Secret), else a random one
made on first use at ``<data_dir>/secrets/auth.key`` (mode 0600), which every process of
one data dir shares. Auth is on unless ``auth.enabled`` is set false: never off by omission.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jwt

from streamrec.config import Settings
from streamrec.errors import UserError
from streamrec.ids import id_problem
from streamrec.key_files import configured_or_file

SCOPES = {
    "events:write": "publish events (POST /events)",
    "recommend:read": "read the recommendations of the token's user (--user) only",
    "recommend:any": "read any user's recommendations (trusted services)",
    "ops:read": "read /metrics and /healthz details",
}
USER_SCOPES = frozenset({"recommend:read"})  # scopes that need the token bound to a user
ISSUER = "streamrec"
ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
DEFAULT_TTL_DAYS = 30.0


class AuthError(Exception):
    """A request the token does not allow; ``status`` is 401 (who are you?) or 403 (not this)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Principal:
    """The caller a request was authenticated as."""

    subject: str  # a user id (user tokens), a client name, or "anonymous@<address>" with auth off
    scopes: frozenset[str]
    user_bound: bool  # the subject is the one user this token may read
    anonymous: bool = False  # auth is off: the subject is the caller's address

    @property
    def client(self) -> str | None:
        """Whom per-client limits count against: a trusted service asks for many users and is
        limited per user instead (None); a user's token or an address is limited as itself."""
        trusted = "recommend:any" in self.scopes and not self.anonymous
        return None if trusted else self.subject

    def can_read(self, user_id: str) -> bool:
        return "recommend:any" in self.scopes or (
            "recommend:read" in self.scopes and self.user_bound and self.subject == user_id)

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise AuthError(403, f"this token lacks the scope {scope!r} (it has: {' '.join(sorted(self.scopes)) or 'none'})")

    def require_read(self, user_id: str) -> None:
        if not self.can_read(user_id):
            if "recommend:read" in self.scopes:
                raise AuthError(403, f"this token reads the recommendations of user {self.subject!r} only")
            raise AuthError(403, "this token lacks the scope 'recommend:read' or 'recommend:any'")


def anonymous(address: str) -> Principal:
    """Everyone, with auth switched off: every scope, told apart only by network address."""
    return Principal(f"anonymous@{address}", frozenset(SCOPES), user_bound=False, anonymous=True)


def secret_path(settings: Settings) -> Path:
    return settings.data_path / "secrets" / "auth.key"


def load_secret(settings: Settings) -> bytes:
    """The signing secret: ``auth.secret``, else the data dir's key file, made on first use."""
    return configured_or_file(settings.auth.secret, "auth.secret", secret_path(settings), MIN_SECRET_BYTES)


def mint(secret: bytes, scopes: list[str] | tuple[str, ...], *, user: str | None = None, name: str = "cli",
         ttl_days: float = DEFAULT_TTL_DAYS, now: float | None = None) -> str:
    """A token with ``scopes``, bound to ``user`` (needed by ``recommend:read``) or named ``name``."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise UserError(f"unknown scope {', '.join(unknown) or '(none given)'}; known: {', '.join(SCOPES)}")
    if USER_SCOPES & set(scopes) and user is None:
        raise UserError("the scope recommend:read needs --user: a token reads one user's recommendations")
    subject = user if user is not None else name
    problem = id_problem(subject)
    if problem is not None:
        raise UserError(f"{'user' if user is not None else 'name'} {subject!r} {problem}")
    if ttl_days <= 0:
        raise UserError(f"a token's lifetime must be positive, got {ttl_days} days")
    now = time.time() if now is None else now
    claims = {"iss": ISSUER, "sub": subject, "scope": " ".join(sorted(set(scopes))), "iat": int(now),
              "exp": int(now + ttl_days * 86_400), "user": user is not None}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def bearer_header(settings: Settings, scopes: list[str] | tuple[str, ...], *, user: str | None = None,
                  name: str = "cli", ttl_days: float = DEFAULT_TTL_DAYS) -> dict[str, str]:
    """The ``Authorization`` header of a fresh token, or none when auth is off (for our own clients)."""
    if not settings.auth.enabled:
        return {}
    return {"Authorization": f"Bearer {mint(load_secret(settings), scopes, user=user, name=name, ttl_days=ttl_days)}"}


def verify(secret: bytes, token: str) -> Principal:
    """The principal a token names; ``AuthError`` 401 when it is not one this deployment signed, or expired."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "iss", "sub", "scope"]})
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "the token has expired; mint a new one (streamrec auth token)") from None
    except jwt.InvalidTokenError as e:
        raise AuthError(401, f"invalid token: {e}") from None
    scope, subject = claims["scope"], claims["sub"]
    if not isinstance(scope, str) or not isinstance(subject, str):
        raise AuthError(401, "invalid token: 'scope' and 'sub' must be strings")
    return Principal(subject, frozenset(scope.split()) & set(SCOPES), user_bound=claims.get("user") is True)
