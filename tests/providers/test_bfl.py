"""The Black Forest Labs adapter against its emulator: submit, poll on another host, download."""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from imagegate import errors
from imagegate.catalog import Endpoint, load_catalog
from imagegate.providers import NotConfigured, load_providers
from imagegate.providers.base import Done, Image, Progress, ProviderJob, ReferenceImage
from imagegate.providers.bfl import BlackForestLabsProvider
from imagegate.providers.http import HttpPool
from imagegate.settings import Settings
from imagegate.sizing import AppliedSize, SizeRequest, resolve_size
from tests.conftest import LiveServer, start_server
from tests.emulators import bfl as bfl_emulator
from tests.emulators.base import Emulator, EmulatorServer
from tests.emulators.images import synth

CATALOG = load_catalog()
MODELS = [m.id for m in CATALOG.models() if m.id.startswith("black-forest-labs/")]
KEY = "bfl-test-key"
FAST_POLL = 0.01


def endpoint(model_id: str) -> Endpoint:
    model = CATALOG.get(model_id)
    assert model is not None
    return model.endpoints[0]


def make_job(
    model_id: str = "black-forest-labs/flux.2-pro",
    *,
    aspect_ratio: str | None = None,
    size: str | None = None,
    fmt: str = "jpeg",
    seed: int | None = None,
    references: tuple[ReferenceImage, ...] = (),
    options: dict[str, Any] | None = None,
    deadline_s: float = 10.0,
    n: int = 1,
) -> ProviderJob:
    """A job as the gateway builds it for this model's catalog endpoint."""
    ep = endpoint(model_id)
    applied = resolve_size(SizeRequest(aspect_ratio=aspect_ratio, size=size), ep.size_rules)
    return ProviderJob(
        upstream_model=ep.upstream_model,
        prompt="a fox in the snow",
        n=n,
        size=applied,
        output_format=fmt,
        seed=seed,
        references=references,
        options=options or {},
        deadline=time.monotonic() + deadline_s,
        settings=ep.settings,
    )


def reference(width: int = 320, height: int = 240, fmt: str = "png") -> ReferenceImage:
    return ReferenceImage(synth(width, height, fmt, seed=width), f"image/{fmt}", width, height)


def configure(emu: Emulator, **config: Any) -> tuple[BlackForestLabsProvider, HttpPool]:
    http = HttpPool()
    settings = {"api_key": KEY, "base_url": emu.url, "trusted_hosts": "localhost"}
    settings |= {"poll_interval_s": FAST_POLL, **config}
    return BlackForestLabsProvider.configure(settings, http), http


async def run(emu: Emulator, job: ProviderJob, **config: Any) -> list:
    provider, http = configure(emu, **config)
    try:
        return [event async for event in provider.run(job)]
    finally:
        await http.close()


async def failure(emu: Emulator, job: ProviderJob, **config: Any) -> errors.ImagegateError:
    with pytest.raises(errors.ImagegateError) as caught:
        await run(emu, job, **config)
    return caught.value


def submitted(emu: Emulator) -> dict:
    [submit] = [r for r in emu.requests if r.method == "POST"]
    return submit.json()


