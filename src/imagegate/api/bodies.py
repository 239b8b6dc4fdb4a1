"""JSON request bodies → validated models, with every mistake a 400 in the envelope."""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from imagegate.api.errors import format_validation_issues
from imagegate.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)


def parse_body(body: bytes, model: type[M], *, empty_allowed: bool = False) -> M:
    """``body`` as ``model``; malformed JSON, a non-object or invalid fields are a 400."""
    if not body.strip():
        if not empty_allowed:
            raise InvalidRequest("Request body is empty: expected a JSON object")
        body = b"{}"
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"Malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise InvalidRequest(
            format_validation_issues(errors),
            metadata={"issues": [{"path": list(e["loc"]), "message": e["msg"]} for e in errors]},
        ) from None
