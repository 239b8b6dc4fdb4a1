"""The OpenAPI document: FastAPI's, completed with what FastAPI cannot see.

The routes read their own bodies and write their own answers (``POST /images`` is even served
by plain Starlette routes ahead of FastAPI's), so FastAPI knows neither the request bodies nor
the answers. Routes declare them with the helpers here. Their schemas come from pydantic with
references into ``components/schemas``; ``install_openapi`` moves the definitions there, so
that every ``$ref`` of the document resolves.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from imagegate.api.schemas import ErrorResponse

REF_TEMPLATE = "#/components/schemas/{model}"
SECURITY_SCHEME = "apiKey"
#: ``openapi_extra`` of a route that needs an API key.
AUTHENTICATED: dict[str, Any] = {"security": [{SECURITY_SCHEME: []}]}
#: The last event of an image stream.
SSE_DONE = "[DONE]"

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
_ERRORS: dict[int, str] = {
    400: "The request is invalid: malformed JSON, a field outside its schema, a parameter no "
    "endpoint of the model supports, or a request the provider refused",
    401: "The API key is missing or invalid (or, on `/keys`, not a management key)",
    402: "The account's credits or the key's spending limit cannot pay for the request",
    403: "The key is disabled, or the request is not allowed for it",
    404: "The model or resource does not exist, or no allowed provider serves the model",
    413: "The request body is over the gateway's limit",
    429: "Too many requests for this key, or the provider is rate limiting",
    500: "An internal error",
    502: "The provider failed; nothing is billed",
    503: "The gateway is overloaded",
    524: "The provider timed out; nothing is billed",
    529: "The provider is overloaded; nothing is billed",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses`` entries for error statuses, each answering OpenRouter's envelope."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        responses[status] = {"model": ErrorResponse, "description": _ERRORS[status]}
        if status in (429, 503):
            responses[status]["headers"] = _RETRY_AFTER
    return responses


def answer(model: type[BaseModel], description: str, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """The FastAPI ``responses`` entry for a route's JSON answer."""
    return {status: {"model": model, "description": description}}


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``model`` from its JSON body itself."""
    schema = _schema(model, "validation")
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def event_stream(event: type[BaseModel]) -> dict[str, Any]:
    """A ``text/event-stream`` media type of ``data: <event as JSON>`` events ending with
    ``data: [DONE]``, with ``: `` comments between them. The schema is that of one event, as
    OpenAPI 3.1 tools read it (``data``, ``event``, ``id``, ``retry``)."""
    return {
        "schema": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "string",
                    "description": f"One {event.__name__} as JSON; `{SSE_DONE}` ends the stream.",
                    "if": {"const": SSE_DONE},
                    "else": {
                        "contentMediaType": "application/json",
                        "contentSchema": _schema(event, "serialization"),
                    },
                },
            },
        },
        # How Speakeasy-generated clients (OpenRouter's SDKs) learn where a stream ends.
        "x-speakeasy-sse-sentinel": SSE_DONE,
    }


def install_openapi(app: FastAPI) -> None:
    """Serve FastAPI's document completed: schema definitions in ``components``, the API key
    scheme, and no 422 answers (validation errors are 400s in the envelope)."""
    fastapi_document: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # A copy: FastAPI's document shares its dicts with the routes' declarations.
            app.openapi_schema = _completed(copy.deepcopy(fastapi_document()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- helpers ---


def _schema(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
    """A ``$ref`` to ``model``, carrying the definitions it needs for ``install_openapi``."""
    refs, definitions = models_json_schema([(model, mode)], ref_template=REF_TEMPLATE)
    return {**refs[(model, mode)], **definitions}


def _completed(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for path in document["paths"].values():
        for operation in path.values():
            operation["responses"].pop("422", None)
            for name, definition in _hoisted_definitions(operation):
                if schemas.setdefault(name, definition) != definition:
                    raise RuntimeError(f"two different schemas are named {name} in the OpenAPI document")
    for name in ("HTTPValidationError", "ValidationError"):  # only the 422s referred to them
        schemas.pop(name, None)
    components["securitySchemes"] = {
        SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"}
    }
    return document


def _hoisted_definitions(node: Any) -> list[tuple[str, Any]]:
    """Removes every ``$defs`` under ``node`` and returns the definitions they held."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        found += node.pop("$defs", {}).items()
        for value in node.values():
            found += _hoisted_definitions(value)
    elif isinstance(node, list):
        for value in node:
            found += _hoisted_definitions(value)
    return found
