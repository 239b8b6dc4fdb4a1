"""The OpenAI and Azure OpenAI providers against their emulator, and through a real imagegate server."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from decimal import Decimal

import httpx
import openai as openai_sdk
import orjson
import pytest
from PIL import Image as PILImage

from imagegate import errors
from imagegate.catalog import load_catalog
from imagegate.providers import load_providers
from imagegate.providers.base import Done, Image, Partial, ProviderJob, ReferenceImage
from imagegate.providers.http import HttpPool
from imagegate.providers.openai import AzureOpenAIProvider, OpenAIProvider
from imagegate.settings import Settings
from imagegate.sizing import SizeRequest, resolve_size
from imagegate.store import AccountRecord
from tests.conftest import LiveServer
from tests.emulators import openai as emulated
from tests.emulators.base import Emulator
from tests.emulators.images import synth
from tests.waiting import wait_for_record

CATALOG = load_catalog()
MODELS = ("openai/gpt-image-2", "openai/gpt-image-1.5", "openai/gpt-image-1-mini")
PROMPT = "a lighthouse at dusk"  # 20 characters: 5 text tokens in the emulator


@pytest.fixture
def emu(emulator: Callable[..., Emulator]) -> Emulator:
    return emulator("openai")


@pytest.fixture
def openai_server(make_server: Callable[..., LiveServer], emu: Emulator) -> LiveServer:
    """An imagegate server whose OpenAI provider is the emulator."""
    return make_server(providers={"openai": {"api_key": emulated.API_KEY, "base_url": emu.url + "/v1"}})


@pytest.fixture
def provider(emu: Emulator, http: HttpPool) -> OpenAIProvider:
    return OpenAIProvider.configure(
        {"api_key": emulated.API_KEY, "base_url": emu.url + "/v1"}, http
    )


def azure(emu: Emulator, http: HttpPool, **config) -> AzureOpenAIProvider:
    return AzureOpenAIProvider.configure(
        {"api_key": emulated.API_KEY, "endpoint": emu.url, **config}, http
    )


def endpoint(model_id: str, provider: str = "openai"):
    return next(e for e in CATALOG.get(model_id).endpoints if e.provider == provider)


def make_job(
    model_id: str = "openai/gpt-image-2",
    *,
    aspect_ratio: str | None = None,
    size: str | None = None,
    fmt: str = "png",
    timeout: float = 10,
    **kw,
) -> ProviderJob:
    rules = endpoint(model_id).size_rules
    return ProviderJob(
        upstream_model=endpoint(model_id).upstream_model,
        prompt=PROMPT,
        n=kw.pop("n", 1),
        size=resolve_size(SizeRequest(aspect_ratio=aspect_ratio, size=size), rules),
        output_format=fmt,
        deadline=time.monotonic() + timeout,
        **kw,
    )


async def run(provider, job: ProviderJob) -> list:
    return [event async for event in provider.run(job)]


def decoded(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image


def reference(size: tuple[int, int] = (320, 240), fmt: str = "png") -> ReferenceImage:
    if fmt == "gif":  # synth makes no GIFs
        out = io.BytesIO()
        decoded(synth(*size, "png", seed="reference")).save(out, "GIF")
        return ReferenceImage(out.getvalue(), "image/gif", *size)
    return ReferenceImage(synth(*size, fmt, seed="reference"), f"image/{fmt}", *size)


def sent_form(emu: Emulator, index: int = -1) -> tuple[dict[str, list[str]], list]:
    recorded = emu.requests[index]
    return emulated.parse_multipart(recorded.headers["Content-Type"], recorded.body)


def output_tokens(model_id: str, quality: str, width: int, height: int) -> int:
    """The emulator's output image tokens for one image of ``model_id``."""
    return emulated.MODELS[endpoint(model_id).upstream_model].output_tokens(quality, width, height)


# --- request translation, every model ---


