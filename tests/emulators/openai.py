"""OpenAI Images API emulator, also serving the same API as Azure OpenAI deployments.

OpenAI: ``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits`` (multipart with
``image`` / ``image[]`` files, or JSON with ``images: [{"image_url": <data URL>}]``), with
``Authorization: Bearer``. Azure: ``POST /openai/deployments/{deployment}/images/...`` with
an ``api-key`` header and a required ``api-version`` query; the deployment decides the model
(``emulator.state["deployments"] = {name: model}``; a deployment named like a model serves it).

Validation is strict, as the real API's is: unknown fields, wrong types, values outside the
model's enums, sizes the model cannot make (gpt-image-2's free-size rules, the fixed table of
the older models), a transparent background with JPEG, ``output_compression`` with PNG,
``n`` outside 1-10 all get OpenAI's own 400. Images are real (``synth``) in the requested
size and format. Token usage is deterministic: gpt-image-2's output image tokens are what
OpenAI's cost calculator gives for the size and quality, the older models' scale gpt-image-1's
published table by pixels; input tokens are shaped like OpenAI's, not equal to them. With
``emulator.state["output_text_tokens"] = k`` the model also writes k text tokens per image,
reported in ``output_tokens_details`` (also on the streamed completed event, where the SDK's
type has no such field: how the real stream reports them is unverified).

Faults beyond the common ones: ``moderation`` (400 ``moderation_blocked``), ``quota`` (429
``insufficient_quota``), ``rate_limit_ms`` (429 with only a lower-case ``retry-after-ms``),
``content_filter`` (Azure's 400 with ``innererror.code: ResponsibleAIPolicyViolation``), and
for streams, after the first preview: ``moderation_stream`` (an error event refusing the
output), ``stream_error`` (an error event) and ``stream_cut`` (the stream ends without the image).
Two stream faults put line ends inside the first preview's ``b64_json``, followed by an event
of the upstream's own making (:data:`INJECTED_EVENT`), as a hostile upstream would to reach the
client's stream: ``cr_in_value`` as raw bare CRs (one line to a reader splitting on LF only),
``escaped_line_ends_in_value`` as JSON escapes (``\\r\\n``) that a JSON parser turns into CR and LF.
With ``emulator.state["image"] = data`` every image and preview is ``data``, whatever was asked
for (an upstream sending what it says is not).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email
import email.policy
import io
import itertools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from PIL import Image as PILImage

from tests.emulators.base import Emulator
from tests.emulators.images import synth

NAME = "openai"

#: The one key the emulator accepts (as a bearer on OpenAI paths, ``api-key`` on Azure paths).
API_KEY = "test-key"
AZURE_API_VERSIONS = ("2025-04-01-preview", "preview")

FIXED_SIZES = ("1024x1024", "1536x1024", "1024x1536")
#: gpt-image-2's free sizes (providers.md §1; SDK size docstring).
FREE_MULTIPLE, FREE_MAX_EDGE, FREE_MAX_RATIO = 16, 3840, 3
FREE_MIN_PIXELS, FREE_MAX_PIXELS = 655_360, 8_294_400
MAX_N, MAX_IMAGES, MAX_PROMPT = 10, 16, 32_000
MAX_IMAGE_BYTES = 50 * 1024 * 1024
#: Output tokens of one 1024x1024 image by quality (gpt-image-1's published table); scaled by pixels.
OUTPUT_TOKENS_1024 = {"low": 272, "medium": 1056, "high": 4160}
#: gpt-image-2's output tokens, by the rule of OpenAI's cost calculator (image generation guide,
#: "Calculating costs"; read out in community.openai.com/t/1382699): a factor per quality ...
CALCULATOR_FACTORS = {"low": 16, "medium": 48, "high": 96}
#: ... and the pixel count shifted and scaled.
CALCULATOR_OFFSET, CALCULATOR_DIVISOR = 2_000_000, 4_000_000
#: What a streamed preview adds to the output tokens (providers.md §1 "partial_images").
PARTIAL_IMAGE_TOKENS = 100


def calculator_tokens(quality: str, width: int, height: int) -> int:
    """gpt-image-2: one image's output tokens as OpenAI's calculator counts them."""
    factor = CALCULATOR_FACTORS[quality]
    long_edge, short_edge = max(width, height), min(width, height)
    short_factor = (2 * factor * short_edge + long_edge) // (2 * long_edge)
    return -(-factor * short_factor * (width * height + CALCULATOR_OFFSET) // CALCULATOR_DIVISOR)


def table_tokens(quality: str, width: int, height: int) -> int:
    """The older models: gpt-image-1's 1024x1024 table scaled by pixels."""
    return round(OUTPUT_TOKENS_1024[quality] * width * height / (1024 * 1024))


