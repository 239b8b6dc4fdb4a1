"""Stability AI: Stable Image Ultra, Stable Image Core and Stable Diffusion 3.5 (REST v2beta).

Generation is one synchronous ``multipart/form-data`` call per image to
``POST /v2beta/stable-image/generate/{ultra|core|sd3}`` (wire format: shared/spec/providers.md
§5); the catalog sets ``images_per_call: 1`` so the gateway fans out for ``n`` > 1. Stability
sizes by ``aspect_ratio`` alone, at a fixed pixel count per model, so the catalog's size table
labels each size with the ratio sent here.

We ask for ``Accept: image/*``: the image arrives as raw bytes (finish reason and seed in
headers), a quarter smaller on the wire than the base64 JSON variant, with no multi-megabyte
JSON string to parse. The gateway decodes every output anyway (it records dimensions and a
hash), so forwarding Stability's base64 untouched would save nothing; encoding the bytes once
costs ~0.1 ms for a 3 MB PNG against ~5 ms for parsing and decoding the JSON variant (measured).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import aiohttp

from imagegate import imaging
from imagegate.errors import InvalidRequest, UpstreamError
from imagegate.providers import require
from imagegate.providers.base import (
    FORMATS_BY_MEDIA_TYPE,
    MEDIA_TYPES,
    Blob,
    Done,
    Image,
    ProviderEvent,
    ProviderJob,
    ReferenceImage,
    Usage,
)
from imagegate.providers.http import HttpPool, Reply, upstream_error

SLUG = "stability"
NAME = "Stability AI"
DEFAULT_BASE_URL = "https://api.stability.ai"
GENERATE_PATH = "/v2beta/stable-image/generate/"

#: Services with a path of their own; any other upstream model is an SD 3.5 model id, sent
#: as the ``model`` field of the ``sd3`` service (providers.md §5, "Endpoints").
OWN_SERVICES = frozenset({"ultra", "core"})
SD3 = "sd3"
#: Services that take an ``image`` upload; Core is text-to-image only (providers.md §5 table).
IMAGE_SERVICES = frozenset({"ultra", SD3})
#: ``seed`` is 0…4,294,967,294 (providers.md §5); other integers are folded into it. 0 asks
#: Stability for a random seed.
SEED_MODULUS = 4_294_967_295
#: ``strength`` is required with an ``image``; when the client sets none, keep the reference's
#: composition about half-way (ComfyUI's Stability nodes default to 0.5 as well).
DEFAULT_STRENGTH = 0.5
#: Upload formats Stability decodes (providers.md §5, "Input images"); others go as PNG.
REFERENCE_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})
#: A request over 10 MiB is a 413 (providers.md §5, "Errors"); a larger reference is re-encoded
#: as JPEG so the whole form stays under it.
MAX_REFERENCE_BYTES = 9 * 1024 * 1024
#: Passthrough options (``provider.options.stability``) and the JSON types each must have;
#: the catalog says which endpoint allows which, and Stability checks the values. An option an
#: operator's catalog allows beyond these is sent as it is, if it is a string or a number.
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "negative_prompt": (str,),
    "style_preset": (str,),
    "strength": (int, float),
    "cfg_scale": (int, float),
}
#: What the generate services can encode (providers.md §5, ``output_format``).
OUTPUT_FORMATS = ("png", "jpeg", "webp")
#: ``finish-reason`` of a 200 whose image Stability blurred: a content refusal (providers.md §5).
CONTENT_FILTERED = "CONTENT_FILTERED"
#: ``name`` of the 403 Stability answers for a flagged prompt or image (not a key problem).
CONTENT_MODERATION = "content_moderation"


class StabilityProvider:
    """Generates through Stability's v2beta REST API with an account API key."""

    slug = SLUG
    name = NAME
    env: ClassVar[dict[str, str]] = {
        "api_key": "STABILITY_API_KEY",
        "base_url": "STABILITY_BASE_URL",
    }

    def __init__(self, *, api_key: str, base_url: str, http: HttpPool) -> None:
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._http = http

    @classmethod
    def configure(cls, config: Mapping[str, Any], http: HttpPool) -> StabilityProvider:
        return cls(
            api_key=require(config, "api_key", "STABILITY_API_KEY"),
            base_url=config.get("base_url") or DEFAULT_BASE_URL,
            http=http,
        )

    async def run(self, job: ProviderJob) -> AsyncIterator[ProviderEvent]:
        service = _service(job.upstream_model)
        url = f"{self._base_url}{GENERATE_PATH}{service}"
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "image/*"}
        fields = _form_fields(job, service)
        reference = (
            await _upload(job.references[0])
            if job.references and service in IMAGE_SERVICES
            else None
        )
        # One image per call; the catalog's ``images_per_call: 1`` normally makes n 1 here.
        for call in range(job.n):
            form = _form(fields, reference, seed=None if job.seed is None else job.seed + call)
            reply = await self._http.request(
                NAME, "POST", url, deadline=job.deadline, headers=headers, data=form
            )
            yield _result(reply)
        yield Done(Usage(requests=job.n))


