"""The official ``openrouter`` SDK, unchanged, against a real imagegate server."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from openrouter import OpenRouter, errors, utils
from PIL import Image

from tests.conftest import LiveServer, start_server


def sdk(server: LiveServer, key: str | None = None) -> OpenRouter:
    return OpenRouter(api_key=key if key is not None else server.key, server_url=server.api_url)


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def test_list_models_parses_and_lists_the_sandbox(server: LiveServer) -> None:
    listing = sdk(server).images.list_models()
    ids = [m.id for m in listing.data]
    assert "imagegate/sandbox" in ids
    model = next(m for m in listing.data if m.id == "imagegate/sandbox")
    assert model.endpoints == "/api/v1/images/models/imagegate/sandbox/endpoints"
    assert model.supports_streaming is True
    assert model.architecture.output_modalities == ["image"]
    assert model.supported_parameters["n"].max == 10


def test_list_model_endpoints_parses_pricing_and_descriptors(server: LiveServer) -> None:
    record = sdk(server).images.list_model_endpoints(author="imagegate", slug="sandbox-tokens")
    assert record.id == "imagegate/sandbox-tokens"
    endpoint = record.endpoints[0]
    assert endpoint.provider_slug == "imagegate"
    assert endpoint.supports_streaming is True
    assert {(p.billable, p.unit) for p in endpoint.pricing} == {
        ("input_text", "token"), ("input_image", "token"), ("output_image", "token"),
    }
    assert endpoint.supported_parameters["aspect_ratio"].values == ["1:1", "3:2", "2:3", "auto"]
    assert "latency_ms" in endpoint.allowed_passthrough_parameters


def test_unknown_model_endpoints_raise_not_found(server: LiveServer) -> None:
    with pytest.raises(errors.NotFoundResponseError):
        sdk(server).images.list_model_endpoints(author="nobody", slug="nothing")


def test_generate_buffered_returns_real_images_with_cost(server: LiveServer) -> None:
    result = sdk(server).images.generate(
        model="imagegate/sandbox", prompt="a red circle", n=2, aspect_ratio="16:9", resolution="1K",
        output_format="jpeg", seed=7,
    )
    assert len(result.data) == 2
    for item in result.data:
        assert item.media_type == "image/jpeg"
        image = decode(item.b64_json)
        assert image.format == "JPEG"
        assert abs(image.width / image.height - 16 / 9) < 0.02
    assert result.usage.cost == pytest.approx(0.02)  # $0.01 per image
    assert result.created > 0


def test_generate_streaming_yields_partials_then_completed_with_usage(server: LiveServer) -> None:
    stream = sdk(server).images.generate(
        model="imagegate/sandbox", prompt="a blue square", stream=True, resolution="512", seed=1,
    )
    events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "image_generation.partial_image"
    assert types[-1] == "image_generation.completed"
    completed = events[-1]
    assert decode(completed.b64_json).size == (512, 512)
    assert completed.usage.cost == pytest.approx(0.01)


def test_capability_rejection_raises_bad_request_with_openrouter_message(server: LiveServer) -> None:
    with pytest.raises(errors.BadRequestResponseError) as caught:
        sdk(server).images.generate(model="imagegate/sandbox-tiers", prompt="x", n=5)
    message = caught.value.data.error.message
    assert message.startswith('No provider for imagegate/sandbox-tiers supports the requested parameter(s): n "5".')
    assert "Provider rejections: Imagegate Sandbox: n: must be exactly 1" in message


def test_bad_key_raises_unauthorized(server: LiveServer) -> None:
    with pytest.raises(errors.UnauthorizedResponseError):
        sdk(server, key="sk-ig-v1-" + "0" * 64).images.generate(model="imagegate/sandbox", prompt="x")


def test_unknown_model_raises_not_found(server: LiveServer) -> None:
    with pytest.raises(errors.NotFoundResponseError):
        sdk(server).images.generate(model="nobody/nothing", prompt="x")


FAULTY_CATALOG = Path(__file__).with_name("faulty_catalog.yaml")
NO_RETRIES = utils.RetryConfig("backoff", utils.BackoffStrategy(1, 1, 1, 1), False)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory):
    live, stop = start_server(tmp_path_factory.mktemp("faulty"), catalog_paths=[FAULTY_CATALOG])
    yield live
    stop()


@pytest.mark.parametrize(
    ("model", "error_class", "status"),
    [
        ("faulty/upstream-error", errors.BadGatewayResponseError, 502),
        ("faulty/rate-limit", errors.TooManyRequestsResponseError, 429),
        ("faulty/overloaded", errors.ProviderOverloadedResponseError, 529),
        ("faulty/timeout", errors.EdgeNetworkTimeoutResponseError, 524),
        ("faulty/refusal", errors.BadRequestResponseError, 400),
    ],
)
def test_upstream_failures_raise_the_sdk_error_class(faulty: LiveServer, model: str, error_class, status: int) -> None:
    with pytest.raises(error_class) as caught:
        sdk(faulty).images.generate(model=model, prompt="x", retries=NO_RETRIES)
    assert caught.value.status_code == status
    assert caught.value.data.error.code == status


def test_upstream_rate_limit_keeps_retry_after(faulty: LiveServer) -> None:
    with pytest.raises(errors.TooManyRequestsResponseError) as caught:
        sdk(faulty).images.generate(model="faulty/rate-limit", prompt="x")
    assert caught.value.headers.get("retry-after") == "2"


def test_oversized_body_raises_payload_too_large(make_server) -> None:
    small = make_server(max_body_bytes=4096)
    with pytest.raises(errors.PayloadTooLargeResponseError):
        sdk(small).images.generate(model="imagegate/sandbox", prompt="x" * 10_000)


def test_models_api_lists_image_models_by_output_modality(server: LiveServer) -> None:
    page = sdk(server).models.list(output_modalities="image")
    ids = {m.id for m in page.result.data}
    assert page.result.total_count == len(ids)
    assert {"imagegate/sandbox", "imagegate/sandbox-tiers"} <= ids
