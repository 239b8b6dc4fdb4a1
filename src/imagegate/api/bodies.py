"""JSON request bodies → validated models, with every mistake a 400 in the envelope."""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from imagegate.api.errors import format_validation_issues
from imagegate.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)

#: Strings (keys and values) a request body may hold. A real request has a few dozen, and its
#: images are each one long string; a body of millions of tiny keys would hold the event loop
#: for seconds while it is parsed.
MAX_JSON_STRINGS = 10_000
#: Bodies shorter than this cannot hold enough strings to matter; not counted.
_COUNT_FROM_BYTES = 4 * MAX_JSON_STRINGS


def parse_body(body: bytes, model: type[M], *, empty_allowed: bool = False) -> M:
    """``body`` as ``model``; malformed JSON, a non-object or invalid fields are a 400."""
    if not body.strip():
        if not empty_allowed:
            raise InvalidRequest("Request body is empty: expected a JSON object")
        body = b"{}"
    if len(body) > _COUNT_FROM_BYTES and body.count(b'"') > 2 * MAX_JSON_STRINGS:
        raise InvalidRequest(f"Request body holds too many fields: at most {MAX_JSON_STRINGS} strings")
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