# --- wire request ---


def _service(upstream_model: str) -> str:
    return upstream_model if upstream_model in OWN_SERVICES else SD3


def _form_fields(job: ProviderJob, service: str) -> dict[str, str]:
    """Every text field of the form except ``seed`` (which varies per call)."""
    fields = {"prompt": job.prompt, "output_format": job.output_format}
    if service == SD3:
        fields["model"] = job.upstream_model
    options = _checked_options(job.options)
    strength = options.pop("strength", DEFAULT_STRENGTH)
    fields.update(options)
    with_image = bool(job.references) and service in IMAGE_SERVICES
    if with_image:
        fields["strength"] = strength
    if service == SD3:
        fields["mode"] = "image-to-image" if with_image else "text-to-image"
    # SD 3.5 takes its shape from the input image; aspect_ratio is text-to-image only there.
    if not (with_image and service == SD3):
        fields["aspect_ratio"] = job.size.aspect_ratio
    return {name: _text(value) for name, value in fields.items()}


def _checked_options(options: Mapping[str, Any]) -> dict[str, Any]:
    checked = {}
    for name, value in options.items():
        types = OPTION_TYPES.get(name, (str, int, float))
        if isinstance(value, bool) or not isinstance(value, types):
            kind = {(str,): "a string", (int, float): "a number"}.get(types, "a string or a number")
            raise InvalidRequest(
                f"provider.options.{SLUG}.{name} must be {kind}",
                metadata={"param": f"provider.options.{SLUG}.{name}"},
            )
        checked[name] = value
    return checked


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


async def _upload(reference: ReferenceImage) -> tuple[bytes, str]:
    """The reference as Stability accepts it: PNG, JPEG or WebP under the request size cap."""
    data, media_type = reference.data, reference.media_type
    if media_type not in REFERENCE_MEDIA_TYPES:
        data, media_type = await imaging.transcode_async(data, to_format="png"), MEDIA_TYPES["png"]
    if len(data) > MAX_REFERENCE_BYTES:
        data, media_type = (
            await imaging.transcode_async(reference.data, to_format="jpeg"),
            MEDIA_TYPES["jpeg"],
        )
    return data, media_type


def _form(
    fields: Mapping[str, str], reference: tuple[bytes, str] | None, *, seed: int | None
) -> aiohttp.FormData:
    # Stability wants multipart even when no file is attached; aiohttp would urlencode.
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    if seed is not None:
        form.add_field("seed", str(seed % SEED_MODULUS))
    if reference is not None:
        data, media_type = reference
        form.add_field(
            "image",
            data,
            filename=f"reference.{FORMATS_BY_MEDIA_TYPE[media_type]}",
            content_type=media_type,
        )
    return form


# --- response ---


def _result(reply: Reply) -> Image:
    if not reply.ok:
        raise _error(reply)
    finish_reason = reply.headers.get("finish-reason", "SUCCESS")
    if finish_reason == CONTENT_FILTERED:
        raise upstream_error(
            NAME, reply, refused=True, message="the output was flagged by its content filter"
        )
    if finish_reason != "SUCCESS":
        raise UpstreamError(
            f"{NAME} did not finish the image: {finish_reason}",
            metadata={"provider_name": NAME, "finish_reason": finish_reason},
        )
    fmt = imaging.sniff_format(reply.body)
    if fmt not in OUTPUT_FORMATS:
        raise UpstreamError(f"{NAME} answered without an image", metadata={"provider_name": NAME})
    return Image(Blob.from_raw(reply.body), MEDIA_TYPES[fmt])


# --- errors ---


def _error(reply: Reply) -> UpstreamError:
    """Stability's error body is ``{"id", "name", "errors": [...]}``. A 403 named
    ``content_moderation`` is a refusal, not a rejected key."""
    body = reply.json()
    name = body.get("name") if isinstance(body, dict) else None
    errors = body.get("errors") if isinstance(body, dict) else None
    message = "; ".join(str(e) for e in errors) if isinstance(errors, list) and errors else name
    return upstream_error(NAME, reply, message=message, refused=name == CONTENT_MODERATION)