@pytest.mark.parametrize("model_id", MODELS)
async def test_every_model_generates_real_images_from_a_json_request(
    emu: Emulator, provider, model_id
) -> None:
    events = await run(provider, make_job(model_id, aspect_ratio="2:3", n=2, quality="low"))
    recorded = emu.requests[-1]
    assert recorded.path == "/v1/images/generations"
    assert recorded.headers["Authorization"] == f"Bearer {emulated.API_KEY}"
    size = endpoint(model_id).size_rules
    width, height = (1024, 1536) if size.mode == "table" else (832, 1248)
    assert recorded.json() == {
        "prompt": PROMPT,
        "n": 2,
        "model": endpoint(model_id).upstream_model,
        "size": f"{width}x{height}",
        "output_format": "png",
        "quality": "low",
    }
    images = [e for e in events if isinstance(e, Image)]
    assert not images[0].image.decoded  # the upstream's base64 is forwarded without decoding
    assert len(images) == 2 and images[0].image.raw != images[1].image.raw
    assert all(
        decoded(i.image.raw).size == (width, height) and i.media_type == "image/png" for i in images
    )
    assert (images[0].width, images[0].height) == (width, height)
    [done] = [e for e in events if isinstance(e, Done)]
    assert done.usage.input_text_tokens == 5 and done.usage.input_image_tokens == 0
    assert done.usage.output_image_tokens == 2 * output_tokens(model_id, "low", width, height)


@pytest.mark.parametrize("model_id", MODELS)
async def test_every_listed_aspect_ratio_and_extreme_size_fits_the_upstream_size_rules(
    emu: Emulator, provider, model_id
) -> None:
    requests = [
        {"aspect_ratio": ratio}
        for ratio in endpoint(model_id).supported_parameters["aspect_ratio"].values
    ]
    if endpoint(model_id).size_rules.mode == "free":
        requests += [
            {"size": size}
            for size in ("3840x2160", "4096x4096", "256x256", "3840x1024", "1000x1000")
        ]
    for sizing in requests:
        job = make_job(model_id, fmt="jpeg", quality="low", **sizing)
        [image, _done] = await run(provider, job)
        assert decoded(image.image.raw).size == (job.size.width, job.size.height), sizing


async def test_quality_background_compression_and_moderation_become_upstream_fields(
    emu: Emulator, provider
) -> None:
    job = make_job(
        "openai/gpt-image-1.5",
        aspect_ratio="3:2",
        fmt="webp",
        quality="high",
        background="transparent",
        output_compression=60,
        options={"moderation": "low"},
    )
    [image, _done] = await run(provider, job)
    assert emu.requests[-1].json() == {
        "prompt": PROMPT,
        "n": 1,
        "model": "gpt-image-1.5",
        "size": "1536x1024",
        "output_format": "webp",
        "output_compression": 60,
        "quality": "high",
        "background": "transparent",
        "moderation": "low",
    }
    picture = decoded(image.image.raw)
    assert picture.format == "WEBP" and image.media_type == "image/webp"
    # The upstream itself made the background transparent.
    assert picture.convert("RGBA").getpixel((0, 0))[3] == 0


async def test_compression_is_only_sent_with_a_lossy_format(emu: Emulator, provider) -> None:
    await run(provider, make_job(fmt="png", output_compression=40))
    assert "output_compression" not in emu.requests[-1].json()
    [image, _done] = await run(provider, make_job(fmt="jpeg", output_compression=40))
    assert emu.requests[-1].json()["output_compression"] == 40
    assert image.media_type == "image/jpeg" and decoded(image.image.raw).format == "JPEG"


async def test_references_go_to_edits_as_multipart_image_files(emu: Emulator, provider) -> None:
    gif = reference((200, 100), "gif")
    job = make_job(
        "openai/gpt-image-1-mini", aspect_ratio="1:1", n=2, references=(reference(), gif)
    )
    events = await run(provider, job)
    assert emu.requests[-1].path == "/v1/images/edits"
    fields, files = sent_form(emu)
    assert fields == {
        "prompt": [PROMPT],
        "n": ["2"],
        "model": ["gpt-image-1-mini"],
        "size": ["1024x1024"],
        "output_format": ["png"],
    }
    # The GIF was converted to PNG: edits take png, jpeg and webp files only.
    assert [(name, content_type) for name, _, content_type, _ in files] == [
        ("image[]", "image/png"),
        ("image[]", "image/png"),
    ]
    assert files[0][3] == job.references[0].data  # accepted formats travel untouched
    assert decoded(files[1][3]).size == (200, 100)
    assert len([e for e in events if isinstance(e, Image)]) == 2
    assert events[-1].usage.input_image_tokens == (65 + 129) * 2


