"""Emulator of Google's ``generateContent`` for Gemini image models, on both of its hosts.

* ``POST /v1beta/models/{model}:generateContent`` — AI Studio (the Gemini Developer API),
  authenticated by ``x-goog-api-key`` (``?key=`` too) against ``state["api_key"]``
  (default ``"test-key"``); a wrong key is Google's 400 ``API_KEY_INVALID``.
* ``POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent``
  — Vertex AI, authenticated by a bearer token this emulator issued and that has not expired.
* ``POST /token`` — Google's OAuth token endpoint for service accounts: checks the JWT-bearer
  grant (RS256 signature by a key registered with :func:`service_account`, Google's audience,
  the cloud-platform scope, expiry) and issues a token valid for ``state["token_ttl_s"]``
  seconds (default 3600).
* ``GET /_emulator/google/service-account`` — a fresh service-account JSON whose ``token_uri``
  points here, for standalone use.

Requests are validated strictly: unknown fields (Vertex-only ``imageOutputOptions``,
``personGeneration`` or ``labels`` on AI Studio included) and wrong JSON types get Google's 400
``INVALID_ARGUMENT`` ("Invalid JSON payload received. Unknown name …"); ``aspectRatio`` and
``imageSize`` are checked per model, inline images must be real images of their declared
type, at most :data:`MAX_IMAGES`. Answers carry a real image of the model's tier × ratio size
(PNG, or JPEG for flash-lite; Vertex honours ``imageOutputOptions.mimeType``), a text part when
``TEXT`` is asked for, and ``usageMetadata`` as Google bills it: prompt and candidate tokens per
modality (each model's tokens per input and output image) and ``thoughtsTokenCount`` apart.

Faults of this API (besides the common ones): ``image_safety`` (200, ``finishReason:
IMAGE_SAFETY``), ``prompt_blocked`` (200, ``promptFeedback.blockReason``), ``no_image`` (200,
text only), ``quota`` (429 ``RESOURCE_EXHAUSTED`` with ``RetryInfo``, no ``Retry-After``),
``two_images`` (an extra image), ``thoughts`` (a thought summary and a draft thought image
before the answer), ``long_thinking`` (thoughts fill the rest of the model's output token limit,
the most a call can bill) and ``token_denied`` (the token endpoint refuses the grant).
With ``state["image"] = (mime_type, data)`` every image of an answer is that one, as an
upstream of any other kind of model would send it (an SVG, say).
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import hashlib
import io
import math
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
import pybase64
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from PIL import Image, UnidentifiedImageError

from tests.emulators.base import Emulator
from tests.emulators.images import synth

NAME = "google"

DEFAULT_API_KEY = "test-key"
DEFAULT_TOKEN_TTL_S = 3600
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: The audience of a service account's grant: Google's token endpoint, wherever it is sent.
TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
MAX_IMAGES = 14
THOUGHT_TOKENS = 96
INPUT_MIME_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/heic": "HEIF",
    "image/heif": "HEIF",
}
OUTPUT_MIME_TYPES = {"image/png": "png", "image/jpeg": "jpeg"}

#: The details of a quota 429: no Retry-After header, the delay is in RetryInfo.
QUOTA_DETAILS = [
    {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
     "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_requests_per_model"}]},
    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"},
]  # fmt: skip
STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip

#: Google's 1K pixels per ratio (Gemini API image-generation docs); other tiers scale it.
PIXELS_1K = {
    "1:1": (1024, 1024), "1:4": (512, 2048), "1:8": (384, 3072), "2:3": (848, 1264),
    "3:2": (1264, 848), "3:4": (896, 1200), "4:1": (2048, 512), "4:3": (1200, 896),
    "4:5": (928, 1152), "5:4": (1152, 928), "8:1": (3072, 384), "9:16": (768, 1376),
    "16:9": (1376, 768), "21:9": (1584, 672),
}  # fmt: skip
TIER_SCALE = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}
FLASH_RATIOS = tuple(PIXELS_1K)
PRO_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


@dataclass(frozen=True)
class ModelSpec:
    ratios: tuple[str, ...]
    #: imageSize value → output image tokens.
    tiers: dict[str, int]
    media_type: str
    #: Prompt tokens one input image counts for.
    input_image_tokens: int
    #: Thoughts and candidates together stay within it (the model cards' maximum output).
    max_output_tokens: int = 32768
    caching: bool = True
    #: Measured pixels that differ from :data:`PIXELS_1K` (ratio → size).
    pixels_1k: dict[str, tuple[int, int]] | None = None

    def pixels(self, tier: str, ratio: str) -> tuple[int, int]:
        width, height = (self.pixels_1k or {}).get(ratio) or PIXELS_1K[ratio]
        return round(width * TIER_SCALE[tier]), round(height * TIER_SCALE[tier])


#: Token counts from the Vertex model cards and the Gemini API pricing page (3 Pro: 560 tokens
#: per input image).
MODELS = {
    "gemini-3.1-flash-image": ModelSpec(
        FLASH_RATIOS, {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520}, "image/png", 1120
    ),
    "gemini-3-pro-image": ModelSpec(
        PRO_RATIOS, {"1K": 1120, "2K": 1120, "4K": 2000}, "image/png", 560
    ),
    "gemini-3.1-flash-lite-image": ModelSpec(
        FLASH_RATIOS,
        {"1K": 1120},
        "image/jpeg",
        1120,
        caching=False,
        pixels_1k={"16:9": (1408, 768), "9:16": (768, 1408)},
    ),
}
RETIRED = frozenset(
    {"gemini-2.5-flash-image", "gemini-3-pro-image-preview", "gemini-3.1-flash-image-preview"}
)

# --- request schema (field → JSON type, nested message, or [repeated]) ---

ANY = "any"  # a free-form protobuf Struct (tools, labels …)
PART = {
    "text": str,
    "inlineData": {"mimeType": str, "data": str},
    "fileData": {"mimeType": str, "fileUri": str},
    "thought": bool,
    "thoughtSignature": str,
}
CONTENT = {"role": str, "parts": [PART]}
IMAGE_CONFIG = {"aspectRatio": str, "imageSize": str}
VERTEX_IMAGE_CONFIG = {
    **IMAGE_CONFIG,
    "personGeneration": str,
    "prominentPeople": str,
    "imageOutputOptions": {"mimeType": str, "compressionQuality": int},
}


def _generation_config(image_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "responseModalities": [str],
        "imageConfig": image_config,
        "candidateCount": int,
        "temperature": float,
        "topP": float,
        "topK": int,
        "maxOutputTokens": int,
        "stopSequences": [str],
        "seed": int,
        "thinkingConfig": {"thinkingLevel": str, "includeThoughts": bool},
        "mediaResolution": str,
    }


REQUEST = {
    "contents": [CONTENT],
    "generationConfig": _generation_config(IMAGE_CONFIG),
    "safetySettings": [{"category": str, "threshold": str}],
    "tools": [ANY],
    "toolConfig": ANY,
    "systemInstruction": CONTENT,
    "cachedContent": str,
}
VERTEX_REQUEST = {
    **REQUEST,
    "generationConfig": _generation_config(VERTEX_IMAGE_CONFIG),
    "labels": ANY,
}


class GoogleError(Exception):
    def __init__(
        self, status: int, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """Google's error shape; ``code`` is a canonical status name when it is one."""
    name = code if code.isupper() else STATUS_NAMES.get(status, "UNKNOWN")
    return {"error": {"code": status, "message": message, "status": name}}


