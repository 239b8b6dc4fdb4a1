"""The Google Gemini providers (AI Studio and Vertex) against their emulator, and through a
real imagegate server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import math
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import google.auth
import google.auth.exceptions
import httpx
import pytest
from PIL import Image as PILImage

from imagegate import errors
from imagegate.capabilities import plan_output
from imagegate.catalog import Endpoint, load_catalog
from imagegate.providers import NotConfigured, load_providers
from imagegate.providers.base import (
    Done,
    Image,
    ProviderJob,
    ReferenceImage,
    TextChunk,
    Usage,
)
from imagegate.providers.google import (
    GoogleAIStudioProvider,
    GoogleVertexProvider,
    build_request,
    usage_from,
    vertex_base_url,
)
from imagegate.providers.http import HttpPool
from imagegate.settings import Settings
from imagegate.store import Store
from imagegate.sizing import AppliedSize, SizeRequest, resolve_size
from tests.conftest import LiveServer
from tests.emulators import google as emulated
from tests.emulators.base import Emulator
from tests.emulators.images import synth

CATALOG = load_catalog()
FLASH, PRO, LITE = (
    "google/gemini-3.1-flash-image",
    "google/gemini-3-pro-image",
    "google/gemini-3.1-flash-lite-image",
)
AI_STUDIO, VERTEX = "google-ai-studio", "google-vertex/global"
ENDPOINTS = [
    (m.id, e.provider_slug)
    for m in CATALOG.models()
    if m.id.startswith("google/")
    for e in m.endpoints
]
PROMPT = "a lighthouse on a cliff at dusk"
PROJECT = "test-project"


def endpoint(model_id: str, slug: str) -> Endpoint:
    return next(e for e in CATALOG.get(model_id).endpoints if e.provider_slug == slug)


def make_job(
    model_id: str = FLASH,
    slug: str = AI_STUDIO,
    *,
    resolution: str | None = None,
    aspect_ratio: str | None = None,
    output_format: str | None = None,
    timeout: float = 10,
    **kw,
) -> ProviderJob:
    target = endpoint(model_id, slug)
    return ProviderJob(
        upstream_model=target.upstream_model,
        prompt=PROMPT,
        n=kw.pop("n", 1),
        size=resolve_size(
            SizeRequest(resolution=resolution, aspect_ratio=aspect_ratio), target.size_rules
        ),
        output_format=plan_output(target, output_format, None, None).native_format,
        deadline=time.monotonic() + timeout,
        settings=target.settings,
        **kw,
    )


def reference(fmt: str = "png", size: tuple[int, int] = (96, 64)) -> ReferenceImage:
    out = io.BytesIO()
    PILImage.new("RGB", size, (200, 40, 40)).save(out, fmt.upper())
    return ReferenceImage(out.getvalue(), f"image/{fmt}", *size)


def decoded(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image


async def run(provider: GoogleAIStudioProvider | GoogleVertexProvider, job: ProviderJob) -> list:
    return [event async for event in provider.run(job)]


def generate_calls(emu: Emulator) -> list:
    return [r for r in emu.requests if r.path.endswith(":generateContent")]


def token_calls(emu: Emulator) -> list:
    return [r for r in emu.requests if r.path == "/token"]


def header(request, name: str) -> str:
    return next(v for k, v in request.headers.items() if k.lower() == name)


def write_service_account(emu: Emulator, tmp_path: Path) -> str:
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(emulated.service_account(emu)))
    return str(path)


@pytest.fixture
def emu(emulator: Callable[..., Emulator]) -> Emulator:
    return emulator("google")


@pytest.fixture
def studio(emu: Emulator, http: HttpPool) -> GoogleAIStudioProvider:
    return GoogleAIStudioProvider.configure(
        {"api_key": "test-key", "base_url": f"{emu.url}/v1beta"}, http
    )


@pytest.fixture
def vertex(emu: Emulator, http: HttpPool, tmp_path: Path) -> GoogleVertexProvider:
    config = {
        "project": PROJECT,
        "credentials_file": write_service_account(emu, tmp_path),
        "base_url": f"{emu.url}/v1",
    }
    return GoogleVertexProvider.configure(config, http)


def provider_for(slug: str, studio: GoogleAIStudioProvider, vertex: GoogleVertexProvider):
    return studio if slug == AI_STUDIO else vertex


# --- the catalog ---


def test_catalog_lists_each_model_on_both_endpoints_in_openrouters_order() -> None:
    order = {
        m.id: [e.provider_slug for e in m.endpoints]
        for m in CATALOG.models()
        if m.id.startswith("google/")
    }
    assert order == {
        FLASH: [AI_STUDIO, VERTEX],
        PRO: [VERTEX, AI_STUDIO],
        LITE: [VERTEX, AI_STUDIO],
    }
    for model_id, slug in ENDPOINTS:
        target = endpoint(model_id, slug)
        assert target.supported_parameters["n"].max == 4 and target.settings["images_per_call"] == 1
        assert target.supported_parameters["input_references"].max == 14
        assert "seed" not in target.supported_parameters and not target.supports_streaming
    assert [line.to_wire() for line in endpoint(FLASH, VERTEX).pricing] == [
        {"billable": "input_text", "unit": "token", "cost_usd": 0.0000005},
        {"billable": "input_image", "unit": "token", "cost_usd": 0.0000005},
        {"billable": "output_text", "unit": "token", "cost_usd": 0.000003},
        {"billable": "output_image", "unit": "token", "cost_usd": 0.00006},
    ]
    assert endpoint(PRO, VERTEX).supported_parameters["resolution"].values == ("1K", "2K")
    assert endpoint(PRO, AI_STUDIO).supported_parameters["resolution"].values == ("1K", "2K", "4K")
    assert endpoint(LITE, AI_STUDIO).allowed_passthrough_parameters == ()
    assert endpoint(FLASH, AI_STUDIO).allowed_passthrough_parameters == ("cachedContent",)


@pytest.mark.parametrize(("model_id", "slug"), ENDPOINTS)
def test_every_listed_tier_and_ratio_has_exactly_one_table_entry(model_id: str, slug: str) -> None:
    target = endpoint(model_id, slug)
    listed = {
        (tier, ratio)
        for tier in target.supported_parameters["resolution"].values
        for ratio in target.supported_parameters["aspect_ratio"].values
    }
    labels = [(e.resolution, e.aspect_ratio) for e in target.size_rules.table]
    assert sorted(labels) == sorted(listed)


# --- request translation ---


async def test_request_is_generate_content_with_prompt_references_and_image_config(
    studio: GoogleAIStudioProvider, emu: Emulator
) -> None:
    png, jpeg = reference("png"), reference("jpeg")
    events = await run(
        studio, make_job(resolution="2K", aspect_ratio="16:9", references=(png, jpeg))
    )

    [image, done] = events
    assert isinstance(image, Image) and image.media_type == "image/png"
    assert decoded(image.image.raw).size == (2752, 1536)
    assert isinstance(done, Done)
    [request] = emu.requests
    assert request.path == "/v1beta/models/gemini-3.1-flash-image:generateContent"
    assert header(request, "x-goog-api-key") == "test-key"
    assert "key=" not in request.path  # never in a URL that may be logged
    assert request.json() == {
        "contents": [{"role": "user", "parts": [
            {"text": PROMPT},
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png.data).decode()}},
            {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(jpeg.data).decode()}},
        ]}],
        "generationConfig": {
            "responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
        },
    }  # fmt: skip


async def test_gif_reference_is_sent_as_png(studio: GoogleAIStudioProvider, emu: Emulator) -> None:
    await run(studio, make_job(references=(reference("gif", (40, 30)),)))

    inline = emu.requests[-1].json()["contents"][0]["parts"][1]["inlineData"]
    assert inline["mimeType"] == "image/png"
    sent = decoded(base64.b64decode(inline["data"]))
    assert (sent.format, sent.size) == ("PNG", (40, 30))


async def test_cached_content_passthrough_is_a_top_level_field(
    studio: GoogleAIStudioProvider, emu: Emulator
) -> None:
    await run(studio, make_job(options={"cachedContent": "cachedContents/style-guide"}))
    assert emu.requests[-1].json()["cachedContent"] == "cachedContents/style-guide"


async def test_cached_content_that_is_not_a_string_is_a_400_before_any_call(
    studio: GoogleAIStudioProvider, emu: Emulator
) -> None:
    with pytest.raises(errors.InvalidRequest, match="cachedContent must be a str"):
        await run(studio, make_job(options={"cachedContent": 7}))
    assert emu.requests == []


@pytest.mark.parametrize(("model_id", "slug"), ENDPOINTS)
async def test_every_endpoint_produces_its_table_size_for_each_listed_tier_below_4k(
    studio: GoogleAIStudioProvider,
    vertex: GoogleVertexProvider,
    emu: Emulator,
    model_id: str,
    slug: str,
) -> None:
    target = endpoint(model_id, slug)
    ratios = target.supported_parameters["aspect_ratio"].values
    for i, tier in enumerate(
        t for t in target.supported_parameters["resolution"].values if t != "4K"
    ):
        ratio = ratios[(3 * i + 1) % len(ratios)]
        job = make_job(model_id, slug, resolution=tier, aspect_ratio=ratio)
        [image, _done] = await run(provider_for(slug, studio, vertex), job)

        picture = decoded(image.image.raw)
        assert picture.size == (job.size.width, job.size.height)
        assert (
            image.media_type
            == f"image/{target.native_formats[0]}"
            == f"image/{picture.format.lower()}"
        )
        image_config = generate_calls(emu)[-1].json()["generationConfig"]["imageConfig"]
        assert image_config["aspectRatio"] == ratio and image_config["imageSize"] == tier
        if slug == VERTEX:
            assert image_config["imageOutputOptions"] == {"mimeType": image.media_type}


@pytest.mark.parametrize("model_id", [FLASH, PRO])
async def test_4k_is_asked_for_by_its_label(model_id: str) -> None:
    job = make_job(model_id, AI_STUDIO, resolution="4K", aspect_ratio="21:9")
    assert (job.size.width, job.size.height) == (6336, 2688)
    body = await build_request(job)
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "21:9", "imageSize": "4K"}


async def test_thought_parts_are_reasoning_text_and_their_draft_images_are_dropped(
    studio: GoogleAIStudioProvider, emu: Emulator
) -> None:
    emu.fault("thoughts")
    events = await run(studio, make_job(aspect_ratio="3:2"))

    assert [type(e) for e in events] == [TextChunk, Image, Done]
    assert events[0] == TextChunk("Planning the composition.", "reasoning")
    assert decoded(events[1].image.raw).size == (1264, 848)


async def test_no_more_images_than_n_are_returned(
    studio: GoogleAIStudioProvider, emu: Emulator
) -> None:
    emu.fault("two_images")
    events = await run(studio, make_job())
    assert sum(isinstance(e, Image) for e in events) == 1


async def test_usage_reports_prompt_images_and_thinking_per_modality(
    vertex: GoogleVertexProvider, emu: Emulator
) -> None:
    events = await run(vertex, make_job(PRO, VERTEX, references=(reference(), reference("jpeg"))))

    assert events[-1] == Done(Usage(
        output_image_tokens=1120,
        output_text_tokens=emulated.THOUGHT_TOKENS,
        input_image_tokens=2 * emulated.MODELS["gemini-3-pro-image"].input_image_tokens,
        input_text_tokens=math.ceil(len(PROMPT) / 4),
    ))  # fmt: skip


def test_usage_bills_text_candidates_and_thoughts_as_output_text() -> None:
    usage = usage_from({
        "promptTokenCount": 1138,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 18},
                                {"modality": "IMAGE", "tokenCount": 1120}],
        "candidatesTokenCount": 1150,
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120},
                                    {"modality": "TEXT", "tokenCount": 30}],
        "thoughtsTokenCount": 235,
        "totalTokenCount": 2523,
    })  # fmt: skip
    assert usage == Usage(
        input_text_tokens=18,
        input_image_tokens=1120,
        output_image_tokens=1120,
        output_text_tokens=265,
    )


def test_usage_bills_every_prompt_token_even_those_the_details_leave_out() -> None:
    # cachedContent: promptTokenCount counts the cached tokens too.
    usage = usage_from({
        "promptTokenCount": 5012,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
        "cachedContentTokenCount": 5000,
        "candidatesTokenCount": 1120,
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}],
    })  # fmt: skip
    assert usage.input_text_tokens == 5012 and usage.output_text_tokens == 0


def test_usage_without_modality_details_counts_candidates_as_image_tokens() -> None:
    usage = usage_from(
        {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302}
    )
    assert usage == Usage(output_image_tokens=1290, input_text_tokens=12)


# --- refusals and errors ---


@pytest.mark.parametrize(
    ("fault", "error_type", "status", "words"),
    [
        ("image_safety", errors.ContentRefused, 400, "Prohibited Use policy"),
        ("prompt_blocked", errors.ContentRefused, 400, "PROHIBITED_CONTENT"),
        ("no_image", errors.UpstreamError, 502, "text only"),
        ("server_error", errors.UpstreamError, 502, "returned an error"),
        ("overloaded", errors.UpstreamOverloaded, 529, "overloaded"),
        ("timeout_status", errors.UpstreamTimeout, 524, "timed out"),
        ("drop", errors.UpstreamError, 502, "could not reach"),
        ("malformed", errors.UpstreamError, 502, "malformed"),
    ],
)
async def test_each_fault_maps_to_its_gateway_error(
    studio: GoogleAIStudioProvider,
    emu: Emulator,
    fault: str,
    error_type: type,
    status: int,
    words: str,
) -> None:
    emu.fault(fault)
    with pytest.raises(error_type, match=words) as caught:
        await run(studio, make_job())
    assert type(caught.value) is error_type and caught.value.status == status
    assert caught.value.metadata["provider_name"] == "Google AI Studio"
    if status == 400:
        assert caught.value.error_type == "content_policy_violation" and not caught.value.retryable


async def test_quota_429_turns_retry_info_into_retry_after(
    studio: GoogleAIStudioProvider, emu: Emulator
) -> None:
    emu.fault("quota")
    with pytest.raises(errors.UpstreamRateLimited) as caught:
        await run(studio, make_job())
    assert caught.value.status == 429 and caught.value.headers == {"Retry-After": "37"}


async def test_rate_limit_keeps_the_retry_after_header(
    studio: GoogleAIStudioProvider, emu: Emulator
) -> None:
    emu.fault("rate_limit")
    with pytest.raises(errors.UpstreamRateLimited) as caught:
        await run(studio, make_job())
    assert caught.value.headers == {"Retry-After": "2"}


@pytest.mark.parametrize(
    ("key", "fault", "upstream_status"), [("wrong-key", None, 400), ("test-key", "bad_key", 401)]
)
async def test_a_rejected_api_key_is_a_502_that_says_so(
    emu: Emulator, http: HttpPool, key: str, fault: str | None, upstream_status: int
) -> None:
    provider = GoogleAIStudioProvider.configure(
        {"api_key": key, "base_url": f"{emu.url}/v1beta"}, http
    )
    if fault:
        emu.fault(fault)
    with pytest.raises(errors.UpstreamError) as caught:
        await run(provider, make_job())
    assert caught.value.status == 502 and key not in caught.value.message
    assert caught.value.metadata == {
        "provider_name": "Google AI Studio", "upstream_status": upstream_status, "provider_key_rejected": True,
    }  # fmt: skip


async def test_a_size_the_model_does_not_have_is_a_non_retryable_400(
    studio: GoogleAIStudioProvider, emu: Emulator
) -> None:
    job = dataclasses.replace(make_job(PRO, AI_STUDIO), size=AppliedSize(512, 512, "512", "1:1"))
    with pytest.raises(errors.UpstreamError, match="Unsupported image size: 512") as caught:
        await run(studio, job)
    assert caught.value.status == 400 and not caught.value.retryable


async def test_slow_upstream_past_the_deadline_is_a_524(
    emulator: Callable[..., Emulator], http: HttpPool
) -> None:
    emu = emulator("google", slow_ms=800)
    provider = GoogleAIStudioProvider.configure(
        {"api_key": "test-key", "base_url": f"{emu.url}/v1beta"}, http
    )
    emu.fault("slow")
    started = time.monotonic()
    with pytest.raises(errors.UpstreamTimeout):
        await run(provider, make_job(timeout=0.2))
    assert time.monotonic() - started < 0.7


def test_emulator_rejects_what_the_real_api_would(emu: Emulator) -> None:
    url = f"{emu.url}/v1beta/models/gemini-3-pro-image:generateContent"
    gif = base64.b64encode(reference("gif").data).decode()
    cases = [
        ({"generationConfig": {"imageConfig": {"imageOutputOptions": {"mimeType": "image/jpeg"}}}},
         "Unknown name \"imageOutputOptions\" at 'generation_config.image_config'"),
        ({"generationConfig": {"candidateCount": "1"}}, "'generation_config.candidate_count' (TYPE_INT32)"),
        ({"generationConfig": {"imageConfig": {"aspectRatio": "1:8"}}}, "Unsupported aspect ratio: 1:8"),
        ({"generationConfig": {"imageConfig": {"imageSize": "1k"}}}, "Unsupported image size: 1k"),
        ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/gif", "data": gif}}]}]},
         "Unsupported MIME type: image/gif"),
        ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": gif}}]}]},
         "image/png declared, GIF sent"),
    ]  # fmt: skip
    for extra, message in cases:
        body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}], **extra}
        reply = httpx.post(url, json=body, headers={"x-goog-api-key": "test-key"})
        assert reply.status_code == 400, extra
        assert reply.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert message in reply.json()["error"]["message"]
    standalone = httpx.get(f"{emu.url}/_emulator/google/service-account").json()
    assert standalone["type"] == "service_account" and standalone["token_uri"] == f"{emu.url}/token"


# --- Vertex ---


async def test_vertex_sends_a_service_account_token_and_asks_for_the_output_format(
    vertex: GoogleVertexProvider, emu: Emulator
) -> None:
    [image, _done] = await run(
        vertex, make_job(PRO, VERTEX, aspect_ratio="4:5", output_format="jpeg")
    )

    assert image.media_type == "image/jpeg"
    picture = decoded(image.image.raw)
    assert (picture.format, picture.size) == ("JPEG", (928, 1152))
    [token, call] = emu.requests
    assert token.path == "/token"
    assert (
        call.path
        == f"/v1/projects/{PROJECT}/locations/global/publishers/google/models/gemini-3-pro-image:generateContent"
    )
    assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in token.body
    assert header(call, "authorization").startswith("Bearer ya29.emulated-")
    assert call.json()["generationConfig"]["imageConfig"] == {
        "aspectRatio": "4:5", "imageSize": "1K", "imageOutputOptions": {"mimeType": "image/jpeg"},
    }  # fmt: skip


async def test_vertex_fetches_one_token_for_concurrent_and_later_calls(
    vertex: GoogleVertexProvider, emu: Emulator
) -> None:
    await asyncio.gather(
        *(run(vertex, make_job(FLASH, VERTEX, resolution="512")) for _ in range(3))
    )
    await run(vertex, make_job(FLASH, VERTEX, resolution="512"))

    assert len(token_calls(emu)) == 1 and len(generate_calls(emu)) == 4
    assert len({header(r, "authorization") for r in generate_calls(emu)}) == 1


async def test_vertex_refreshes_a_token_about_to_expire(
    vertex: GoogleVertexProvider, emu: Emulator
) -> None:
    emu.state["token_ttl_s"] = 120  # within google-auth's 3 min 45 s refresh threshold
    await run(vertex, make_job(FLASH, VERTEX, resolution="512"))
    await run(vertex, make_job(FLASH, VERTEX, resolution="512"))

    assert len(token_calls(emu)) == 2
    first, second = (header(r, "authorization") for r in generate_calls(emu))
    assert first != second


async def test_vertex_refused_grant_is_a_rejected_key_502(
    vertex: GoogleVertexProvider, emu: Emulator
) -> None:
    emu.fault("token_denied")
    with pytest.raises(errors.UpstreamError, match="Invalid JWT Signature") as caught:
        await run(vertex, make_job(FLASH, VERTEX))
    assert caught.value.status == 502 and caught.value.metadata["provider_key_rejected"] is True
    assert generate_calls(emu) == []


async def test_vertex_errors_after_the_token_map_like_ai_studio(
    vertex: GoogleVertexProvider, emu: Emulator
) -> None:
    await run(
        vertex, make_job(FLASH, VERTEX, resolution="512")
    )  # the token first: faults hit any path
    emu.fault("quota")
    with pytest.raises(errors.UpstreamRateLimited) as caught:
        await run(vertex, make_job(FLASH, VERTEX))
    assert caught.value.headers == {"Retry-After": "37"}
    assert caught.value.metadata["provider_name"] == "Google Vertex"
    emu.fault("image_safety")
    with pytest.raises(errors.ContentRefused):
        await run(vertex, make_job(FLASH, VERTEX))


def test_vertex_location_picks_the_regional_host() -> None:
    assert vertex_base_url("global") == "https://aiplatform.googleapis.com/v1"
    assert vertex_base_url("europe-west4") == "https://europe-west4-aiplatform.googleapis.com/v1"
    provider = GoogleVertexProvider(HttpPool(), project="p", location="us-central1")
    assert provider._url("gemini-3-pro-image") == (
        "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1"
        "/publishers/google/models/gemini-3-pro-image:generateContent"
    )


async def test_vertex_uses_application_default_credentials_without_a_file(
    emu: Emulator, http: HttpPool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", write_service_account(emu, tmp_path))
    provider = GoogleVertexProvider.configure(
        {"project": PROJECT, "base_url": f"{emu.url}/v1"}, http
    )
    assert emu.requests == []  # nothing is looked up before the first request

    await run(provider, make_job(FLASH, VERTEX, resolution="512"))
    assert len(token_calls(emu)) == 1 and len(generate_calls(emu)) == 1


async def test_vertex_without_any_credentials_is_a_502_naming_what_to_set(
    emu: Emulator, http: HttpPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def none_found(**_kw):  # the real lookup probes the metadata server for seconds first
        raise google.auth.exceptions.DefaultCredentialsError(
            "Your default credentials were not found."
        )

    monkeypatch.setattr(google.auth, "default", none_found)
    provider = GoogleVertexProvider.configure(
        {"project": PROJECT, "base_url": f"{emu.url}/v1"}, http
    )
    with pytest.raises(errors.UpstreamError, match="set GOOGLE_APPLICATION_CREDENTIALS") as caught:
        await run(provider, make_job(FLASH, VERTEX))
    assert caught.value.status == 502 and emu.requests == []


# --- configuration ---


def test_ai_studio_needs_a_key_and_takes_either_variable() -> None:
    http = HttpPool()  # never used: nothing is sent
    with pytest.raises(NotConfigured, match="set GEMINI_API_KEY"):
        GoogleAIStudioProvider.configure({}, http)
    both = load_providers(
        Settings(), http, environ={"GEMINI_API_KEY": "gemini", "GOOGLE_API_KEY": "google"}
    )
    assert both.configured["google-ai-studio"]._api_key == "gemini"
    either = load_providers(Settings(), http, environ={"GOOGLE_API_KEY": "google"})
    assert either.configured["google-ai-studio"]._api_key == "google"
    assert "google-ai-studio" in load_providers(Settings(), http, environ={}).missing


def test_vertex_is_configured_by_a_project_and_a_readable_credentials_file(
    emu: Emulator, tmp_path: Path
) -> None:
    http = HttpPool()  # never used: nothing is sent
    with pytest.raises(NotConfigured, match="set GOOGLE_CLOUD_PROJECT"):
        GoogleVertexProvider.configure(
            {"credentials_file": write_service_account(emu, tmp_path)}, http
        )
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    keyless = tmp_path / "keyless.json"
    keyless.write_text(json.dumps({**emulated.service_account(emu), "private_key": "garbage"}))
    for path in (tmp_path / "missing.json", broken, keyless):
        with pytest.raises(NotConfigured, match="GOOGLE_APPLICATION_CREDENTIALS: "):
            GoogleVertexProvider.configure(
                {"project": PROJECT, "credentials_file": str(path)}, http
            )
    environ = {"GOOGLE_CLOUD_PROJECT": PROJECT, "GOOGLE_APPLICATION_CREDENTIALS": str(broken)}
    assert (
        "GOOGLE_APPLICATION_CREDENTIALS"
        in load_providers(Settings(), http, environ=environ).missing["google-vertex"]
    )
    environ["GOOGLE_APPLICATION_CREDENTIALS"] = write_service_account(emu, tmp_path)
    assert "google-vertex" in load_providers(Settings(), http, environ=environ).configured


# --- through a real imagegate server ---


@pytest.mark.parametrize("stream", [True, False])
def test_ai_studio_generation_end_to_end_is_buffered_and_bills_prompt_image_and_thinking(
    emu: Emulator, make_server: Callable[..., LiveServer], stream: bool
) -> None:
    server = make_server(
        providers={"google-ai-studio": {"api_key": "test-key", "base_url": f"{emu.url}/v1beta"}}
    )
    body = {
        "model": FLASH,
        "prompt": PROMPT,
        "resolution": "1K",
        "aspect_ratio": "16:9",
        "stream": stream,
    }
    with server.client() as client:
        response = client.post("/images", json=body, headers=server.auth())

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")  # Gemini does not stream
    assert response.headers["x-provider-name"] == "Google AI Studio"
    payload = response.json()
    [item] = payload["data"]
    assert item["media_type"] == "image/png"
    assert decoded(base64.b64decode(item["b64_json"])).size == (1376, 768)
    usage = payload["usage"]
    assert usage["completion_tokens_details"]["image_tokens"] == 1120
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (8, 1120 + 96)
    # 8 prompt tokens × $0.50/M + 1120 image tokens × $60/M + 96 thinking tokens × $3/M
    # = 0.000004 + 0.0672 + 0.000288
    assert Decimal(str(usage["cost"])) == Decimal("0.067492")


def test_vertex_generation_end_to_end_fans_out_n_and_bills_every_call(
    emu: Emulator, make_server: Callable[..., LiveServer], tmp_path: Path
) -> None:
    config = {
        "project": PROJECT,
        "credentials_file": write_service_account(emu, tmp_path),
        "base_url": f"{emu.url}/v1",
    }
    server = make_server(providers={"google-vertex": config})
    data_url = "data:image/png;base64," + base64.b64encode(synth(64, 64, "png")).decode()
    body = {
        "model": PRO,
        "prompt": PROMPT,
        "n": 2,
        "output_format": "jpeg",
        "aspect_ratio": "9:16",
        "input_references": [{"type": "image_url", "image_url": {"url": data_url}}],
    }
    with server.client() as client:
        response = client.post("/images", json=body, headers=server.auth())

    assert response.status_code == 200, response.text
    assert response.headers["x-provider-name"] == "Google Vertex"
    payload = response.json()
    assert len(payload["data"]) == 2
    for item in payload["data"]:
        picture = decoded(base64.b64decode(item["b64_json"]))
        assert (item["media_type"], picture.format, picture.size) == (
            "image/jpeg",
            "JPEG",
            (768, 1376),
        )
    assert len(token_calls(emu)) == 1 and len(generate_calls(emu)) == 2
    # Per call, at $2/M input, $12/M text output and $120/M image output: 8 prompt tokens
    # 0.000016, one reference (560 tokens) 0.00112, 96 thinking tokens 0.001152, the image
    # (1120 tokens) 0.1344: 0.136688; two calls 0.273376.
    assert Decimal(str(payload["usage"]["cost"])) == Decimal("0.273376")


def capped_key(server: LiveServer, limit_usd: Decimal) -> str:
    async def create() -> str:
        store = Store(server.database_url)
        try:
            return (await store.create_key("capped", limit_usd=limit_usd))[0]
        finally:
            await store.close()

    return asyncio.run(create())


@pytest.mark.parametrize(("model_id", "resolution"), [(FLASH, "4K"), (PRO, "4K"), (LITE, "1K")])
def test_a_key_that_cannot_cover_a_worst_case_generation_is_refused_before_google_is_called(
    emu: Emulator, make_server: Callable[..., LiveServer], model_id: str, resolution: str
) -> None:
    server = make_server(
        providers={"google-ai-studio": {"api_key": "test-key", "base_url": f"{emu.url}/v1beta"}}
    )
    references = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64}}
        for b64 in (base64.b64encode(synth(32, 32, "png", seed=i)).decode() for i in range(14))
    ]
    body = {
        "model": model_id,
        "prompt": "a lighthouse on a cliff at dusk, in the style of an engraving; " * 40,
        "n": 2,
        "resolution": resolution,
        "input_references": references,
    }
    emu.fault("long_thinking", times=2)  # each call thinks up to the model's output token limit
    with server.client() as client:
        answered = client.post("/images", json=body, headers=server.auth())
        assert answered.status_code == 200, answered.text
        usage = answered.json()["usage"]
        assert usage["completion_tokens"] == 2 * 32768  # both calls wrote all they may
        charged = Decimal(str(usage["cost"]))
        calls = len(generate_calls(emu))

        short = capped_key(server, charged - Decimal("1e-9"))
        refused = client.post("/images", json=body, headers=server.auth(short))

    # What is held before the calls covers what they were charged, so a key a nano-dollar short
    # is turned away up front rather than run into debt.
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["metadata"]["limit_source"] == "openrouter_key_limit"
    assert len(generate_calls(emu)) == calls == 2


def test_a_safety_block_end_to_end_is_a_400_content_policy_violation(
    emu: Emulator, make_server: Callable[..., LiveServer]
) -> None:
    server = make_server(
        providers={"google-ai-studio": {"api_key": "test-key", "base_url": f"{emu.url}/v1beta"}}
    )
    emu.fault("image_safety")
    with server.client() as client:
        response = client.post(
            "/images", json={"model": LITE, "prompt": PROMPT}, headers=server.auth()
        )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["metadata"]["error_type"] == "content_policy_violation"
    assert error["metadata"]["provider_name"] == "Google AI Studio"


def test_google_models_are_not_listed_when_unconfigured(server: LiveServer) -> None:
    with server.client() as client:
        listed = [m["id"] for m in client.get("/images/models").json()["data"]]
    assert listed and not any(model_id.startswith("google/") for model_id in listed)
