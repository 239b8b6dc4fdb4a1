"""Bearer-key authentication."""

from __future__ import annotations

from starlette.requests import Request

from imagegate.errors import Forbidden, Unauthorized
from imagegate.store import KeyRecord, Store


async def authenticate(request: Request, store: Store) -> KeyRecord:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("Missing Authentication header", headers={"WWW-Authenticate": "Bearer"})
    key = await store.authenticate(secret.strip())
    if key is None:
        raise Unauthorized("Invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    if key.disabled:
        raise Forbidden("This API key is disabled")
    return key
