"""Model discovery: the Image API's catalog routes and the general Models API, both public."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from imagegate.api.openapi import answer, errors
from imagegate.api.schemas import (
    ImageModelEndpointsResponse,
    ImageModelsListResponse,
    ModelEndpointsResponse,
    ModelResponse,
    ModelsListResponse,
)
from imagegate.catalog import Catalog, Endpoint, Model, ServedCatalog
from imagegate.errors import InvalidRequest, NotFound
from imagegate.gateway import model_not_found

router = APIRouter()

MODALITIES = ("text", "image", "audio", "embeddings", "video")


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


#: Discovery lists only what this gateway can serve; the web pages also ask for the rest.
INCLUDE_UNCONFIGURED = Query(
    False, description="imagegate extension: also list endpoints whose provider is not configured, "
    "marked `configured: false` with what to set in `requires`, and retired ones with the day "
    "their provider stopped serving them in `retired`.",
)


def _served(request: Request) -> ServedCatalog:
    return request.app.state.gateway.catalog


def _catalog(request: Request, include_unconfigured: bool = False) -> Catalog:
    served = _served(request)
    return served.full if include_unconfigured else served.serving()


def _endpoint_wire(request: Request, endpoint: Endpoint, include_unconfigured: bool) -> dict[str, Any]:
    wire = endpoint.to_wire()
    if include_unconfigured:
        missing = request.app.state.providers.missing.get(endpoint.provider)
        wire["configured"] = missing is None and endpoint.provider in request.app.state.providers.configured
        wire["requires"] = [missing.removeprefix("set ")] if missing else []
        retired = endpoint.retired_on(_served(request).today())
        wire["retired"] = endpoint.sunset.isoformat() if retired and endpoint.sunset else None
    return wire


def _model(request: Request, author: str, slug: str, include_unconfigured: bool = False) -> Model:
    model_id = f"{author}/{slug}"
    model = _catalog(request, include_unconfigured).get(model_id)
    if model is None:
        if _served(request).retired_since(model_id):
            raise model_not_found(_served(request), model_id)
        raise NotFound("Resource not found", metadata={"model": model_id})
    return model


@router.get("/images/models", tags=["Images"], summary="List image models",
            responses={**answer(ImageModelsListResponse, "Every image model served"), **errors(400, 500)})
async def list_image_models(request: Request, include_unconfigured: bool = INCLUDE_UNCONFIGURED) -> Response:
    return _json({"data": [model.to_wire() for model in _catalog(request, include_unconfigured).models()]})


@router.get("/images/models/{author}/{slug}/endpoints", tags=["Images"], summary="An image model's endpoints",
            responses={**answer(ImageModelEndpointsResponse, "The model's endpoint records"),
                       **errors(400, 404, 500)})
async def list_image_model_endpoints(
    request: Request, author: str, slug: str, include_unconfigured: bool = INCLUDE_UNCONFIGURED
) -> Response:
    model = _model(request, author, slug, include_unconfigured)
    endpoints = [_endpoint_wire(request, e, include_unconfigured) for e in model.endpoints]
    return _json({"id": model.id, "endpoints": endpoints})


@router.get("/models", tags=["Models"], summary="List models (general Models API)",
            responses={**answer(ModelsListResponse, "The models with those modalities"), **errors(400, 500)})
async def list_models(
    request: Request,
    output_modalities: str = Query("text", description="Comma list of modalities, or `all`."),
    input_modalities: str | None = Query(None, description="Comma list the model must accept."),
    q: str | None = Query(None, description="Case-insensitive text search in id, name and description."),
    offset: int = Query(0, ge=0),
    limit: int | None = Query(None, ge=1, le=1000),
    include_unconfigured: bool = INCLUDE_UNCONFIGURED,
) -> Response:
    wanted_out = _modalities(output_modalities, "output_modalities")
    wanted_in = _modalities(input_modalities, "input_modalities") if input_modalities else None
    models = [
        m
        for m in _catalog(request, include_unconfigured).models()
        if (wanted_out is None or wanted_out & set(m.output_modalities))
        and (wanted_in is None or wanted_in <= set(m.input_modalities))
        and (not q or q.lower() in f"{m.id} {m.name} {m.description}".lower())
    ]
    end = len(models) if limit is None else offset + limit
    next_link = None
    if end < len(models):
        query = request.query_params.multi_items()
        params = [(k, v) for k, v in query if k != "offset"] + [("offset", str(end))]
        next_link = f"/api/v1/models?{urlencode(params)}"
    return _json({
        "data": [general_model(m) for m in models[offset:end]],
        "total_count": len(models),
        "links": {"next": next_link},
    })


@router.get("/models/{author}/{slug}/endpoints", tags=["Models"], summary="A model's endpoints (general shape)",
            responses={**answer(ModelEndpointsResponse, "The model and its endpoints"), **errors(404, 500)})
async def list_model_endpoints(request: Request, author: str, slug: str) -> Response:
    model = _model(request, author, slug)
    return _json({
        "data": {
            "id": model.id,
            "name": model.name,
            "created": model.created,
            "description": model.description,
            "architecture": _architecture(model),
            "endpoints": [_general_endpoint(model, e) for e in model.endpoints],
        }
    })


@router.get("/model/{author}/{slug}", tags=["Models"], summary="One model (general shape)",
            responses={**answer(ModelResponse, "The model"), **errors(404, 500)})
async def get_model(request: Request, author: str, slug: str) -> Response:
    return _json({"data": general_model(_model(request, author, slug))})


def general_model(model: Model) -> dict[str, Any]:
    """An image model in the general ``Model`` shape of ``GET /models``."""
    return {
        "id": model.id,
        "canonical_slug": model.id,
        "name": model.name,
        "created": model.created,
        "description": model.description,
        "context_length": None,
        "architecture": _architecture(model),
        "pricing": public_pricing(model.endpoints[0]),
        "top_provider": {"context_length": None, "max_completion_tokens": None, "is_moderated": False},
        "per_request_limits": None,
        "supported_parameters": [],  # chat-style list; image capabilities live in /images/models
        "default_parameters": None,
        "supported_voices": None,
        "expiration_date": _expiration(model),
        "links": {"details": f"/api/v1/models/{model.id}/endpoints"},
    }


def public_pricing(endpoint: Endpoint) -> dict[str, str]:
    """``PublicPricing`` strings: per-token image output in ``image_output``, as OpenRouter does."""
    pricing = {"prompt": "0", "completion": "0"}
    for line in endpoint.pricing:
        if line.variant is not None and any(
            other.variant is None for other in endpoint.pricing if (other.billable, other.unit) == (line.billable, line.unit)
        ):
            continue
        field = _PUBLIC_FIELDS.get((line.billable, line.unit))
        if field and field not in pricing:
            pricing[field] = format(line.cost_usd.normalize(), "f")
    return pricing


_PUBLIC_FIELDS = {
    ("input_text", "token"): "prompt_text",
    ("output_image", "token"): "image_output",
    ("output_image", "image"): "image_output",
    ("input_image", "token"): "image_token",
    ("input_image", "image"): "image",
    ("input_reference", "image"): "image",
    ("output_image", "request"): "request",
    ("input_text", "request"): "request",
}


def _general_endpoint(model: Model, endpoint: Endpoint) -> dict[str, Any]:
    return {
        "name": f"{endpoint.provider_name} | {model.id}",
        "model_id": model.id,
        "model_name": model.name,
        "context_length": 0,
        "pricing": public_pricing(endpoint),
        "provider_name": endpoint.provider_name,
        "tag": endpoint.provider_tag or endpoint.provider_slug,
        "quantization": None,
        "max_completion_tokens": None,
        "max_prompt_tokens": None,
        "supported_parameters": [],
        "status": 0,
        "uptime_last_30m": None,
        "uptime_last_5m": None,
        "uptime_last_1d": None,
        "latency_last_30m": None,
        "throughput_last_30m": None,
        "supports_implicit_caching": False,
        "supports_diarization": False,
        "supports_tool_choice": {"auto": False, "function": False, "none": False, "required": False},
        "native_tools": {},
        "service_tier": None,
        "supports_image_reference": "input_references" in endpoint.supported_parameters,
    }


def _architecture(model: Model) -> dict[str, Any]:
    return {
        "modality": f"{'+'.join(model.input_modalities)}->{'+'.join(model.output_modalities)}",
        "input_modalities": list(model.input_modalities),
        "output_modalities": list(model.output_modalities),
        "tokenizer": "Other",
        "instruct_type": None,
    }


def _expiration(model: Model) -> str | None:
    sunsets = [e.sunset for e in model.endpoints if e.sunset]
    return max(sunsets).isoformat() if sunsets and len(sunsets) == len(model.endpoints) else None


def _modalities(value: str, param: str) -> set[str] | None:
    names = {v.strip().lower() for v in value.split(",") if v.strip()}
    if "all" in names:
        return None
    unknown = names - set(MODALITIES)
    if unknown or not names:
        raise InvalidRequest(
            f"{param}: expected a comma list of {', '.join(MODALITIES)} or all",
            metadata={"param": param},
        )
    return names