# --- streaming ---


async def test_streaming_maps_previews_and_the_completed_image_with_its_usage(
    emu: Emulator, provider
) -> None:
    events = await run(provider, make_job("openai/gpt-image-1.5", stream=True, quality="low"))
    body = emu.requests[-1].json()
    assert body["stream"] is True and body["partial_images"] == 2
    assert [type(e) for e in events] == [Partial, Partial, Image, Done]
    assert [e.index for e in events[:2]] == [0, 0]
    assert decoded(events[0].image.raw).size == (1024, 1024)
    assert (
        events[3].usage.output_image_tokens
        == output_tokens("openai/gpt-image-1.5", "low", 1024, 1024)
        + 2 * emulated.PARTIAL_IMAGE_TOKENS
    )


async def test_streaming_edits_use_the_image_edit_events(emu: Emulator, provider) -> None:
    events = await run(provider, make_job(stream=True, references=(reference(),)))
    fields, _files = sent_form(emu)
    assert fields["stream"] == ["true"] and fields["partial_images"] == ["2"]
    assert [type(e) for e in events] == [Partial, Partial, Image, Done]


async def test_streaming_n_images_runs_one_stream_per_image(emu: Emulator, provider) -> None:
    events = await run(provider, make_job(stream=True, n=3, quality="low", fmt="jpeg"))
    assert [r.json()["n"] for r in emu.requests] == [1, 1, 1]
    assert sorted(e.index for e in events if isinstance(e, Partial)) == [0, 0, 1, 1, 2, 2]
    assert len([e for e in events if isinstance(e, Image)]) == 3
    usage = events[-1].usage
    assert usage.requests == 3 and usage.input_text_tokens == 15
    assert usage.output_image_tokens == 3 * (
        output_tokens("openai/gpt-image-2", "low", 1024, 1024) + 2 * emulated.PARTIAL_IMAGE_TOKENS
    )


async def test_text_the_model_writes_is_counted_apart_from_its_image_tokens(
    emu: Emulator, provider
) -> None:
    emu.state["output_text_tokens"] = 40
    image_tokens = output_tokens("openai/gpt-image-2", "low", 1024, 1024)
    buffered = await run(provider, make_job(n=2, quality="low"))
    assert buffered[-1].usage.output_text_tokens == 80
    assert buffered[-1].usage.output_image_tokens == 2 * image_tokens
    streamed = await run(provider, make_job(stream=True, quality="low"))
    assert streamed[-1].usage.output_text_tokens == 40
    previews = 2 * emulated.PARTIAL_IMAGE_TOKENS
    assert streamed[-1].usage.output_image_tokens == image_tokens + previews


async def test_gpt_image_2_makes_transparent_backgrounds_itself(emu: Emulator, provider) -> None:
    [image, _done] = await run(provider, make_job(fmt="webp", background="transparent"))
    assert emu.requests[-1].json()["background"] == "transparent"
    assert decoded(image.image.raw).convert("RGBA").getpixel((0, 0))[3] == 0


# --- errors ---


@pytest.mark.parametrize(
    ("fault", "error_class", "status", "metadata"),
    [
        ("moderation", errors.ContentRefused, 400, {"error_type": "content_policy_violation"}),
        ("quota", errors.UpstreamError, 502, {"provider_out_of_credit": True}),
        ("rate_limit", errors.UpstreamRateLimited, 429, {}),
        ("server_error", errors.UpstreamError, 502, {"upstream_status": 500}),
        ("overloaded", errors.UpstreamOverloaded, 529, {}),
        ("timeout_status", errors.UpstreamTimeout, 524, {}),
        ("bad_key", errors.UpstreamError, 502, {"provider_key_rejected": True}),
        ("drop", errors.UpstreamError, 502, {}),
        ("malformed", errors.UpstreamError, 502, {}),
    ],
)
async def test_each_upstream_fault_maps_to_its_gateway_error(
    emu: Emulator, provider, fault, error_class, status, metadata
) -> None:
    emu.fault(fault)
    with pytest.raises(errors.ImagegateError) as caught:
        await run(provider, make_job())
    assert type(caught.value) is error_class and caught.value.status == status
    assert metadata.items() <= caught.value.metadata.items()