def decode(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture
def emu(emulator) -> Emulator:
    return emulator("bfl")


# --- request translation, every model ---


@pytest.mark.parametrize("model_id", MODELS)
async def test_every_model_submits_polls_on_the_returned_host_and_downloads_without_the_key(
    emu: Emulator, model_id: str
) -> None:
    ep = endpoint(model_id)
    events = await run(emu, make_job(model_id, aspect_ratio="3:2", fmt="png"))

    progress = [e for e in events if isinstance(e, Progress)]
    [image] = [e for e in events if isinstance(e, Image)]
    assert isinstance(events[-1], Done) and events[-1].usage.requests == 1
    assert [p.fraction for p in progress] == [0.33, 0.67]  # two pending polls, then Ready
    submit, *polls, download = emu.requests
    assert submit.path == f"/v1/{ep.upstream_model}" and submit.headers["x-key"] == KEY
    assert submit.headers["Host"].startswith("127.0.0.1:")
    assert len(polls) == 3
    assert all(p.path.startswith("/v1/get_result?id=") for p in polls)
    assert all(p.headers["Host"].startswith("localhost:") and p.headers["x-key"] == KEY for p in polls)
    assert download.path.startswith("/delivery/results/")
    assert "x-key" not in download.headers and not emu.state.get("leaked_keys")

    picture = decode(image.image.raw)
    assert image.media_type == "image/png" and picture.format == "PNG"
    assert (image.width, image.height) == picture.size
    body = submit.json()
    if ep.settings.get("sizing") == "aspect_ratio":
        assert body["aspect_ratio"] == "3:2" and "width" not in body
        assert picture.width / picture.height == pytest.approx(1.5, rel=0.02)
    else:
        assert (body["width"], body["height"]) == picture.size == (1248, 832)


async def test_flux2_body_carries_pixels_seed_format_and_raw_base64_references(emu: Emulator) -> None:
    refs = (reference(320, 240), reference(200, 100, "jpeg"))
    events = await run(emu, make_job(size="1536x1024", seed=42, references=refs))

    body = submitted(emu)
    assert body == {
        "prompt": "a fox in the snow",
        "output_format": "jpeg",
        "width": 1536,
        "height": 1024,
        "seed": 42,
        "input_image": base64.b64encode(refs[0].data).decode(),
        "input_image_2": base64.b64encode(refs[1].data).decode(),
    }
    [image] = [e for e in events if isinstance(e, Image)]
    assert image.media_type == "image/jpeg" and (image.width, image.height) == (1536, 1024)
    usage = events[-1].usage
    assert usage.input_images == 2 and usage.input_pixels == 320 * 240 + 200 * 100


# --- the cost BFL states ---


async def test_the_cost_bfl_states_for_a_task_is_its_cost(emu: Emulator) -> None:
    refs = (reference(1024, 1024),) * 8
    events = await run(emu, make_job(size="2048x2048", references=refs))
    # BFL's formula (its API skill): 3 + (4.194304 - 1) × 1.5 + 8 × 1.048576 × 1.5 credits.
    assert events[-1].usage.stated_cost_usd == Decimal("0.20374368")


async def test_the_emulator_states_cost_and_megapixels_in_the_submit_answer_as_bfl_does(emu: Emulator) -> None:
    ref = base64.b64encode(synth(1024, 1024)).decode()
    body = {"prompt": "x", "width": 2048, "height": 2048, "input_image": ref, "input_image_2": ref}
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{emu.url}/v1/flux-2-max", json=body, headers={"x-key": KEY})
    # max: 7 + 3.194304 × 3 + 2.097152 × 3 credits; megapixels of 1,000,000 pixels, to 2 decimals.
    assert answer.json() | {"id": "", "polling_url": ""} == {
        "id": "", "polling_url": "", "cost": 22.874368, "input_mp": 2.1, "output_mp": 4.19,
    }


async def test_the_settled_cost_of_the_ready_answer_wins_over_the_submit_estimate(emu: Emulator) -> None:
    emu.state["settled_credits"] = 2.5
    events = await run(emu, make_job(size="2048x2048"))
    assert events[-1].usage.stated_cost_usd == Decimal("0.025")


async def test_a_task_bfl_states_no_cost_for_is_left_to_the_catalog_price(emu: Emulator) -> None:
    emu.fault("no_cost")
    events = await run(emu, make_job())
    assert events[-1].usage.stated_cost_usd is None


async def test_flex_forwards_its_sampling_passthrough(emu: Emulator) -> None:
    options = {"steps": 28, "guidance": 3.5, "safety_tolerance": 4, "prompt_upsampling": True}
    await run(emu, make_job("black-forest-labs/flux.2-flex", options=options))
    assert submitted(emu).items() >= options.items()


async def test_kontext_sends_the_ratio_label_and_one_reference(emu: Emulator) -> None:
    ref = reference(640, 480)
    model = "black-forest-labs/flux-kontext-max"
    events = await run(emu, make_job(model, aspect_ratio="16:9", references=(ref,), seed=5))

    body = submitted(emu)
    assert body["aspect_ratio"] == "16:9" and body["seed"] == 5
    assert body["input_image"] == base64.b64encode(ref.data).decode()
    assert "width" not in body and "input_image_2" not in body
    [image] = [e for e in events if isinstance(e, Image)]
    assert image.width / image.height == pytest.approx(16 / 9, rel=0.02)
    assert 0.9e6 < image.width * image.height < 1.2e6  # Kontext makes ~1 MP


async def test_more_references_than_bfl_has_fields_is_refused_before_submitting(emu: Emulator) -> None:
    error = await failure(emu, make_job(references=(reference(),) * 9))
    assert error.status == 400 and emu.requests == []


async def test_a_job_for_several_images_is_a_catalog_error_not_a_silent_single_image(
    emu: Emulator,
) -> None:
    error = await failure(emu, make_job(n=2))
    assert isinstance(error, errors.InternalError) and emu.requests == []


# --- the emulator's strict validation, as the client sees it ---


def off_grid() -> ProviderJob:
    """Sizing always lands on the grid, so this width reaches BFL only from a broken adapter."""
    return dataclasses.replace(make_job(), size=AppliedSize(1000, 1008, "1K", "1:1"))


@pytest.mark.parametrize(
    ("job", "named"),
    [
        (lambda: make_job(options={"bogus": 1}), "bogus: Extra inputs are not permitted"),
        (lambda: make_job(options={"safety_tolerance": "high"}), "safety_tolerance: Input should be a valid integer"),
        (lambda: make_job(options={"safety_tolerance": 9}), "safety_tolerance: Input should be less than"),
        (off_grid, "width: Value error, width must be a multiple of 16"),
        (
            lambda: make_job("black-forest-labs/flux-kontext-pro", references=(reference(),),
                             options={"safety_tolerance": 5}),
            "safety_tolerance: Value error, safety_tolerance must be at most 2",
        ),
    ],
)  # fmt: skip
async def test_a_request_bfl_rejects_is_a_non_retryable_400_naming_the_field(
    emu: Emulator, job: Callable[[], ProviderJob], named: str
) -> None:
    error = await failure(emu, job())
    assert isinstance(error, errors.UpstreamError) and not error.retryable
    assert error.status == 400 and named in error.message
    assert error.metadata["provider_name"] == "Black Forest Labs"


def test_emulator_refuses_data_urls_and_oversized_pictures() -> None:
    model = bfl_emulator.MODELS["flux-2-pro"]
    data_url = "data:image/png;base64," + base64.b64encode(synth(8, 8)).decode()
    problems = bfl_emulator._validate(model, {"prompt": "x", "input_image": data_url})
    assert problems[0]["loc"] == ["body", "input_image"]
    problems = bfl_emulator._validate(model, {"prompt": "x", "width": 4096, "height": 2048})
    assert "4 MP" in problems[0]["msg"]
    klein = bfl_emulator.MODELS["flux-2-klein-4b"]
    problems = bfl_emulator._validate(klein, {"prompt": "x", "input_image_5": "https://x/y.png"})
    assert problems[0]["type"] == "extra_forbidden"


# --- faults ---


@pytest.mark.parametrize(
    ("fault", "status", "kind", "detail"),
    [
        ("rate_limit", 429, errors.UpstreamRateLimited, None),
        ("concurrency", 429, errors.UpstreamRateLimited, None),
        ("credits", 502, errors.UpstreamError, "provider_out_of_credit"),
        ("bad_key", 502, errors.UpstreamError, "provider_key_rejected"),
        ("server_error", 502, errors.UpstreamError, None),
        ("overloaded", 529, errors.UpstreamOverloaded, None),
        ("timeout_status", 524, errors.UpstreamTimeout, None),
        ("moderation", 400, errors.ContentRefused, None),
        ("content_moderated", 400, errors.ContentRefused, None),
        ("task_error", 502, errors.UpstreamError, None),
        ("task_not_found", 502, errors.UpstreamError, None),
        ("expired_url", 502, errors.UpstreamError, None),
        ("malformed", 502, errors.UpstreamError, None),
        ("drop", 502, errors.UpstreamError, None),
    ],
)
async def test_each_fault_maps_to_its_gateway_error(
    emu: Emulator, fault: str, status: int, kind: type, detail: str | None
) -> None:
    emu.fault(fault)
    error = await failure(emu, make_job())
    assert type(error) is kind and error.status == status
    if detail:
        assert error.metadata[detail] is True
    assert KEY not in error.message


async def test_rate_limits_keep_the_wait_from_the_header_or_from_the_body(emu: Emulator) -> None:
    emu.fault("rate_limit")
    assert (await failure(emu, make_job())).headers == {"Retry-After": "2"}
    emu.fault("concurrency")  # BFL's 24-active-task limit: the wait only in the JSON body
    assert (await failure(emu, make_job())).headers == {"Retry-After": "5"}


async def test_moderation_is_a_content_policy_refusal_with_the_reasons(emu: Emulator) -> None:
    emu.fault("moderation")
    error = await failure(emu, make_job())
    assert error.metadata["error_type"] == "content_policy_violation"
    assert "Request Moderated" in error.message and "Derivative Works Filter" in error.message


async def test_a_transient_poll_failure_is_retried_and_three_in_a_row_fail(emu: Emulator) -> None:
    provider, http = configure(emu)
    try:
        events = provider.run(make_job())
        assert isinstance(await anext(events), Progress)  # submitted and polled once
        emu.fault("server_error")
        emu.fault("drop")
        rest = [event async for event in events]
        assert any(isinstance(e, Image) for e in rest)

        emu.state["polls_until_ready"] = 50
        events = provider.run(make_job())
        assert isinstance(await anext(events), Progress)
        emu.fault("overloaded", times=3)
        with pytest.raises(errors.UpstreamOverloaded):
            async for _ in events:
                pass
    finally:
        await http.close()


# --- polling hosts, backoff and the deadline ---


async def test_a_polling_url_on_an_untrusted_host_is_refused_without_contacting_it(
    emu: Emulator,
) -> None:
    error = await failure(emu, make_job(), trusted_hosts=None)  # default: *.bfl.ai only
    assert isinstance(error, errors.UpstreamError) and "localhost" in error.message
    assert [r.method for r in emu.requests] == ["POST"]


async def test_a_polling_url_on_the_base_host_needs_no_trusted_hosts(emu: Emulator) -> None:
    emu.state["polling_host"] = "127.0.0.1"
    events = await run(emu, make_job(), trusted_hosts=None)
    assert any(isinstance(e, Image) for e in events)


@pytest.mark.parametrize(
    ("url", "keyed"),
    [
        ("https://api.bfl.ai/v1/get_result?id=1", True),
        ("https://api.us1.bfl.ai/v1/get_result?id=1", True),
        ("https://gateway.bfl.ai:443/v1/get_result?id=1", True),
        ("http://api.us1.bfl.ai/v1/get_result?id=1", False),  # no downgrade to plain HTTP
        ("https://evilbfl.ai/v1/get_result?id=1", False),
        ("https://api.bfl.ai.example.com/v1/get_result?id=1", False),
        ("https://api.bfl.ai:8443/v1/get_result?id=1", True),  # patterns name hosts, any port
        ("ftp://api.bfl.ai/x", False),
    ],
)
def test_the_key_goes_only_to_the_base_host_or_trusted_hosts(url: str, keyed: bool) -> None:
    provider = BlackForestLabsProvider.configure({"api_key": KEY}, HttpPool())
    if keyed:
        assert provider._poll_headers(url) == {"x-key": KEY}
    else:
        with pytest.raises(errors.UpstreamError):
            provider._poll_headers(url)


async def test_polling_backs_off_and_a_task_still_pending_at_the_deadline_is_a_524(
    emu: Emulator,
) -> None:
    emu.state["polls_until_ready"] = 1000
    started = time.monotonic()
    error = await failure(emu, make_job(deadline_s=0.5), poll_interval_s=0.05)
    assert isinstance(error, errors.UpstreamTimeout) and error.status == 524
    assert time.monotonic() - started < 1.5
    polls = [r for r in emu.requests if r.method == "GET"]
    assert 3 <= len(polls) <= 8  # 0.05 s growing ×1.5: far fewer polls than fixed 0.05 s steps


async def test_a_slow_submit_past_the_deadline_is_a_524(emu: Emulator) -> None:
    emu.slow_ms = 700
    emu.fault("slow")
    error = await failure(emu, make_job(deadline_s=0.3))
    assert isinstance(error, errors.UpstreamTimeout)


# --- configuration ---


def test_without_a_key_the_provider_says_what_to_set() -> None:
    with pytest.raises(NotConfigured, match="BFL_API_KEY"):
        BlackForestLabsProvider.configure({}, HttpPool())
    with pytest.raises(NotConfigured, match="BFL_BASE_URL"):
        BlackForestLabsProvider.configure({"api_key": KEY, "base_url": "api.bfl.ai"}, HttpPool())


def test_environment_variables_configure_it() -> None:
    environ = {"BFL_API_KEY": KEY, "BFL_BASE_URL": "https://api.eu.bfl.ai", "BFL_TRUSTED_HOSTS": "a.example, *.bfl.ai"}
    providers = load_providers(Settings(), HttpPool(), environ=environ)
    provider = providers.configured["black-forest-labs"]
    assert isinstance(provider, BlackForestLabsProvider)
    assert provider._poll_headers("https://a.example/v1/get_result?id=1") == {"x-key": KEY}
    assert "black-forest-labs" in load_providers(Settings(), HttpPool(), environ={}).missing


# --- end to end through a real imagegate server ---


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, Emulator]]:
    emulator_server = EmulatorServer(Emulator(bfl_emulator))
    emu = emulator_server.start()
    config = {"api_key": KEY, "base_url": emu.url, "trusted_hosts": "localhost", "poll_interval_s": FAST_POLL}
    server, stop = start_server(tmp_path_factory.mktemp("bfl"), providers={"black-forest-labs": config})
    yield server, emu
    stop()
    emulator_server.stop()