@dataclass(frozen=True)
class ModelSpec:
    #: ``None``: any size under gpt-image-2's rules.
    sizes: tuple[str, ...] | None
    transparent: bool
    #: ``input_fidelity`` values the edits endpoint accepts; empty: the field is rejected.
    input_fidelity: tuple[str, ...]
    #: Output image tokens of one image: ``(quality, width, height) -> tokens``.
    output_tokens: Callable[[str, int, int], int]


MODELS = {
    # Transparent backgrounds "in preview" (openai-python #3703, 2026-08-21).
    "gpt-image-2": ModelSpec(
        sizes=None, transparent=True, input_fidelity=(), output_tokens=calculator_tokens
    ),
    "gpt-image-1.5": ModelSpec(
        sizes=FIXED_SIZES,
        transparent=True,
        input_fidelity=("high", "low"),
        output_tokens=table_tokens,
    ),
    "gpt-image-1-mini": ModelSpec(
        sizes=FIXED_SIZES, transparent=True, input_fidelity=("low",), output_tokens=table_tokens
    ),
}
SHUT_DOWN = ("gpt-image-1", "dall-e-2", "dall-e-3")

ENUMS = {
    "quality": ("low", "medium", "high", "auto"),
    "background": ("transparent", "opaque", "auto"),
    "output_format": ("png", "jpeg", "webp"),
    "moderation": ("low", "auto"),
    "input_fidelity": ("high", "low"),
}
FIELDS: dict[str, type] = {
    "prompt": str, "model": str, "n": int, "size": str, "quality": str, "background": str,
    "output_format": str, "output_compression": int, "moderation": str, "stream": bool,
    "partial_images": int, "user": str, "safety_identifier": str,
}  # fmt: skip
EDIT_FIELDS = {**FIELDS, "input_fidelity": str}
RANGES = {"n": (1, MAX_N), "output_compression": (0, 100), "partial_images": (0, 3)}
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}
_ERROR_TYPES = {
    "moderation_blocked": "image_generation_user_error",
    "insufficient_quota": "insufficient_quota",
    "rate_limit_exceeded": "requests",
    "server_error": "server_error",
}


#: What the line-end faults try to add to the client's stream.
INJECTED_EVENT = b"data: [DONE]"


def _inside_the_image(data: bytes, text: bytes) -> bytes:
    """``data`` (an event's JSON) with ``text`` put in the middle of its ``b64_json`` value."""
    start = data.index(b'"b64_json":"') + len(b'"b64_json":"')
    middle = start + (data.index(b'"', start) - start) // 2
    return data[:middle] + text + data[middle:]


_LINE_END_FAULTS: dict[str, Callable[[bytes], bytes]] = {
    "cr_in_value": lambda data: _inside_the_image(data, b"\r\r" + INJECTED_EVENT + b"\r\r"),
    "escaped_line_ends_in_value": lambda data: _inside_the_image(
        data, b"\\r\\n\\r\\n" + INJECTED_EVENT + b"\\r\\n\\r\\n"
    ),
}