async def test_rate_limits_keep_retry_after_also_when_sent_in_milliseconds(
    emu: Emulator, provider
) -> None:
    emu.fault("rate_limit")
    with pytest.raises(errors.UpstreamRateLimited) as caught:
        await run(provider, make_job())
    assert caught.value.headers == {"Retry-After": "2"}
    emu.fault("rate_limit_ms")  # only a lower-case retry-after-ms: 1500
    with pytest.raises(errors.UpstreamRateLimited) as caught:
        await run(provider, make_job())
    assert caught.value.headers == {"Retry-After": "2"}


async def test_a_rejected_key_is_502_and_never_shows_the_key(emu: Emulator, http: HttpPool) -> None:
    wrong = OpenAIProvider.configure(
        {"api_key": "sk-proj-secret-9876", "base_url": emu.url + "/v1"}, http
    )
    with pytest.raises(errors.UpstreamError) as caught:
        await run(wrong, make_job())
    assert caught.value.status == 502 and caught.value.metadata["provider_key_rejected"] is True
    assert "9876" not in caught.value.message and "9876" not in str(caught.value.metadata)


async def test_an_upstream_validation_error_is_a_non_retryable_400_naming_openai(
    emu: Emulator, provider
) -> None:
    job = make_job("openai/gpt-image-1.5", background="transparent", fmt="jpeg")
    with pytest.raises(errors.UpstreamError) as caught:
        await run(provider, job)
    assert caught.value.status == 400 and not caught.value.retryable
    assert caught.value.message.startswith("OpenAI: Transparent background requires")


async def test_a_slow_upstream_ends_at_the_deadline_as_524(emulator, http: HttpPool) -> None:
    emu = emulator("openai", slow_ms=800)
    slow = OpenAIProvider.configure(
        {"api_key": emulated.API_KEY, "base_url": emu.url + "/v1"}, http
    )
    emu.fault("slow")
    started = time.monotonic()
    with pytest.raises(errors.UpstreamTimeout):
        await run(slow, make_job(timeout=0.2))
    assert time.monotonic() - started < 0.6


@pytest.mark.parametrize(
    ("fault", "error_class", "status"),
    [
        ("moderation_stream", errors.ContentRefused, 400),
        ("stream_error", errors.UpstreamError, 502),
        ("stream_cut", errors.UpstreamError, 502),
    ],
)
async def test_a_failure_after_the_first_preview_is_raised_after_it(
    emu: Emulator, provider, fault, error_class, status
) -> None:
    emu.fault(fault)
    seen = []
    with pytest.raises(errors.ImagegateError) as caught:
        async for event in provider.run(make_job(stream=True)):
            seen.append(event)
    assert [type(e) for e in seen] == [Partial]
    assert type(caught.value) is error_class and caught.value.status == status


# --- Azure ---


async def test_azure_calls_the_mapped_deployment_with_api_key_and_api_version(
    emu: Emulator, http: HttpPool
) -> None:
    emu.state["deployments"] = {"img2-prod": "gpt-image-2"}
    provider = azure(emu, http, deployments="gpt-image-2=img2-prod, gpt-image-1.5=img15")
    [image, done] = await run(provider, make_job(quality="medium"))
    recorded = emu.requests[-1]
    assert (
        recorded.path
        == "/openai/deployments/img2-prod/images/generations?api-version=2025-04-01-preview"
    )
    assert (
        recorded.headers["api-key"] == emulated.API_KEY and "Authorization" not in recorded.headers
    )
    assert "model" not in recorded.json()  # the deployment names the model
    assert decoded(image.image.raw).size == (1024, 1024)
    assert done.usage.output_image_tokens == output_tokens(
        "openai/gpt-image-2", "medium", 1024, 1024
    )


