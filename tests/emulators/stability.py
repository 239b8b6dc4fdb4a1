"""Stability AI REST v2beta generate services (shared/spec/providers.md §5), strictly.

``POST /v2beta/stable-image/generate/{ultra|core|sd3}`` takes ``multipart/form-data`` only;
every field is checked against the service's own list, type and range, and anything else is
Stability's 400 ``{"id", "name", "errors": [...]}``. ``Accept: image/*`` answers raw bytes
with ``finish-reason`` / ``seed`` headers, ``application/json`` answers
``{"image": <base64>, "finish_reason", "seed"}``. Images are real, in the requested format,
at the pixels of the ratio (sd3 image-to-image: the ratio nearest the input image).

Faults of its own, besides the common ones: ``content_filtered`` (200, blurred image,
finish reason ``CONTENT_FILTERED``), ``moderation`` (403 ``content_moderation``), ``credits``
(402 ``payment_required``), ``rate_window`` (429 with a lowercase ``retry-after: 60``, as
Stability times a key out for 60 s after 150 requests in 10 s).
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import math
import random
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from PIL import Image, ImageFilter

from tests.emulators.base import Emulator, Recorded
from tests.emulators.images import synth

NAME = "stability"

#: Output pixels per ratio (Stability's support article on aspect ratios).
SIZES = {
    "21:9": (1536, 640), "16:9": (1344, 768), "3:2": (1216, 832), "5:4": (1088, 896),
    "1:1": (1024, 1024), "4:5": (896, 1088), "2:3": (832, 1216), "9:16": (768, 1344),
    "9:21": (640, 1536),
}  # fmt: skip
STYLE_PRESETS = (
    "enhance", "anime", "photographic", "digital-art", "comic-book", "fantasy-art", "line-art",
    "analog-film", "neon-punk", "isometric", "low-poly", "origami", "modeling-compound",
    "cinematic", "3d-model", "pixel-art", "tile-texture",
)  # fmt: skip
#: Fields each service accepts (providers.md §5 table).
COMMON_FIELDS = {
    "prompt",
    "negative_prompt",
    "aspect_ratio",
    "seed",
    "output_format",
    "style_preset",
}
FIELDS = {
    "ultra": COMMON_FIELDS | {"image", "strength"},
    "core": COMMON_FIELDS,
    "sd3": COMMON_FIELDS | {"image", "strength", "mode", "model", "cfg_scale"},
}
#: The sd3 service's ``output_format``: webp there is unverified, so the emulator refuses it.
OUTPUT_FORMATS = {
    "ultra": ("png", "jpeg", "webp"),
    "core": ("png", "jpeg", "webp"),
    "sd3": ("png", "jpeg"),
}
#: 3.5 ids, and the old sd3 ids Stability aliases to them.
SD3_MODELS = (
    "sd3.5-large",
    "sd3.5-large-turbo",
    "sd3.5-medium",
    "sd3.5-flash",
    "sd3-large",
    "sd3-large-turbo",
    "sd3-medium",
)
MAX_SEED = 4_294_967_294
MAX_PROMPT = 10_000
MAX_REQUEST_BYTES = 10 * 1024 * 1024
REFERENCE_FORMATS = {"PNG", "JPEG", "WEBP"}
MIN_REFERENCE_EDGE, MAX_REFERENCE_EDGE, MIN_REFERENCE_PIXELS = 64, 16_384, 4096
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

FAULTS = {
    "moderation": (
        403,
        "content_moderation",
        (
            "Your request was flagged by our content moderation system, as a result your request "
            "was denied and you were not charged."
        ),
    ),
    "credits": (402, "payment_required", "You lack sufficient credits to make this request."),
    "rate_window": (
        429,
        "rate_limit_exceeded",
        (
            "You have exceeded the rate limit of 150 requests within a 10 second period, and have "
            "been timed out for 60 seconds."
        ),
    ),
}


@dataclass(frozen=True)
class Upload:
    filename: str | None
    content_type: str
    data: bytes


def routes(emulator: Emulator) -> list[web.RouteDef]:
    async def generate(request: web.Request) -> web.StreamResponse:
        return await _generate(emulator, request)

    return [web.post("/v2beta/stable-image/generate/{service}", generate)]


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "name": code, "errors": [message]}


def form(recorded: Recorded) -> dict[str, str | Upload]:
    """The form fields of a recorded request (tests assert on what was sent)."""
    return _parse_form(recorded.headers.get("Content-Type", ""), recorded.body)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, name: str = "bad_request") -> None:
        super().__init__(message)
        self.status, self.name = status, name


# --- the service ---


async def _generate(emulator: Emulator, request: web.Request) -> web.StreamResponse:
    service = request.match_info["service"]
    if service not in FIELDS:
        return emulator.error(404, "not_found", f"no generate service named {service}")
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Bearer" or not key.strip():
        return emulator.error(401, "unauthorized", "authorization: missing or invalid API key")
    try:
        accept = _accept(request.headers.get("Accept"))
        body = await request.read()
        if len(body) > MAX_REQUEST_BYTES:
            raise BadRequest("payload: the request is larger than 10 MiB", 413, "payload_too_large")
        params = _validate(service, _parse_form(request.headers.get("Content-Type", ""), body))
    except BadRequest as exc:
        return emulator.error(exc.status, exc.name, str(exc))

    fault = emulator.take_fault(*FAULTS)
    if fault:
        status, name, message = FAULTS[fault]
        headers = {"retry-after": "60"} if status == 429 else None
        return emulator.error(status, name, message, headers)
    filtered = emulator.take_fault("content_filtered") is not None

    seed = params["seed"] or random.randint(1, MAX_SEED)
    width, height = params["size"]
    fmt = params["output_format"]
    data = synth(
        width, height, fmt, seed=f"{service}/{params.get('model')}/{params['prompt']}/{seed}"
    )
    if filtered:
        data = _blurred(data, fmt)
    finish_reason = "CONTENT_FILTERED" if filtered else "SUCCESS"
    request_id = uuid.uuid4().hex
    if accept == "application/json":
        return web.Response(
            body=orjson.dumps(
                {
                    "image": emulator.sent_image_b64(data, fmt),
                    "finish_reason": finish_reason,
                    "seed": seed,
                }
            ),
            content_type="application/json",
            headers={"x-request-id": request_id},
        )
    return web.Response(
        body=emulator.sent_image(data, fmt),
        content_type=MEDIA_TYPES[fmt],
        headers={"finish-reason": finish_reason, "seed": str(seed), "x-request-id": request_id},
    )


def _accept(value: str | None) -> str:
    if value is None or value == "image/*":
        return "image/*"  # Stability's default
    if value == "application/json":
        return value
    raise BadRequest("accept: must be image/* or application/json")


def _parse_form(content_type: str, body: bytes) -> dict[str, str | Upload]:
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest("content-type: the request body must be multipart/form-data")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise BadRequest("body: malformed multipart/form-data")
    fields: dict[str, str | Upload] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_content_disposition() != "form-data":
            raise BadRequest("body: every part needs Content-Disposition: form-data with a name")
        if name in fields:
            raise BadRequest(f"{name}: sent more than once")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            fields[name] = Upload(filename, part.get_content_type(), payload)
        else:
            fields[name] = payload.decode(part.get_content_charset() or "utf-8")
    return fields


def _validate(service: str, fields: dict[str, str | Upload]) -> dict[str, Any]:
    """The checked values; each violation is Stability's 400."""
    errors = [f"{name}: unknown field" for name in fields if name not in FIELDS[service]]
    text = {name: value for name, value in fields.items() if isinstance(value, str)}
    errors += [
        f"{name}: expected a text field, got a file"
        for name, value in fields.items()
        if name != "image" and isinstance(value, Upload)
    ]
    if "image" in text:
        errors.append("image: expected a file")

    prompt = text.get("prompt", "")
    if not 1 <= len(prompt) <= MAX_PROMPT:
        errors.append(f"prompt: must be between 1 and {MAX_PROMPT} characters")
    if len(text.get("negative_prompt", "")) > MAX_PROMPT:
        errors.append(f"negative_prompt: must be at most {MAX_PROMPT} characters")
    if "style_preset" in text and text["style_preset"] not in STYLE_PRESETS:
        errors.append(f"style_preset: must be one of {', '.join(STYLE_PRESETS)}")
    aspect_ratio = text.get("aspect_ratio", "1:1")
    if aspect_ratio not in SIZES:
        errors.append(f"aspect_ratio: must be one of {', '.join(SIZES)}")
    output_format = text.get("output_format", "png")
    if output_format not in OUTPUT_FORMATS[service]:
        errors.append(f"output_format: must be one of {', '.join(OUTPUT_FORMATS[service])}")
    seed = _number(text, "seed", 0, MAX_SEED, errors, integer=True) or 0
    strength = _number(text, "strength", 0, 1, errors)
    _number(text, "cfg_scale", 1, 10, errors)

    image = fields.get("image")
    reference_size = _reference_size(image, errors) if isinstance(image, Upload) else None
    if image is not None and strength is None:
        errors.append("strength: required when an image is provided")
    if image is None and "strength" in text:
        errors.append("strength: only valid with an image")
    model = None
    if service == "sd3":
        model = text.get("model", "sd3.5-large")
        if model not in SD3_MODELS:
            errors.append(f"model: must be one of {', '.join(SD3_MODELS)}")
        mode = text.get("mode", "text-to-image")
        if mode not in ("text-to-image", "image-to-image"):
            errors.append("mode: must be text-to-image or image-to-image")
        elif (mode == "image-to-image") != (image is not None):
            errors.append("mode: image-to-image needs an image, and an image needs image-to-image")
        elif mode == "image-to-image" and "aspect_ratio" in text:
            errors.append("aspect_ratio: only valid in text-to-image mode")
    if errors:
        raise BadRequest("; ".join(errors))

    size = SIZES[aspect_ratio]
    if service == "sd3" and reference_size is not None:
        size = SIZES[_nearest_ratio(*reference_size)]
    return {
        "prompt": prompt,
        "seed": seed,
        "output_format": output_format,
        "size": size,
        "model": model,
    }


