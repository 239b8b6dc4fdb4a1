"""OpenAI's Images API (the GPT image models), direct and through Azure OpenAI deployments.

Both speak one wire format (spec providers.md §1): ``POST /images/generations`` with JSON,
``POST /images/edits`` with multipart ``image[]`` files when there are references, base64
images and token usage in the answer, and SSE ``*.partial_image`` / ``*.completed`` events
with ``stream: true``. They differ only in where a request goes and how it authenticates:
OpenAI takes ``model`` in the body and a bearer key; Azure names a deployment in the URL,
needs ``api-version`` and sends the key as ``api-key``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
import orjson
import pybase64

from imagegate import imaging
from imagegate.errors import UpstreamError
from imagegate.fanout import fan_out
from imagegate.providers import NotConfigured, require
from imagegate.providers.base import (
    MEDIA_TYPES,
    Blob,
    Done,
    Image,
    Partial,
    ProviderEvent,
    ProviderJob,
    ReferenceImage,
    RelayedImage,
    Usage,
    usage_count,
)
from imagegate.providers.http import HttpPool, Reply, SseEvent, loads_lifted, upstream_error
from imagegate.providers.relay import (
    HEAD_B64_CHARS,
    START,
    VALUE,
    ByteRelay,
    JsonValueScanner,
    lifted_index,
)

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: The Azure data-plane version that serves the GPT image models' generations and edits
#: (Azure inference reference, 2025-04-01-preview; later versions are set by the operator).
AZURE_API_VERSION = "2025-04-01-preview"

GENERATIONS = "/images/generations"
EDITS = "/images/edits"

#: Previews asked for when streaming (the API allows 0-3; each costs ~100 output tokens);
#: an endpoint's ``settings.partial_images`` overrides it.
PARTIAL_IMAGES = 2
#: ``output_compression`` is only accepted with these formats (SDK ``image_generate_params``).
COMPRESSED_FORMATS = ("jpeg", "webp")
#: Reference files the edits endpoint takes (SDK ``image_edit_params``: png, webp or jpg).
REFERENCE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp")

#: Error codes meaning "refused on content grounds": OpenAI's GPT image moderation, and the
#: content filter Azure puts in front of the same models.
REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation", "content_filter"})
#: OpenAI reports an exhausted balance as 429 ``insufficient_quota``, never 402.
OUT_OF_CREDIT_CODES = frozenset({"insufficient_quota"})


@dataclass(frozen=True, slots=True)
class _Route:
    """Where one call goes and how it authenticates."""

    url: str
    headers: Mapping[str, str]
    #: The body's ``model``; ``None`` where the URL already names the deployment.
    model: str | None


class _ImagesApi:
    """The Images API mechanism; subclasses say only where requests go."""

    slug: str
    name: str

    def __init__(self, http: HttpPool) -> None:
        self._http = http

    def _route(self, upstream_model: str, operation: str) -> _Route:
        raise NotImplementedError

    async def run(self, job: ProviderJob) -> AsyncIterator[ProviderEvent]:
        if job.stream and job.n > 1:
            # A completed event names no image, and what its usage covers with n > 1 is
            # undocumented: one stream per image keeps previews and billing unambiguous.
            async for event in fan_out(self, job, 1):
                yield event
            return
        operation = EDITS if job.references else GENERATIONS
        route = self._route(job.upstream_model, operation)
        fields = _fields(job, route.model)
        if job.references:
            body: dict[str, Any] = {"data": await _multipart(fields, job.references)}
        else:
            body = {"json": fields}
        if job.stream:
            events = self._http.stream_lines(
                self.name,
                "POST",
                route.url,
                deadline=job.deadline,
                headers=route.headers,
                on_error=self._error,
                **body,
            )
            async for event in _stream_events(self.name, job, events):
                yield event
            return
        if job.relay_from is not None:
            # An answer too short to hold an image worth relaying is read whole: cheaper (measured).
            chunks = self._http.stream_body(
                self.name, "POST", route.url, deadline=job.deadline, headers=route.headers,
                on_error=self._error, whole_below=job.relay_from, **body,
            )
            async for event in _relayed_events(self.name, job, chunks):
                yield event
            return
        reply = await self._http.request(
            self.name, "POST", route.url, deadline=job.deadline, headers=route.headers, **body
        )
        if not reply.ok:
            raise self._error(reply)
        for event in _response_events(self.name, job, reply):
            yield event

    def _error(self, reply: Reply) -> UpstreamError:
        return _upstream_error(self.name, reply)


class OpenAIProvider(_ImagesApi):
    """api.openai.com (or any server of the same API at ``base_url``)."""

    slug = "openai"
    name = "OpenAI"
    env: ClassVar[dict[str, str]] = {
        "api_key": "OPENAI_API_KEY",
        "base_url": "OPENAI_BASE_URL",
        "organization": "OPENAI_ORG_ID",
    }

    def __init__(
        self,
        http: HttpPool,
        *,
        api_key: str,
        base_url: str = OPENAI_BASE_URL,
        organization: str | None = None,
    ) -> None:
        super().__init__(http)
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        if organization:
            self._headers["OpenAI-Organization"] = organization

    @classmethod
    def configure(cls, config: Mapping[str, Any], http: HttpPool) -> OpenAIProvider:
        return cls(
            http,
            api_key=require(config, "api_key", cls.env["api_key"]),
            base_url=config.get("base_url") or OPENAI_BASE_URL,
            organization=config.get("organization"),
        )

    def _route(self, upstream_model: str, operation: str) -> _Route:
        return _Route(self._base_url + operation, self._headers, upstream_model)


class AzureOpenAIProvider(_ImagesApi):
    """Azure OpenAI: one deployment per model, named in the URL.

    ``deployments`` maps upstream model names to deployment names, as a mapping (YAML) or as
    ``"gpt-image-2=my-dep,gpt-image-1.5=dep2"`` (environment); a model not listed is
    assumed deployed under its own name, Azure's default when deploying.
    """

    slug = "azure"
    name = "Azure"
    env: ClassVar[dict[str, str]] = {
        "api_key": "AZURE_OPENAI_API_KEY",
        "endpoint": "AZURE_OPENAI_ENDPOINT",
        "api_version": "AZURE_OPENAI_API_VERSION",
        "deployments": "AZURE_OPENAI_DEPLOYMENTS",
    }

    def __init__(
        self,
        http: HttpPool,
        *,
        api_key: str,
        endpoint: str,
        api_version: str = AZURE_API_VERSION,
        deployments: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(http)
        self._endpoint = endpoint.rstrip("/")
        self._api_version = api_version
        self._deployments = dict(deployments or {})
        self._headers = {"api-key": api_key}

    @classmethod
    def configure(cls, config: Mapping[str, Any], http: HttpPool) -> AzureOpenAIProvider:
        return cls(
            http,
            api_key=require(config, "api_key", cls.env["api_key"]),
            endpoint=require(config, "endpoint", cls.env["endpoint"]),
            api_version=config.get("api_version") or AZURE_API_VERSION,
            deployments=parse_deployments(config.get("deployments"), cls.env["deployments"]),
        )

    def _route(self, upstream_model: str, operation: str) -> _Route:
        deployment = quote(self._deployments.get(upstream_model, upstream_model), safe="")
        url = (
            f"{self._endpoint}/openai/deployments/{deployment}{operation}"
            f"?api-version={quote(self._api_version, safe='')}"
        )
        return _Route(url, self._headers, None)


def parse_deployments(value: Mapping[str, str] | str | None, variable: str) -> dict[str, str]:
    """Model → deployment, from a mapping or from ``"model=deployment,..."``."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        return {str(model): str(deployment) for model, deployment in value.items()}
    deployments = {}
    for pair in str(value).split(","):
        model, sep, deployment = (part.strip() for part in pair.partition("="))
        if not (sep and model and deployment):
            raise NotConfigured(
                f"{variable}: expected model=deployment pairs separated by commas, got {pair!r}"
            )
        deployments[model] = deployment
    return deployments


