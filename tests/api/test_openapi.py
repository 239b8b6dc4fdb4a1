"""The OpenAPI document is one that client generators and fuzzers can read."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from tests.conftest import LiveServer

ERROR_ENVELOPE = {"$ref": "#/components/schemas/ErrorResponse"}


@pytest.fixture(scope="module")
def document(server: LiveServer) -> dict[str, Any]:
    with httpx.Client(base_url=server.base_url) as client:
        served = client.get("/openapi.json")
        aliased = client.get("/api/v1/openapi.json")
    assert served.status_code == aliased.status_code == 200
    assert served.json() == aliased.json()
    return served.json()


def test_openapi_document_is_valid_and_every_ref_resolves(document: dict[str, Any]) -> None:
    validate(document)
    refs = list(_refs(document))
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
            node = node[part]


def test_image_generation_documents_its_event_stream_and_every_error_status(document: dict[str, Any]) -> None:
    for path in ("/api/v1/images", "/api/v1/images/generations"):
        operation = document["paths"][path]["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ImageRequest"
        }
        ok = operation["responses"]["200"]["content"]
        assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/ImageGenerationResponse"}
        data = ok["text/event-stream"]["schema"]["properties"]["data"]
        assert data["if"] == {"const": "[DONE]"}
        assert data["else"]["contentSchema"] == {"$ref": "#/components/schemas/ImageStreamEvent"}
        for status in ("400", "401", "402", "403", "404", "413", "429", "500", "502", "503", "524", "529"):
            assert operation["responses"][status]["content"]["application/json"]["schema"] == ERROR_ENVELOPE
    events = document["components"]["schemas"]["ImageStreamEvent"]["discriminator"]["mapping"]
    assert set(events) == {"image_generation.partial_image", "image_generation.text_chunk",
                           "image_generation.completed", "error"}
    completed = document["components"]["schemas"]["ImageStreamCompleted"]["properties"]
    assert "usage" in completed


def test_every_operation_answers_errors_in_the_envelope_and_never_422(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            assert "500" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"] == ERROR_ENVELOPE, (method, path)
                else:
                    assert "$ref" in response["content"]["application/json"]["schema"], (method, path, status)


def test_key_management_bodies_are_described_by_schemas(document: dict[str, Any]) -> None:
    keys, one_key = document["paths"]["/api/v1/keys"], document["paths"]["/api/v1/keys/{key_hash}"]
    schemas = document["components"]["schemas"]
    assert _body_ref(keys["post"]) == "#/components/schemas/KeyCreate"
    assert _body_ref(one_key["patch"]) == "#/components/schemas/KeyUpdate"
    assert schemas["KeyCreate"]["required"] == ["name"]
    assert {"name", "disabled", "limit", "limit_reset"} <= set(schemas["KeyUpdate"]["properties"])
    assert _answer_ref(keys["post"], "201") == "#/components/schemas/ApiKeyCreatedResponse"
    assert _answer_ref(keys["get"], "200") == "#/components/schemas/ApiKeysListResponse"
    assert _answer_ref(one_key["get"], "200") == "#/components/schemas/ApiKeyResponse"
    assert _answer_ref(one_key["delete"], "200") == "#/components/schemas/ApiKeyDeletedResponse"
    assert {"hash", "name", "label", "disabled", "limit", "usage"} <= set(schemas["ApiKey"]["required"])
    assert all(operation["security"] == [{"apiKey": []}] for operation in (*keys.values(), *one_key.values()))


def _body_ref(operation: dict[str, Any]) -> str:
    return operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]


def _answer_ref(operation: dict[str, Any], status: str) -> str:
    return operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]


def _refs(node: Any) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)