async def test_azure_edits_and_streams_through_a_deployment_named_like_the_model(
    emu: Emulator, http: HttpPool
) -> None:
    provider = azure(emu, http, api_version="preview", deployments={"gpt-image-2": "elsewhere"})
    events = await run(
        provider, make_job("openai/gpt-image-1-mini", stream=True, references=(reference(),))
    )
    assert (
        emu.requests[-1].path
        == "/openai/deployments/gpt-image-1-mini/images/edits?api-version=preview"
    )
    fields, files = sent_form(emu)
    assert "model" not in fields and [f[0] for f in files] == ["image[]"]
    assert [type(e) for e in events] == [Partial, Partial, Image, Done]


async def test_azure_content_filter_is_a_content_refusal(emu: Emulator, http: HttpPool) -> None:
    emu.fault("content_filter")
    with pytest.raises(errors.ContentRefused) as caught:
        await run(azure(emu, http), make_job())
    assert caught.value.metadata["provider_name"] == "Azure"


async def test_azure_unknown_deployment_is_an_upstream_error_naming_azure(
    emu: Emulator, http: HttpPool
) -> None:
    with pytest.raises(errors.UpstreamError) as caught:
        await run(azure(emu, http, deployments={"gpt-image-2": "missing"}), make_job())
    assert caught.value.status == 502 and caught.value.metadata == {
        "provider_name": "Azure",
        "upstream_status": 404,
    }


# --- configuration ---


def test_unconfigured_providers_say_which_variable_to_set() -> None:
    missing = load_providers(Settings(), HttpPool(), environ={}).missing
    assert missing["openai"] == "set OPENAI_API_KEY"
    assert missing["azure"] == "set AZURE_OPENAI_API_KEY"
    partial = load_providers(Settings(), HttpPool(), environ={"AZURE_OPENAI_API_KEY": "k"}).missing
    assert partial["azure"] == "set AZURE_OPENAI_ENDPOINT"
    malformed = load_providers(
        Settings(),
        HttpPool(),
        environ={
            "AZURE_OPENAI_API_KEY": "k",
            "AZURE_OPENAI_ENDPOINT": "https://x",
            "AZURE_OPENAI_DEPLOYMENTS": "gpt-image-2",
        },
    )
    assert malformed.missing["azure"].startswith(
        "AZURE_OPENAI_DEPLOYMENTS: expected model=deployment pairs"
    )


async def test_environment_variables_configure_both_providers(
    emu: Emulator, http: HttpPool
) -> None:
    settings = Settings(providers={"azure": {"deployments": {"gpt-image-2": "from-yaml"}}})
    configured = load_providers(
        settings,
        http,
        environ={
            "OPENAI_API_KEY": emulated.API_KEY,
            "OPENAI_BASE_URL": emu.url + "/v1",
            "OPENAI_ORG_ID": "org-42",
            "AZURE_OPENAI_API_KEY": emulated.API_KEY,
            "AZURE_OPENAI_ENDPOINT": emu.url + "/",
        },
    ).configured
    await run(configured["openai"], make_job())
    assert emu.requests[-1].headers["OpenAI-Organization"] == "org-42"
    emu.state["deployments"] = {"from-yaml": "gpt-image-2"}
    await run(configured["azure"], make_job())
    assert emu.requests[-1].path.startswith("/openai/deployments/from-yaml/images/generations?")