def routes(emulator: Emulator) -> list[web.RouteDef]:
    async def ai_studio(request: web.Request) -> web.Response:
        return await _answer(emulator, request, vertex=False)

    async def vertex(request: web.Request) -> web.Response:
        return await _answer(emulator, request, vertex=True)

    async def token(request: web.Request) -> web.Response:
        return await _token(emulator, request)

    async def new_service_account(request: web.Request) -> web.Response:
        return web.json_response(service_account(emulator))

    return [
        web.post("/v1beta/models/{target}", ai_studio),
        web.post(
            "/v1/projects/{project}/locations/{location}/publishers/google/models/{target}", vertex
        ),
        web.post("/token", token),
        web.get("/_emulator/google/service-account", new_service_account),
    ]


def service_account(
    emulator: Emulator, email: str = "imagegate@emulated-project.iam.gserviceaccount.com"
) -> dict:
    """A service-account key file whose signatures this emulator's token endpoint accepts."""
    key = _signing_key()
    key_id = secrets.token_hex(20)
    emulator.state.setdefault("service_accounts", {})[email] = key.public_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "emulated-project",
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": email,
        "client_id": "100000000000000000000",
        "token_uri": f"{emulator.url}/token",
    }


@functools.cache
def _signing_key() -> rsa.RSAPrivateKey:
    """One RSA key for every service account of the process: generating one takes a while."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- generateContent ---


async def _answer(emulator: Emulator, request: web.Request, *, vertex: bool) -> web.Response:
    try:
        _authenticate(emulator, request, vertex=vertex)
        model, _, method = request.match_info["target"].partition(":")
        if method != "generateContent":
            raise GoogleError(404, f"Method not found: {method or '(none)'}")
        spec = _model(model, vertex=vertex)
        body = _parse(await request.read())
        _check(body, VERTEX_REQUEST if vertex else REQUEST, "")
        if emulator.take_fault("quota"):
            raise GoogleError(429, "Resource has been exhausted (e.g. check quota).", QUOTA_DETAILS)
        answer = await _generate(emulator, model, spec, body)
    except GoogleError as exc:
        payload = error_body(exc.status, STATUS_NAMES.get(exc.status, "UNKNOWN"), exc.message)
        if exc.details:
            payload["error"]["details"] = exc.details
        return web.Response(
            status=exc.status, body=orjson.dumps(payload), content_type="application/json"
        )
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def _authenticate(emulator: Emulator, request: web.Request, *, vertex: bool) -> None:
    if vertex:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expiry = emulator.state.get("tokens", {}).get(token)
        if scheme.lower() != "bearer" or expiry is None or expiry <= time.time():
            raise GoogleError(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "ACCESS_TOKEN_EXPIRED" if expiry else "CREDENTIALS_MISSING",
                        "domain": "googleapis.com",
                    },
                ],
            )
        return
    key = request.headers.get("x-goog-api-key") or request.query.get("key")
    if not key:
        raise GoogleError(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API.",
        )
    if key != emulator.state.get("api_key", DEFAULT_API_KEY):
        raise GoogleError(
            400,
            "API key not valid. Please pass a valid API key.",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
            ],
        )


def _model(model: str, *, vertex: bool) -> ModelSpec:
    if model in RETIRED:
        raise GoogleError(
            404,
            f"models/{model} is no longer available to new users. Please update your code "
            "to use a newer model for the latest features and improvements.",
        )
    if model not in MODELS:
        raise GoogleError(
            404,
            f"Publisher Model `{model}` was not found or your project does not have access to it."
            if vertex
            else f"models/{model} is not found for API version v1beta, or is not "
            "supported for generateContent.",
        )
    return MODELS[model]


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GoogleError(400, "Invalid JSON payload received. Unexpected token.") from None


def _check(value: Any, schema: Any, path: str) -> None:
    """Google's proto3 JSON parsing: unknown names and wrong types are a 400."""
    if schema == ANY:
        return
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise GoogleError(
                400, f"Invalid value at '{path}' (TYPE_REPEATED), {orjson.dumps(value).decode()}"
            )
        for i, item in enumerate(value):
            _check(item, schema[0], f"{path}[{i}]")
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise GoogleError(
                400, f"Invalid value at '{path}' (TYPE_MESSAGE), {orjson.dumps(value).decode()}"
            )
        for name, item in value.items():
            if name not in schema:
                where = f" at '{path}'" if path else ""
                raise GoogleError(
                    400,
                    f'Invalid JSON payload received. Unknown name "{name}"{where}: '
                    "Cannot find field.",
                )
            _check(item, schema[name], f"{path}.{_snake(name)}" if path else _snake(name))
        return
    ok = isinstance(value, schema) and not (schema is int and isinstance(value, bool))
    if schema is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        kind = {str: "TYPE_STRING", int: "TYPE_INT32", float: "TYPE_FLOAT", bool: "TYPE_BOOL"}[
            schema
        ]
        raise GoogleError(
            400, f"Invalid value at '{path}' ({kind}), {orjson.dumps(value).decode()}"
        )


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


