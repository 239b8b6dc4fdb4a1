"""The sandbox provider: options and injected faults, usage, and the images of one job, each
rendered in a worker thread."""

from __future__ import annotations

import asyncio
import functools
import math
import random
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from imagegate import errors, imaging
from imagegate.providers.base import (
    MEDIA_TYPES,
    Blob,
    Done,
    Image,
    Partial,
    Progress,
    ProviderEvent,
    ProviderJob,
    TextChunk,
    Usage,
)
from imagegate.providers.sandbox.raster import blocky, blurred, render_raster
from imagegate.providers.sandbox.scene import (
    DEFAULT_LEVEL,
    ReferenceLook,
    analyse_references,
    build_scene,
)
from imagegate.providers.sandbox.svg import render_svg

SLUG = "imagegate"
NAME = "imagegate sandbox"

OUTPUT_FORMATS = ("png", "jpeg", "webp", "svg")
#: quality → detail level; ``auto``/``None``/unknown → :data:`DEFAULT_LEVEL`.
QUALITY_LEVELS = {"low": 1, "standard": 2, "medium": 2, "high": 3, "hd": 3, "xhigh": 4, "max": 5}

# --- options ---
MAX_LATENCY_MS = 600_000
PROGRESS_INTERVAL_S = 1.0
SLEEP_STEP_S = 0.25
#: ``fail`` option values: each raises the error an upstream failure of that kind maps to.
FAIL_MODES = (
    "upstream_error",
    "overloaded",
    "timeout",
    "rate_limit",
    "content_policy",
    "bad_key",
    "after_first_image",
)
RATE_LIMIT_RETRY_AFTER_S = "2"

# --- usage ---
PIXELS_PER_IMAGE_TOKEN = 1024
CHARS_PER_TEXT_TOKEN = 4


@dataclass(frozen=True, slots=True)
class _Spec:
    """Everything one image depends on besides its index."""

    prompt: str
    width: int
    height: int
    level: int
    transparent: bool
    fmt: str
    compression: int | None
    stream: bool
    seed: int
    references: tuple[ReferenceLook, ...]


@dataclass(frozen=True, slots=True)
class _Rendered:
    previews: tuple[bytes | str, ...]  # raster previews, or SVG markup pieces
    final: bytes


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _level(quality: str | None) -> int:
    return QUALITY_LEVELS.get((quality or "").lower(), DEFAULT_LEVEL)


# --- one image, in a worker thread ------------------------------------------------------------


def _produce(spec: _Spec, index: int) -> _Rendered:
    scene = build_scene(
        spec.prompt, spec.width, spec.height, seed=spec.seed, index=index, level=spec.level,
        transparent=spec.transparent, references=spec.references,
    )  # fmt: skip
    if spec.fmt == "svg":
        pieces = render_svg(scene)
        return _Rendered(tuple(pieces) if spec.stream else (), "".join(pieces).encode("utf-8"))
    image = render_raster(scene, spec.level)
    previews: tuple[bytes | str, ...] = ()
    if spec.stream:
        previews = tuple(
            imaging.encode(preview, spec.fmt, spec.compression)
            for preview in (blocky(image), blurred(image))
        )
    return _Rendered(previews, imaging.encode(image, spec.fmt, spec.compression))


# --- the provider -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Options:
    latency_ms: int = 0
    fail: str | None = None
    fail_rate: float = 0.0
    #: How long the call goes on after its last event, as an upstream's connection closing does.
    linger_ms: int = 0


