"""Load generation: bounded in count and in time, loopback only, stops by itself."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

#: Any request taking longer than this is a failure, whatever it is.
REQUEST_TIMEOUT_S = 120.0


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"benchmarks only send traffic to loopback, not to {host}")


@dataclass
class Target:
    """One way of asking for the same image: a URL, headers and a JSON body."""

    name: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    #: Smallest body a good answer has (a truncated or empty image is a failure).
    min_bytes: int = 1

    def __post_init__(self) -> None:
        check_loopback(self.url)
        self.payload = orjson.dumps(self.body)
        self.headers = {"Content-Type": "application/json", **self.headers}


def session(limit: int = 64) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, force_close=False),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        read_bufsize=1 << 20,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def one(s: aiohttp.ClientSession, target: Target) -> tuple[float, int]:
    """Seconds for one whole answer, and its size; raises on anything but a good 200. A good
    answer is counted as it arrives, not kept (the load generator shares the machine)."""
    started = time.perf_counter()
    size = 0
    async with s.post(target.url, data=target.payload, headers=target.headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status}: {(await response.read())[:300]!r}")
        async for chunk in response.content.iter_any():
            size += len(chunk)
    elapsed = time.perf_counter() - started
    if size < target.min_bytes:
        raise RuntimeError(f"{target.name}: answer of {size} bytes, expected ≥ {target.min_bytes}")
    return elapsed, size


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def p(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")


async def interleaved_latency(targets: list[Target], *, rounds: int, per_round: int, warmup: int,
                              alternate: bool = False) -> dict[str, Samples]:
    """Concurrency 1: each round sends ``per_round`` requests to every target in turn, so slow
    drifts of the machine touch all targets alike. ``alternate`` reverses the order every
    other round, for a side-by-side comparison of two targets: what one still does after its
    last answer (a gateway writing its batched records) then lands on the other as often as
    the other's lands on it."""
    results = {t.name: Samples() for t in targets}
    async with session(limit=len(targets) * 2) as s:
        for t in targets:
            for _ in range(warmup):
                await one(s, t)
        for r in range(rounds):
            for t in targets[::-1] if alternate and r % 2 else targets:
                for _ in range(per_round):
                    try:
                        elapsed, size = await one(s, t)
                    except Exception as exc:  # noqa: BLE001 - counted and reported
                        results[t.name].errors.append(str(exc)[:300])
                        continue
                    results[t.name].latencies.append(elapsed)
                    results[t.name].sizes.append(size)
    return results


@dataclass
class Throughput:
    requests: int
    seconds: float
    errors: list[str]
    latencies: list[float]
    cpu_s: float = 0.0  # CPU the target process spent during the measured window

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def closed_loop(target: Target, *, concurrency: int, duration_s: float, warmup_s: float,
                      cpu_of: Callable[[], float] | None = None) -> Throughput:
    """``concurrency`` workers back to back for ``warmup_s`` (not counted), then ``duration_s``."""
    done = 0
    latencies: list[float] = []
    errors: list[str] = []
    measuring = False
    started = 0.0
    async with session(limit=concurrency) as s:
        stop_at = time.monotonic() + warmup_s + duration_s

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                try:
                    elapsed, _size = await one(s, target)
                except Exception as exc:  # noqa: BLE001
                    if measuring:
                        errors.append(str(exc)[:300])
                    await asyncio.sleep(0.01)
                    continue
                if measuring and time.monotonic() <= stop_at:
                    done += 1
                    latencies.append(elapsed)

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(warmup_s)
        measuring, started = True, time.monotonic()
        cpu_before = cpu_of() if cpu_of else 0.0
        await asyncio.sleep(duration_s)
        seconds = time.monotonic() - started
        cpu_used = (cpu_of() - cpu_before) if cpu_of else 0.0
        await asyncio.wait(workers, timeout=REQUEST_TIMEOUT_S)
    return Throughput(done, seconds, errors, latencies, cpu_used)


async def sse_arrivals(s: aiohttp.ClientSession, target: Target) -> tuple[list[float], int]:
    """``time.monotonic()`` at the arrival of each complete ``data:`` event with an image
    (keep-alive comments and ``[DONE]`` are not events), and how many comments came."""
    arrivals: list[float] = []
    comments = 0
    buffer = bytearray()
    async with s.post(target.url, data=target.payload, headers=target.headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status}: {(await response.read())[:300]!r}")
        scanned = 0  # bytes of ``buffer`` known to hold no event end (never rescan a big event)
        async for chunk in response.content.iter_any():
            now = time.monotonic()
            buffer += chunk
            while (end := buffer.find(b"\n\n", scanned)) >= 0:
                head = bytes(buffer[: min(end, 200)])
                has_image = buffer.find(b'"b64_json"', 0, end) >= 0
                del buffer[: end + 2]
                scanned = 0
                if head.startswith(b":"):
                    comments += 1
                elif has_image:
                    arrivals.append(now)
                elif b'"type":"error"' in head.replace(b" ", b""):
                    raise RuntimeError(f"{target.name}: error event {head!r}")
            scanned = max(0, len(buffer) - 1)
    return arrivals, comments
