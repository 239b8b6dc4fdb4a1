"""The sandbox provider (slug ``imagegate``): a real offline image synthesizer."""

from __future__ import annotations

import asyncio
import io
import random
import threading
import time
import xml.etree.ElementTree as ET

import pytest
from PIL import Image as PILImage
from PIL import ImageStat

from imagegate import errors, imaging
from imagegate.providers.base import (
    Done,
    Image,
    Partial,
    Progress,
    Provider,
    ProviderJob,
    ReferenceImage,
    TextChunk,
    Usage,
)
from imagegate.providers.sandbox import SandboxProvider
from imagegate.providers.sandbox import provider as sandbox_provider
from imagegate.providers.sandbox.scene import Ellipse, Polygon, build_scene
from imagegate.sizing import AppliedSize

SVG_NS = "{http://www.w3.org/2000/svg}"


def make_job(
    prompt: str = "a red circle",
    width: int = 128,
    height: int = 128,
    *,
    n: int = 1,
    fmt: str = "png",
    seed: int | None = 42,
    **kw,
) -> ProviderJob:
    return ProviderJob(
        upstream_model="sandbox",
        prompt=prompt,
        n=n,
        size=AppliedSize(width, height, "1K", "1:1"),
        output_format=fmt,
        seed=seed,
        **kw,
    )


async def collect(job: ProviderJob, provider: SandboxProvider | None = None) -> list:
    return [event async for event in (provider or SandboxProvider()).run(job)]


async def images(job: ProviderJob) -> list[bytes]:
    return [e.image.raw for e in await collect(job) if isinstance(e, Image)]


def decode(data: bytes) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(data))
    image.load()
    return image


def mean_rgb(data: bytes) -> tuple[float, float, float]:
    r, g, b = ImageStat.Stat(decode(data).convert("RGB")).mean
    return r, g, b


def solid_png(color: tuple[int, int, int], size: tuple[int, int] = (300, 200)) -> ReferenceImage:
    data = imaging.encode(PILImage.new("RGB", size, color), "png")
    return ReferenceImage(data, "image/png", *size)


# --- identity ---------------------------------------------------------------------------------


def test_sandbox_is_a_provider_named_imagegate() -> None:
    provider = SandboxProvider()
    assert isinstance(provider, Provider)
    assert provider.slug == "imagegate"
    assert provider.name == "imagegate sandbox"


# --- size, count, formats ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "fmt"),
    [(128, 128, "png"), (320, 96, "jpeg"), (96, 320, "webp"), (1, 1, "png"), (17, 33, "webp")],
)
async def test_images_have_exactly_the_requested_pixels(width: int, height: int, fmt: str) -> None:
    events = await collect(make_job(width=width, height=height, fmt=fmt, n=2))
    finals = [e for e in events if isinstance(e, Image)]
    assert len(finals) == 2
    for event in finals:
        assert (event.width, event.height) == (width, height)
        image = decode(event.image.raw)
        assert image.size == (width, height)
        assert image.format.lower() == fmt


async def test_4096_square_png_is_drawn_at_full_size() -> None:
    (data,) = await images(make_job("purple hexagons", 4096, 4096, quality="high"))
    info = imaging.probe(data)
    assert (info.format, info.width, info.height) == ("png", 4096, 4096)
    assert decode(data).size == (4096, 4096)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "svg"])
async def test_each_output_format_has_its_magic_bytes_and_media_type(fmt: str) -> None:
    events = await collect(make_job(fmt=fmt))
    (final,) = [e for e in events if isinstance(e, Image)]
    assert final.media_type == imaging.MEDIA_TYPES[fmt]
    assert imaging.sniff_format(final.image.raw) == fmt


async def test_lower_jpeg_output_compression_makes_smaller_files() -> None:
    prompt = "a detailed mosaic of stars"
    kw = {"fmt": "jpeg", "quality": "max"}
    (small,) = await images(make_job(prompt, 256, 256, output_compression=5, **kw))
    (large,) = await images(make_job(prompt, 256, 256, output_compression=90, **kw))
    assert len(small) < len(large)


async def test_unsupported_output_format_is_a_client_error() -> None:
    with pytest.raises(errors.InvalidRequest):
        await collect(make_job(fmt="bmp"))


# --- background -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "webp"])
async def test_transparent_background_is_clear_while_shapes_are_opaque(fmt: str) -> None:
    (data,) = await images(make_job("a circle", 160, 120, fmt=fmt, background="transparent"))
    image = decode(data)
    assert image.mode == "RGBA"
    alpha = image.getchannel("A")
    for corner in ((0, 0), (159, 0), (0, 119), (159, 119)):
        assert alpha.getpixel(corner) == 0
    assert alpha.getpixel((80, 60)) == 255  # the hero circle covers the centre
    histogram = alpha.histogram()
    assert histogram[0] > 0.2 * 160 * 120
    assert histogram[255] > 0.1 * 160 * 120