async def _generate(
    emulator: Emulator, model: str, spec: ModelSpec, body: dict[str, Any]
) -> dict[str, Any]:
    contents = body.get("contents") or []
    if not contents:
        raise GoogleError(400, "* GenerateContentRequest.contents: contents is not specified")
    prompt, images = _read_contents(contents)
    config = body.get("generationConfig") or {}
    modalities = config.get("responseModalities") or ["TEXT", "IMAGE"]
    if set(modalities) - {"TEXT", "IMAGE"} or "IMAGE" not in modalities:
        raise GoogleError(
            400,
            f"Model {model} only supports TEXT and IMAGE output, including IMAGE; "
            f"got responseModalities {modalities}",
        )
    image_config = config.get("imageConfig") or {}
    ratio = image_config.get("aspectRatio") or _nearest_ratio(
        images[0] if images else None, spec.ratios
    )
    tier = image_config.get("imageSize") or "1K"
    if ratio not in spec.ratios:
        raise GoogleError(
            400, f"Unsupported aspect ratio: {ratio}. Supported: {', '.join(spec.ratios)}"
        )
    if tier not in spec.tiers:
        raise GoogleError(
            400, f"Unsupported image size: {tier}. This model supports {', '.join(spec.tiers)}"
        )
    media_type = spec.media_type
    options = image_config.get("imageOutputOptions") or {}
    if options:
        media_type = options.get("mimeType", media_type)
        if media_type not in OUTPUT_MIME_TYPES:
            raise GoogleError(400, f"Unsupported output mime type: {media_type}")
        if not 0 <= options.get("compressionQuality", 75) <= 100:
            raise GoogleError(400, "compressionQuality must be between 0 and 100")
    cached = body.get("cachedContent")
    if cached is not None:
        if not spec.caching:
            raise GoogleError(400, f"CachedContent is not supported by {model}.")
        if "cachedContents/" not in cached:
            raise GoogleError(400, f"Invalid cached content name: {cached}")

    usage_in = {"TEXT": _tokens(prompt), "IMAGE": spec.input_image_tokens * len(images)}
    text_out = f"Here is the image you asked for: {prompt[:60]}"
    fault = emulator.take_fault(
        "image_safety", "prompt_blocked", "no_image", "two_images", "thoughts", "long_thinking"
    )
    if fault == "prompt_blocked":
        return {
            "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
            "usageMetadata": _usage(usage_in, {}),
            "modelVersion": model,
        }
    if fault == "image_safety":
        return {
            "candidates": [
                {
                    "finishReason": "IMAGE_SAFETY",
                    "index": 0,
                    "finishMessage": "Unable to show the generated image: it may violate Google's "
                    "Generative AI Prohibited Use policy.",
                }
            ],
            "usageMetadata": _usage(usage_in, {}),
            "modelVersion": model,
        }
    if fault == "no_image":
        text = "I can describe that scene, but I can't draw it."
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": _usage(usage_in, {"TEXT": _tokens(text)}),
            "modelVersion": model,
        }

    width, height = spec.pixels(tier, ratio)
    fmt = OUTPUT_MIME_TYPES[media_type]
    seed = hashlib.sha256(orjson.dumps(contents)).hexdigest()
    parts: list[dict[str, Any]] = []
    if fault == "thoughts":
        draft = await asyncio.to_thread(
            synth, max(1, width // 8), max(1, height // 8), fmt, seed="draft"
        )
        parts += [
            {"text": "Planning the composition.", "thought": True},
            {
                "inlineData": {"mimeType": media_type, "data": pybase64.b64encode(draft).decode()},
                "thought": True,
            },
        ]
    if "TEXT" in modalities:
        parts.append({"text": text_out})
    count = 2 if fault == "two_images" else 1
    for index in range(count):
        data = await asyncio.to_thread(synth, width, height, fmt, seed=f"{seed}/{index}")
        mime_type, data = emulator.state.get("image", (media_type, data))
        parts.append(
            {
                "inlineData": {"mimeType": mime_type, "data": emulator.sent_image_b64(data, fmt)},
                "thoughtSignature": secrets.token_urlsafe(12),
            }
        )
    usage_out = {"IMAGE": spec.tiers[tier] * count}
    if "TEXT" in modalities:
        usage_out["TEXT"] = _tokens(text_out)
    thoughts = THOUGHT_TOKENS
    if fault == "long_thinking":
        thoughts = spec.max_output_tokens - sum(usage_out.values())
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": _usage(usage_in, usage_out, thoughts),
        "modelVersion": model,
        "responseId": secrets.token_urlsafe(16),
    }


