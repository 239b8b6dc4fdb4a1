"""The OpenAI emulator of ``tests/emulators`` with image-sized payloads, for benchmarks.

``python -m bench.emulator --port N [--latency-ms X] [--stream-gap-ms G] [--small-images]``

Everything is the test emulator's own code (routes, strict validation, auth, usage, SSE
framing, ``--latency-ms``), with one change: ``_render`` returns a cached image of realistic
size instead of drawing a fresh gradient per request. A gradient PNG of 1024² is ~10 kB; a
real ``gpt-image`` 1024² PNG is 1.5–2.5 MB, which is what a gateway has to carry. The bench
image is a gradient with Gaussian noise, tuned to ≈ 1.75 MB of PNG (≈ 2.3 MB of base64) at
1024², and is rendered once per (size, format, alpha) so the upstream itself costs almost
nothing and the proxies in front of it are what gets measured.

``--small-images`` keeps the emulator's own tiny gradients (cached too): the long-generation
scenario measures holding thousands of streams open, not moving gigabytes at once.
``--stream-gap-ms`` spaces streamed events apart, as the real API does, so the latency a
proxy adds to each event can be read off its arrival time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import signal
import threading
import time
from collections import deque
from typing import Any

from aiohttp import web
from PIL import Image, ImageChops

import tests.emulators.openai as openai_emulator
from tests.emulators.base import Emulator, EmulatorServer
from tests.emulators.images import synth

#: Noise level giving ≈ 1.75 MB of PNG at 1024² (≈ 2.3 MB of base64), like a real gpt-image PNG.
NOISE_SIGMA = 7.5

_cache: dict[tuple[Any, ...], str] = {}
_lock = threading.Lock()


def photo_like(width: int, height: int, fmt: str, *, alpha: bool = False, quality: int = 90) -> bytes:
    """A gradient with per-channel Gaussian noise: compresses like a photograph, not like a test card."""
    base = Image.linear_gradient("L").resize((width, height))
    flipped = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    channels = [
        ImageChops.add(src, Image.effect_noise((width, height), sigma), scale=2.0, offset=-64)
        for src, sigma in ((base, NOISE_SIGMA), (flipped, NOISE_SIGMA * 1.1), (base, NOISE_SIGMA * 0.9))
    ]
    image = Image.merge("RGB", channels)
    if alpha:
        image = image.convert("RGBA")
    out = io.BytesIO()
    if fmt in ("jpeg", "jpg"):
        image.convert("RGB").save(out, "JPEG", quality=quality)
    elif fmt == "webp":
        image.save(out, "WEBP", quality=quality)
    else:
        image.save(out, "PNG", compress_type=3)
    return out.getvalue()


def install(*, small: bool, stream_gap_ms: int) -> None:
    """Replace the emulator's per-request drawing with a cached image of the requested shape."""

    async def _render(emulator: Any, parsed: Any, index: int, variant: str = "final") -> str:
        width, height, _quality, background, fmt = openai_emulator._resolved(parsed)
        alpha = background == "transparent"
        quality = parsed.values.get("output_compression", 100)
        key = (width, height, fmt, alpha, quality)
        if parsed.values.get("stream") and stream_gap_ms:
            await asyncio.sleep(stream_gap_ms / 1000)
        if key not in _cache:

            def draw() -> str:
                with _lock:
                    if key not in _cache:
                        if small:
                            data = synth(width, height, fmt, seed=0, alpha=alpha, quality=quality)
                        else:
                            data = photo_like(width, height, fmt, alpha=alpha, quality=quality)
                        _cache[key] = base64.b64encode(data).decode("ascii")
                    return _cache[key]

            return await asyncio.get_running_loop().run_in_executor(None, draw)
        return _cache[key]

    openai_emulator._render = _render  # type: ignore[assignment]
    _log_stream_writes()


#: (time.monotonic(), bytes) of every large write to a streamed answer, for scenario 5: the
#: moment an event left the upstream, on the clock the bench client reads too.
WRITES: deque[tuple[float, int]] = deque(maxlen=100_000)
LOGGED_WRITE_BYTES = 16 * 1024


def _log_stream_writes() -> None:
    write = web.StreamResponse.write

    async def logged(self: web.StreamResponse, data: Any) -> None:
        if len(data) >= LOGGED_WRITE_BYTES:
            WRITES.append((time.monotonic(), len(data)))
        await write(self, data)

    web.StreamResponse.write = logged  # type: ignore[method-assign]
    routes = openai_emulator.routes

    async def writes(request: web.Request) -> web.Response:
        since = float(request.query.get("since", 0))
        return web.json_response([t for t, _size in WRITES if t >= since])

    openai_emulator.routes = lambda emulator: [*routes(emulator), web.get("/_bench/writes", writes)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--stream-gap-ms", type=int, default=0)
    parser.add_argument("--small-images", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    install(small=args.small_images, stream_gap_ms=args.stream_gap_ms)
    emulator = Emulator(openai_emulator, latency_ms=args.latency_ms)
    # The request log would grow by one entry per request for the whole run; nobody reads it here.
    emulator.requests = _Discard()  # type: ignore[assignment]
    server = EmulatorServer(emulator, port=args.port)
    server.start()
    print(f"openai emulator on {emulator.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


class _Discard(list):
    def append(self, item: Any) -> None:
        pass


if __name__ == "__main__":
    main()
