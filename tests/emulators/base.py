"""What every emulator shares: a server thread, switchable faults, a request log, latency.

An emulator module exposes ``NAME`` and ``routes(emulator) -> list[web.RouteDef]`` plus
``error_body(status, code, message) -> dict`` in that API's own error shape. Faults are
switched on per test (``emulator.fault("rate_limit", times=1)``) or over HTTP
(``POST /_emulator/faults {"fault": "rate_limit", "times": 1}``) when it runs standalone.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import orjson
from aiohttp import web
from PIL import Image as PILImage

#: Faults every emulator understands; modules add their own (moderation, expired URLs …).
COMMON_FAULTS = {
    "rate_limit": (429, "rate_limit_exceeded", "Rate limit reached, retry later"),
    "server_error": (500, "server_error", "The server had an error processing your request"),
    "overloaded": (503, "overloaded", "The engine is currently overloaded"),
    "bad_key": (401, "invalid_api_key", "Incorrect API key provided"),
    "timeout_status": (504, "timeout", "Gateway timeout"),
}
#: Faults that are not an HTTP status: handled by the middleware itself.
TRANSPORT_FAULTS = ("drop", "malformed", "slow")
#: An upstream whose error echoes the request's headers, credentials included, as some proxies
#: and debugging servers do (in the API's own error shape).
ECHO_HEADERS_FAULT = "echo_headers"
#: An upstream that answers 200 with usage no real one sends: each number in the answer's
#: usage object (``usage``, ``usageMetadata``) made negative, a string or a million times
#: larger, or the object left out.
USAGE_FAULTS = {
    "usage_negative": lambda n: -abs(n) - 1,
    "usage_string": lambda n: "many",
    "usage_absurd": lambda n: n * 1_000_000 + 1_000_000,
    "usage_missing": None,
}
USAGE_KEYS = ("usage", "usageMetadata")
#: An upstream that answers 200 with an image no client can use: base64 whose start is not
#: base64, the image cut to two thirds of its bytes, bytes of no image format (an HTML page as
#: long as the image), or an image of another format than the one declared (a JPEG declared PNG,
#: a PNG declared anything else). Emulators hand every image they send through
#: ``Emulator.sent_image`` or ``Emulator.sent_image_b64``; the same names with ``partial_`` in
#: front spoil a preview (a partial image) instead.
IMAGE_FAULTS = ("image_garbage_base64", "image_truncated", "image_not_an_image", "image_wrong_type",
                "image_json_breakout")
#: Put inside an image's base64 by ``image_json_breakout``: escaped in the upstream's JSON, it
#: would close the image's string and add a member wherever the decoded value is written raw.
JSON_BREAKOUT = '","forged":"by the upstream.'  # a multiple of 4 characters: the length check passes
GARBAGE_BASE64 = "!!!not*base64!!!"
NOT_AN_IMAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"


def _with_bad_usage(body: Any, change: Callable[[int], Any] | None) -> bytes:
    for key in USAGE_KEYS:
        if isinstance(body, dict) and key in body:
            if change is None:
                del body[key]
            else:
                body[key] = _map_numbers(body[key], change)
    return orjson.dumps(body)


def _map_numbers(value: Any, change: Callable[[int], Any]) -> Any:
    if isinstance(value, dict):
        return {k: _map_numbers(v, change) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_numbers(v, change) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return change(value)
    return value


def _spoiled(data: bytes, fmt: str, fault: str) -> bytes:
    if fault.endswith("image_truncated"):
        return data[: len(data) * 2 // 3]
    if fault.endswith("image_not_an_image"):
        return (NOT_AN_IMAGE * (len(data) // len(NOT_AN_IMAGE) + 1))[: len(data)]
    other = "jpeg" if fmt == "png" else "png"
    with PILImage.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        (image.convert("RGB") if other == "jpeg" else image).save(out, other.upper())
    return out.getvalue()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Emulator:
    module: ModuleType
    latency_ms: int = 0
    slow_ms: int = 5000
    requests: list[Recorded] = field(default_factory=list)
    _faults: deque[str] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    #: Free-form state an emulator module keeps (jobs being polled, issued URLs …).
    state: dict[str, Any] = field(default_factory=dict)

    def fault(self, name: str, times: int = 1) -> None:
        with self._lock:
            self._faults.extend([name] * times)

    def take_fault(self, *names: str) -> str | None:
        """The next queued fault if it is one of ``names`` (any, when none given)."""
        with self._lock:
            if self._faults and (not names or self._faults[0] in names):
                return self._faults.popleft()
        return None

    def sent_image(self, data: bytes, fmt: str, *, preview: bool = False) -> bytes:
        """An image about to be sent as raw bytes, spoiled when an image fault is queued."""
        names = [name for name in IMAGE_FAULTS if name not in ("image_garbage_base64", "image_json_breakout")]
        fault = self.take_fault(*(f"partial_{name}" for name in names) if preview else names)
        return data if fault is None else _spoiled(data, fmt, fault)

    def sent_image_b64(self, data: bytes, fmt: str, *, preview: bool = False) -> str:
        """An image about to be sent as base64, spoiled when an image fault is queued."""
        fault = self.take_fault(*(f"partial_{name}" for name in IMAGE_FAULTS) if preview else IMAGE_FAULTS)
        if fault is None:
            return base64.b64encode(data).decode("ascii")
        if fault.endswith("image_garbage_base64"):
            return GARBAGE_BASE64 + base64.b64encode(data).decode("ascii")[len(GARBAGE_BASE64):]
        if fault.endswith("image_json_breakout"):
            b64 = base64.b64encode(data).decode("ascii")
            return b64[:400] + JSON_BREAKOUT + b64[400:]
        return base64.b64encode(_spoiled(data, fmt, fault)).decode("ascii")

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
        self.requests.clear()
        self.state.clear()

    def error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
        body = self.module.error_body(status, code, message)
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                            headers=headers)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        app.add_routes([web.post("/_emulator/faults", self._set_fault)])
        app.add_routes(self.module.routes(self))
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.path.startswith("/_emulator"):
            return await handler(request)
        body = await request.read()
        self.requests.append(Recorded(request.method, request.path_qs, dict(request.headers), body))
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if self.take_fault("slow"):
            await asyncio.sleep(self.slow_ms / 1000)
        if self.take_fault("drop"):
            request.transport.close()  # the client sees the connection reset mid-request
            raise web.HTTPBadRequest()
        if self.take_fault("malformed"):
            return web.Response(status=200, body=b'{"data": [{"b64_json": ', content_type="application/json")
        if self.take_fault(ECHO_HEADERS_FAULT):
            echoed = "; ".join(f"{name}: {value}" for name, value in request.headers.items())
            return self.error(500, "server_error", f"The request could not be processed. Headers: {echoed}")
        fault = self.take_fault(*COMMON_FAULTS)
        if fault:
            status, code, message = COMMON_FAULTS[fault]
            headers = {"Retry-After": "2"} if status == 429 else None
            return self.error(status, code, message, headers)
        response = await handler(request)
        if isinstance(response, web.Response) and response.content_type == "application/json":
            if fault := self.take_fault(*USAGE_FAULTS):
                response.body = _with_bad_usage(orjson.loads(response.body), USAGE_FAULTS[fault])
        return response

    async def _set_fault(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.fault(body["fault"], int(body.get("times", 1)))
        return web.json_response({"queued": body["fault"]})


class EmulatorServer:
    """Runs an emulator on 127.0.0.1 in a thread of its own, until ``stop()``."""

    def __init__(self, emulator: Emulator, port: int = 0) -> None:
        self.emulator = emulator
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> Emulator:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("emulator did not start")
        return self.emulator

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self.emulator.app(), access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.emulator.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