def _read_contents(contents: list[dict[str, Any]]) -> tuple[str, list[Image.Image]]:
    texts: list[str] = []
    images: list[Image.Image] = []
    for c, content in enumerate(contents):
        if content.get("role", "user") not in ("user", "model"):
            raise GoogleError(
                400, f"Please use a valid role: user, model. Got {content.get('role')!r}."
            )
        if not content.get("parts"):
            raise GoogleError(
                400,
                f"* GenerateContentRequest.contents[{c}].parts: contents.parts must not be empty.",
            )
        for p, part in enumerate(content["parts"]):
            if "text" in part:
                texts.append(part["text"])
            if "inlineData" in part:
                images.append(
                    _inline_image(part["inlineData"], f"contents[{c}].parts[{p}].inline_data")
                )
            if "fileData" in part:
                raise GoogleError(400, f"Unsupported file uri: {part['fileData'].get('fileUri')}")
    if len(images) > MAX_IMAGES:
        raise GoogleError(
            400, f"Too many images in the request: {len(images)}; at most {MAX_IMAGES} are allowed."
        )
    return " ".join(texts), images


def _inline_image(inline: dict[str, Any], path: str) -> Image.Image:
    mime_type = inline.get("mimeType", "")
    if mime_type not in INPUT_MIME_TYPES:
        raise GoogleError(400, f"Unsupported MIME type: {mime_type}")
    try:
        data = pybase64.b64decode(inline.get("data", ""), validate=True)
    except (binascii.Error, ValueError):
        raise GoogleError(
            400, f"Invalid value at '{path}.data' (TYPE_BYTES), Base64 decoding failed"
        ) from None
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        raise GoogleError(
            400,
            "Unable to process input image. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
        ) from None
    if image.format != INPUT_MIME_TYPES[mime_type]:
        raise GoogleError(
            400, f"Provided image is not valid: {mime_type} declared, {image.format} sent."
        )
    return image


