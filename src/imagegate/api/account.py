"""Account routes: the generation log."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from imagegate.api.auth import authenticate
from imagegate.api.openapi import AUTHENTICATED, answer, errors
from imagegate.api.schemas import ActivityResponse, GenerationResponse
from imagegate.errors import Forbidden, InvalidRequest, NotFound
from imagegate.store import GenerationRecord
from imagegate.wire import NO_NUL

router = APIRouter()
#: SQL offsets are 64-bit integers.
MAX_OFFSET = 2**63 - 1


@router.get("/generation", tags=["Generations"], summary="One generation's record", openapi_extra=AUTHENTICATED,
            responses={**answer(GenerationResponse, "The generation, once it is recorded"),
                       **errors(400, 401, 403, 404, 500, 503)})
async def get_generation(
    request: Request, id: str = Query(..., description="The X-Generation-Id", pattern=NO_NUL)
) -> Response:
    store = request.app.state.store
    key = await authenticate(request, store)
    await request.app.state.gateway.until_recorded(id)
    record = await store.get_generation(id, key_id=key.id)
    if record is None:
        raise NotFound(f"Generation {id} not found", metadata={"param": "id"})
    return Response(orjson.dumps({"data": generation_wire(record)}), media_type="application/json")


@router.get("/activity", tags=["Generations"], summary="Generations and usage by model, filtered",
            openapi_extra=AUTHENTICATED,
            responses={**answer(ActivityResponse, "The key's generations (every key's, for a management key)"),
                       **errors(400, 401, 403, 404, 500, 503)})
async def activity(
    request: Request,
    key: str | None = Query(None, description="A key's hash (management keys only; others see their own).",
                            pattern=NO_NUL),
    model: str | None = Query(None, description="Only this model id.", pattern=NO_NUL),
    since: datetime | None = Query(None, description="From this time (ISO 8601, inclusive)."),
    until: datetime | None = Query(None, description="Up to this time (ISO 8601, exclusive)."),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> Response:
    store = request.app.state.store
    caller = await authenticate(request, store)
    key_id: int | None = caller.id
    if caller.is_management:
        key_id = None
        if key is not None:
            target = await store.get_key(key) if len(key) == 64 else None
            if target is None:
                raise NotFound("API key not found", metadata={"param": "key"})
            key_id = target.id
    elif key is not None and key != caller.hash:
        raise Forbidden("Only management keys can read other keys' activity")
    since, until = _utc(since, "since"), _utc(until, "until")
    records = await store.list_generations(key_id=key_id, model=model, since=since, until=until,
                                           limit=limit, offset=offset)
    by_model = await store.usage_by_model(key_id=key_id, since=since, until=until)
    return Response(orjson.dumps({
        "data": [generation_wire(r) for r in records],
        "by_model": [{**row, "cost_usd": float(row["cost_usd"])} for row in by_model
                     if model is None or row["model"] == model],
    }), media_type="application/json")


def _utc(value: datetime | None, param: str) -> datetime | None:
    """``value`` in UTC (naive means UTC); 400 where UTC has no such time (year 1 at +02:00)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise InvalidRequest(f"{param}: out of range once converted to UTC", metadata={"param": param}) from None


def generation_wire(record: GenerationRecord) -> dict[str, Any]:
    """OpenRouter's generation shape (``api_type: "image"``) plus what imagegate applied."""
    usage = record.usage or {}
    completion_details = usage.get("completion_tokens_details") or {}
    finish = {"succeeded": "complete", "cancelled": "cancelled"}.get(record.status, "error")
    return {
        "id": record.id,
        "api_type": "image",
        "model": record.model,
        "created_at": record.created_at.isoformat().replace("+00:00", "Z"),
        "streamed": record.streamed,
        "cancelled": record.cancelled,
        "latency": record.latency_ms,
        "generation_time": record.generation_time_ms,
        "tokens_prompt": usage.get("prompt_tokens", 0),
        "tokens_completion": usage.get("completion_tokens", 0),
        "native_tokens_completion_images": completion_details.get("image_tokens", 0),
        "num_media_prompt": record.num_references,
        "num_media_completion": record.num_images,
        "finish_reason": finish,
        "native_finish_reason": finish,
        "usage": float(record.cost_usd),
        "total_cost": float(record.cost_usd),
        "upstream_inference_cost": (usage.get("cost_details") or {}).get("upstream_inference_cost", 0),
        "provider_name": record.provider_name or None,
        "is_byok": False,
        "provider_responses": [
            {
                "provider_name": a.get("provider_name"),
                "provider_slug": a.get("provider_slug"),
                "status": a.get("status"),
                "latency": a.get("latency_ms"),
                "error": a.get("error"),
                "is_byok": False,
                "model_permaslug": record.model,
            }
            for a in record.attempts
        ],
        "status": record.status,
        "http_status": record.http_status,
        "error_message": record.error_message,
        "origin": record.origin,
        "app_title": record.app_title,
        "session_id": record.session_id,
        "user": record.user,
        "applied": record.applied,
        "images": record.images,
        "data_region": "local",
        "request_id": None,
        "router": None,
    }
