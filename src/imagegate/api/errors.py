"""Every error leaves as OpenRouter's envelope; nothing a client sends can produce a 500."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from imagegate.errors import ImagegateError

log = logging.getLogger(__name__)

_REASONS = {404: "Not Found", 405: "Method Not Allowed"}


def error_response(status: int, message: str, metadata: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": status, "message": message, "metadata": metadata or None}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ImagegateError)
    async def _ours(_request: Request, exc: ImagegateError) -> Response:
        if exc.status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        return error_response(exc.status, exc.message, exc.metadata, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, format_validation_issues(exc.errors()), {"issues": _issues(exc.errors())})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else _REASONS.get(exc.status_code, "Error")
        return error_response(exc.status_code, message, None, getattr(exc, "headers", None))

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _busy(_request: Request, exc: SQLAlchemyTimeoutError) -> Response:
        # Every database connection is in use: the gateway is overloaded, not broken.
        log.warning("database connection pool exhausted: %s", exc)
        return error_response(503, "The gateway is overloaded; retry shortly",
                              {"error_type": "overloaded"}, {"Retry-After": "2"})

    @app.exception_handler(Exception)
    async def _bug(_request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "Internal Server Error", {"error_type": "server"})


def format_validation_issues(errors: list[dict[str, Any]]) -> str:
    """One readable line per issue: ``n: Input should be less than or equal to 10``."""
    return "Invalid request parameters: " + "; ".join(
        f"{_path(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors
    )


def _issues(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"path": [p for p in e.get("loc", ()) if p != "body"], "message": e.get("msg")} for e in errors]


def _path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "body"