# --- the wire request ---


def _fields(job: ProviderJob, model: str | None) -> dict[str, Any]:
    """The request body's fields, before JSON or multipart encoding."""
    fields: dict[str, Any] = {"prompt": job.prompt, "n": job.n}
    if model is not None:
        fields["model"] = model
    fields["size"] = f"{job.size.width}x{job.size.height}"
    fields["output_format"] = job.output_format
    if job.output_compression is not None and job.output_format in COMPRESSED_FORMATS:
        fields["output_compression"] = job.output_compression
    if job.quality is not None:
        fields["quality"] = job.quality
    if job.background is not None:
        fields["background"] = job.background
    fields.update(job.options)  # passthrough, already limited to the endpoint's allow-list
    if job.stream:
        fields["stream"] = True
        fields["partial_images"] = int(job.settings.get("partial_images", PARTIAL_IMAGES))
    return fields


async def _multipart(
    fields: Mapping[str, Any], references: tuple[ReferenceImage, ...]
) -> aiohttp.FormData:
    """An edits request: fields as form strings, every reference as a repeated ``image[]`` file."""
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, _form_value(value))
    for index, reference in enumerate(references):
        data, media_type = reference.data, reference.media_type
        if media_type not in REFERENCE_MEDIA_TYPES:  # e.g. a GIF reference
            data = await imaging.transcode_async(data, to_format="png")
            media_type = MEDIA_TYPES["png"]
        extension = media_type.removeprefix("image/")
        form.add_field(
            "image[]", data, filename=f"reference-{index}.{extension}", content_type=media_type
        )
    return form


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


