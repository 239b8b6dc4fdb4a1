"""Google Gemini image output through ``generateContent``, on two endpoints.

* **Google AI Studio** (the Gemini Developer API): ``x-goog-api-key`` from ``GEMINI_API_KEY``
  or ``api_key`` in imagegate.yaml (``GOOGLE_API_KEY``, the Google SDKs' other name for it, is
  used when neither is set).
* **Google Vertex** (Vertex AI): OAuth access tokens from Google's own ``google-auth``. A
  service account key file (``GOOGLE_APPLICATION_CREDENTIALS``) is read at startup, so a
  missing or broken file leaves the provider unconfigured with the reason; without one,
  application default credentials (``gcloud auth application-default login``, the GCE / Cloud
  Run metadata server) are looked up at the first request, in a worker thread, because that
  lookup may probe the metadata server over the network. Token refreshes are synchronous in
  google-auth, so they run in a worker thread too, one at a time; a token is reused until
  google-auth counts it stale (3 min 45 s before it expires).

Both send the same request and read the same answer; they differ only in URL and headers.
Gemini makes one image per call (no ``candidateCount`` for image models): the catalog sets
``images_per_call: 1`` and the gateway fans out. It picks the pixels itself from
``imageConfig.aspectRatio`` × ``imageSize``, the labels of the catalog's size table; the ratio
is always sent, so a request without one gets the 1:1 it was told about rather than Gemini's
own default (the references' ratio).

Safety blocks arrive as HTTP 200 (``promptFeedback.blockReason`` or a candidate's
``finishReason``) and become content-policy refusals; a 200 without an image is an upstream
error that says why.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import google.auth
import google.auth.exceptions
import google.auth.transport.requests
import pybase64
from google.auth.credentials import Credentials, TokenState
from google.oauth2 import service_account

from imagegate import imaging
from imagegate.errors import InvalidRequest, UpstreamError
from imagegate.providers import NotConfigured, require
from imagegate.providers.base import (
    MEDIA_TYPES,
    Blob,
    Done,
    Image,
    ProviderEvent,
    ProviderJob,
    TextChunk,
    Usage,
    usage_count,
)
from imagegate.providers.http import HttpPool, Reply, upstream_error

AI_STUDIO_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
#: Vertex's global endpoint; a region ``r`` is served by ``r-aiplatform.googleapis.com``.
VERTEX_HOST = "aiplatform.googleapis.com"
VERTEX_DEFAULT_LOCATION = "global"
VERTEX_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: One token request (google-auth's own default is 120 s).
TOKEN_TIMEOUT_S = 30.0

#: Image only: the Image API returns no text in a buffered answer, and text costs tokens.
RESPONSE_MODALITIES = ("IMAGE",)
#: Inline image types generateContent accepts (Vertex model cards); others are sent as PNG.
INPUT_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
#: Formats Vertex produces on request (``imageConfig.imageOutputOptions.mimeType``).
VERTEX_OUTPUT_FORMATS = frozenset({"png", "jpeg"})
#: ``provider.options`` keys that are top-level request fields, with their JSON type.
PASSTHROUGH_TYPES: Mapping[str, type] = {"cachedContent": str}

#: Candidate ``finishReason`` values that withhold the image on content grounds
#: (python-genai ``FinishReason``). Any ``promptFeedback.blockReason`` is a refusal too.
REFUSAL_FINISH_REASONS = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
})  # fmt: skip
#: ``google.rpc.ErrorInfo.reason`` prefix of a bad API key, which Google answers with a 400.
API_KEY_REASON_PREFIX = "API_KEY_"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"


# --- wire request ---


async def build_request(job: ProviderJob, *, output_mime_type: bool = False) -> dict[str, Any]:
    """The ``generateContent`` body for one image.

    ``output_mime_type`` asks for ``job.output_format`` (Vertex only: the Developer API
    rejects ``imageOutputOptions``).
    """
    parts: list[dict[str, Any]] = [{"text": job.prompt}]
    for reference in job.references:
        data, media_type = reference.data, reference.media_type
        if media_type not in INPUT_MEDIA_TYPES:  # a GIF reference
            data, media_type = (
                await imaging.transcode_async(data, to_format="png"),
                MEDIA_TYPES["png"],
            )
        parts.append(
            {
                "inlineData": {
                    "mimeType": media_type,
                    "data": pybase64.b64encode(data).decode("ascii"),
                }
            }
        )
    image_config: dict[str, Any] = {
        "aspectRatio": job.size.aspect_ratio,
        "imageSize": job.size.resolution,
    }
    if output_mime_type and job.output_format in VERTEX_OUTPUT_FORMATS:
        image_config["imageOutputOptions"] = {"mimeType": MEDIA_TYPES[job.output_format]}
    body: dict[str, Any] = {
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {
            "responseModalities": list(RESPONSE_MODALITIES),
            "imageConfig": image_config,
        },
    }
    for key, value in job.options.items():
        if not isinstance(value, PASSTHROUGH_TYPES[key]):
            raise InvalidRequest(
                f"provider option {key} must be a {PASSTHROUGH_TYPES[key].__name__}",
                metadata={"param": f"provider.options.{key}"},
            )
        body[key] = value
    return body


# --- the providers ---


class _GeminiProvider(abc.ABC):
    """``generateContent`` for one image; subclasses say where, and with which credentials."""

    slug: ClassVar[str]
    name: ClassVar[str]
    #: Whether the endpoint takes ``imageConfig.imageOutputOptions``.
    output_mime_type: ClassVar[bool] = False

    def __init__(self, http: HttpPool) -> None:
        self._http = http

    async def run(self, job: ProviderJob) -> AsyncIterator[ProviderEvent]:
        body = await build_request(job, output_mime_type=self.output_mime_type)
        headers = await self._headers(job.deadline)
        reply = await self._http.request(
            self.name,
            "POST",
            self._url(job.upstream_model),
            deadline=job.deadline,
            headers=headers,
            json=body,
        )
        if not reply.ok:
            raise _error(self.name, reply)
        for event in parse_response(self.name, reply, limit=job.n):
            yield event

    @abc.abstractmethod
    def _url(self, model: str) -> str: ...

    @abc.abstractmethod
    async def _headers(self, deadline: float | None) -> dict[str, str]: ...


class GoogleAIStudioProvider(_GeminiProvider):
    slug = "google-ai-studio"
    name = "Google AI Studio"
    #: ``GOOGLE_API_KEY`` gets a field of its own: each field has one variable.
    env: ClassVar[Mapping[str, str]] = {
        "api_key": "GEMINI_API_KEY",
        "google_api_key": "GOOGLE_API_KEY",
        "base_url": "GEMINI_BASE_URL",
    }

    def __init__(self, http: HttpPool, *, api_key: str, base_url: str = AI_STUDIO_BASE_URL) -> None:
        super().__init__(http)
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")

    @classmethod
    def configure(cls, config: Mapping[str, Any], http: HttpPool) -> GoogleAIStudioProvider:
        api_key = config.get("api_key") or config.get("google_api_key")
        if not api_key:
            raise NotConfigured("set GEMINI_API_KEY (or GOOGLE_API_KEY)")
        return cls(http, api_key=api_key, base_url=config.get("base_url") or AI_STUDIO_BASE_URL)

    def _url(self, model: str) -> str:
        return f"{self._base_url}/models/{model}:generateContent"

    async def _headers(self, deadline: float | None) -> dict[str, str]:
        return {"x-goog-api-key": self._api_key}


class GoogleVertexProvider(_GeminiProvider):
    slug = "google-vertex"
    name = "Google Vertex"
    output_mime_type = True
    env: ClassVar[Mapping[str, str]] = {
        "project": "GOOGLE_CLOUD_PROJECT",
        "location": "GOOGLE_CLOUD_LOCATION",
        "credentials_file": "GOOGLE_APPLICATION_CREDENTIALS",
        "base_url": "VERTEX_BASE_URL",
    }

    def __init__(
        self,
        http: HttpPool,
        *,
        project: str,
        location: str = VERTEX_DEFAULT_LOCATION,
        credentials: Credentials | None = None,
        base_url: str | None = None,
    ) -> None:
        super().__init__(http)
        base = (base_url or vertex_base_url(location)).rstrip("/")
        self._models_url = (
            f"{base}/projects/{project}/locations/{location}/publishers/google/models"
        )
        self._credentials = credentials  # None: application default credentials, at first use
        self._credentials_lock = asyncio.Lock()

    @classmethod
    def configure(cls, config: Mapping[str, Any], http: HttpPool) -> GoogleVertexProvider:
        project = require(config, "project", "GOOGLE_CLOUD_PROJECT")
        path = config.get("credentials_file")
        return cls(
            http,
            project=project,
            location=config.get("location") or VERTEX_DEFAULT_LOCATION,
            credentials=load_service_account(path) if path else None,
            base_url=config.get("base_url"),
        )

    def _url(self, model: str) -> str:
        return f"{self._models_url}/{model}:generateContent"

    async def _headers(self, deadline: float | None) -> dict[str, str]:
        async with self._credentials_lock:  # concurrent calls (fan-out) share one refresh
            if self._credentials is None:
                self._credentials = await asyncio.to_thread(_default_credentials, self.name)
            if self._credentials.token_state is not TokenState.FRESH:
                await asyncio.to_thread(_refresh, self.name, self._credentials, deadline)
            headers: dict[str, str] = {}
            self._credentials.apply(headers)  # authorization, and a quota project if it has one
        return headers


def vertex_base_url(location: str) -> str:
    host = VERTEX_HOST if location == VERTEX_DEFAULT_LOCATION else f"{location}-{VERTEX_HOST}"
    return f"https://{host}/v1"


def load_service_account(path: str) -> Credentials:
    """The service account key in ``path`` (read, no network), or NotConfigured saying why not."""
    try:
        return service_account.Credentials.from_service_account_file(path, scopes=VERTEX_SCOPES)
    except OSError as exc:
        raise NotConfigured(
            f"GOOGLE_APPLICATION_CREDENTIALS: cannot read {path}: {exc.strerror}"
        ) from None
    except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
        raise NotConfigured(
            f"GOOGLE_APPLICATION_CREDENTIALS: {path} is not a service account key: {exc}"
        ) from None


def _default_credentials(provider_name: str) -> Credentials:
    """Application default credentials; blocking (may probe the metadata server)."""
    try:
        credentials, _project = google.auth.default(scopes=VERTEX_SCOPES)
    except google.auth.exceptions.DefaultCredentialsError:
        raise UpstreamError(
            f"{provider_name}: no Google credentials found; set GOOGLE_APPLICATION_CREDENTIALS",
            metadata={"provider_name": provider_name},
        ) from None
    return credentials


def _refresh(provider_name: str, credentials: Credentials, deadline: float | None) -> None:
    """A new access token; blocking."""
    remaining = TOKEN_TIMEOUT_S if deadline is None else deadline - time.monotonic()
    timeout = max(1.0, min(TOKEN_TIMEOUT_S, remaining))
    request = functools.partial(google.auth.transport.requests.Request(), timeout=timeout)
    metadata: dict[str, Any] = {"provider_name": provider_name}
    try:
        credentials.refresh(request)
    except google.auth.exceptions.RefreshError as exc:
        metadata["provider_key_rejected"] = True
        reason = exc.args[0] if exc.args else "refresh failed"
        raise UpstreamError(
            f"{provider_name} rejected the gateway's credentials: {reason}", metadata=metadata
        ) from None
    except google.auth.exceptions.TransportError:
        raise UpstreamError(
            f"could not reach {provider_name}'s token endpoint", metadata=metadata
        ) from None


# --- response parsing ---


def parse_response(provider_name: str, reply: Reply, *, limit: int = 1) -> list[ProviderEvent]:
    """Text chunks, up to ``limit`` images and the usage of a 200 answer, or the error it means."""
    body = reply.json()
    if not isinstance(body, dict):
        raise UpstreamError(
            f"{provider_name} sent a malformed response", metadata={"provider_name": provider_name}
        )
    feedback = body.get("promptFeedback") or {}
    if feedback.get("blockReason"):
        message = (
            feedback.get("blockReasonMessage")
            or f"the prompt was blocked ({feedback['blockReason']})"
        )
        raise upstream_error(provider_name, reply, message=message, refused=True)

    events: list[ProviderEvent] = []
    images: list[ProviderEvent] = []
    texts: list[str] = []
    candidates = body.get("candidates") or []
    for candidate in candidates:
        for part in (candidate.get("content") or {}).get("parts") or ():
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
                events.append(
                    TextChunk(part["text"], "reasoning" if part.get("thought") else "content")
                )
            inline = part.get("inlineData") or {}
            if isinstance(inline.get("data"), str) and not part.get("thought"):
                # (thought images are drafts of the final one)
                media_type = inline.get("mimeType") or MEDIA_TYPES["png"]
                images.append(Image(Blob.from_b64(inline["data"]), media_type))
    if not images:
        raise _no_image(provider_name, reply, candidates, texts)
    return [*events, *images[:limit], Done(usage_from(body.get("usageMetadata") or {}, provider_name))]


def usage_from(metadata: Mapping[str, Any], provider_name: str = "Google") -> Usage:
    """``usageMetadata`` (python-genai ``GenerateContentResponseUsageMetadata``) in billing units.

    The prompt bills at the input rate, cached content included (``promptTokenCount`` counts
    it; the catalog has no cheaper cache rate); a prompt token that is not an image is text,
    which these models price like an image token. Image candidates bill at the image rate;
    text candidates and ``thoughtsTokenCount`` (which ``candidatesTokenCount`` leaves out) at
    the text rate. Without a per-modality breakdown every candidate counts as an image token,
    the dearer reading.
    """
    prompt = _by_modality(metadata.get("promptTokensDetails"), provider_name)
    output = _by_modality(metadata.get("candidatesTokensDetails"), provider_name)
    prompt_total = _count(metadata, "promptTokenCount", provider_name) or sum(prompt.values())
    candidates = _count(metadata, "candidatesTokenCount", provider_name) or sum(output.values())
    input_images = prompt.get("IMAGE", 0)
    output_images = output.get("IMAGE", 0) if output else candidates
    return Usage(
        input_text_tokens=max(prompt_total - input_images, 0),
        input_image_tokens=input_images,
        output_image_tokens=output_images,
        output_text_tokens=max(candidates - output_images, 0)
        + _count(metadata, "thoughtsTokenCount", provider_name),
    )


def _count(metadata: Mapping[str, Any], name: str, provider_name: str) -> int:
    return usage_count(metadata.get(name), name, provider_name)


def _by_modality(details: Any, provider_name: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in details or ():
        modality = item.get("modality")
        counts[modality] = counts.get(modality, 0) + usage_count(item.get("tokenCount"), "tokenCount", provider_name)
    return counts


def _no_image(
    provider_name: str, reply: Reply, candidates: list[dict[str, Any]], texts: list[str]
) -> UpstreamError:
    reasons = [c.get("finishReason") for c in candidates if c.get("finishReason")]
    refusal = next((r for r in reasons if r in REFUSAL_FINISH_REASONS), None)
    explanation = next((c["finishMessage"] for c in candidates if c.get("finishMessage")), None)
    if refusal:
        return upstream_error(
            provider_name,
            reply,
            message=explanation or f"the image was withheld ({refusal})",
            refused=True,
        )
    said = " ".join(texts).strip()
    why = f"finishReason {reasons[0]}" if reasons else "no candidates"
    detail = explanation or (f'it answered with text only: "{said}"' if said else None)
    message = f"no image in the answer ({why}{'; ' + detail if detail else ''})"
    return upstream_error(provider_name, reply, message=message)


# --- error mapping ---


def _error(provider_name: str, reply: Reply) -> UpstreamError:
    """Google's ``{"error": {"code", "message", "status", "details"}}`` through the common table,
    with two Google specifics: a rejected API key is a 400 ``API_KEY_INVALID``, and a 429 says
    when to retry in ``RetryInfo.retryDelay`` rather than in a ``Retry-After`` header."""
    body = reply.json()
    error = body.get("error") if isinstance(body, dict) else None
    details = [d for d in (error or {}).get("details") or () if isinstance(d, dict)]
    if any(
        d.get("@type") == ERROR_INFO_TYPE
        and str(d.get("reason", "")).startswith(API_KEY_REASON_PREFIX)
        for d in details
    ):
        rejected = upstream_error(provider_name, dataclasses.replace(reply, status=403))
        rejected.metadata["upstream_status"] = reply.status
        return rejected
    return upstream_error(provider_name, reply, retry_after_s=_retry_delay(details))


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    """``RetryInfo.retryDelay`` (a protobuf Duration, ``"37s"`` or ``"0.5s"``) in seconds."""
    for detail in details:
        delay = detail.get("retryDelay")
        if (
            detail.get("@type") == RETRY_INFO_TYPE
            and isinstance(delay, str)
            and delay.endswith("s")
        ):
            try:
                return float(delay[:-1])
            except ValueError:
                return None
    return None