def post(server: LiveServer, **body: Any) -> Any:
    with server.client() as client:
        return client.post("/images", json={"prompt": "a fox in the snow", **body}, headers=server.auth())


def credits(server: LiveServer, amount: Decimal) -> None:
    server.store_call(lambda s: s.add_credits(amount))


def test_e2e_flux2_pixels_fan_out_and_each_task_pays_its_first_megapixel(live: tuple[LiveServer, Emulator]) -> None:
    server, emu = live
    emu.clear()
    response = post(server, model="black-forest-labs/flux.2-pro", size="1024x768", n=2, seed=7,
                    output_format="png")  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-provider-name"] == "Black Forest Labs"
    assert response.headers["x-imagegate-size"] == "1024x768"
    payload = response.json()
    assert [item["media_type"] for item in payload["data"]] == ["image/png", "image/png"]
    assert {decode(base64.b64decode(i["b64_json"])).size for i in payload["data"]} == {(1024, 768)}
    # Two tasks of 0.786432 MP: each pays FLUX.2 [pro]'s whole first megapixel, "from $0.03".
    assert Decimal(str(payload["usage"]["cost"])) == Decimal("0.06")
    seeds = sorted(r.json()["seed"] for r in emu.requests if r.method == "POST")
    assert seeds == [7, 8]  # one task per image, seeds stepped so the images differ
    assert not emu.state.get("leaked_keys")