# --- the answer ---


def _response_events(provider_name: str, job: ProviderJob, reply: Reply) -> list[ProviderEvent]:
    # The images are sliced out as base64 bytes, never decoded into str (see loads_lifted).
    body, lifted = loads_lifted(reply.body, "b64_json")
    return _answer_events(provider_name, job, body, {lifted_index(k): v for k, v in lifted.items()})


def _answer_events(
    provider_name: str, job: ProviderJob, body: Any, values: Mapping[int | None, bytes | memoryview | None]
) -> list[ProviderEvent]:
    """The events of a whole answer: ``body`` is its document with a placeholder for each
    lifted image, ``values`` those images by index (``None``: relayed already)."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not data:
        raise UpstreamError(
            f"{provider_name} returned a malformed response",
            metadata={"provider_name": provider_name},
        )
    media_type = _media_type(body.get("output_format"), job)
    width, height = _dimensions(body.get("size"))
    events: list[ProviderEvent] = []
    for item in data:
        b64 = item.get("b64_json") if isinstance(item, dict) else None
        index = lifted_index(b64)
        if index is not None and index in values and values[index] is None:
            continue  # relayed already
        value = values.get(index) if index is not None else b64
        if not value or not isinstance(value, str | bytes | memoryview):
            raise UpstreamError(
                f"{provider_name} returned an image without data",
                metadata={"provider_name": provider_name},
            )
        events.append(Image(Blob.from_b64(value), media_type, width, height))
    events.append(Done(_usage(provider_name, body.get("usage"))))
    return events


async def _relayed_events(
    provider_name: str, job: ProviderJob, chunks: AsyncIterator[bytes]
) -> AsyncIterator[ProviderEvent]:
    """The answer of ``_response_events``, read as it arrives: each image is handed on as a
    ``RelayedImage`` once ``job.relay_from`` bytes of it are in. An image shorter than that,
    and every one after it (order is kept), is handed on whole once the answer is complete."""
    relay_from = max(job.relay_from or 0, HEAD_B64_CHARS)
    scanner = JsonValueScanner("b64_json")
    values: dict[int | None, bytes | memoryview | None] = {}  # None: relayed
    head: list[bytes] = []
    head_chars = 0
    relay: ByteRelay | None = None
    relaying = True
    current = 0
    try:
        async for chunk in chunks:
            for kind, item in scanner.feed(chunk):
                if kind == START:
                    current, head, head_chars = item, [], 0
                elif kind == VALUE and relay is not None:
                    await relay.put(item)
                elif kind == VALUE:
                    head.append(item)
                    head_chars += len(item)
                    if relaying and head_chars >= relay_from:
                        relay = ByteRelay(b"".join(head))
                        values[current] = None
                        yield RelayedImage(relay, *_head_info(relay.head, job))
                elif relay is not None:  # END of a relayed image
                    relay.end()
                    relay = None
                else:  # END of an image held whole (a view of the read when it came in one)
                    values[item] = head[0] if len(head) == 1 else b"".join(head)
                    relaying = False
    except BaseException as exc:
        if relay is not None:
            relay.end(exc)
        raise
    for event in _answer_events(provider_name, job, scanner.document(), values):
        yield event


def _head_info(head: bytes, job: ProviderJob) -> tuple[str, int | None, int | None]:
    """Format and size from the image's own header; what was asked for when it cannot be read."""
    try:
        info = imaging.probe(pybase64.b64decode(head[: len(head) // 4 * 4], validate=True))
    except ValueError:
        return _media_type(None, job), job.size.width, job.size.height
    return info.media_type, info.width, info.height


async def _stream_events(
    provider_name: str, job: ProviderJob, events: AsyncIterator[SseEvent]
) -> AsyncIterator[ProviderEvent]:
    """``image_generation.*`` / ``image_edit.*`` events of one image (n = 1) as provider events."""
    async for sse in events:
        if len(sse) < 16 and sse.data.strip() == b"[DONE]":  # not documented for images; the SDK takes one
            continue
        event, lifted = loads_lifted(sse.buffer, "b64_json", sse.start, sse.end)
        if event is None:
            raise UpstreamError(
                f"{provider_name} sent a malformed stream event",
                metadata={"provider_name": provider_name},
            )
        if not isinstance(event, dict):
            continue
        if "error" in event:
            raise _stream_error(provider_name, event)
        kind = str(event.get("type", ""))
        b64 = event.get("b64_json")
        if not isinstance(b64, str) or not b64:
            continue
        media_type = _media_type(event.get("output_format"), job)
        blob = Blob.from_b64(lifted.get(b64, b64))
        if kind.endswith(".partial_image"):
            yield Partial(0, blob, media_type)
        elif kind.endswith(".completed"):
            yield Image(blob, media_type, *_dimensions(event.get("size")))
            yield Done(_usage(provider_name, event.get("usage")))
            return
    raise UpstreamError(
        f"{provider_name} ended the stream before the image was complete",
        metadata={"provider_name": provider_name},
    )


def _usage(provider_name: str, raw: Any) -> Usage:
    """Token usage: ``input_tokens`` split by ``input_tokens_details.{text_tokens,image_tokens}``,
    ``output_tokens`` by ``output_tokens_details.{image_tokens,text_tokens}`` (SDK
    ``ImagesResponse.Usage``; optional, and absent from the streamed events' type: without it
    every output token is an image token)."""
    if not isinstance(raw, dict):
        log.warning(
            "%s answered without token usage; the generation is billed nothing", provider_name
        )
        return Usage()
    details = raw.get("input_tokens_details") or {}
    image_in = usage_count(details.get("image_tokens"), "input image tokens", provider_name)
    text_in = details.get("text_tokens")
    if text_in is None:  # only the total: the rest of it is the prompt
        text_in = max(0, usage_count(raw.get("input_tokens"), "input tokens", provider_name) - image_in)
    output = usage_count(raw.get("output_tokens"), "output tokens", provider_name)
    details = raw.get("output_tokens_details") or {}
    text_out = usage_count(details.get("text_tokens"), "output text tokens", provider_name)
    image_out = details.get("image_tokens")
    if image_out is None:  # only the total: the rest of it is the image
        image_out = max(0, output - text_out)
    return Usage(
        input_text_tokens=usage_count(text_in, "input text tokens", provider_name),
        input_image_tokens=image_in,
        output_image_tokens=usage_count(image_out, "output image tokens", provider_name),
        output_text_tokens=text_out,
    )


def _media_type(output_format: Any, job: ProviderJob) -> str:
    """The format the answer says it has, else the one asked for."""
    return MEDIA_TYPES.get(str(output_format)) or MEDIA_TYPES[job.output_format]


def _dimensions(size: Any) -> tuple[int | None, int | None]:
    """The answer's ``size`` ("WxH"; free-form on gpt-image-2) when it has one: what the image
    is checked against, so never what was asked in its place."""
    width, sep, height = str(size or "").partition("x")
    if sep and width.isdigit() and height.isdigit():
        return int(width), int(height)
    return None, None


# --- errors ---


def _upstream_error(provider_name: str, reply: Reply) -> UpstreamError:
    """The common table, told which codes mean a refusal or an empty account."""
    error = reply.json()
    error = error.get("error") if isinstance(error, dict) else None
    code = str(error.get("code") or "") if isinstance(error, dict) else ""
    inner = error.get("innererror") if isinstance(error, dict) else None
    if isinstance(inner, dict) and inner.get("code") == "ResponsibleAIPolicyViolation":
        code = "content_filter"  # Azure: the filter's verdict is in innererror
    return upstream_error(
        provider_name,
        reply,
        refused=code in REFUSAL_CODES,
        out_of_credit=code in OUT_OF_CREDIT_CODES,
    )



def _stream_error(provider_name: str, event: Mapping[str, Any]) -> UpstreamError:
    """An error event after the stream began: a moderation verdict on the output, or a failure."""
    error = event.get("error")
    code = str(error.get("code") or "") if isinstance(error, dict) else ""
    status = 400 if code in REFUSAL_CODES else 502
    return _upstream_error(provider_name, Reply(status, {}, orjson.dumps({"error": error})))