def _number(
    text: dict[str, str],
    name: str,
    lo: float,
    hi: float,
    errors: list[str],
    *,
    integer: bool = False,
) -> float | None:
    if name not in text:
        return None
    try:
        value = int(text[name]) if integer else float(text[name])
    except ValueError:
        errors.append(f"{name}: expected {'an integer' if integer else 'a number'}")
        return None
    if not (lo <= value <= hi) or math.isnan(value):
        errors.append(f"{name}: must be between {lo:g} and {hi:g}")
        return None
    return value


def _reference_size(image: Upload, errors: list[str]) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(image.data)) as decoded:
            decoded.load()
            fmt, (width, height) = decoded.format, decoded.size
    except (OSError, ValueError, SyntaxError):  # what Pillow raises for undecodable bytes
        errors.append("image: could not be decoded")
        return None
    if fmt not in REFERENCE_FORMATS:
        errors.append("image: must be jpeg, png or webp")
    elif not (
        MIN_REFERENCE_EDGE <= min(width, height)
        and max(width, height) <= MAX_REFERENCE_EDGE
        and width * height >= MIN_REFERENCE_PIXELS
    ):
        errors.append(
            "image: each side must be 64 to 16,384 pixels, and 4,096 pixels at least in all"
        )
    return width, height


def _nearest_ratio(width: int, height: int) -> str:
    target = math.log(width / height)
    return min(SIZES, key=lambda label: abs(math.log(SIZES[label][0] / SIZES[label][1]) - target))


def _blurred(data: bytes, fmt: str) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.filter(ImageFilter.GaussianBlur(24)).save(
            out, {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
        )
    return out.getvalue()
