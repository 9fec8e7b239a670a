"""Bearer-token auth for the recommend API: on when ``serving.auth_token`` is set."""
from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

# auto_error=False: a missing header gets our 401 (with the scheme named), not Starlette's 403.
_scheme = HTTPBearer(auto_error=False, description="the token in serving.auth_token")


def require_token(token: str):
    """A dependency that lets a request through only with ``Authorization: Bearer <token>``;
    with an empty ``token`` every request passes."""

    def check(credentials: HTTPAuthorizationCredentials | None = Depends(_scheme)) -> None:
        if not token:
            return
        if credentials is None:
            raise _unauthorized("missing bearer token (send 'Authorization: Bearer <token>')")
        # Constant-time comparison: the time taken must not tell how much of a guess was right.
        if not hmac.compare_digest(credentials.credentials.encode("utf-8"), token.encode("utf-8")):
            raise _unauthorized("invalid bearer token")

    return check


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})