@pytest.mark.parametrize("background", [None, "opaque", "auto"])
@pytest.mark.parametrize("fmt", ["png", "webp"])
async def test_opaque_background_has_no_alpha_channel(background: str | None, fmt: str) -> None:
    (data,) = await images(make_job(fmt=fmt, background=background))
    assert imaging.probe(data).has_alpha is False
    assert decode(data).mode == "RGB"


# --- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "svg"])
async def test_same_seed_prompt_and_parameters_give_byte_identical_output(fmt: str) -> None:
    job = make_job("three blue stars", 200, 150, n=2, fmt=fmt, seed=7, quality="high", stream=True)
    first, second = await collect(job), await collect(job)
    raw = lambda events: [  # noqa: E731
        e.image.raw if isinstance(e, (Image, Partial)) else e for e in events
    ]
    assert raw(first) == raw(second)


async def test_different_seeds_give_different_images() -> None:
    a, b = await images(make_job(seed=1)), await images(make_job(seed=2))
    assert a != b


async def test_different_prompts_give_different_images() -> None:
    a, b = await images(make_job("a red circle")), await images(make_job("a red square"))
    assert a != b


async def test_each_image_of_a_request_is_different() -> None:
    outputs = await images(make_job(n=3))
    assert len(set(outputs)) == 3


async def test_no_seed_draws_a_fresh_seed_per_call() -> None:
    a, b = await images(make_job(seed=None)), await images(make_job(seed=None))
    assert a != b


async def test_quality_changes_the_detail_deterministically() -> None:
    low = await images(make_job("stars", quality="low"))
    high = await images(make_job("stars", quality="high"))
    assert low != high
    assert high == await images(make_job("stars", quality="high"))
    auto = await images(make_job("stars", quality="auto"))
    assert auto == await images(make_job("stars", quality="medium"))


# --- prompt and references --------------------------------------------------------------------


@pytest.mark.parametrize(("word", "channel"), [("red", 0), ("green", 1), ("blue", 2)])
async def test_a_colour_word_makes_that_colour_dominant(word: str, channel: int) -> None:
    (data,) = await images(make_job(f"a {word} circle", 192, 192))
    mean = mean_rgb(data)
    others = [v for i, v in enumerate(mean) if i != channel]
    assert mean[channel] > 1.4 * max(others), mean


async def test_a_colour_word_next_to_background_colours_the_background() -> None:
    (data,) = await images(make_job("a red circle on a blue background", 160, 160))
    r, g, b = decode(data).convert("RGB").getpixel((2, 2))
    assert b > r and b > g


def test_shape_words_pick_the_hero_shape() -> None:
    scene = build_scene("a big star", 200, 200, seed=1)
    assert isinstance(scene.shapes[0], Polygon) and len(scene.shapes[0].points) == 10
    scene = build_scene("one circle", 200, 200, seed=1)
    assert isinstance(scene.shapes[0], Ellipse)
    scene = build_scene("a striped flag", 200, 200, seed=1, level=2)
    assert len([s for s in scene.shapes if isinstance(s, Polygon)]) >= 7


async def test_references_change_the_output_and_lend_their_colours() -> None:
    prompt = "a quiet afternoon"
    (plain,) = await images(make_job(prompt, 160, 160))
    job = make_job(prompt, 160, 160, references=(solid_png((20, 200, 40)),))
    (with_ref,) = await images(job)
    assert plain != with_ref
    r, g, b = mean_rgb(with_ref)
    assert g > 1.4 * max(r, b)
    # the thumbnail tile sits bottom right, inside the margin
    tile_pixel = decode(with_ref).convert("RGB").getpixel((160 - 20, 160 - 20))
    assert tile_pixel[1] > 180 and tile_pixel[0] < 60


async def test_jpeg_and_svg_references_are_accepted() -> None:
    jpeg = imaging.encode(PILImage.new("RGB", (640, 480), (200, 30, 200)), "jpeg")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    refs = (
        ReferenceImage(jpeg, "image/jpeg", 640, 480),
        ReferenceImage(svg, "image/svg+xml", 10, 10),
    )
    for fmt in ("png", "svg"):
        outputs = await images(make_job("a scene", fmt=fmt, references=refs))
        assert len(outputs) == 1


async def test_undecodable_reference_is_an_invalid_image_error() -> None:
    bad = ReferenceImage(b"\x89PNG\r\n\x1a\nnot really", "image/png", 10, 10)
    with pytest.raises(errors.InvalidImage):
        await collect(make_job(references=(bad,)))


