"""The Stability AI provider against its emulator, and through a real imagegate server."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio
from PIL import Image as PILImage

from imagegate import errors
from imagegate.catalog import load_catalog
from imagegate.providers import NotConfigured
from imagegate.providers.base import Done, Image, ProviderJob, ReferenceImage, Usage
from imagegate.providers.http import HttpPool
from imagegate.providers.stability import StabilityProvider
from imagegate.sizing import SizeRequest, resolve_size
from tests.conftest import LiveServer
from tests.emulators import stability as emulated
from tests.emulators.base import Emulator
from tests.emulators.images import synth

CATALOG = load_catalog()
MODELS = sorted(m.id for m in CATALOG.models() if m.id.startswith("stability-ai/"))
ULTRA, CORE, SD35 = (
    "stability-ai/stable-image-ultra",
    "stability-ai/stable-image-core",
    "stability-ai/sd3.5-large",
)


@pytest.fixture
def emu(emulator: Callable[..., Emulator]) -> Emulator:
    return emulator("stability")


@pytest_asyncio.fixture(loop_scope="function")
async def provider(emu: Emulator) -> AsyncIterator[StabilityProvider]:
    http = HttpPool()
    yield StabilityProvider.configure({"api_key": "sk-test", "base_url": emu.url}, http)
    await http.close()


def make_job(
    model_id: str = CORE, *, aspect_ratio: str = "1:1", fmt: str = "png", timeout: float = 10, **kw
) -> ProviderJob:
    endpoint = CATALOG.get(model_id).endpoints[0]
    return ProviderJob(
        upstream_model=endpoint.upstream_model,
        prompt="a lighthouse at dusk",
        n=kw.pop("n", 1),
        size=resolve_size(SizeRequest(aspect_ratio=aspect_ratio), endpoint.size_rules),
        output_format=fmt,
        deadline=time.monotonic() + timeout,
        settings=endpoint.settings,
        **kw,
    )


async def run(provider: StabilityProvider, job: ProviderJob) -> list:
    return [event async for event in provider.run(job)]


def sent(emu: Emulator, index: int = -1) -> dict:
    return emulated.form(emu.requests[index])


def png_reference(size: tuple[int, int] = (640, 480), fmt: str = "png") -> ReferenceImage:
    data = synth(*size, fmt, seed="reference")
    return ReferenceImage(data, f"image/{fmt}", *size)


def decoded(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image


# --- request translation ---


@pytest.mark.parametrize("model_id", MODELS)
async def test_every_model_posts_multipart_to_its_service_and_gets_the_ratios_pixels(
    provider: StabilityProvider, emu: Emulator, model_id: str
) -> None:
    events = await run(provider, make_job(model_id, aspect_ratio="16:9", fmt="jpeg"))

    [image, done] = events
    assert isinstance(image, Image) and image.media_type == "image/jpeg"
    assert decoded(image.image.raw).size == (1344, 768)
    assert done == Done(Usage(requests=1))
    [request] = emu.requests
    upstream = CATALOG.get(model_id).endpoints[0].upstream_model
    service = upstream if upstream in ("ultra", "core") else "sd3"
    assert request.path == f"/v2beta/stable-image/generate/{service}"
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.headers["Accept"] == "image/*"
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    expected = {"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9", "output_format": "jpeg"}
    if service == "sd3":
        expected |= {"model": upstream, "mode": "text-to-image"}
    assert sent(emu) == expected


@pytest.mark.parametrize(
    ("aspect_ratio", "pixels"),
    [("21:9", (1536, 640)), ("9:21", (640, 1536)), ("4:5", (896, 1088)), ("3:2", (1216, 832))],
)
async def test_the_size_tables_ratio_label_is_what_is_sent(
    provider: StabilityProvider, emu: Emulator, aspect_ratio: str, pixels: tuple[int, int]
) -> None:
    job = make_job(ULTRA, aspect_ratio=aspect_ratio)
    assert (job.size.width, job.size.height) == pixels

    [image, _] = await run(provider, job)

    assert sent(emu)["aspect_ratio"] == aspect_ratio
    assert decoded(image.image.raw).size == pixels


async def test_explicit_pixels_pick_the_nearest_ratio_stability_makes() -> None:
    endpoint = CATALOG.get(CORE).endpoints[0]
    size = resolve_size(SizeRequest(size="1920x1080"), endpoint.size_rules)
    assert (size.aspect_ratio, size.width, size.height) == ("16:9", 1344, 768)
    assert "size" in size.clamped


@pytest.mark.parametrize(
    ("seed", "expected"),
    [
        (42, "42"),
        (4_294_967_294, "4294967294"),
        (4_294_967_295, "0"),
        (-1, "4294967294"),
        (2**40, str(2**40 % 4_294_967_295)),
    ],
)
async def test_seeds_are_sent_within_stabilitys_range(
    provider: StabilityProvider, emu: Emulator, seed: int, expected: str
) -> None:
    await run(provider, make_job(seed=seed))
    assert sent(emu)["seed"] == expected


async def test_same_seed_gives_the_same_image_and_no_seed_sends_none(
    provider: StabilityProvider, emu: Emulator
) -> None:
    [first, _] = await run(provider, make_job(seed=7))
    [again, _] = await run(provider, make_job(seed=7))
    await run(provider, make_job())

    assert first.image.raw == again.image.raw
    assert "seed" not in sent(emu)


async def test_n_above_one_makes_one_call_per_image_with_stepped_seeds(
    provider: StabilityProvider, emu: Emulator
) -> None:
    events = await run(provider, make_job(n=2, seed=5))

    assert [type(e) for e in events] == [Image, Image, Done]
    assert events[-1].usage.requests == 2
    assert [sent(emu, i)["seed"] for i in range(2)] == ["5", "6"]


async def test_passthrough_options_are_sent_as_form_fields(
    provider: StabilityProvider, emu: Emulator
) -> None:
    options = {"negative_prompt": "blurry", "style_preset": "cinematic", "cfg_scale": 7.5}
    await run(provider, make_job(SD35, options=options))

    assert {k: sent(emu)[k] for k in options} == {
        "negative_prompt": "blurry",
        "style_preset": "cinematic",
        "cfg_scale": "7.5",
    }


@pytest.mark.parametrize(
    "options",
    [{"cfg_scale": "high"}, {"strength": True}, {"style_preset": 3}, {"operator_added": [1]}],
)
async def test_a_wrongly_typed_passthrough_option_is_a_400_before_any_call(
    provider: StabilityProvider, emu: Emulator, options: dict
) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        await run(provider, make_job(SD35, options=options))
    assert f"provider.options.stability.{next(iter(options))}" in caught.value.message
    assert emu.requests == []


async def test_an_out_of_range_option_is_stabilitys_own_400(provider: StabilityProvider) -> None:
    with pytest.raises(errors.UpstreamError) as caught:
        await run(provider, make_job(SD35, options={"cfg_scale": 30}))
    assert caught.value.status == 400 and not caught.value.retryable
    assert "cfg_scale: must be between 1 and 10" in caught.value.message
    assert caught.value.metadata["provider_name"] == "Stability AI"


# --- references ---


async def test_a_reference_on_ultra_is_uploaded_with_a_default_strength(
    provider: StabilityProvider, emu: Emulator
) -> None:
    reference = png_reference()
    [image, _] = await run(provider, make_job(ULTRA, aspect_ratio="3:2", references=(reference,)))

    form = sent(emu)
    assert form["image"] == emulated.Upload("reference.png", "image/png", reference.data)
    assert form["strength"] == "0.5" and form["aspect_ratio"] == "3:2" and "mode" not in form
    assert decoded(image.image.raw).size == (1216, 832)


async def test_a_reference_on_sd35_switches_to_image_to_image_and_takes_the_references_shape(
    provider: StabilityProvider, emu: Emulator
) -> None:
    job = make_job(
        SD35, aspect_ratio="1:1", references=(png_reference((600, 900)),), options={"strength": 0.8}
    )
    [image, _] = await run(provider, job)

    form = sent(emu)
    assert form["mode"] == "image-to-image" and form["strength"] == "0.8"
    assert "aspect_ratio" not in form  # text-to-image only on the sd3 service
    assert decoded(image.image.raw).size == (832, 1216)  # 2:3, like the reference


async def test_strength_without_a_reference_is_not_sent(
    provider: StabilityProvider, emu: Emulator
) -> None:
    await run(provider, make_job(ULTRA, options={"strength": 0.3}))
    assert "strength" not in sent(emu) and "image" not in sent(emu)


async def test_core_takes_no_reference_so_none_is_sent(
    provider: StabilityProvider, emu: Emulator
) -> None:
    await run(provider, make_job(CORE, references=(png_reference(),)))
    assert "image" not in sent(emu)


async def test_a_gif_reference_is_uploaded_as_png(
    provider: StabilityProvider, emu: Emulator
) -> None:
    out = io.BytesIO()
    PILImage.new("RGB", (200, 100), (200, 30, 30)).save(out, "GIF")
    await run(
        provider,
        make_job(ULTRA, references=(ReferenceImage(out.getvalue(), "image/gif", 200, 100),)),
    )

    upload = sent(emu)["image"]
    assert upload.content_type == "image/png" and decoded(upload.data).format == "PNG"


async def test_a_reference_too_big_for_the_request_cap_is_sent_as_jpeg(
    provider: StabilityProvider, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imagegate.providers import stability

    monkeypatch.setattr(stability, "MAX_REFERENCE_BYTES", 1000)
    await run(provider, make_job(SD35, references=(png_reference(),)))

    upload = sent(emu)["image"]
    assert upload.content_type == "image/jpeg" and decoded(upload.data).size == (640, 480)


# --- refusals and failures ---


async def test_a_content_filtered_result_is_a_refusal_and_no_image(
    provider: StabilityProvider, emu: Emulator
) -> None:
    emu.fault("content_filtered")
    events = []
    with pytest.raises(errors.ContentRefused) as caught:
        async for event in provider.run(make_job()):
            events.append(event)
    assert events == []
    assert caught.value.status == 400 and caught.value.error_type == "content_policy_violation"


async def test_a_403_content_moderation_is_a_refusal_not_a_key_problem(
    provider: StabilityProvider, emu: Emulator
) -> None:
    emu.fault("moderation")
    with pytest.raises(errors.ContentRefused) as caught:
        await run(provider, make_job())
    assert "content moderation" in caught.value.message
    assert "provider_key_rejected" not in caught.value.metadata


async def test_402_is_the_gateways_account_out_of_credit(
    provider: StabilityProvider, emu: Emulator
) -> None:
    emu.fault("credits")
    with pytest.raises(errors.UpstreamError) as caught:
        await run(provider, make_job())
    assert caught.value.status == 502 and caught.value.metadata["provider_out_of_credit"] is True


@pytest.mark.parametrize(("fault", "retry_after"), [("rate_window", "60"), ("rate_limit", "2")])
async def test_429_is_rate_limited_and_keeps_retry_after_in_any_case(
    provider: StabilityProvider, emu: Emulator, fault: str, retry_after: str
) -> None:
    emu.fault(fault)
    with pytest.raises(errors.UpstreamRateLimited) as caught:
        await run(provider, make_job())
    assert caught.value.status == 429 and caught.value.headers == {"Retry-After": retry_after}


@pytest.mark.parametrize(
    ("fault", "error_class", "status"),
    [
        ("bad_key", errors.UpstreamError, 502),
        ("server_error", errors.UpstreamError, 502),
        ("overloaded", errors.UpstreamOverloaded, 529),
        ("timeout_status", errors.UpstreamTimeout, 524),
        ("malformed", errors.UpstreamError, 502),
        ("drop", errors.UpstreamError, 502),
    ],
)
async def test_upstream_failures_map_to_gateway_errors(
    provider: StabilityProvider, emu: Emulator, fault: str, error_class: type, status: int
) -> None:
    emu.fault(fault)
    with pytest.raises(error_class) as caught:
        await run(provider, make_job())
    assert caught.value.status == status and caught.value.retryable
    assert "sk-test" not in caught.value.message
    if fault == "bad_key":
        assert caught.value.metadata["provider_key_rejected"] is True


async def test_a_slow_answer_past_the_deadline_is_524(
    provider: StabilityProvider, emu: Emulator
) -> None:
    emu.slow_ms = 800
    emu.fault("slow")
    started = time.monotonic()
    with pytest.raises(errors.UpstreamTimeout):
        await run(provider, make_job(timeout=0.2))
    assert time.monotonic() - started < 0.7


def test_configuration_needs_the_key_and_defaults_the_base_url() -> None:
    with pytest.raises(NotConfigured, match="STABILITY_API_KEY"):
        StabilityProvider.configure({}, HttpPool())
    assert StabilityProvider.env == {
        "api_key": "STABILITY_API_KEY",
        "base_url": "STABILITY_BASE_URL",
    }
    assert (
        StabilityProvider.configure({"api_key": "k"}, HttpPool())._base_url
        == "https://api.stability.ai"
    )


# --- the emulator is as strict as the real API ---


def test_emulator_rejects_json_unknown_fields_and_out_of_range_values(emu: Emulator) -> None:
    url = f"{emu.url}/v2beta/stable-image/generate/core"
    auth = {"Authorization": "Bearer k", "Accept": "image/*"}
    cases = [
        ({"json": {"prompt": "x"}}, "multipart/form-data"),
        ({"files": {"prompt": (None, "x"), "width": (None, "512")}}, "width: unknown field"),
        ({"files": {"prompt": (None, "x"), "seed": (None, "4294967295")}}, "seed: must be between"),
        (
            {"files": {"prompt": (None, "x"), "aspect_ratio": (None, "4:3")}},
            "aspect_ratio: must be one of",
        ),
        (
            {"files": {"prompt": (None, "x"), "output_format": (None, "gif")}},
            "output_format: must be one of",
        ),
    ]
    for kwargs, message in cases:
        response = httpx.post(url, headers=auth, **kwargs)
        body = response.json()
        assert response.status_code == 400 and body["name"] == "bad_request", body
        assert message in body["errors"][0] and body["id"]


def test_emulator_answers_base64_json_when_asked(emu: Emulator) -> None:
    response = httpx.post(
        f"{emu.url}/v2beta/stable-image/generate/sd3",
        headers={"Authorization": "Bearer k", "Accept": "application/json"},
        files={
            "prompt": (None, "x"),
            "model": (None, "sd3.5-medium"),
            "seed": (None, "9"),
            "output_format": (None, "jpeg"),
        },
    )
    body = response.json()
    assert response.status_code == 200 and body["finish_reason"] == "SUCCESS" and body["seed"] == 9
    assert decoded(base64.b64decode(body["image"])).format == "JPEG"


# --- end to end through imagegate ---


def stability_server(make_server: Callable[..., LiveServer], emu: Emulator) -> LiveServer:
    return make_server(providers={"stability": {"api_key": "sk-test", "base_url": emu.url}})


def test_buffered_generation_fans_out_n_and_costs_per_image(
    make_server: Callable[..., LiveServer], emu: Emulator
) -> None:
    server = stability_server(make_server, emu)
    with server.client() as client:
        response = client.post(
            "/images",
            headers=server.auth(),
            json={
                "model": ULTRA,
                "prompt": "a lighthouse at dusk",
                "n": 2,
                "aspect_ratio": "21:9",
                "output_format": "webp",
                "seed": 100,
                "resolution": "4K",
            },
        )
        assert response.status_code == 200, response.text
        payload = response.json()
        assert [decoded(base64.b64decode(d["b64_json"])).size for d in payload["data"]] == [
            (1536, 640)
        ] * 2
        assert {d["media_type"] for d in payload["data"]} == {"image/webp"}
        assert payload["usage"]["cost"] == pytest.approx(0.16)
        assert response.headers["x-provider-name"] == "Stability AI"
        assert response.headers["x-imagegate-size"] == "1536x640"
        assert response.headers["x-imagegate-aspect-ratio"] == "21:9"
        assert "resolution" in response.headers["x-imagegate-dropped"]
        assert sorted(emulated.form(r)["seed"] for r in emu.requests) == ["100", "101"]

        generation = client.get(
            "/generation", params={"id": response.headers["x-generation-id"]}, headers=server.auth()
        ).json()["data"]
        assert Decimal(str(generation["total_cost"])) == Decimal("0.16")


def test_stream_request_on_sd35_is_answered_buffered_and_converted_to_webp(
    make_server: Callable[..., LiveServer], emu: Emulator
) -> None:
    server = stability_server(make_server, emu)
    with server.client() as client:
        response = client.post(
            "/images",
            headers=server.auth(),
            json={
                "model": "stability-ai/sd3.5-medium",
                "prompt": "a fox",
                "stream": True,
                "output_format": "webp",
                "provider": {"options": {"stability": {"negative_prompt": "text", "steps": 40}}},
            },
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        [item] = response.json()["data"]
        assert decoded(base64.b64decode(item["b64_json"])).format == "WEBP"
        assert response.json()["usage"]["cost"] == pytest.approx(0.035)
        form = emulated.form(emu.requests[-1])
        assert (
            form["output_format"] == "png"
        )  # the sd3 service is asked for png; the gateway converts
        assert form["negative_prompt"] == "text" and "steps" not in form

        emu.fault("moderation")
        refused = client.post("/images", headers=server.auth(), json={"model": CORE, "prompt": "x"})
        assert refused.status_code == 400
        assert refused.json()["error"]["metadata"]["error_type"] == "content_policy_violation"
        assert "sk-test" not in refused.text


def test_stability_models_are_not_listed_without_a_key(server: LiveServer) -> None:
    with server.client() as client:
        ids = [m["id"] for m in client.get("/images/models").json()["data"]]
    assert ids and not [i for i in ids if i.startswith("stability-ai/")]
