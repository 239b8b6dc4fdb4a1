"""What the SDK cannot express: malformed bodies, limits, routes, headers, SSE framing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import re

import httpx
import orjson
import pytest
from PIL import Image

from tests.conftest import LiveServer, _with_store

GENERATION_ID = re.compile(r"^gen-img-\d+-[A-Za-z0-9]{20}$")


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == response.status_code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def post(server: LiveServer, body: object, *, path: str = "/images", **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Content-Type": "application/json", **server.auth(), **kwargs.pop("headers", {})}
    with server.client() as client:
        return client.post(path, content=content, headers=headers, **kwargs)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "Malformed JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        ({"prompt": "x"}, "model"),
        ({"model": "imagegate/sandbox", "prompt": ""}, "prompt"),
        ({"model": "imagegate/sandbox", "prompt": "   "}, "prompt"),
        ({"model": "imagegate/sandbox", "prompt": "x", "n": 11}, "n"),
        ({"model": "imagegate/sandbox", "prompt": "x", "n": "2"}, "n"),
        ({"model": "imagegate/sandbox", "prompt": "x", "n": 1.5}, "n"),
        ({"model": "imagegate/sandbox", "prompt": "x", "n": True}, "n"),
        ({"model": "imagegate/sandbox", "prompt": "x", "quality": "banana"}, "quality"),
        ({"model": "imagegate/sandbox", "prompt": "x", "aspect_ratio": "7:3"}, "aspect_ratio"),
        ({"model": "imagegate/sandbox", "prompt": "x", "output_compression": 101}, "output_compression"),
        ({"model": "imagegate/sandbox", "prompt": "x", "input_references": ["https://example.com/a.png"]},
         "input_references"),
        ({"model": "imagegate/sandbox", "prompt": "x",
          "input_references": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}] * 17},
         "input_references"),
        ({"model": "imagegate/sandbox", "prompt": "x", "session_id": "s" * 257}, "session_id"),
        ({"model": "imagegate/sandbox", "prompt": "x", "session_id": "a\x00b"}, "session_id"),
        ({"model": "imagegate/sandbox", "prompt": "x", "user": "a\x00b"}, "user"),
        ({"model": "imagegate/sandbox", "prompt": "x", "size": "huge"}, "size"),
    ],
)
def test_schema_errors_are_400_in_the_envelope(server: LiveServer, body: object, fragment: str) -> None:
    response = post(server, body)
    assert response.status_code == 400
    assert fragment.lower() in error_of(response)["message"].lower()


def test_whole_numbers_written_with_a_decimal_point_are_integers(server: LiveServer) -> None:
    # JSON Schema (the OpenAPI document) and OpenRouter's JavaScript validation accept 2.0 as an integer.
    response = post(server, {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512", "n": 2.0,
                             "seed": 7.0, "output_compression": 80.0, "output_format": "webp"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2


def test_schema_is_checked_before_auth(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post("/images", content=b"{oops")
    assert response.status_code == 400


def test_missing_key_is_401(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post("/images", json={"model": "imagegate/sandbox", "prompt": "x"})
    assert response.status_code == 401
    error_of(response)


def test_unknown_fields_are_ignored(server: LiveServer) -> None:
    response = post(server, {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512",
                             "response_format": "url", "mask": "whatever"})
    assert response.status_code == 200


def test_unknown_route_and_wrong_method_use_the_envelope(server: LiveServer) -> None:
    with server.client() as client:
        assert error_of(client.get("/nothing-here"))["code"] == 404
        response = client.get("/images")
        assert response.status_code == 405
        error_of(response)


def test_edits_route_is_404_as_on_openrouter(server: LiveServer) -> None:
    response = post(server, {"model": "imagegate/sandbox", "prompt": "x"}, path="/images/edits")
    assert response.status_code == 404
    error_of(response)


def test_generations_alias_answers_like_images(server: LiveServer) -> None:
    response = post(server, {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512"},
                    path="/images/generations")
    assert response.status_code == 200
    assert response.json()["data"][0]["media_type"] == "image/png"


def test_body_over_limit_is_413_even_without_content_length(make_server) -> None:
    small = make_server(max_body_bytes=2048)

    def chunks():
        yield b'{"model": "imagegate/sandbox", "prompt": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}'

    with small.client() as client:
        response = client.post("/images", content=chunks(), headers=small.auth())
    assert response.status_code == 413
    assert error_of(response)["metadata"]["max_bytes"] == 2048


def test_success_headers_name_generation_provider_and_applied_values(server: LiveServer) -> None:
    response = post(server, {"model": "imagegate/sandbox-tokens", "prompt": "x", "aspect_ratio": "3:2",
                             "seed": 3, "quality": "low"})
    assert response.status_code == 200
    assert GENERATION_ID.match(response.headers["x-generation-id"])
    assert response.headers["x-provider-name"] == "Imagegate Sandbox"
    assert response.headers["x-imagegate-size"] == "1536x1024"
    assert response.headers["x-imagegate-quality"] == "low"
    assert response.headers["x-imagegate-dropped"] == "seed"  # sandbox-tokens does not list seed
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    assert image.size == (1536, 1024)


def test_cors_preflight_and_exposed_headers(server: LiveServer) -> None:
    with server.client() as client:
        preflight = client.options("/images", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] in ("*", "https://app.example")
    response = post(server, {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512"},
                    headers={"Origin": "https://app.example"})
    exposed = response.headers["access-control-expose-headers"].lower()
    assert "x-generation-id" in exposed and "x-provider-name" in exposed


def test_sse_framing_is_data_lines_keepalives_and_done(server: LiveServer) -> None:
    body = {"model": "imagegate/sandbox", "prompt": "x", "stream": True, "resolution": "512",
            "provider": {"options": {"imagegate": {"latency_ms": 600}}}}
    with server.client() as client, client.stream(
        "POST", "/images", json=body, headers={**server.auth(), "Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert GENERATION_ID.match(response.headers["x-generation-id"])
        raw = b"".join(response.iter_bytes())
    blocks = raw.decode().split("\n\n")
    assert blocks[-1] == ""
    blocks = blocks[:-1]
    assert blocks[0] == ": "  # keep-alive comment first, flushing headers
    assert ": " in blocks[1:-2]  # keep-alives while the upstream works
    assert blocks[-1] == "data: [DONE]"
    events = [orjson.loads(b[len("data: "):]) for b in blocks if b.startswith("data: {")]
    assert all(not b.startswith("event:") for b in blocks)
    assert [e["type"] for e in events][-1] == "image_generation.completed"
    assert "image_generation.partial_image" in [e["type"] for e in events]
    assert events[-1]["usage"]["cost"] == pytest.approx(0.01)


def test_failure_after_stream_began_is_an_error_event_then_done(server: LiveServer) -> None:
    body = {"model": "imagegate/sandbox", "prompt": "x", "stream": True, "resolution": "512", "n": 2,
            "provider": {"options": {"imagegate": {"fail": "after_first_image"}}}}
    with server.client() as client:
        raw = client.post("/images", json=body, headers=server.auth()).content.decode()
    events = [orjson.loads(line[6:]) for line in raw.split("\n\n") if line.startswith("data: {")]
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "upstream_error"
    assert events[-2]["type"] == "image_generation.completed"  # the image made before the failure
    assert raw.endswith("data: [DONE]\n\n")


def test_stream_on_non_streaming_model_returns_buffered_json(server: LiveServer) -> None:
    response = post(server, {"model": "imagegate/sandbox-tiers", "prompt": "x", "stream": True,
                             "resolution": "512"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert len(response.json()["data"]) == 1


def test_operator_can_record_the_sha256_of_each_delivered_image(make_server) -> None:
    server = make_server(record_output_sha256=True)
    response = post(server, {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512"})
    image = base64.b64decode(response.json()["data"][0]["b64_json"])
    with server.client() as client:
        record = client.get("/generation", params={"id": response.headers["x-generation-id"]},
                            headers=server.auth()).json()["data"]
    assert record["images"][0]["sha256"] == hashlib.sha256(image).hexdigest()


def test_generation_record_is_returned_in_openrouter_shape(server: LiveServer) -> None:
    response = post(server, {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512", "n": 2})
    generation_id = response.headers["x-generation-id"]
    with server.client() as client:
        record = client.get("/generation", params={"id": generation_id}, headers=server.auth())
        assert record.status_code == 200
        data = record.json()["data"]
        assert data["id"] == generation_id
        assert data["api_type"] == "image"
        assert data["num_media_completion"] == 2
        assert data["total_cost"] == pytest.approx(0.02)
        assert data["provider_responses"][0]["status"] == 200
        assert data["images"][0]["width"] == 512 and data["images"][0]["sha256"] is None  # opt-in
        assert "b64_json" not in record.text
        other_key = server.create_key("other")
        hidden = client.get("/generation", params={"id": generation_id}, headers=server.auth(other_key))
        assert hidden.status_code == 404


def test_failed_generation_is_recorded_and_not_billed(server: LiveServer) -> None:
    response = post(server, {"model": "imagegate/sandbox", "prompt": "x",
                             "provider": {"options": {"imagegate": {"fail": "content_policy"}}}})
    assert response.status_code == 400
    assert error_of(response)["metadata"]["error_type"] == "content_policy_violation"
    generation_id = response.headers.get("x-generation-id")
    assert generation_id is None or GENERATION_ID.match(generation_id)


def test_transparent_background_with_jpeg_is_400(server: LiveServer) -> None:
    response = post(server, {"model": "imagegate/sandbox", "prompt": "x", "background": "transparent",
                             "output_format": "jpeg"})
    assert response.status_code == 400
    assert "png or webp" in error_of(response)["message"]


def test_pixel_size_conflicting_with_aspect_ratio_is_400(server: LiveServer) -> None:
    response = post(server, {"model": "imagegate/sandbox", "prompt": "x", "size": "1536x1024",
                             "aspect_ratio": "1:1"})
    assert response.status_code == 400
    error_of(response)


def test_openapi_describes_the_image_routes(server: LiveServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        spec = client.get("/openapi.json").json()
    assert {"/api/v1/images", "/api/v1/images/generations", "/api/v1/images/models",
            "/api/v1/images/models/{author}/{slug}/endpoints", "/api/v1/models",
            "/api/v1/generation"} <= set(spec["paths"])


def test_malformed_size_is_a_schema_error_before_auth_and_model_lookup(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post("/images", json={"model": "nobody/nothing", "prompt": "x", "size": "big"})
    assert response.status_code == 400
    assert "size" in error_of(response)["message"]


def test_rate_limit_per_key_is_429_with_retry_after(make_server) -> None:
    limited = make_server(rate_limit_rpm=2)
    body = {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512"}
    statuses = [post(limited, body).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    response = post(limited, body)
    assert int(response.headers["retry-after"]) >= 1
    assert error_of(response)["code"] == 429
    other = limited.create_key("other")
    assert post(limited, body, headers=limited.auth(other)).status_code == 200


def test_concurrent_generations_per_key_are_limited(make_server) -> None:
    limited = make_server(rate_limit_concurrency=1)
    slow = {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512", "stream": True,
            "provider": {"options": {"imagegate": {"latency_ms": 1500}}}}
    quick = {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512"}
    with limited.client() as client:
        # A stream's headers come once its generation holds the key's one slot.
        with client.stream("POST", "/images", json=slow, headers=limited.auth()) as first:
            assert first.status_code == 200
            assert post(limited, quick).status_code == 429
            assert first.read().endswith(b"data: [DONE]\n\n")
    assert post(limited, quick).status_code == 200


def test_an_exhausted_database_pool_is_a_503_with_retry_after_never_a_500(make_server) -> None:
    import concurrent.futures

    # Every request reads its key and whether its account is metered (nothing cached), so the
    # database is on each request's path, and a request finding the one connection busy for a
    # millisecond is told to retry.
    tight = make_server(database_pool_size=1, database_max_overflow=0, database_pool_timeout_s=0.001,
                        cache_ttl_s=0)
    asyncio.run(_with_store(tight.database_url, lambda store: store.add_credits(100)))
    body = {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512"}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda _: post(tight, body), range(48)))
    statuses = {r.status_code for r in responses}
    assert statuses == {200, 503}, statuses  # some were served, the overflow was told to retry
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "2"
            assert error_of(response)["metadata"]["error_type"] == "overloaded"