_STREAM_ERRORS = {
    "moderation_stream": {
        "type": "image_generation_user_error",
        "code": "moderation_blocked",
        "message": "Your request was rejected by the safety system: the generated image was flagged.",
        "param": None,
    },
    "stream_error": {
        "type": "server_error",
        "code": "server_error",
        "message": "The server had an error while processing your request.",
        "param": None,
    },
}


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict:
    """OpenAI's error shape (Azure's adds ``innererror`` where it has one)."""
    kind = _ERROR_TYPES.get(code, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def routes(emulator: Emulator) -> list[web.RouteDef]:
    async def openai(request: web.Request) -> web.StreamResponse:
        return await _serve(emulator, request, azure=False)

    async def azure(request: web.Request) -> web.StreamResponse:
        return await _serve(emulator, request, azure=True)

    return [
        web.post("/v1/images/generations", openai),
        web.post("/v1/images/edits", openai),
        web.post("/openai/deployments/{deployment}/images/generations", azure),
        web.post("/openai/deployments/{deployment}/images/edits", azure),
    ]


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, list[str]], list[tuple[str, str, str, bytes]]]:
    """``(fields, files)`` of a multipart body: text values by name, ``(name, filename,
    content_type, data)`` per file. Tests use it on ``emulator.requests`` too."""
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body,
        policy=email.policy.HTTP,
    )
    if not message.is_multipart():
        raise ValueError("not a multipart body")
    fields: dict[str, list[str]] = {}
    files = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files.append((name, part.get_filename(), part.get_content_type(), data))
        else:
            fields.setdefault(name, []).append(data.decode("utf-8"))
    return fields, files


# --- one request ---