# --- streaming --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
async def test_streaming_yields_two_previews_before_each_image_in_index_order(fmt: str) -> None:
    events = await collect(make_job(width=96, height=64, n=2, fmt=fmt, stream=True))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Partial", "Partial", "Image", "Partial", "Partial", "Image", "Done"]
    assert [e.index for e in events if isinstance(e, Partial)] == [0, 0, 1, 1]
    for event in events:
        if isinstance(event, Partial):
            assert event.media_type == imaging.MEDIA_TYPES[fmt]
            assert imaging.sniff_format(event.image.raw) == fmt
            assert decode(event.image.raw).size == (96, 64)
    partial, final = events[0].image.raw, events[2].image.raw
    assert partial != final


async def test_no_previews_without_streaming() -> None:
    events = await collect(make_job(n=2))
    assert [type(e).__name__ for e in events] == ["Image", "Image", "Done"]


async def test_streaming_svg_sends_the_markup_as_draft_text_chunks() -> None:
    events = await collect(make_job(fmt="svg", n=2, stream=True))
    chunks, markup = [], []
    for event in events:
        if isinstance(event, TextChunk):
            assert event.phase == "draft"
            chunks.append(event.text)
        elif isinstance(event, Image):
            markup.append((("".join(chunks)), event.image.raw.decode()))
            chunks = []
    assert len(markup) == 2
    for streamed, final in markup:
        assert streamed == final
    assert isinstance(events[-1], Done)


# --- svg --------------------------------------------------------------------------------------


async def test_svg_output_is_well_formed_xml_with_the_requested_size_and_prompt_title() -> None:
    prompt = 'a "quoted" <tag> & ampersand\x01 star'
    refs = (solid_png((10, 10, 250)),)
    job = make_job(prompt, 300, 200, fmt="svg", quality="high", references=refs)
    (data,) = await images(job)
    root = ET.fromstring(data)
    assert root.tag == f"{SVG_NS}svg"
    assert (root.get("width"), root.get("height")) == ("300", "200")
    assert root.find(f"{SVG_NS}title").text == prompt.replace("\x01", "")
    assert root.find(f"{SVG_NS}image") is not None  # the reference tile
    assert len(root.findall(f"{SVG_NS}polygon")) >= 1
    assert imaging.probe(data) == imaging.ImageInfo("svg", "image/svg+xml", 300, 200, True)


async def test_transparent_svg_has_no_background() -> None:
    (data,) = await images(make_job(fmt="svg", background="transparent"))
    root = ET.fromstring(data)
    assert root.find(f"{SVG_NS}defs") is None
    assert all(rect.get("fill") != "url(#bg)" for rect in root.iter(f"{SVG_NS}rect"))


# --- failure injection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "error_class", "status"),
    [
        ("upstream_error", errors.UpstreamError, 502),
        ("overloaded", errors.UpstreamOverloaded, 529),
        ("timeout", errors.UpstreamTimeout, 524),
        ("rate_limit", errors.UpstreamRateLimited, 429),
        ("content_policy", errors.ContentRefused, 400),
        ("bad_key", errors.UpstreamError, 502),
    ],
)
async def test_fail_option_raises_the_matching_upstream_error(mode, error_class, status) -> None:
    with pytest.raises(error_class) as caught:
        await collect(make_job(options={"fail": mode}))
    assert type(caught.value) is error_class
    assert caught.value.status == status


async def test_injected_rate_limit_carries_retry_after() -> None:
    with pytest.raises(errors.UpstreamRateLimited) as caught:
        await collect(make_job(options={"fail": "rate_limit"}))
    assert caught.value.headers == {"Retry-After": "2"}


async def test_injected_content_refusal_is_a_content_policy_violation() -> None:
    with pytest.raises(errors.ContentRefused) as caught:
        await collect(make_job(options={"fail": "content_policy"}))
    assert caught.value.metadata["error_type"] == "content_policy_violation"
    assert caught.value.retryable is False


async def test_injected_bad_key_is_a_502_flagged_as_a_rejected_provider_key() -> None:
    with pytest.raises(errors.UpstreamError) as caught:
        await collect(make_job(options={"fail": "bad_key"}))
    assert caught.value.status == 502
    assert caught.value.metadata == {"provider_key_rejected": True}


async def test_fail_after_first_image_yields_it_and_its_previews_then_raises() -> None:
    seen: list = []
    with pytest.raises(errors.UpstreamError) as caught:
        job = make_job(n=3, stream=True, options={"fail": "after_first_image"})
        async for event in SandboxProvider().run(job):
            seen.append(event)
    assert type(caught.value) is errors.UpstreamError
    assert [type(e).__name__ for e in seen] == ["Partial", "Partial", "Image"]


