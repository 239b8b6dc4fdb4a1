"""Generation through HTTP: real images, formats, alpha, determinism, references, conversion."""

from __future__ import annotations

import asyncio
import base64
import io

import orjson
import pytest
from PIL import Image

from imagegate.catalog import load_catalog
from imagegate.errors import UpstreamError
from imagegate.providers.base import Image as ImageEvent
from imagegate.providers.base import ProviderJob
from imagegate.providers.sandbox import SandboxProvider
from imagegate.sizing import SizeRequest, resolve_size
from tests.conftest import LiveServer


def generate(server: LiveServer, **body) -> tuple[list[bytes], dict, dict]:
    with server.client() as client:
        response = client.post("/images", json={"prompt": "a red circle", **body}, headers=server.auth())
    assert response.status_code == 200, response.text
    payload = response.json()
    images = [base64.b64decode(item["b64_json"]) for item in payload["data"]]
    return images, payload, dict(response.headers)


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    out = io.BytesIO()
    image.save(out, fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(out.getvalue()).decode()}"


def reference(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.mark.parametrize(
    ("body", "size"),
    [
        ({"resolution": "512"}, (512, 512)),
        ({"resolution": "1K", "aspect_ratio": "16:9"}, None),
        ({"size": "1024x768"}, (1024, 768)),
        ({"size": "2K", "aspect_ratio": "1:1"}, (2048, 2048)),
        ({"aspect_ratio": "9:16", "resolution": "768"}, None),
    ],
)
def test_sandbox_returns_the_native_size_it_reports(server: LiveServer, body: dict, size) -> None:
    [data], _, headers = generate(server, model="imagegate/sandbox", **body)
    image = open_image(data)
    assert f"{image.width}x{image.height}" == headers["x-imagegate-size"]
    if size:
        assert image.size == size
    if "aspect_ratio" in body and size is None:
        w, h = (int(x) for x in body["aspect_ratio"].split(":"))
        assert abs(image.width / image.height - w / h) < 0.02


def test_formats_alpha_and_media_types(server: LiveServer) -> None:
    for fmt, pil in (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")):
        [data], payload, _ = generate(server, model="imagegate/sandbox", resolution="512", output_format=fmt)
        assert open_image(data).format == pil
        assert payload["data"][0]["media_type"] == f"image/{fmt}"
    [data], _, _ = generate(server, model="imagegate/sandbox", resolution="512", background="transparent")
    image = open_image(data).convert("RGBA")
    assert image.getpixel((2, 2))[3] == 0  # corners are background
    assert max(a for *_, a in image.get_flattened_data()) == 255  # the shapes are opaque


def test_same_seed_is_byte_identical_and_other_seeds_differ(server: LiveServer) -> None:
    first, _, _ = generate(server, model="imagegate/sandbox", resolution="512", seed=11, n=2)
    again, _, _ = generate(server, model="imagegate/sandbox", resolution="512", seed=11, n=2)
    other, _, _ = generate(server, model="imagegate/sandbox", resolution="512", seed=12, n=2)
    assert first == again
    assert first[0] != first[1]  # n images are n different images
    assert first[0] != other[0]


def test_no_seed_gives_a_fresh_image_each_time(server: LiveServer) -> None:
    a, _, _ = generate(server, model="imagegate/sandbox", resolution="512")
    b, _, _ = generate(server, model="imagegate/sandbox", resolution="512")
    assert a != b


def test_references_visibly_change_the_output_and_are_billed(server: LiveServer) -> None:
    plain, payload, _ = generate(server, model="imagegate/sandbox", resolution="512", seed=5)
    green = data_url(Image.new("RGB", (64, 64), (0, 200, 0)))
    guided, guided_payload, _ = generate(server, model="imagegate/sandbox", resolution="512", seed=5,
                                         input_references=[reference(green)])
    assert plain != guided
    assert guided_payload["usage"]["cost"] == pytest.approx(payload["usage"]["cost"] + 0.002)


def test_reference_from_a_private_address_is_refused(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post("/images", headers=server.auth(), json={
            "model": "imagegate/sandbox", "prompt": "x",
            "input_references": [reference(f"{server.base_url}/healthz")]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["metadata"]["error_type"] == "image_download_failed"
    assert "input_references[0]" in error["message"]


def test_reference_decompression_bomb_is_a_clear_400(server: LiveServer) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
    bomb += chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b"")
    url = "data:image/png;base64," + base64.b64encode(bomb).decode()
    with server.client() as client:
        response = client.post("/images", headers=server.auth(), json={
            "model": "imagegate/sandbox", "prompt": "x", "input_references": [reference(url)]})
    assert response.status_code == 400
    assert response.json()["error"]["metadata"]["error_type"] == "image_too_large"


def test_too_many_references_for_the_endpoint_is_a_capability_400(server: LiveServer) -> None:
    tiny = data_url(Image.new("RGB", (8, 8)))
    with server.client() as client:
        response = client.post("/images", headers=server.auth(), json={
            "model": "imagegate/sandbox-vector", "prompt": "x", "input_references": [reference(tiny)] * 2})
    assert response.status_code == 400
    assert 'input_references "2"' in response.json()["error"]["message"]


def test_format_the_endpoint_lacks_is_converted(server: LiveServer) -> None:
    # sandbox-tiers produces PNG only; the gateway converts to what the client asked.
    [data], payload, headers = generate(server, model="imagegate/sandbox-tiers", resolution="512",
                                        output_format="webp")
    assert open_image(data).format == "WEBP"
    assert payload["data"][0]["media_type"] == "image/webp"
    assert headers["x-imagegate-format"] == "webp"
    [data], _, _ = generate(server, model="imagegate/sandbox-tiers", resolution="512", background="transparent")
    image = open_image(data).convert("RGBA")
    assert image.getpixel((1, 1))[3] == 0


def test_output_that_needs_no_conversion_passes_through_untouched(server: LiveServer) -> None:
    body = {"model": "imagegate/sandbox", "prompt": "a red circle", "resolution": "512", "seed": 9,
            "output_format": "webp", "output_compression": 60}
    [served], _, _ = generate(server, **{k: v for k, v in body.items() if k != "prompt"})

    async def direct() -> bytes:
        endpoint = load_catalog().get("imagegate/sandbox").endpoints[0]
        job = ProviderJob(upstream_model="sandbox", prompt="a red circle", n=1, output_format="webp",
                          output_compression=60, seed=9,
                          size=resolve_size(SizeRequest(resolution="512"), endpoint.size_rules))
        events = [e async for e in SandboxProvider().run(job)]
        return next(e for e in events if isinstance(e, ImageEvent)).image.raw

    assert served == asyncio.run(direct())


def test_vector_model_returns_svg_markup(server: LiveServer) -> None:
    [data, _second], payload, _ = generate(server, model="imagegate/sandbox-vector", n=2)
    assert payload["data"][0]["media_type"] == "image/svg+xml"
    assert b"<svg" in data[:400]
    assert payload["usage"]["cost"] == pytest.approx(0.04)


def test_token_priced_model_bills_tokens(server: LiveServer) -> None:
    _, payload, _ = generate(server, model="imagegate/sandbox-tokens")
    usage = payload["usage"]
    assert usage["completion_tokens"] == 1024  # one token per 1024 px of the 1024² output
    expected = usage["completion_tokens"] * 0.00004 + usage["prompt_tokens"] * 0.000005
    assert usage["cost"] == pytest.approx(expected)


def test_megapixel_priced_model_bills_pixels_and_the_request(server: LiveServer) -> None:
    _, payload, headers = generate(server, model="imagegate/sandbox-tiers", resolution="2K", aspect_ratio="16:9")
    width, height = (int(v) for v in headers["x-imagegate-size"].split("x"))
    assert payload["usage"]["cost"] == pytest.approx(width * height / 1048576 * 0.02 + 0.001)


def test_streaming_n2_gives_one_completed_per_image_usage_on_the_last(server: LiveServer) -> None:
    with server.client() as client:
        raw = client.post("/images", headers=server.auth(), json={
            "model": "imagegate/sandbox", "prompt": "x", "stream": True, "n": 2, "resolution": "512"}).content
    events = [orjson.loads(block[6:]) for block in raw.split(b"\n\n") if block.startswith(b"data: {")]
    completed = [e for e in events if e["type"] == "image_generation.completed"]
    assert len(completed) == 2
    assert "usage" not in completed[0] and completed[1]["usage"]["cost"] == pytest.approx(0.02)
    partial_indexes = [e["partial_image_index"] for e in events if e["type"] == "image_generation.partial_image"]
    assert partial_indexes == [0, 1, 0, 1]  # two previews of each image, numbered per image
    # Each image's events stay together: previews, then its completed event, then the next image.
    assert [e["type"].split(".")[-1] for e in events] == [
        "partial_image", "partial_image", "completed", "partial_image", "partial_image", "completed"]


def latest_record(server: LiveServer) -> tuple[str, str, int] | None:
    """Status, cost and generation time of the newest generation, read from the database."""
    from sqlalchemy import text

    from imagegate.store import Store

    async def read() -> tuple[str, str, int] | None:
        store = Store(server.database_url)
        try:
            async with store.engine.connect() as conn:
                rows = await conn.execute(text(
                    "select status, cost_usd, generation_time_ms from generations order by created_at desc limit 1"))
                return next(iter(rows), None)
        finally:
            await store.close()

    return asyncio.run(read())


def disconnect_during(server: LiveServer, latency_ms: int, stream: bool = False) -> None:
    import httpx

    body = {"model": "imagegate/sandbox", "prompt": "disconnect", "resolution": "512", "stream": stream,
            "provider": {"options": {"imagegate": {"latency_ms": latency_ms}}}}
    with httpx.Client(base_url=server.api_url, timeout=0.4) as client:
        try:
            with client.stream("POST", "/images", json=body, headers=server.auth()) as response:
                for _ in response.iter_bytes():
                    pass
        except httpx.ReadTimeout:
            pass


def wait_for_record(server: LiveServer, status: str, timeout: float = 8.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = latest_record(server)
        if row is not None and row[0] == status:
            return row
        time.sleep(0.1)
    raise AssertionError(f"no {status} record; latest is {latest_record(server)}")


def test_client_that_disconnects_is_not_billed_but_generation_completes_and_is_recorded(make_server) -> None:
    server = make_server()
    disconnect_during(server, latency_ms=1500)
    status, cost, generation_time_ms = wait_for_record(server, "cancelled")
    assert str(cost) in ("0", "0E+0")
    assert generation_time_ms >= 1500  # it ran to the end


def test_cancel_on_disconnect_stops_the_upstream_call(make_server) -> None:
    server = make_server(cancel_on_disconnect=True)
    disconnect_during(server, latency_ms=5000, stream=True)
    status, cost, generation_time_ms = wait_for_record(server, "cancelled", timeout=4.0)
    assert str(cost) in ("0", "0E+0")
    assert generation_time_ms < 4000


def test_cancel_on_disconnect_stops_a_buffered_generation_as_soon_as_its_client_leaves(make_server) -> None:
    server = make_server(cancel_on_disconnect=True)
    disconnect_during(server, latency_ms=5000, stream=False)
    status, cost, generation_time_ms = wait_for_record(server, "cancelled", timeout=4.0)
    assert str(cost) in ("0", "0E+0")
    assert generation_time_ms < 4000  # the answer's wait noticed the client leave at once


class FailsAfterItsAnswer:
    """The sandbox, raising once its run has said its last word (as a provider whose
    connection breaks during its teardown would)."""

    def __init__(self, inner) -> None:
        self.inner, self.slug = inner, inner.slug

    async def run(self, job: ProviderJob):
        async for event in self.inner.run(job):
            yield event
        raise UpstreamError("the connection broke after the answer")


def test_a_provider_failing_after_its_answer_still_delivers_and_bills_it(make_server) -> None:
    server = make_server()
    providers = server.app.state.gateway.providers
    providers["imagegate"] = FailsAfterItsAnswer(providers["imagegate"])
    body = {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512"}
    with server.client() as client:
        buffered = client.post("/images", headers=server.auth(), json=body)
        assert buffered.status_code == 200, buffered.text
        assert buffered.json()["usage"]["cost"] == pytest.approx(0.01)
        assert float(wait_for_record(server, "succeeded")[1]) == pytest.approx(0.01)
        raw = client.post("/images", headers=server.auth(), json={**body, "stream": True}).content
    events = [orjson.loads(block[6:]) for block in raw.split(b"\n\n") if block.startswith(b"data: {")]
    assert [e["type"].split(".")[-1] for e in events] == ["partial_image", "partial_image", "completed"]
    assert events[-1]["usage"]["cost"] == pytest.approx(0.01) and raw.endswith(b"data: [DONE]\n\n")


def test_a_generation_is_found_right_after_its_answer_while_its_upstream_call_winds_down(server: LiveServer) -> None:
    body = {"model": "imagegate/sandbox", "prompt": "a kite", "resolution": "512",
            "provider": {"options": {"imagegate": {"linger_ms": 1500}}}}
    with server.client() as client:
        answer = client.post("/images", json=body, headers=server.auth())
        assert answer.status_code == 200
        record = client.get("/generation", params={"id": answer.headers["x-generation-id"]}, headers=server.auth())
    assert record.status_code == 200, record.text
    assert record.json()["data"]["status"] == "succeeded"
    assert record.json()["data"]["total_cost"] == answer.json()["usage"]["cost"]
