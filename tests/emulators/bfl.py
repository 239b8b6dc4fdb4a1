"""Black Forest Labs API emulator: submit per model, poll on another host, signed result URLs.

Three "hosts" on one loopback server: the API answers on ``emulator.url``
(``http://127.0.0.1:PORT``); polling URLs name ``http://localhost:PORT`` (``state
["polling_host"]`` changes the name) and a poll is answered only on the host its URL named;
result URLs are on ``http://localhost:PORT/delivery/…``, signed, expiring, and refuse any
request that carries ``x-key`` (each one is kept in ``state["leaked_keys"]``).

Validation is strict, like a pydantic model with ``extra="forbid"``: unknown fields, wrong
types and out-of-range values are FastAPI-shaped 422s (``{"detail": [{type, loc, msg}]}``);
so are widths/heights off the 16-pixel grid or over 4 MP, more references than the model
takes, references that are not raw base64 images (a ``data:`` prefix is refused) or URLs, a
Kontext ratio outside 21:9…9:21, and a Kontext ``safety_tolerance`` over 2 with an input image.

Prices as BFL publishes them (https://docs.bfl.ai/quick_start/pricing, and BFL's API skill,
https://github.com/black-forest-labs/skills/blob/main/skills/bfl-api/SKILL.md): a credit is
$0.01; FLUX.2 costs ``(firstMP + (outputMP-1) * mpPrice) + (inputMP * mpPrice)`` credits, the
first megapixel charged whole even for a smaller image, with a megapixel of 1,000,000 pixels
("1024x1024 | 1.05 MP"); Kontext costs a price per image. The submit answer states ``cost``
(credits) and, for FLUX.2, ``input_mp`` / ``output_mp`` to two decimals, as BFL's API reference
shows; the ``Ready`` poll states the settled ``cost`` (its ``SettledCostResultResponse``).

State: ``polls_until_ready`` (2 pending polls per task), ``url_ttl_s`` (600), ``polling_host``,
``settled_credits`` (what the ``Ready`` poll states instead of the submit's estimate).
Faults besides the common ones: ``credits`` (402 on submit), ``concurrency`` (429 whose wait is
only in the body), ``moderation`` / ``content_moderated`` / ``task_error`` / ``task_not_found``
(the next poll's status), ``expired_url`` (the next result URL is already expired: 403),
``no_cost`` (the next task states no cost at all, as answers without one do).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import math
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web
from PIL import Image

from tests.emulators.images import synth

NAME = "bfl"

MAX_PIXELS = 2048 * 2048  # FLUX.2: "up to 4 MP"
GRID = 16
KONTEXT_PIXELS = 1024 * 1024  # Kontext: "~1 MP"
PIXELS_PER_MEGAPIXEL = 1_000_000  # BFL: "1024x1024 | 1.05 MP"
KONTEXT_MAX_RATIO = 21 / 9
KONTEXT_MAX_TOLERANCE_WITH_IMAGE = 2
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
SIGNING_KEY = secrets.token_bytes(16)
#: pydantic's error type and message per field type.
TYPE_ERRORS = {
    int: ("int_type", "Input should be a valid integer"),
    float: ("float_type", "Input should be a valid number"),
    str: ("string_type", "Input should be a valid string"),
    bool: ("bool_type", "Input should be a valid boolean"),
}


@dataclass(frozen=True)
class Field:
    kind: type  # int, float (any number), str or bool
    required: bool = False
    nullable: bool = True
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()


def _references(count: int) -> dict[str, Field]:
    names = ["input_image", *(f"input_image_{i}" for i in range(2, count + 1))]
    return {name: Field(str) for name in names}


_COMMON = {
    "prompt": Field(str, required=True, nullable=False),
    "seed": Field(int),
    "output_format": Field(str, choices=("jpeg", "png")),
    "webhook_url": Field(str),
    "webhook_secret": Field(str),
}
_FLUX2 = {
    **_COMMON,
    "width": Field(int, ge=64),
    "height": Field(int, ge=64),
    "safety_tolerance": Field(int, nullable=False, ge=0, le=5),
}
_FLEX = {
    "steps": Field(int, ge=1, le=50),
    "guidance": Field(float, ge=1.5, le=10),
    "prompt_upsampling": Field(bool),
}
_KONTEXT = {
    **_COMMON,
    "aspect_ratio": Field(str),
    "prompt_upsampling": Field(bool),
    "safety_tolerance": Field(int, nullable=False, ge=0, le=6),
}


@dataclass(frozen=True)
class Model:
    fields: dict[str, Field]
    by_ratio: bool = False
    #: Credits: FLUX.2's first output megapixel, or Kontext's image.
    first: Decimal = Decimal(0)
    #: Credits: each further output megapixel and each input megapixel (FLUX.2's "+MP").
    further: Decimal = Decimal(0)


def _flux2(references: int, first: str, further: str, extra: dict[str, Field] | None = None) -> Model:
    fields = {**_FLUX2, **(extra or {}), **_references(references)}
    return Model(fields, first=Decimal(first), further=Decimal(further))


def _kontext(price: str) -> Model:
    return Model({**_KONTEXT, **_references(1)}, by_ratio=True, first=Decimal(price))


# BFL's "1st MP" and "+MP" columns, in credits.
MODELS = {
    "flux-2-pro": _flux2(8, "3", "1.5"),
    "flux-2-pro-preview": _flux2(8, "3", "1.5"),
    "flux-2-max": _flux2(8, "7", "3"),
    "flux-2-flex": _flux2(8, "5", "5", _FLEX),
    "flux-2-klein-4b": _flux2(4, "1.4", "0.1"),
    "flux-2-klein-9b": _flux2(4, "1.5", "0.2"),
    "flux-kontext-pro": _kontext("4"),
    "flux-kontext": _kontext("4"),  # the path BFL's skill doc uses for Kontext [pro]
    "flux-kontext-max": _kontext("8"),
}


def price(model: Model, output_pixels: int, input_pixels: int) -> Decimal:
    """What BFL charges for a task, in credits, by its published formula."""
    if model.by_ratio:
        return model.first
    output_mp = Decimal(output_pixels) / PIXELS_PER_MEGAPIXEL
    input_mp = Decimal(input_pixels) / PIXELS_PER_MEGAPIXEL
    return model.first + max(Decimal(0), output_mp - 1) * model.further + input_mp * model.further


@dataclass
class Task:
    id: str
    width: int
    height: int
    fmt: str
    seed: int
    prompt: str
    polling_host: str
    #: The credits its submit answer stated; ``None`` when it stated none.
    cost: Decimal | None = None
    polls: int = 0
    asset: bytes | None = None


def error_body(status: int, code: str, message: str) -> dict:
    return {"detail": message}


def routes(emulator: Any) -> list[web.RouteDef]:
    def tasks() -> dict[str, Task]:
        return emulator.state.setdefault("tasks", {})

    def unauthenticated(request: web.Request) -> web.Response | None:
        if not request.headers.get("x-key"):
            return emulator.error(401, "unauthenticated", "Not authenticated")
        return None

    async def submit(request: web.Request) -> web.Response:
        model = MODELS.get(request.match_info["model"])
        if model is None:
            return emulator.error(404, "not_found", "Not Found")
        if (denied := unauthenticated(request)) is not None:
            return denied
        if emulator.take_fault("credits"):
            return emulator.error(
                402,
                "insufficient_credits",
                "Insufficient credits. Top up at https://dashboard.bfl.ai",
            )
        if emulator.take_fault("concurrency"):
            body = {
                "error": "rate_limit_exceeded",
                "message": "Too many concurrent requests",
                "retry_after": 5,
            }
            return web.json_response(body, status=429)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _invalid([_problem("json_invalid", [], "JSON decode error")])
        problems = _validate(model, body)
        if problems:
            return _invalid(problems)
        references = [
            _decode_reference(body[k])
            for k in model.fields
            if k.startswith("input_image") and body.get(k)
        ]
        width, height = _output_size(model, body)
        input_pixels = sum(w * h for w, h in references if w)
        cost = None if emulator.take_fault("no_cost") else price(model, width * height, input_pixels)
        task_id = secrets.token_hex(16)
        polling_host = f"{emulator.state.get('polling_host', 'localhost')}:{request.url.port}"
        seed = body.get("seed")
        tasks()[task_id] = Task(
            id=task_id,
            width=width,
            height=height,
            fmt=body.get("output_format") or "jpeg",
            seed=seed if seed is not None else secrets.randbelow(2**31),
            prompt=body["prompt"],
            polling_host=polling_host,
            cost=cost,
        )
        return web.json_response(
            {
                "id": task_id,
                "polling_url": f"http://{polling_host}/v1/get_result?id={task_id}",
                "cost": _number(cost),
                "input_mp": None if model.by_ratio else _megapixels(input_pixels),
                "output_mp": None if model.by_ratio else _megapixels(width * height),
            }
        )

    async def get_result(request: web.Request) -> web.Response:
        if (denied := unauthenticated(request)) is not None:
            return denied
        task_id = request.query.get("id", "")
        task = tasks().get(task_id)
        if task is None or request.host != task.polling_host:
            return web.json_response({"id": task_id, "status": "Task not found"}, status=404)
        fault = emulator.take_fault(
            "moderation", "content_moderated", "task_error", "task_not_found"
        )
        if fault == "moderation":
            return _status(
                task,
                "Request Moderated",
                details={"Moderation Reasons": ["Derivative Works Filter"]},
            )
        if fault == "content_moderated":
            return _status(task, "Content Moderated", details={"Moderation Reasons": ["NSFW"]})
        if fault == "task_error":
            return _status(task, "Error", details="Internal error during generation")
        if fault == "task_not_found":
            return _status(task, "Task not found")
        task.polls += 1
        pending = int(emulator.state.get("polls_until_ready", 2))
        if task.polls <= pending:
            return _status(task, "Pending", progress=round(task.polls / (pending + 1), 2))
        if task.asset is None:
            task.asset = emulator.sent_image(
                synth(task.width, task.height, task.fmt, seed=f"{task.seed}:{task.prompt}"), task.fmt
            )
        ttl = (
            -1
            if emulator.take_fault("expired_url")
            else float(emulator.state.get("url_ttl_s", 600))
        )
        expiry = int(time.time() + ttl)
        sample = (
            f"http://{task.polling_host}/delivery/results/{task.id}/sample.{task.fmt}"
            f"?se={expiry}&sig={_signature(task.id, expiry)}"
        )
        result = {
            "sample": sample,
            "prompt": task.prompt,
            "seed": task.seed,
            "start_time": time.time() - 1,
            "end_time": time.time(),
            "duration": 1.0,
        }
        settled = emulator.state.get("settled_credits", task.cost)
        return _status(task, "Ready", result=result, cost=None if task.cost is None else settled)

    async def delivery(request: web.Request) -> web.Response:
        if "x-key" in request.headers or "authorization" in request.headers:
            emulator.state.setdefault("leaked_keys", []).append(request.path_qs)
            return web.Response(status=400, text="credentials sent to the asset host")
        task = tasks().get(request.match_info["task"])
        try:
            expiry = int(request.query.get("se", ""))
        except ValueError:
            expiry = 0
        if (
            task is None
            or task.asset is None
            or not hmac.compare_digest(request.query.get("sig", ""), _signature(task.id, expiry))
        ):
            return _blob_error(403, "AuthenticationFailed", "Signature did not match")
        if expiry < time.time():
            return _blob_error(403, "AuthenticationFailed", "Signed expiry time has passed")
        return web.Response(body=task.asset, content_type=MEDIA_TYPES[task.fmt])

    return [
        web.post("/v1/{model}", submit),
        web.get("/v1/get_result", get_result),
        web.get("/delivery/results/{task}/sample.{ext}", delivery),
    ]


# --- validation ---


def _validate(model: Model, body: Any) -> list[dict]:
    if not isinstance(body, dict):
        return [
            _problem("model_attributes_type", [], "Input should be a valid dictionary or object")
        ]
    problems = [
        _problem("extra_forbidden", [key], "Extra inputs are not permitted", value)
        for key, value in body.items()
        if key not in model.fields
    ]
    for name, spec in model.fields.items():
        if name not in body:
            if spec.required:
                problems.append(_problem("missing", [name], "Field required"))
            continue
        problem = _check(name, spec, body[name])
        if problem:
            problems.append(problem)
    if problems:
        return problems
    if not body["prompt"].strip():
        problems.append(
            _problem("value_error", ["prompt"], "Value error, prompt must not be empty")
        )
    for name in model.fields:
        if (
            name.startswith("input_image")
            and body.get(name)
            and _decode_reference(body[name]) is None
        ):
            problems.append(
                _problem(
                    "value_error",
                    [name],
                    "Value error, input image must be a URL or "
                    "raw base64 of an image (no data: prefix)",
                )
            )
    if model.by_ratio:
        problems += _check_kontext(body)
    else:
        problems += _check_flux2(body)
    return problems


def _check(name: str, spec: Field, value: Any) -> dict | None:
    if value is None:
        return None if spec.nullable else _problem("missing", [name], "Field required")
    ok = (
        isinstance(value, bool)
        if spec.kind is bool
        else isinstance(value, (int, float)) and not isinstance(value, bool)
        if spec.kind is float
        else isinstance(value, spec.kind) and not isinstance(value, bool)
    )
    if not ok:
        kind, message = TYPE_ERRORS[spec.kind]
        return _problem(kind, [name], message, value)
    if spec.choices and value not in spec.choices:
        return _problem(
            "enum", [name], "Input should be " + " or ".join(f"'{c}'" for c in spec.choices), value
        )
    if spec.ge is not None and value < spec.ge:
        return _problem(
            "greater_than_equal",
            [name],
            f"Input should be greater than or equal to {spec.ge:g}",
            value,
        )
    if spec.le is not None and value > spec.le:
        return _problem(
            "less_than_equal", [name], f"Input should be less than or equal to {spec.le:g}", value
        )
    return None


def _check_flux2(body: dict) -> list[dict]:
    problems = []
    width, height = body.get("width"), body.get("height")
    for name, value in (("width", width), ("height", height)):
        if value is not None and value % GRID:
            problems.append(
                _problem("value_error", [name], f"Value error, {name} must be a multiple of {GRID}")
            )
    if width and height and width * height > MAX_PIXELS:
        problems.append(
            _problem(
                "value_error",
                ["width"],
                f"Value error, width x height must be at most "
                f"{MAX_PIXELS} pixels (4 MP), got {width * height}",
            )
        )
    return problems


def _check_kontext(body: dict) -> list[dict]:
    problems = []
    ratio = body.get("aspect_ratio")
    if ratio is not None:
        value = _ratio(ratio)
        if value is None or not 1 / KONTEXT_MAX_RATIO - 1e-6 <= value <= KONTEXT_MAX_RATIO + 1e-6:
            problems.append(
                _problem(
                    "value_error",
                    ["aspect_ratio"],
                    "Value error, aspect ratio must be between 21:9 and 9:21",
                    ratio,
                )
            )
    tolerance = body.get("safety_tolerance")
    if (
        body.get("input_image")
        and tolerance is not None
        and tolerance > KONTEXT_MAX_TOLERANCE_WITH_IMAGE
    ):
        problems.append(
            _problem(
                "value_error",
                ["safety_tolerance"],
                "Value error, safety_tolerance must be "
                f"at most {KONTEXT_MAX_TOLERANCE_WITH_IMAGE} with an input image",
                tolerance,
            )
        )
    return problems


def _ratio(label: str) -> float | None:
    w, sep, h = label.partition(":")
    try:
        value = float(w) / float(h) if sep else None
    except (ValueError, ZeroDivisionError):
        return None
    return value if value and math.isfinite(value) and value > 0 else None


def _decode_reference(value: str) -> tuple[int, int] | None:
    """The image's size; ``(0, 0)`` for a URL (BFL fetches it); ``None`` when unusable."""
    if value.startswith(("http://", "https://")):
        return 0, 0
    try:
        data = base64.b64decode(value, validate=True)
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (binascii.Error, ValueError, OSError):
        return None


