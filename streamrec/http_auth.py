"""Token auth for both HTTP apps (``streamrec.auth`` says what a token is), as FastAPI dependencies.

With auth on, ``caller`` needs ``Authorization: Bearer <token>`` and OpenAPI declares the
bearer scheme and the 401/403 answers; with auth off explicitly, nothing is declared and
every caller is ``anonymous@<address>`` with every scope.
"""
from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from streamrec.auth import AuthError, Principal, anonymous, load_secret, verify
from streamrec.config import Settings
from streamrec.http_errors import documented


class HttpAuth:
    def __init__(self, settings: Settings):
        self.enabled = settings.auth.enabled
        self._secret = load_secret(settings) if self.enabled else b""
        # auto_error=False: a missing header gets our 401 (naming the scheme), not Starlette's 403.
        self._bearer = HTTPBearer(auto_error=False, description="a token from `streamrec auth token`")

    def responses(self) -> dict:
        """The answers auth adds to an operation's OpenAPI, none when it is off."""
        if not self.enabled:
            return {}
        return documented(e401="no token, or one this deployment did not sign, or expired",
                          e403="the token does not allow this")

    def optional_security(self) -> dict:
        """``openapi_extra`` for an operation using ``caller_if_any``: a token is optional there."""
        return {"security": [{}, {"HTTPBearer": []}]} if self.enabled else {}

    def caller(self) -> Callable[..., Principal]:
        """A dependency giving the authenticated caller (401 without a valid token)."""
        if not self.enabled:
            return _anonymous

        def authenticated(credentials: HTTPAuthorizationCredentials | None = Depends(self._bearer)) -> Principal:
            if credentials is None:
                raise http_error(AuthError(401, "missing bearer token (send 'Authorization: Bearer <token>')"))
            try:
                return verify(self._secret, credentials.credentials)
            except AuthError as e:
                raise http_error(e) from None

        return authenticated

    def caller_if_any(self) -> Callable[..., Principal | None]:
        """Like ``caller``, but None when no token was sent (for endpoints with a public answer)."""
        if not self.enabled:
            return _anonymous
        authenticated = self.caller()

        def optional(credentials: HTTPAuthorizationCredentials | None = Depends(self._bearer)) -> Principal | None:
            return None if credentials is None else authenticated(credentials)

        return optional

    def scope(self, scope: str) -> Callable[..., Principal]:
        """A dependency that lets only callers with ``scope`` through (403 for the others)."""
        caller = self.caller()

        def scoped(principal: Principal = Depends(caller)) -> Principal:
            try:
                principal.require(scope)
            except AuthError as e:
                raise http_error(e) from None
            return principal

        return scoped


def _anonymous(request: Request) -> Principal:
    return anonymous(request.client.host if request.client else "unknown")


def http_error(e: AuthError) -> HTTPException:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return HTTPException(e.status, detail=e.detail, headers=headers)