class _Invalid(Exception):
    def __init__(
        self, message: str, param: str | None = None, code: str = "invalid_value", status: int = 400
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


@dataclass
class _Request:
    model: str
    edit: bool
    values: dict[str, Any]
    #: Reference images as decoded ``(width, height)`` for usage accounting.
    references: list[tuple[int, int]] = field(default_factory=list)
    #: What every image of the answer is instead of a rendered one (``state["image"]``).
    image: bytes | None = None


_counter = itertools.count()


async def _serve(emulator: Emulator, request: web.Request, *, azure: bool) -> web.StreamResponse:
    edit = request.path.endswith("/edits")
    try:
        _authenticate(request, azure)
        deployment_model = _deployment_model(emulator, request) if azure else None
        values, references = await _parse(request, edit)
        parsed = _validate(values, references, edit, deployment_model)
    except _Invalid as exc:
        body = error_body(exc.status, exc.code, exc.message, exc.param)
        return web.Response(
            status=exc.status, body=orjson.dumps(body), content_type="application/json"
        )

    parsed.image = emulator.state.get("image")
    fault = emulator.take_fault("moderation", "quota", "rate_limit_ms", "content_filter")
    if fault == "moderation":
        return emulator.error(
            400,
            "moderation_blocked",
            "Your request was rejected by the safety system. "
            "If you believe this is an error, contact us at help.openai.com.",
        )
    if fault == "quota":
        return emulator.error(
            429,
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
        )
    if fault == "rate_limit_ms":
        return emulator.error(
            429,
            "rate_limit_exceeded",
            "Rate limit reached for images per minute.",
            headers={"retry-after-ms": "1500", "x-ratelimit-remaining-requests": "0"},
        )
    if fault == "content_filter":
        body = error_body(
            400,
            "content_policy_violation",
            "The response was filtered due to the prompt "
            "triggering Azure OpenAI's content management policy.",
            "prompt",
        )
        body["error"]["innererror"] = {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {"violence": {"filtered": True, "severity": "high"}},
        }
        return web.Response(status=400, body=orjson.dumps(body), content_type="application/json")

    if parsed.values.get("stream"):
        return await _stream(emulator, request, parsed)
    response = await _respond(emulator, parsed, emulator.state.get("output_text_tokens", 0))
    fault = emulator.take_fault("escaped_slashes", "cut_body", "trickle_body")
    if fault == "escaped_slashes":  # JSON may escape "/" as "\/" (PHP and others do)
        response.body = response.body.replace(b"/", b"\\/")
    elif fault == "cut_body":  # a 200 whose connection drops two thirds into the body
        return await _cut_short(request, response.body)
    elif fault == "trickle_body":  # a slow network: the body in ten parts, 50 ms apart
        return await _trickle(request, response.body)
    return response


async def _trickle(request: web.Request, body: bytes) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    step = -(-len(body) // 10)
    for start in range(0, len(body), step):
        await response.write(body[start : start + step])
        await asyncio.sleep(0.05)
    await response.write_eof()
    return response


async def _cut_short(request: web.Request, body: bytes) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) * 2 // 3])
    assert request.transport is not None
    request.transport.close()
    return response


def _authenticate(request: web.Request, azure: bool) -> None:
    if azure:
        key = request.headers.get("api-key")
        if key != API_KEY:
            raise _Invalid(
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.",
                code="401",
                status=401,
            )
        return
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise _Invalid(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth.",
            code="missing_api_key",
            status=401,
        )
    key = header[7:].strip()
    if key != API_KEY:
        masked = key[:3] + "*" * max(0, len(key) - 7) + key[-4:]
        raise _Invalid(
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
            status=401,
        )


def _deployment_model(emulator: Emulator, request: web.Request) -> str:
    version = request.query.get("api-version")
    if not version:
        raise _Invalid(
            "Missing API version parameter. The api-version query parameter "
            "(?api-version=) is required for all requests.",
            code="MissingApiVersionParameter",
        )
    if version not in AZURE_API_VERSIONS:
        raise _Invalid("Resource not found", code="404", status=404)
    deployment = request.match_info["deployment"]
    model = emulator.state.get("deployments", {}).get(deployment, deployment)
    if model not in MODELS:
        raise _Invalid(
            "The API deployment for this resource does not exist. If you created the deployment "
            "within the last 5 minutes, please wait a moment and try again.",
            code="DeploymentNotFound",
            status=404,
        )
    return model


async def _parse(request: web.Request, edit: bool) -> tuple[dict[str, Any], list[bytes]]:
    """Field values with their JSON types, and the raw bytes of each reference (and mask last)."""
    content_type = request.headers.get("Content-Type", "")
    body = await request.read()
    if content_type.startswith("multipart/form-data") and edit:
        try:
            fields, files = parse_multipart(content_type, body)
        except ValueError:
            raise _Invalid("Could not parse multipart form") from None
        values: dict[str, Any] = {}
        for name, texts in fields.items():
            if name not in EDIT_FIELDS:
                raise _Invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
            values[name] = _from_form(name, texts[-1], EDIT_FIELDS[name])
        images = []
        for name, _filename, _type, data in files:
            if name == "mask":
                values["mask"] = data
            elif name in ("image", "image[]"):
                images.append(data)
            else:
                raise _Invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        return values, images
    if not content_type.startswith("application/json"):
        expected = "application/json or multipart/form-data" if edit else "application/json"
        raise _Invalid(
            f"Invalid Content-Type header ({content_type or 'none'}), expected {expected}."
        )
    try:
        values = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Invalid("We could not parse the JSON body of your request.") from None
    if not isinstance(values, dict):
        raise _Invalid("The request body must be a JSON object.")
    known = {
        **(EDIT_FIELDS if edit else FIELDS),
        **({"images": list, "mask": dict} if edit else {}),
    }
    for name, value in list(values.items()):
        if name not in known:
            raise _Invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        if value is None:
            del values[name]
        elif not _is_type(value, known[name]):
            raise _Invalid(
                f"Invalid type for '{name}': expected {_TYPE_NAMES[known[name]]}, but got "
                f"{_type_name(value)} instead.",
                name,
                "invalid_type",
            )
    images = [_image_ref(ref, f"images[{i}]") for i, ref in enumerate(values.pop("images", []))]
    if "mask" in values:
        values["mask"] = _image_ref(values["mask"], "mask")
    return values, images


def _from_form(name: str, text: str, kind: type) -> Any:
    if kind is int:
        if not re.fullmatch(r"-?[0-9]+", text.strip()):
            raise _Invalid(
                f"Invalid type for '{name}': expected an integer, but got a string instead.",
                name,
                "invalid_type",
            )
        return int(text)
    if kind is bool:
        if text not in ("true", "false"):
            raise _Invalid(
                f"Invalid type for '{name}': expected a boolean, but got a string instead.",
                name,
                "invalid_type",
            )
        return text == "true"
    return text


def _image_ref(ref: Any, param: str) -> bytes:
    if not isinstance(ref, dict) or set(ref) - {"image_url", "file_id"} or len(ref) != 1:
        raise _Invalid(
            f"Invalid '{param}': expected an object with exactly one of 'image_url' or 'file_id'.",
            param,
        )
    if "file_id" in ref:
        raise _Invalid(f"No such File object: {ref['file_id']}", param, "invalid_file", status=404)
    match = re.fullmatch(r"data:image/[a-z]+;base64,(.+)", str(ref["image_url"]), re.DOTALL)
    if not match:
        raise _Invalid(
            f"Invalid '{param}.image_url': could not download the image.",
            param,
            "invalid_image_url",
        )
    try:
        return base64.b64decode(match[1], validate=True)
    except binascii.Error:
        raise _Invalid(
            f"Invalid '{param}.image_url': invalid base64 data.", param, "invalid_image_url"
        ) from None


def _validate(
    values: dict[str, Any], images: list[bytes], edit: bool, deployment_model: str | None
) -> _Request:
    model = deployment_model or values.get("model")
    if model is None:
        raise _Invalid(
            "Missing required parameter: 'model'.", "model", "missing_required_parameter"
        )
    if model in SHUT_DOWN:
        raise _Invalid(
            f"The model '{model}' has been deprecated and is no longer available.",
            "model",
            "model_not_found",
            status=404,
        )
    if model not in MODELS:
        raise _Invalid(
            f"The model '{model}' does not exist or you do not have access to it.",
            "model",
            "model_not_found",
            status=404,
        )
    spec = MODELS[model]
    prompt = values.get("prompt")
    if prompt is None:
        raise _Invalid(
            "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
        )
    if not prompt.strip():
        raise _Invalid(
            "Invalid 'prompt': empty string. Expected a string with minimum length 1.",
            "prompt",
            "empty_string",
        )
    if len(prompt) > MAX_PROMPT:
        raise _Invalid(
            f"Invalid 'prompt': string too long. Expected a string with maximum length "
            f"{MAX_PROMPT}, but got a string with length {len(prompt)} instead.",
            "prompt",
            "string_above_max_length",
        )
    for name, allowed in ENUMS.items():
        if name in values and values[name] not in allowed:
            listed = ", ".join(f"'{v}'" for v in allowed[:-1]) + f", and '{allowed[-1]}'"
            raise _Invalid(
                f"Invalid value: '{values[name]}'. Supported values are: {listed}.", name
            )
    for name, (low, high) in RANGES.items():
        if name in values and not low <= values[name] <= high:
            side = "below minimum" if values[name] < low else "above maximum"
            bound = f">= {low}" if values[name] < low else f"<= {high}"
            raise _Invalid(
                f"Invalid '{name}': integer {side} value. Expected a value {bound}, but got "
                f"{values[name]} instead.",
                name,
                "integer_below_min_value" if values[name] < low else "integer_above_max_value",
            )
    size = values.get("size", "auto")
    if size != "auto":
        _check_size(model, spec, size)
    output_format = values.get("output_format", "png")
    if values.get("background") == "transparent":
        if not spec.transparent:
            raise _Invalid(f"Transparent background is not supported for {model}.", "background")
        if output_format not in ("png", "webp"):
            raise _Invalid(
                "Transparent background requires output_format png or webp.", "background"
            )
    if "output_compression" in values and output_format not in ("jpeg", "webp"):
        raise _Invalid(
            "Compression less than 100 is only supported for JPEG and WEBP output formats.",
            "output_compression",
        )
    if "partial_images" in values and not values.get("stream"):
        raise _Invalid(
            "'partial_images' is only supported when 'stream' is true.", "partial_images"
        )
    if "input_fidelity" in values and values["input_fidelity"] not in spec.input_fidelity:
        raise _Invalid(
            f"input_fidelity '{values['input_fidelity']}' is not supported for {model}.",
            "input_fidelity",
        )
    references = []
    if edit:
        if not images:
            raise _Invalid(
                "Missing required parameter: 'image'.", "image", "missing_required_parameter"
            )
        if len(images) > MAX_IMAGES:
            raise _Invalid(
                f"Invalid 'image': too many images. Expected at most {MAX_IMAGES}, but got "
                f"{len(images)}.",
                "image",
                "array_above_max_length",
            )
        references = [_reference_size(data, i) for i, data in enumerate(images)]
        if "mask" in values:
            _check_mask(values.pop("mask"), references[0])
    return _Request(model, edit, values, references)


def _check_size(model: str, spec: ModelSpec, size: Any) -> None:
    if spec.sizes is not None:
        if size not in spec.sizes:
            listed = ", ".join(f"'{s}'" for s in spec.sizes) + ", and 'auto'"
            raise _Invalid(f"Invalid value: '{size}'. Supported values are: {listed}.", "size")
        return
    match = re.fullmatch(r"([0-9]+)x([0-9]+)", size)
    if not match:
        raise _Invalid(f"Invalid size '{size}'. Expected 'auto' or WIDTHxHEIGHT.", "size")
    width, height = int(match[1]), int(match[2])
    problem = None
    if width % FREE_MULTIPLE or height % FREE_MULTIPLE:
        problem = f"Width and height must both be divisible by {FREE_MULTIPLE}."
    elif max(width, height) > FREE_MAX_EDGE:
        problem = f"The longest edge must be at most {FREE_MAX_EDGE} pixels."
    elif max(width, height) > FREE_MAX_RATIO * min(width, height):
        problem = "The aspect ratio must be between 1:3 and 3:1."
    elif width * height < FREE_MIN_PIXELS:
        problem = "Requested resolution is below the current minimum pixel budget."
    elif width * height > FREE_MAX_PIXELS:
        problem = "Requested resolution is above the current maximum pixel budget."
    if problem:
        raise _Invalid(f"Invalid size '{size}'. {problem}", "size")


def _reference_size(data: bytes, index: int) -> tuple[int, int]:
    if len(data) > MAX_IMAGE_BYTES:
        raise _Invalid(f"Image {index + 1} is larger than 50 MB.", "image", "image_too_large")
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            if image.format not in ("PNG", "JPEG", "WEBP"):
                raise ValueError(image.format)
            return image.size
    except (OSError, ValueError):
        raise _Invalid(
            f"Invalid image file or mode for image {index + 1}, please check your image file.",
            "image",
            "invalid_image_format",
        ) from None


def _check_mask(data: bytes, first: tuple[int, int]) -> None:
    try:
        with PILImage.open(io.BytesIO(data)) as mask:
            ok = mask.format == "PNG" and mask.size == first and "A" in mask.getbands()
    except OSError:
        ok = False
    if not ok:
        raise _Invalid(
            "Invalid mask: it must be a PNG with an alpha channel, the size of the first image.",
            "mask",
            "invalid_image_format",
        )


# --- the answer ---


def _resolved(parsed: _Request) -> tuple[int, int, str, str, str]:
    size = parsed.values.get("size", "auto")
    width, height = (1024, 1024) if size == "auto" else (int(v) for v in size.split("x"))
    quality = parsed.values.get("quality", "auto")
    background = parsed.values.get("background", "auto")
    return (
        width,
        height,
        "medium" if quality == "auto" else quality,
        "opaque" if background == "auto" else background,
        parsed.values.get("output_format", "png"),
    )


async def _render(emulator: Emulator, parsed: _Request, index: int, variant: str = "final") -> str:
    if parsed.image is not None:
        return base64.b64encode(parsed.image).decode("ascii")
    width, height, _quality, background, fmt = _resolved(parsed)
    seed = f"{parsed.values['prompt']}|{index}|{variant}|{next(_counter)}"
    data = await asyncio.get_running_loop().run_in_executor(
        None,
        lambda: synth(
            width,
            height,
            fmt,
            seed=seed,
            alpha=background == "transparent",
            quality=parsed.values.get("output_compression", 100),
        ),
    )
    return emulator.sent_image_b64(data, fmt, preview=variant != "final")


def _usage(
    parsed: _Request, images: int, partials: int, *, stream: bool, text_out: int = 0
) -> dict[str, Any]:
    """``text_out``: text tokens the model writes per image."""
    width, height, quality, _background, _fmt = _resolved(parsed)
    text = max(1, math.ceil(len(parsed.values["prompt"]) / 4))
    image = sum(65 + 129 * math.ceil(w / 512) * math.ceil(h / 512) for w, h in parsed.references)
    image_out = images * MODELS[parsed.model].output_tokens(quality, width, height)
    image_out += partials * PARTIAL_IMAGE_TOKENS
    output = image_out + images * text_out
    usage: dict[str, Any] = {
        "input_tokens": text + image,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image},
        "output_tokens": output,
        "total_tokens": text + image + output,
    }
    # The completed stream event's usage has no output details in the SDK's types: sent there
    # only when there is text to report.
    if not stream or text_out:
        usage["output_tokens_details"] = {
            "image_tokens": image_out,
            "text_tokens": images * text_out,
        }
    return usage