async def test_fail_rate_draws_from_its_own_generator_not_the_job_seed() -> None:
    expected_rng = random.Random(99)
    expected = [expected_rng.random() < 0.5 for _ in range(12)]
    provider = SandboxProvider(failure_rng=random.Random(99))
    outcomes = []
    for _ in range(12):
        try:
            await collect(make_job(width=16, height=16, options={"fail_rate": 0.5}), provider)
            outcomes.append(False)
        except errors.UpstreamError as exc:
            assert exc.status == 502
            outcomes.append(True)
    assert outcomes == expected
    assert True in outcomes and False in outcomes


async def test_fail_rate_zero_never_fails_and_one_always_fails() -> None:
    assert await images(make_job(width=16, height=16, options={"fail_rate": 0})) != []
    with pytest.raises(errors.UpstreamError):
        await collect(make_job(width=16, height=16, options={"fail_rate": 1.0}))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("latency_ms", "100"),
        ("latency_ms", -1),
        ("latency_ms", 600_001),
        ("latency_ms", True),
        ("latency_ms", 1.5),
        ("fail", "explode"),
        ("fail", 3),
        ("fail_rate", 1.5),
        ("fail_rate", "0.5"),
        ("fail_rate", float("nan")),
        ("fail_rate", False),
    ],
)
async def test_wrongly_typed_options_are_a_400_naming_the_option(name: str, value) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        await collect(make_job(options={name: value}))
    assert caught.value.status == 400
    assert name in caught.value.message


async def test_unknown_options_are_ignored() -> None:
    assert len(await images(make_job(options={"colour_scheme": "loud", "latency_ms": 0}))) == 1


# --- latency ----------------------------------------------------------------------------------


async def test_latency_delays_the_output_and_reports_progress() -> None:
    start = time.monotonic()
    events = await collect(make_job(width=32, height=32, options={"latency_ms": 1200}))
    elapsed = time.monotonic() - start
    assert elapsed >= 1.2
    progress = [e for e in events if isinstance(e, Progress)]
    assert len(progress) >= 2
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] < 1
    first_image = next(i for i, e in enumerate(events) if isinstance(e, Image))
    assert all(isinstance(e, Progress) for e in events[:first_image])


async def test_latency_stops_at_the_job_deadline_with_an_upstream_timeout() -> None:
    deadline = time.monotonic() + 0.3
    job = make_job(width=32, height=32, options={"latency_ms": 30_000}, deadline=deadline)
    start = time.monotonic()
    with pytest.raises(errors.UpstreamTimeout):
        await collect(job)
    assert time.monotonic() - start < 2


async def test_failure_comes_after_the_latency() -> None:
    start = time.monotonic()
    with pytest.raises(errors.UpstreamOverloaded):
        await collect(make_job(options={"latency_ms": 300, "fail": "overloaded"}))
    assert time.monotonic() - start >= 0.3


# --- usage ------------------------------------------------------------------------------------


async def test_usage_counts_are_exact() -> None:
    refs = (solid_png((1, 2, 3), (640, 480)), solid_png((4, 5, 6), (100, 100)))
    job = make_job("a red circle!", 96, 80, n=3, references=refs)  # 13 characters
    events = await collect(job)
    done = events[-1]
    assert isinstance(done, Done)
    assert done.usage == Usage(
        output_images=3,
        output_pixels=96 * 80 * 3,
        output_image_tokens=3 * 8,  # ceil(7680 / 1024) = 8
        input_images=2,
        input_pixels=640 * 480 + 100 * 100,
        input_image_tokens=300 + 10,  # ceil(307200/1024) + ceil(10000/1024)
        input_text_tokens=4,  # ceil(13 / 4)
        requests=1,
    )


async def test_usage_for_a_one_character_prompt_counts_one_text_token() -> None:
    events = await collect(make_job("x", 16, 16))
    assert events[-1].usage.input_text_tokens == 1
    assert events[-1].usage.input_images == 0
    assert events[-1].usage.input_pixels == 0


# --- off the event loop -----------------------------------------------------------------------


async def test_rendering_runs_off_the_event_loop(monkeypatch) -> None:
    threads: list[str] = []
    original = sandbox_provider._produce

    def spy(spec, index):
        threads.append(threading.current_thread().name)
        return original(spec, index)

    monkeypatch.setattr(sandbox_provider, "_produce", spy)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await images(make_job(width=1024, height=1024, n=2))
    finally:
        task.cancel()
    assert threads and all(name.startswith("imagegate-imaging") for name in threads)
    assert ticks > 2


async def test_1024_png_renders_well_under_a_second() -> None:
    start = time.perf_counter()
    (data,) = await images(make_job("a sunset over mountains", 1024, 1024, quality="high"))
    assert time.perf_counter() - start < 1.5
    assert imaging.probe(data).width == 1024
