"""Account routes in OpenRouter's shapes: the current key, credits, and key management.

``/keys`` needs a management key (401 otherwise, as OpenRouter answers); ``/key`` and
``/credits`` answer any key.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.responses import Response

from imagegate.api.auth import authenticate
from imagegate.api.bodies import parse_body
from imagegate.api.openapi import AUTHENTICATED, answer, errors, json_body
from imagegate.api.schemas import (
    ApiKeyCreatedResponse,
    ApiKeyDeletedResponse,
    ApiKeyResponse,
    ApiKeysListResponse,
    CreditsResponse,
    CurrentKeyResponse,
    LimitReset,
)
from imagegate.errors import InvalidRequest, NotFound, Unauthorized
from imagegate.store import UNSET, KeyRecord, KeyUsage, Store
from imagegate.wire import NO_NUL

router = APIRouter()
KEY_HASH = Path(pattern=NO_NUL, description="The key's `hash`.")
#: Key limits are stored in nano-USD in a signed 64-bit column, which holds up to ~9.2e9 USD.
MAX_LIMIT_USD = 1_000_000_000


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    limit: float | None = Field(None, ge=0, le=MAX_LIMIT_USD)
    limit_reset: LimitReset | None = None
    include_byok_in_limit: StrictBool | None = None


class KeyUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)
    disabled: StrictBool | None = None
    limit: float | None = Field(None, ge=0, le=MAX_LIMIT_USD)
    limit_reset: LimitReset | None = None
    include_byok_in_limit: StrictBool | None = None


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _store(request: Request) -> Store:
    return request.app.state.store


async def _management_key(request: Request) -> KeyRecord:
    key = await authenticate(request, _store(request))
    if not key.is_management:
        raise Unauthorized("Only management keys can manage API keys")
    return key


@router.get("/key", tags=["Account"], summary="The current key: usage, limit and rate limit",
            openapi_extra=AUTHENTICATED,
            responses={**answer(CurrentKeyResponse, "The key"), **errors(401, 403, 500, 503)})
async def current_key(request: Request) -> Response:
    store = _store(request)
    key = await authenticate(request, store)
    usage = await store.key_usage(key.id)
    limits = request.app.state.limits
    data = {
        **_usage_fields(usage),
        "label": key.label,
        "name": key.name,
        "is_free_tier": False,
        "is_management_key": key.is_management,
        "is_provisioning_key": key.is_management,
        "include_byok_in_limit": False,
        "expires_at": None,
        "creator_user_id": None,
        "organization_id": None,
        "workspace_id": None,
        "allowed_data_regions": ["global"],
        "budgets": _budgets(usage),
        "effective_budget": (_budgets(usage) or [None])[0],
        "free_model_daily_requests": {"limit": 0, "remaining": 0, "used": 0},
        "rate_limit": {
            "requests": limits.requests_per_minute or -1,
            "interval": "1m",
            "note": "requests per minute per key; -1 means no limit",
        },
        "concurrency_limit": limits.concurrent,
    }
    return _json({"data": data})


@router.get("/credits", tags=["Account"], summary="Credits added and used by the key's account",
            openapi_extra=AUTHENTICATED,
            responses={**answer(CreditsResponse, "The account's credits"), **errors(401, 403, 500, 503)})
async def credits(request: Request) -> Response:
    store = _store(request)
    key = await authenticate(request, store)
    account = await store.get_account(key.account_id)
    return _json({
        "data": {
            "total_credits": float(account.total_credits_usd),
            "total_usage": float(account.total_usage_usd),
            "balance": None if account.balance_usd is None else float(account.balance_usd),
            "metered": account.metered,
        }
    })


@router.get("/keys", tags=["API keys"], summary="List API keys (management key)", openapi_extra=AUTHENTICATED,
            responses={**answer(ApiKeysListResponse, "Up to 100 keys from `offset`"),
                       **errors(400, 401, 403, 500, 503)})
async def list_keys(request: Request, include_disabled: bool = True, offset: int = 0) -> Response:
    await _management_key(request)
    store = _store(request)
    keys = [k for k in await store.list_keys(include_revoked=False) if include_disabled or not k.disabled]
    page = keys[max(0, offset): max(0, offset) + 100]
    return _json({"data": [await _key_wire(store, k) for k in page]})


@router.post("/keys", tags=["API keys"], summary="Create an API key (management key)", status_code=201,
             openapi_extra={**json_body(KeyCreate), **AUTHENTICATED},
             responses={**answer(ApiKeyCreatedResponse, "The new key and its secret", 201),
                        **errors(400, 401, 403, 413, 500, 503)})
async def create_key(request: Request) -> Response:
    await _management_key(request)
    body = parse_body(await request.body(), KeyCreate, empty_allowed=True)
    store = _store(request)
    secret, key = await store.create_key(body.name, limit_usd=_money(body.limit), limit_reset=body.limit_reset)
    return _json({"data": await _key_wire(store, key), "key": secret}, status=201)


@router.get("/keys/{key_hash}", tags=["API keys"], summary="One API key (management key)",
            openapi_extra=AUTHENTICATED,
            responses={**answer(ApiKeyResponse, "The key"), **errors(400, 401, 403, 404, 500, 503)})
async def get_key(request: Request, key_hash: str = KEY_HASH) -> Response:
    await _management_key(request)
    store = _store(request)
    return _json({"data": await _key_wire(store, await _find(store, key_hash))})


@router.patch("/keys/{key_hash}", tags=["API keys"], summary="Update an API key (management key)",
              openapi_extra={**json_body(KeyUpdate, required=False), **AUTHENTICATED},
              responses={**answer(ApiKeyResponse, "The key as updated"),
                         **errors(400, 401, 403, 404, 413, 500, 503)})
async def update_key(request: Request, key_hash: str = KEY_HASH) -> Response:
    await _management_key(request)
    store = _store(request)
    key = await _find(store, key_hash)
    raw = await request.body()
    body = parse_body(raw, KeyUpdate, empty_allowed=True)
    sent = set(orjson.loads(raw)) if raw.strip() else set()
    updated = await store.update_key(
        key.hash,
        name=body.name if body.name is not None else UNSET,
        disabled=body.disabled if body.disabled is not None else UNSET,
        limit_usd=_money(body.limit) if "limit" in sent else UNSET,
        limit_reset=body.limit_reset if "limit_reset" in sent else UNSET,
    )
    return _json({"data": await _key_wire(store, updated or key)})


@router.delete("/keys/{key_hash}", tags=["API keys"], summary="Delete (revoke) an API key (management key)",
               openapi_extra=AUTHENTICATED,
               responses={**answer(ApiKeyDeletedResponse, "The key is revoked"),
                          **errors(400, 401, 403, 404, 500, 503)})
async def delete_key(request: Request, key_hash: str = KEY_HASH) -> Response:
    await _management_key(request)
    store = _store(request)
    key = await _find(store, key_hash)
    await store.delete_key(key.hash)
    return _json({"deleted": True})


# --- helpers ---


async def _find(store: Store, key_hash: str) -> KeyRecord:
    if len(key_hash) != 64:
        raise NotFound("API key not found")
    key = await store.get_key(key_hash)
    if key is None or not key.active:
        raise NotFound("API key not found")
    return key


async def _key_wire(store: Store, key: KeyRecord) -> dict[str, Any]:
    usage = await store.key_usage(key.id)
    return {
        **_usage_fields(usage),
        "hash": key.hash,
        "name": key.name,
        "label": key.label,
        "disabled": key.disabled,
        "created_at": _iso(key.created_at),
        "updated_at": _iso(key.updated_at),
        "last_used_at": _iso(key.last_used_at),
        "expires_at": None,
        "include_byok_in_limit": False,
        "creator_user_id": None,
        "external_user": None,
        "workspace_id": "default",
        "is_management_key": key.is_management,
    }


def _usage_fields(usage: KeyUsage) -> dict[str, Any]:
    return {
        "usage": float(usage.usage),
        "usage_daily": float(usage.usage_daily),
        "usage_weekly": float(usage.usage_weekly),
        "usage_monthly": float(usage.usage_monthly),
        "byok_usage": 0.0,
        "byok_usage_daily": 0.0,
        "byok_usage_weekly": 0.0,
        "byok_usage_monthly": 0.0,
        "limit": None if usage.limit is None else float(usage.limit),
        "limit_remaining": None if usage.limit_remaining is None else float(usage.limit_remaining),
        "limit_reset": usage.limit_reset,
    }


def _budgets(usage: KeyUsage) -> list[dict[str, Any]]:
    if usage.limit is None:
        return []
    spent = {"daily": usage.usage_daily, "weekly": usage.usage_weekly, "monthly": usage.usage_monthly}
    return [{
        "budget_id": None,
        "guardrail_id": None,
        "include_byok": False,
        "limit_usd": float(usage.limit),
        "remaining_usd": float(usage.limit_remaining or 0),
        "reset_interval": usage.limit_reset,
        "resets_at": None,
        "scope": "api_key",
        "spend_usd": float(spent.get(usage.limit_reset or "", usage.usage)),
    }]


def _money(value: float | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise InvalidRequest("limit must be a number of USD") from None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