async def _respond(emulator: Emulator, parsed: _Request, text_out: int) -> web.Response:
    n = parsed.values.get("n", 1)
    width, height, quality, background, fmt = _resolved(parsed)
    data = [{"b64_json": await _render(emulator, parsed, i)} for i in range(n)]
    body = {
        "created": int(time.time()),
        "data": data,
        "background": background,
        "output_format": fmt,
        "quality": quality,
        "size": f"{width}x{height}",
        "usage": _usage(parsed, n, 0, stream=False, text_out=text_out),
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _stream(emulator: Emulator, request: web.Request, parsed: _Request) -> web.StreamResponse:
    """Per image: its previews, then its completed event with the usage it consumed.

    The real API leaves n > 1 with streaming unspecified; images here come one after another.
    """
    prefix = "image_edit" if parsed.edit else "image_generation"
    n, partials = parsed.values.get("n", 1), parsed.values.get("partial_images", 0)
    width, height, quality, background, fmt = _resolved(parsed)
    common = {
        "background": background,
        "output_format": fmt,
        "quality": quality,
        "size": f"{width}x{height}",
    }
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)

    line_ends = emulator.take_fault(*_LINE_END_FAULTS)

    async def send(kind: str, payload: dict[str, Any]) -> None:
        nonlocal line_ends
        data = orjson.dumps(payload)
        if line_ends and kind.endswith(".partial_image"):
            data = _LINE_END_FAULTS[line_ends](data)
            line_ends = None
        await response.write(f"event: {kind}\ndata: ".encode() + data + b"\n\n")

    fault = emulator.take_fault("moderation_stream", "stream_error", "stream_cut")
    for index in range(n):
        for number in range(partials):
            await send(
                f"{prefix}.partial_image",
                {
                    "type": f"{prefix}.partial_image",
                    "b64_json": await _render(emulator, parsed, index, f"partial-{number}"),
                    "created_at": int(time.time()),
                    "partial_image_index": number,
                    **common,
                },
            )
            if fault:
                break
        if fault:  # after the first preview, or before the image when there are none
            if fault != "stream_cut":
                await send("error", {"type": "error", "error": _STREAM_ERRORS[fault]})
            return response
        await send(
            f"{prefix}.completed",
            {
                "type": f"{prefix}.completed",
                "b64_json": await _render(emulator, parsed, index),
                "created_at": int(time.time()),
                **common,
                "usage": _usage(
                    parsed, 1, partials, stream=True,
                    text_out=emulator.state.get("output_text_tokens", 0),
                ),
            },
        )
    await response.write_eof()
    return response


def _is_type(value: Any, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return _TYPE_NAMES.get(type(value), "a number" if isinstance(value, float) else "null")