def test_e2e_klein_edit_bills_reference_megapixels_and_ignores_stream(
    live: tuple[LiveServer, Emulator],
) -> None:
    server, emu = live
    emu.clear()
    ref = synth(1024, 512, "png", seed=3)
    data_url = "data:image/png;base64," + base64.b64encode(ref).decode()
    response = post(server, model="black-forest-labs/flux.2-klein-4b", aspect_ratio="1:1", stream=True,
                    input_references=[{"type": "image_url", "image_url": {"url": data_url}}])  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")  # BFL does not stream
    assert submitted(emu)["input_image"] == base64.b64encode(ref).decode()
    # klein 4B, 1024x1024 from a 1024x512 reference: 1.4 + 0.048576 × 0.1 + 0.524288 × 0.1 credits.
    assert Decimal(str(response.json()["usage"]["cost"])) == Decimal("0.014572864")


def test_e2e_the_client_is_charged_what_bfl_states_it_charged(live: tuple[LiveServer, Emulator]) -> None:
    server, emu = live
    emu.clear()
    emu.state["settled_credits"] = 2.5  # not what the catalog's lines make of one 1 MP image
    response = post(server, model="black-forest-labs/flux.2-pro", size="1024x1024")
    assert response.status_code == 200, response.text
    assert Decimal(str(response.json()["usage"]["cost"])) == Decimal("0.025")
    emu.clear()