def _option_error(name: str, expected: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(
        f"option '{name}' must be {expected}", metadata={"option": name}
    )


def parse_options(options: Mapping[str, Any]) -> _Options:
    """Validate the sandbox's passthrough options; unknown keys are ignored."""
    latency, linger = (_milliseconds(options, name) for name in ("latency_ms", "linger_ms"))
    fail = options.get("fail")
    if fail is not None and (not isinstance(fail, str) or fail not in FAIL_MODES):
        raise _option_error("fail", "one of " + ", ".join(FAIL_MODES))
    rate = options.get("fail_rate")
    if rate is None:
        rate = 0.0
    elif (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not math.isfinite(rate)
        or not 0 <= rate <= 1
    ):
        raise _option_error("fail_rate", "a number from 0 to 1")
    return _Options(latency, fail, float(rate), linger)


def _milliseconds(options: Mapping[str, Any], name: str) -> int:
    value = options.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LATENCY_MS:
        raise _option_error(name, f"an integer from 0 to {MAX_LATENCY_MS} (milliseconds)")
    return value


def injected_error(mode: str) -> errors.UpstreamError:
    """The error a ``fail`` mode raises."""
    if mode == "overloaded":
        return errors.UpstreamOverloaded("sandbox: injected overload")
    if mode == "timeout":
        return errors.UpstreamTimeout("sandbox: injected upstream timeout")
    if mode == "rate_limit":
        return errors.UpstreamRateLimited(
            "sandbox: injected rate limit", headers={"Retry-After": RATE_LIMIT_RETRY_AFTER_S}
        )
    if mode == "content_policy":
        return errors.ContentRefused("sandbox: injected content policy refusal")
    if mode == "bad_key":
        return errors.UpstreamError(
            "sandbox: the provider rejected the operator's API key",
            metadata={"provider_key_rejected": True},
        )
    if mode == "after_first_image":
        return errors.UpstreamError("sandbox: injected upstream failure after the first image")
    return errors.UpstreamError("sandbox: injected upstream failure")


def compute_usage(job: ProviderJob) -> Usage:
    w, h, n = job.size.width, job.size.height, job.n
    ref_pixels = [ref.width * ref.height for ref in job.references]
    return Usage(
        output_images=n,
        output_pixels=w * h * n,
        output_image_tokens=n * _ceil_div(w * h, PIXELS_PER_IMAGE_TOKEN),
        input_images=len(job.references),
        input_pixels=sum(ref_pixels),
        input_image_tokens=sum(_ceil_div(p, PIXELS_PER_IMAGE_TOKEN) for p in ref_pixels),
        input_text_tokens=max(1, _ceil_div(len(job.prompt), CHARS_PER_TEXT_TOKEN)),
        requests=1,
    )


class SandboxProvider:
    """The ``imagegate`` provider: deterministic offline pictures, see the package docstring."""

    slug = SLUG
    name = NAME

    #: Needs no configuration: always available.
    env: dict[str, str] = {}

    def __init__(self, *, failure_rng: random.Random | None = None) -> None:
        #: Decides ``fail_rate`` failures; seeded from OS entropy, never from a job's seed.
        self._failure_rng = failure_rng or random.Random()

    @classmethod
    def configure(cls, config: Mapping[str, Any], http: object) -> SandboxProvider:
        return cls()

    def _check(self, job: ProviderJob) -> str:
        fmt = (job.output_format or "png").lower()
        fmt = "jpeg" if fmt == "jpg" else fmt
        if fmt not in OUTPUT_FORMATS:
            raise errors.InvalidRequest(
                f"sandbox: output_format must be one of {', '.join(OUTPUT_FORMATS)}, not {fmt!r}"
            )
        if job.n < 1:
            raise errors.InvalidRequest("sandbox: n must be at least 1")
        w, h = job.size.width, job.size.height
        if w < 1 or h < 1 or w * h > imaging.MAX_PIXELS:
            raise errors.InvalidRequest(f"sandbox: cannot draw {w}x{h} pixels")
        return fmt

    async def _wait(self, latency_ms: int, deadline: float | None) -> AsyncIterator[Progress]:
        total = latency_ms / 1000
        start = time.monotonic()
        next_progress = start
        while True:
            now = time.monotonic()
            elapsed = now - start
            if elapsed >= total:
                return
            if deadline is not None and now >= deadline:
                raise errors.UpstreamTimeout("sandbox: the deadline passed during latency_ms")
            if now >= next_progress:
                yield Progress(round(elapsed / total, 3))
                next_progress += PROGRESS_INTERVAL_S
            step = min(SLEEP_STEP_S, total - elapsed, next_progress - now)
            if deadline is not None:
                step = min(step, max(0.0, deadline - now))
            await asyncio.sleep(max(0.0, step))

    async def run(self, job: ProviderJob) -> AsyncIterator[ProviderEvent]:
        options = parse_options({**job.settings.get("options", {}), **job.options})
        fmt = self._check(job)
        if options.latency_ms:
            async for progress in self._wait(options.latency_ms, job.deadline):
                yield progress
        if options.fail is not None and options.fail != "after_first_image":
            raise injected_error(options.fail)
        if options.fail_rate and self._failure_rng.random() < options.fail_rate:
            raise errors.UpstreamError("sandbox: injected upstream failure (fail_rate)")

        references: tuple[ReferenceLook, ...] = ()
        if job.references:
            references = await imaging.offload(analyse_references, job.references)
        spec = _Spec(
            prompt=job.prompt,
            width=job.size.width,
            height=job.size.height,
            level=_level(job.quality),
            transparent=job.background == "transparent",
            fmt=fmt,
            compression=job.output_compression,
            stream=job.stream,
            seed=job.seed if job.seed is not None else secrets.randbits(63),
            references=references,
        )
        media_type = MEDIA_TYPES[fmt]
        count = 1 if options.fail == "after_first_image" else job.n
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(imaging.EXECUTOR, functools.partial(_produce, spec, i))
            for i in range(count)
        ]
        try:
            for index, future in enumerate(futures):
                rendered = await future
                for preview in rendered.previews:
                    if isinstance(preview, str):
                        yield TextChunk(preview, phase="draft")
                    else:
                        yield Partial(index, Blob.from_raw(preview), media_type)
                yield Image(Blob.from_raw(rendered.final), media_type, spec.width, spec.height)
                if options.fail == "after_first_image":
                    raise injected_error("after_first_image")
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # retrieved: never "exception was never retrieved"
        yield Done(compute_usage(job))
        if options.linger_ms:
            await asyncio.sleep(options.linger_ms / 1000)