def _output_size(model: Model, body: dict) -> tuple[int, int]:
    if model.by_ratio:
        ratio = _ratio(body.get("aspect_ratio") or "1:1") or 1.0
        width = round(math.sqrt(KONTEXT_PIXELS * ratio) / GRID) * GRID
        return width, round(width / ratio / GRID) * GRID
    return body.get("width") or 1024, body.get("height") or 1024


# --- answers ---


def _problem(kind: str, loc: list[str], msg: str, value: Any = None) -> dict:
    problem = {"type": kind, "loc": ["body", *loc], "msg": msg}
    if value is not None:
        problem["input"] = value if not isinstance(value, str) else value[:100]
    return problem


def _invalid(problems: list[dict]) -> web.Response:
    return web.json_response({"detail": problems}, status=422)


def _status(
    task: Task,
    status: str,
    *,
    result: dict | None = None,
    progress: float | None = None,
    details: Any = None,
    cost: Any = None,
) -> web.Response:
    body = {
        "id": task.id,
        "status": status,
        "result": result,
        "progress": progress,
        "details": details,
        "preview": None,
    }
    if cost is not None:
        body["cost"] = _number(cost)
    return web.json_response(body)


def _number(value: Any) -> float | None:
    """A JSON number (credits are written as the decimal they are: 7.791456)."""
    return None if value is None else float(value)


def _megapixels(pixels: int) -> float:
    """BFL's ``input_mp`` / ``output_mp``: megapixels to two decimals."""
    return float(round(Decimal(pixels) / PIXELS_PER_MEGAPIXEL, 2))


def _signature(task_id: str, expiry: int) -> str:
    return hmac.new(SIGNING_KEY, f"{task_id}:{expiry}".encode(), hashlib.sha256).hexdigest()[:32]


def _blob_error(status: int, code: str, message: str) -> web.Response:
    """What an Azure-style blob store answers for a bad or expired signature."""
    body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return web.Response(status=status, text=body, content_type="application/xml")