def test_e2e_the_reservation_covers_the_largest_image_with_every_reference_bfl_takes(
    live: tuple[LiveServer, Emulator], make_server: Callable[..., LiveServer]
) -> None:
    _, emu = live
    config = {"api_key": KEY, "base_url": emu.url, "trusted_hosts": "localhost", "poll_interval_s": FAST_POLL}
    server = make_server(providers={"black-forest-labs": config})
    ref = "data:image/jpeg;base64," + base64.b64encode(synth(1024, 1024, "jpeg", seed=4)).decode()
    body = {"model": "black-forest-labs/flux.2-pro", "size": "2048x2048",
            "input_references": [{"type": "image_url", "image_url": {"url": ref}}] * 8}
    credits(server, Decimal("0.01"))  # metered: each generation first reserves its worst case

    refused = post(server, **body)
    assert refused.status_code == 402
    reserved = Decimal(re.search(r"can cost up to \$([0-9.]+)", refused.json()["error"]["message"])[1])
    # What BFL charges for it: 3 + (4.194304 - 1) × 1.5 + 8 × 1.048576 × 1.5 credits.
    charged = Decimal("0.20374368")
    assert reserved >= charged

    credits(server, reserved - Decimal("0.01"))  # exactly the reservation is available
    response = post(server, **body)
    assert response.status_code == 200, response.text
    assert Decimal(str(response.json()["usage"]["cost"])) == charged


def test_e2e_kontext_is_priced_per_image_and_reports_the_ratio(live: tuple[LiveServer, Emulator]) -> None:
    server, emu = live
    emu.clear()
    response = post(server, model="black-forest-labs/flux-kontext-pro", aspect_ratio="21:9")
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegate-aspect-ratio"] == "21:9"
    assert submitted(emu)["aspect_ratio"] == "21:9"
    assert response.json()["usage"]["cost"] == pytest.approx(0.04)


def test_e2e_content_moderation_is_a_400_content_policy_violation(live: tuple[LiveServer, Emulator]) -> None:
    server, emu = live
    emu.clear()
    emu.fault("content_moderated")
    response = post(server, model="black-forest-labs/flux.2-max")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["metadata"]["error_type"] == "content_policy_violation"
    assert KEY not in response.text


def test_unconfigured_bfl_models_are_not_listed(server: LiveServer) -> None:
    with server.client() as client:
        ids = [m["id"] for m in client.get("/images/models").json()["data"]]
    assert ids and not [i for i in ids if i.startswith("black-forest-labs/")]
    with server.client() as client:
        response = client.post("/images", json={"model": MODELS[0], "prompt": "x"}, headers=server.auth())
    assert response.status_code == 404