def _nearest_ratio(image: Image.Image | None, ratios: tuple[str, ...]) -> str:
    """Gemini's default: the first reference's shape, else square."""
    if image is None:
        return "1:1"
    target = math.log(image.width / image.height)

    def distance(label: str) -> float:
        w, h = label.split(":")
        return abs(math.log(float(w) / float(h)) - target)

    return min(ratios, key=distance)


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _usage(
    prompt: dict[str, int], output: dict[str, int], thoughts: int = THOUGHT_TOKENS
) -> dict[str, Any]:
    """``usageMetadata``: thoughts are counted apart from the candidates, and the total is the
    sum of all three (python-genai ``GenerateContentResponseUsageMetadata``)."""
    prompt_details = [{"modality": m, "tokenCount": n} for m, n in prompt.items() if n]
    usage: dict[str, Any] = {
        "promptTokenCount": sum(prompt.values()),
        "promptTokensDetails": prompt_details,
        "thoughtsTokenCount": thoughts,
        "totalTokenCount": sum(prompt.values()) + sum(output.values()) + thoughts,
    }
    if output:
        usage["candidatesTokenCount"] = sum(output.values())
        usage["candidatesTokensDetails"] = [
            {"modality": m, "tokenCount": n} for m, n in output.items()
        ]
    return usage


# --- OAuth token endpoint ---


async def _token(emulator: Emulator, request: web.Request) -> web.Response:
    form = await request.post()
    if emulator.take_fault("token_denied"):
        return _oauth_error("invalid_grant", "Invalid JWT Signature.")
    if form.get("grant_type") != JWT_BEARER:
        return _oauth_error(
            "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}"
        )
    problem = _check_assertion(emulator, str(form.get("assertion", "")))
    if problem:
        return _oauth_error("invalid_grant", problem)
    ttl = int(emulator.state.get("token_ttl_s", DEFAULT_TOKEN_TTL_S))
    token = f"ya29.emulated-{secrets.token_urlsafe(24)}"
    emulator.state.setdefault("tokens", {})[token] = time.time() + ttl
    return web.json_response({"access_token": token, "expires_in": ttl, "token_type": "Bearer"})


def _check_assertion(emulator: Emulator, assertion: str) -> str | None:
    """What is wrong with a service account's signed JWT, or None."""
    try:
        header_b64, payload_b64, signature_b64 = assertion.split(".")
        header = orjson.loads(_b64url(header_b64))
        claims = orjson.loads(_b64url(payload_b64))
        signature = _b64url(signature_b64)
    except (ValueError, orjson.JSONDecodeError):
        return "Invalid JWT: not a signed JWT."
    public_key = emulator.state.get("service_accounts", {}).get(claims.get("iss"))
    if header.get("alg") != "RS256" or public_key is None:
        return "Invalid JWT Signature."
    try:
        public_key.verify(
            signature, f"{header_b64}.{payload_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        return "Invalid JWT Signature."
    now = time.time()
    if claims.get("aud") != TOKEN_AUDIENCE:
        return "Invalid JWT: audience is not the token endpoint."
    if CLOUD_PLATFORM_SCOPE not in str(claims.get("scope", "")).split():
        return "Invalid OAuth scope or ID token audience provided."
    if not claims.get("iat", now + 1) <= now + 60 or not now < claims.get("exp", 0) <= now + 3700:
        return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
    return None


def _b64url(text: str) -> bytes:
    return pybase64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _oauth_error(error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=400)