# --- the emulator is as strict as the real API, and speaks its wire format ---


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (
            "/v1/images/generations",
            {"model": "gpt-image-2", "prompt": "x", "response_format": "b64_json"},
            400,
            "unknown_parameter",
        ),
        (
            "/v1/images/generations",
            {"model": "gpt-image-2", "prompt": "x", "n": "2"},
            400,
            "invalid_type",
        ),
        (
            "/v1/images/generations",
            {"model": "gpt-image-2", "prompt": "x", "n": 11},
            400,
            "integer_above_max_value",
        ),
        (
            "/v1/images/generations",
            {"model": "gpt-image-1.5", "prompt": "x", "size": "2048x2048"},
            400,
            "invalid_value",
        ),
        (
            "/v1/images/generations",
            {"model": "gpt-image-2", "prompt": "x", "size": "1000x1000"},
            400,
            "invalid_value",
        ),
        (
            "/v1/images/generations",
            {"model": "gpt-image-2", "prompt": "x", "size": "3840x3840"},
            400,
            "invalid_value",
        ),
        (
            "/v1/images/generations",
            {
                "model": "gpt-image-2",
                "prompt": "x",
                "background": "transparent",
                "output_format": "jpeg",
            },
            400,
            "invalid_value",
        ),
        (
            "/v1/images/generations",
            {"model": "gpt-image-2", "prompt": "x", "output_compression": 50},
            400,
            "invalid_value",
        ),
        ("/v1/images/generations", {"prompt": "x"}, 400, "missing_required_parameter"),
        ("/v1/images/generations", {"model": "gpt-image-1", "prompt": "x"}, 404, "model_not_found"),
        (
            "/v1/images/edits",
            {"model": "gpt-image-2", "prompt": "x"},
            400,
            "missing_required_parameter",
        ),
        (
            "/openai/deployments/gpt-image-2/images/generations",
            {"prompt": "x"},
            400,
            "MissingApiVersionParameter",
        ),
    ],
)
def test_the_emulator_rejects_what_the_real_api_rejects(
    emu: Emulator, path, body, status, code
) -> None:
    headers = {"Authorization": f"Bearer {emulated.API_KEY}", "api-key": emulated.API_KEY}
    with httpx.Client(base_url=emu.url, headers=headers, verify=False) as client:
        response = client.post(path, json=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_the_official_openai_sdk_reads_the_emulator(emu: Emulator) -> None:
    client = openai_sdk.OpenAI(base_url=emu.url + "/v1", api_key=emulated.API_KEY, max_retries=0)
    result = client.images.generate(
        model="gpt-image-2", prompt="x", size="1536x864", output_format="jpeg", n=2
    )
    assert result.size == "1536x864" and len(result.data) == 2 and result.usage.output_tokens > 0
    events = list(
        client.images.generate(model="gpt-image-1.5", prompt="x", stream=True, partial_images=1)
    )
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    png = synth(64, 64, "png")
    edited = client.images.edit(
        model="gpt-image-1-mini", prompt="x", image=[("a.png", png, "image/png")] * 2
    )
    assert edited.usage.input_tokens_details.image_tokens == 2 * (65 + 129)
    on_azure = openai_sdk.AzureOpenAI(
        azure_endpoint=emu.url,
        api_key=emulated.API_KEY,
        api_version="2025-04-01-preview",
        max_retries=0,
    )
    assert on_azure.images.generate(model="gpt-image-2", prompt="x").data[0].b64_json


# --- end to end, through a real imagegate server ---


def sse_events(raw: bytes) -> list[dict]:
    return [orjson.loads(block[6:]) for block in raw.split(b"\n\n") if block.startswith(b"data: {")]


def token_cost(
    model_id: str, text: int, image_in: int, image_out: int, text_out: int = 0
) -> Decimal:
    prices = {line.billable: line.cost_usd for line in endpoint(model_id).pricing}
    return (
        prices["input_text"] * text
        + prices["input_image"] * image_in
        + prices["output_image"] * image_out
        + prices.get("output_text", Decimal(0)) * text_out
    )


def test_gateway_generates_with_openai_and_bills_the_reported_tokens(
    openai_server: LiveServer, emu: Emulator
) -> None:
    body = {
        "model": "openai/gpt-image-2",
        "prompt": PROMPT,
        "aspect_ratio": "16:9",
        "quality": "low",
        "output_format": "webp",
        "n": 2,
        "provider": {"options": {"openai": {"moderation": "low"}}},
    }
    with openai_server.client() as client:
        response = client.post("/images", json=body, headers=openai_server.auth())
    assert response.status_code == 200, response.text
    assert response.headers["x-provider-name"] == "OpenAI"
    assert response.headers["x-imagegate-size"] == "1360x768"
    sent = emu.requests[-1].json()
    assert (
        sent["size"] == "1360x768"
        and sent["output_format"] == "webp"
        and sent["moderation"] == "low"
    )
    payload = response.json()
    assert [decoded(base64.b64decode(d["b64_json"])).format for d in payload["data"]] == [
        "WEBP",
        "WEBP",
    ]
    out = 2 * output_tokens("openai/gpt-image-2", "low", 1360, 768)
    assert payload["usage"]["prompt_tokens"] == 5 and payload["usage"]["completion_tokens"] == out
    assert payload["usage"]["cost"] == pytest.approx(
        float(token_cost("openai/gpt-image-2", 5, 0, out))
    )


def test_gateway_streams_openai_previews_then_the_image_with_its_cost(
    openai_server: LiveServer, emu: Emulator
) -> None:
    body = {
        "model": "openai/gpt-image-1.5",
        "prompt": PROMPT,
        "stream": True,
        "aspect_ratio": "3:2",
        "background": "transparent",
    }
    with openai_server.client() as client:
        response = client.post(
            "/images", json=body, headers={**openai_server.auth(), "Accept": "text/event-stream"}
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    assert [e["type"] for e in events] == ["image_generation.partial_image"] * 2 + [
        "image_generation.completed"
    ]
    assert [e["partial_image_index"] for e in events[:2]] == [0, 1]
    final = decoded(base64.b64decode(events[-1]["b64_json"]))
    assert final.size == (1536, 1024) and final.mode == "RGBA"
    out = (
        output_tokens("openai/gpt-image-1.5", "medium", 1536, 1024)
        + 2 * emulated.PARTIAL_IMAGE_TOKENS
    )
    assert events[-1]["usage"]["cost"] == pytest.approx(
        float(token_cost("openai/gpt-image-1.5", 5, 0, out))
    )


def test_gateway_falls_back_from_openai_to_azure_but_not_around_a_refusal(
    make_server, emu: Emulator
) -> None:
    server: LiveServer = make_server(
        providers={
            "openai": {"api_key": emulated.API_KEY, "base_url": emu.url + "/v1"},
            "azure": {"api_key": emulated.API_KEY, "endpoint": emu.url},
        }
    )
    body = {
        "model": "openai/gpt-image-1-mini",
        "prompt": PROMPT,
        "quality": "low",
        "provider": {"order": ["openai", "azure"]},
    }
    emu.fault("server_error")
    with server.client() as client:
        response = client.post("/images", json=body, headers=server.auth())
    assert response.status_code == 200 and response.headers["x-provider-name"] == "Azure"
    assert [r.path.split("?")[0] for r in emu.requests] == [
        "/v1/images/generations",
        "/openai/deployments/gpt-image-1-mini/images/generations",
    ]
    out = output_tokens("openai/gpt-image-1-mini", "low", 1024, 1024)
    assert response.json()["usage"]["cost"] == pytest.approx(
        float(token_cost("openai/gpt-image-1-mini", 5, 0, out))
    )

    emu.clear()
    emu.fault("moderation")
    with server.client() as client:
        refused = client.post("/images", json=body, headers=server.auth())
    assert refused.status_code == 400
    assert refused.json()["error"]["metadata"]["error_type"] == "content_policy_violation"
    assert len(emu.requests) == 1  # a refusal is final: no other provider is asked


def settled_account(server: LiveServer, response: httpx.Response) -> AccountRecord:
    """The account once the answer's generation is on record (settled in the same transaction)."""
    wait_for_record(server, response.headers["x-generation-id"])
    return server.store_call(lambda s: s.get_account())


@pytest.mark.parametrize("stream", [False, True])
def test_a_metered_account_is_charged_the_whole_cost_of_a_4k_high_quality_image(
    openai_server: LiveServer, emu: Emulator, stream: bool
) -> None:
    openai_server.store_call(lambda s: s.add_credits(Decimal("5")))
    body = {"model": "openai/gpt-image-2", "prompt": PROMPT, "size": "3840x2160",
            "quality": "high", "output_format": "jpeg", "stream": stream}
    with openai_server.client() as client:
        response = client.post("/images", json=body, headers=openai_server.auth())
    assert response.status_code == 200, response.text
    usage = sse_events(response.content)[-1]["usage"] if stream else response.json()["usage"]
    out = output_tokens("openai/gpt-image-2", "high", 3840, 2160)
    out += 2 * emulated.PARTIAL_IMAGE_TOKENS if stream else 0
    cost = token_cost("openai/gpt-image-2", 5, 0, out)
    assert usage["cost"] == pytest.approx(float(cost))
    # What was held beforehand covered it: the charge is the cost, not the reservation.
    account = settled_account(openai_server, response)
    assert account.total_usage_usd == cost and account.balance_usd == Decimal("5") - cost


def test_quality_auto_holds_as_much_as_high_quality(openai_server: LiveServer, emu: Emulator) -> None:
    # Less than a 3840x2160 high-quality image can cost; far more than a low-quality one.
    openai_server.store_call(lambda s: s.add_credits(Decimal("0.40")))
    body = {
        "model": "openai/gpt-image-2",
        "prompt": PROMPT,
        "size": "3840x2160",
        "output_format": "jpeg",
    }
    with openai_server.client() as client:
        statuses = [
            client.post("/images", json={**body, **quality}, headers=openai_server.auth()).status_code
            for quality in ({"quality": "high"}, {"quality": "auto"}, {}, {"quality": "low"})
        ]
    assert statuses == [402, 402, 402, 200]
    assert len(emu.requests) == 1


def test_gateway_bills_text_the_model_writes_at_the_text_rate(openai_server: LiveServer, emu: Emulator) -> None:
    emu.state["output_text_tokens"] = 40
    body = {
        "model": "openai/gpt-image-2",
        "prompt": PROMPT,
        "quality": "low",
        "output_format": "jpeg",
    }
    with openai_server.client() as client:
        usage = client.post("/images", json=body, headers=openai_server.auth()).json()["usage"]
    image_tokens = output_tokens("openai/gpt-image-2", "low", 1024, 1024)
    assert usage["completion_tokens"] == image_tokens + 40
    assert usage["completion_tokens_details"]["image_tokens"] == image_tokens
    cost = token_cost("openai/gpt-image-2", 5, 0, image_tokens, text_out=40)
    assert usage["cost"] == pytest.approx(float(cost))


def test_gateway_asks_openai_for_transparent_gpt_image_2_and_never_azure(
    make_server, emu: Emulator
) -> None:
    server: LiveServer = make_server(
        providers={
            "openai": {"api_key": emulated.API_KEY, "base_url": emu.url + "/v1"},
            "azure": {"api_key": emulated.API_KEY, "endpoint": emu.url},
        }
    )
    body = {"model": "openai/gpt-image-2", "prompt": PROMPT, "quality": "low",
            "background": "transparent", "provider": {"order": ["azure", "openai"]}}
    with server.client() as client:
        response = client.post("/images", json=body, headers=server.auth())
    assert response.status_code == 200, response.text
    assert response.headers["x-provider-name"] == "OpenAI"
    [sent] = emu.requests
    assert sent.path == "/v1/images/generations" and sent.json()["background"] == "transparent"
    final = decoded(base64.b64decode(response.json()["data"][0]["b64_json"]))
    assert final.mode == "RGBA" and final.getpixel((0, 0))[3] == 0


def test_openai_models_are_not_listed_without_a_key(server: LiveServer) -> None:
    with server.client() as client:
        listed = [m["id"] for m in client.get("/images/models").json()["data"]]
    assert listed and not any(model_id.startswith("openai/") for model_id in listed)


def test_catalog_prices_are_the_published_token_rates() -> None:
    assert {line.billable: line.cost_usd for line in endpoint("openai/gpt-image-2").pricing} == {
        "input_image": Decimal("0.000008"),
        "input_text": Decimal("0.000005"),
        "output_image": Decimal("0.00003"),
        "output_text": Decimal("0.00001"),
    }
    for model_id in MODELS:
        openai_line, azure_line = (endpoint(model_id, p) for p in ("openai", "azure"))
        assert openai_line.pricing == azure_line.pricing
        assert openai_line.settings == azure_line.settings
        differing = {
            name for name in openai_line.supported_parameters
            if openai_line.supported_parameters[name] != azure_line.supported_parameters.get(name)
        }
        # gpt-image-2's transparent backgrounds are documented for OpenAI only.
        assert differing == ({"background"} if model_id == "openai/gpt-image-2" else set())
