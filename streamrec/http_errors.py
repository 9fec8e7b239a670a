"""The error body both HTTP apps answer with, and its OpenAPI description."""
from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel


class ErrorBody(BaseModel):
    detail: str  # what was wrong and how to fix it


def error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def documented(**descriptions: str) -> dict:
    """OpenAPI ``responses`` for error statuses, e.g. ``documented(e413="body too large")``."""
    return {int(code.removeprefix("e")): {"model": ErrorBody, "description": text} for code, text in descriptions.items()}
