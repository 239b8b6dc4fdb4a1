"""The seven scenarios of issue 6, each returning a JSON-able dict, and their rendering."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import resource
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from bench import load
from bench.load import Target
from bench.procs import PEERS_VENV, Proc, Stack, cpu_seconds, rss_bytes

NAMES = {
    1: "Overhead: 1K PNG at concurrency 1",
    2: "Throughput vs peers at concurrency 32",
    3: "Long generations: concurrent streams on a slow upstream",
    4: "Big responses: n=10 at 4K",
    5: "Streaming: partial images",
    6: "Conversion: 4K PNG → WEBP / JPEG",
    7: "Sandbox: 1K PNG",
}
PROMPT = "a lighthouse on a cliff at dusk, photorealistic"
UPSTREAM_MODEL = "gpt-image-2"
#: A 1K PNG from the bench emulator is ≈ 2.3 MB of base64; anything much smaller is broken.
MIN_1K_BYTES = 2_000_000
#: The emulator spaces streamed events this far apart, as a real upstream does.
STREAM_GAP_MS = 20


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


@dataclass
class Env:
    """The shared stack of scenarios 1, 2, 4, 5 and 7."""

    stack: Stack
    emulator: Proc
    emulator_url: str
    gateway: Proc
    gateway_url: str
    key: str
    passthrough_url: str
    passthrough_proc: Proc
    litellm: Proc | None
    litellm_url: str | None
    litellm_key: str | None
    #: The same gateway on a metered account (a row of scenarios 1 and 2, within 1.5 × the
    #: unmetered gateway).
    metered: Proc | None = None
    metered_url: str | None = None
    metered_key: str | None = None

    @classmethod
    def start(cls, stack: Stack, *, litellm: bool) -> Env:
        emulator, emulator_url = stack.emulator(stream_gap_ms=STREAM_GAP_MS)
        gateway, gateway_url, key = stack.gateway(emulator_url)
        metered = stack.gateway(emulator_url, name="gateway-metered", credits="1000000")
        passthrough, passthrough_url = stack.passthrough(emulator_url)
        peer = stack.litellm(emulator_url, UPSTREAM_MODEL) if litellm else None
        if litellm and peer is None:
            print(f"LiteLLM is not installed in {PEERS_VENV} (bench/run.sh installs it); left out")
        return cls(stack, emulator, emulator_url, gateway, gateway_url, key, passthrough_url, passthrough,
                   *(peer if peer else (None, None, None)), *metered)

    # --- the same request, four ways ---

    def upstream_body(self, **extra: Any) -> dict[str, Any]:
        """What the gateway's OpenAI adapter sends for ``gateway_body(**extra)``."""
        return {"prompt": PROMPT, "n": 1, "model": UPSTREAM_MODEL, "size": "1024x1024",
                "output_format": "png", **extra}

    def direct(self, **extra: Any) -> Target:
        return Target("direct", self.emulator_url + "/v1/images/generations",
                      {"Authorization": "Bearer test-key"}, self.upstream_body(**extra), MIN_1K_BYTES)

    def passthrough(self, **extra: Any) -> Target:
        return Target("passthrough", self.passthrough_url + "/v1/images/generations",
                      {"Authorization": "Bearer test-key"}, self.upstream_body(**extra), MIN_1K_BYTES)

    def litellm_target(self) -> Target | None:
        if not self.litellm_url:
            return None
        return Target("litellm", self.litellm_url + "/v1/images/generations",
                      {"Authorization": f"Bearer {self.litellm_key}"}, self.upstream_body(), MIN_1K_BYTES)

    def gateway_target(self, **body: Any) -> Target:
        """The gateway's own request; a ``None`` value leaves that field out."""
        fields = {"model": "openai/" + UPSTREAM_MODEL, "prompt": PROMPT, "resolution": "1K",
                  "aspect_ratio": "1:1", "output_format": "png", **body}
        fields = {k: v for k, v in fields.items() if v is not None}
        return Target("gateway", self.gateway_url + "/api/v1/images",
                      {"Authorization": f"Bearer {self.key}"}, fields, MIN_1K_BYTES)

    def targets(self) -> list[Target]:
        found = [self.direct(), self.passthrough(), self.gateway_target()]
        if (peer := self.litellm_target()) is not None:
            found.append(peer)
        if self.metered_url:
            gateway = self.gateway_target()
            found.append(Target("gw-metered", self.metered_url + "/api/v1/images",
                                {"Authorization": f"Bearer {self.metered_key}"}, gateway.body, MIN_1K_BYTES))
        return found

    def probe(self, gateway_url: str | None = None) -> dict[str, int]:
        with urllib.request.urlopen((gateway_url or self.gateway_url) + "/_bench/probe", timeout=10) as r:
            return json.loads(r.read())


# --- 1. overhead ---


def overhead(env: Env, *, quick: bool) -> dict[str, Any]:
    rounds, per_round = (4, 5) if quick else (15, 20)
    targets = env.targets()
    samples = asyncio.run(load.interleaved_latency(targets, rounds=rounds, per_round=per_round, warmup=10))
    out: dict[str, Any] = {"requests_per_target": rounds * per_round, "targets": _added(samples)}
    if "gw-metered" in out["targets"]:
        # Metered against unmetered, side by side: in the round above gw-metered comes right
        # after LiteLLM and pays for what LiteLLM still does after its answers (its logs), so
        # its place in the round, not its own work, would decide the comparison.
        pair = [t for t in targets if t.name in ("direct", "gateway", "gw-metered")]
        out["metered_pair"] = _added(asyncio.run(
            load.interleaved_latency(pair, rounds=rounds, per_round=per_round, warmup=10, alternate=True)))
    t = out["targets"]
    gw = t["gateway"]["added_p50_ms"]
    out["gateway_vs_passthrough"] = ratio(gw, t["passthrough"]["added_p50_ms"])
    out["targets_met"] = {"gateway added ≤ 1.25 × pass-through added": (out["gateway_vs_passthrough"] or 99) <= 1.25}
    if "litellm" in t:
        out["gateway_vs_litellm"] = ratio(gw, t["litellm"]["added_p50_ms"])
        out["targets_met"]["gateway added ≤ 1/5 × LiteLLM added"] = (out["gateway_vs_litellm"] or 99) <= 0.2
    if "metered_pair" in out:
        pair = out["metered_pair"]
        out["metered_vs_unmetered"] = ratio(pair["gw-metered"]["added_p50_ms"], pair["gateway"]["added_p50_ms"])
        out["targets_met"]["metered added ≤ 1.5 × unmetered added (side by side)"] = (
            (out["metered_vs_unmetered"] or 99) <= 1.5)
    return out


def _added(samples: dict[str, load.Samples]) -> dict[str, dict[str, Any]]:
    """Each target's latency, and what it adds to the direct call's median."""
    base = samples["direct"].p50
    return {
        name: {
            "p50_ms": ms(s.p50), "p90_ms": ms(s.p(0.9)), "p99_ms": ms(s.p(0.99)),
            "added_p50_ms": ms(s.p50 - base), "errors": len(s.errors), "first_error": s.errors[:1],
            "body_bytes": statistics.median(s.sizes) if s.sizes else None,
        }
        for name, s in samples.items()
    }


# --- 2. throughput ---


def throughput(env: Env, *, quick: bool) -> dict[str, Any]:
    """Each target in turn, round after round (as scenario 1 does), so that whatever else the
    machine is doing falls on every target alike; the median round counts."""
    rounds, duration, warmup = (2, 3.0, 1.5) if quick else (3, 5.0, 3.0)
    pids = {"direct": env.emulator.pid, "passthrough": env.passthrough_proc.pid, "gateway": env.gateway.pid,
            "litellm": env.litellm.pid if env.litellm else None,
            "gw-metered": env.metered.pid if env.metered else None}
    runs: dict[str, list[load.Throughput]] = {}
    for round_ in range(rounds):
        for target in env.targets():
            pid = pids.get(target.name)
            runs.setdefault(target.name, []).append(asyncio.run(load.closed_loop(
                target, concurrency=32, duration_s=duration, warmup_s=warmup if round_ == 0 else 0.5,
                cpu_of=(lambda p=pid: cpu_seconds(p)) if pid else None)))
        print(f"  round {round_ + 1}: " + ", ".join(f"{name} {r[-1].rps:.0f}" for name, r in runs.items())
              + " req/s", flush=True)
    out: dict[str, Any] = {"concurrency": 32, "rounds": rounds, "seconds_per_round": duration, "targets": {}}
    for name, results in runs.items():
        lat = sorted(x for r in results for x in r.latencies)
        errors = [e for r in results for e in r.errors]
        out["targets"][name] = {
            "rps": round(statistics.median(r.rps for r in results), 1),
            "rps_per_round": [round(r.rps, 1) for r in results],
            "requests": sum(r.requests for r in results), "errors": len(errors), "first_error": errors[:1],
            "p50_ms": ms(statistics.median(lat)) if lat else None,
            "cpu_ms_per_request": round(statistics.median(r.cpu_s * 1000 / r.requests for r in results), 2)
            if pids.get(name) and all(r.requests for r in results) else None,
        }
    t = out["targets"]
    out["gateway_vs_passthrough"] = ratio(t["gateway"]["rps"], t["passthrough"]["rps"])
    out["targets_met"] = {"gateway ≥ 0.8 × pass-through": (out["gateway_vs_passthrough"] or 0) >= 0.8}
    if "litellm" in t:
        out["gateway_vs_litellm"] = ratio(t["gateway"]["rps"], t["litellm"]["rps"])
        out["targets_met"]["gateway ≥ 6 × LiteLLM"] = (out["gateway_vs_litellm"] or 0) >= 6
    if "gw-metered" in t:
        out["metered_vs_unmetered"] = ratio(t["gw-metered"]["rps"], t["gateway"]["rps"])
        out["targets_met"]["metered ≥ 1/1.5 × unmetered"] = (out["metered_vs_unmetered"] or 0) >= 1 / 1.5
    return out


# --- 3. long generations ---


def long_generations(stack: Stack, *, count: int, latency_s: float, ramp_s: float) -> dict[str, Any]:
    """``count`` streams open at once on an upstream that takes ``latency_s``; RSS sampled."""
    keepalive_s = 5.0  # the gateway's default
    asked = count
    # The gateway holds two descriptors per stream (the client's connection and its upstream's).
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    count = min(count, (limit - 400) // 2)
    emulator, emulator_url = stack.emulator("emulator-slow", latency_ms=int(latency_s * 1000), small_images=True)
    gateway, gateway_url, key = stack.gateway(emulator_url, name="gateway-long")
    body = {"model": "openai/" + UPSTREAM_MODEL, "prompt": PROMPT, "resolution": "1K", "aspect_ratio": "1:1",
            "output_format": "png", "stream": True}
    target = Target("gateway", gateway_url + "/api/v1/images", {"Authorization": f"Bearer {key}"}, body)
    # Warm-up: one stream through the same path (imports, first connection, first DB write).
    idle_rss = rss_bytes(gateway.pid)
    result = asyncio.run(_many_streams(target, count=count, ramp_s=ramp_s,
                                       deadline_s=ramp_s + latency_s * 3 + 120, gateway_pid=gateway.pid))
    stack.stop(gateway)
    stack.stop(emulator)
    ok = result["succeeded"] == count
    return {
        "streams": count, "streams_asked": asked,
        "capped_by": f"RLIMIT_NOFILE {limit}: the gateway needs 2 descriptors per stream" if count < asked else None,
        "upstream_latency_s": latency_s, "ramp_s": ramp_s, "keepalive_s": keepalive_s,
        **result,
        "idle_rss_mib": round(idle_rss / 2**20, 1),
        "targets_met": {
            f"all {count} streams succeed": ok,
            "gateway RSS ≤ 1 GiB": result["peak_rss_mib"] <= 1024,
            "keep-alives on every stream": result["streams_without_keepalive"] == 0,
        },
        # Not a target: how long streams waited beyond their upstream (admission, recording).
        "stream_seconds_beyond_upstream_p50": round((result["stream_seconds_p50"] or 0) - latency_s, 2),
    }


async def _many_streams(target: Target, *, count: int, ramp_s: float, deadline_s: float,
                        gateway_pid: int) -> dict[str, Any]:
    import aiohttp

    succeeded = 0
    failures: dict[str, int] = {}
    comment_counts: list[int] = []
    durations: list[float] = []
    peak_rss = 0
    rss_series: list[tuple[float, int]] = []
    started = time.monotonic()
    stop_sampling = asyncio.Event()

    async def sample() -> None:
        nonlocal peak_rss
        while not stop_sampling.is_set():
            rss = rss_bytes(gateway_pid)
            peak_rss = max(peak_rss, rss)
            rss_series.append((round(time.monotonic() - started, 1), rss // 2**20))
            try:
                await asyncio.wait_for(stop_sampling.wait(), 0.5)
            except TimeoutError:
                pass

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=deadline_s, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, read_bufsize=1 << 18,
                                     cookie_jar=aiohttp.DummyCookieJar()) as s:
        async def client(i: int) -> None:
            nonlocal succeeded
            await asyncio.sleep(ramp_s * i / count)
            t0 = time.monotonic()
            try:
                arrivals, comments = await load.sse_arrivals(s, target)
            except Exception as exc:  # noqa: BLE001
                kind = f"{type(exc).__name__}: {str(exc)[:120]}"
                failures[kind] = failures.get(kind, 0) + 1
                return
            if arrivals:
                succeeded += 1
                durations.append(time.monotonic() - t0)
                comment_counts.append(comments)
            else:
                failures["no image event"] = failures.get("no image event", 0) + 1

        sampler = asyncio.create_task(sample())
        tasks = [asyncio.create_task(client(i)) for i in range(count)]
        _done, pending = await asyncio.wait(tasks, timeout=deadline_s + 30)
        for task in pending:
            task.cancel()
        if pending:
            failures["bench deadline"] = len(pending)
        stop_sampling.set()
        await sampler
    comment_counts.sort()
    return {
        "succeeded": succeeded,
        "failures": failures,
        "wall_s": round(time.monotonic() - started, 1),
        "stream_seconds_p50": round(statistics.median(durations), 2) if durations else None,
        "stream_seconds_max": round(max(durations), 2) if durations else None,
        "keepalives_per_stream_min": comment_counts[0] if comment_counts else None,
        "keepalives_per_stream_p50": statistics.median(comment_counts) if comment_counts else None,
        "streams_without_keepalive": sum(1 for c in comment_counts if c < 2) + (count - succeeded),
        "peak_rss_mib": round(peak_rss / 2**20, 1),
        "rss_mib_series": rss_series[:: max(1, len(rss_series) // 60)],
    }


# --- 4. big responses ---


def big_responses(env: Env, *, quick: bool) -> dict[str, Any]:
    # gpt-image-2 lists no ``resolution``: its 4K is the explicit size 3840x2160 (8.3 MP, its maximum).
    body = {"n": 10, "size": "3840x2160", "resolution": None, "aspect_ratio": None}
    direct = env.direct(n=10, size="3840x2160")
    direct.min_bytes = 10 * 10_000_000

    async def one(t: Target) -> tuple[float, int]:
        async with load.session(limit=2) as s:
            return await load.one(s, t)

    asyncio.run(one(env.direct(n=1, size="3840x2160")))  # the emulator draws its 4K image once
    runs = []
    for number in range(2 if quick else 3):
        # Each run on a gateway of its own, started fresh and warmed with one 1K request: the
        # allocator is tuned to keep what the heap grew to, which would hide a later run's growth.
        proc, url, key = env.stack.gateway(env.emulator_url, name=f"gateway-big-{number}")
        auth = {"Authorization": f"Bearer {key}"}
        target = dataclasses.replace(env.gateway_target(**body), url=url + "/api/v1/images", headers=auth,
                                     min_bytes=direct.min_bytes)
        asyncio.run(one(dataclasses.replace(env.gateway_target(), url=target.url, headers=auth)))
        before = env.probe(url)
        reset = _reset_peak(proc.pid)
        elapsed, size = asyncio.run(one(target))
        after = env.probe(url)
        env.stack.stop(proc)
        direct_s, direct_size = asyncio.run(one(direct))
        growth = after["VmHWM"] - before["VmRSS"] if reset else None
        runs.append({
            "gateway_ms": ms(elapsed), "direct_ms": ms(direct_s), "body_bytes": size,
            "upstream_body_bytes": direct_size,
            "rss_before_mib": round(before["VmRSS"] / 2**20, 1),
            "peak_rss_mib": round(after["VmHWM"] / 2**20, 1),
            "peak_growth_mib": round(growth / 2**20, 1) if growth is not None else None,
            "growth_vs_body": ratio(growth, size) if growth is not None else None,
            "pixel_decodes": after.get("pixel_decodes", 0) - before.get("pixel_decodes", 0),
            "header_probes": after.get("header_probes", 0) - before.get("header_probes", 0),
            "b64_decoded_bytes": after.get("b64_decoded_bytes", 0) - before.get("b64_decoded_bytes", 0),
            "transcodes": after.get("transcodes", 0) - before.get("transcodes", 0),
        })
    measured = [r["growth_vs_body"] for r in runs if r["growth_vs_body"] is not None]
    growth_ratio = statistics.median(measured) if measured else None
    decodes = max(r["pixel_decodes"] for r in runs)
    return {
        "request": body, "runs": runs,
        "growth_vs_body": growth_ratio,
        "targets_met": {
            "peak RSS growth ≤ 2.5 × body": growth_ratio is not None and growth_ratio <= 2.5,
            "no image decoded": decodes == 0 and max(r["transcodes"] for r in runs) == 0,
        },
    }


def _reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM (Linux ≥ 4.0: write 5 to clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --- 5. streaming ---


def streaming(env: Env, *, quick: bool) -> dict[str, Any]:
    """Each event's transit time: from the emulator's write of it to its arrival at the client
    (both on ``time.monotonic()``), direct and through each proxy; the added p50 per event is
    a proxy's median transit minus the direct one. The one-time cost of starting a request
    (authentication, reservation, the upstream call) is scenario 1's, not counted here."""
    # A proxied event's transit is spread wide (the client, woken by the first bytes, often takes
    # the proxy's core mid-write): its interquartile range is ~1 ms, so the median of 40 streams
    # moves by ±0.17 ms from run to run on sampling alone; 120 bring that to ±0.1 ms.
    runs = 8 if quick else 120
    targets = [env.direct(stream=True, partial_images=2), env.passthrough(stream=True, partial_images=2),
               env.gateway_target(stream=True)]
    for t in targets:
        t.min_bytes = 0

    async def writes_since(s: Any, since: float) -> list[float]:
        async with s.get(env.emulator_url + "/_bench/writes", params={"since": repr(since)}) as r:
            return await r.json()

    async def measure() -> dict[str, list[list[float]]]:
        transit: dict[str, list[list[float]]] = {t.name: [] for t in targets}
        async with load.session(limit=4) as s:
            for t in targets:
                for _ in range(3):
                    await load.sse_arrivals(s, t)
            for _ in range(runs):
                for t in targets:
                    started = time.monotonic()
                    arrivals, _comments = await load.sse_arrivals(s, t)
                    await asyncio.sleep(0.01)
                    written = await writes_since(s, started)
                    if len(written) != len(arrivals):
                        raise RuntimeError(f"{t.name}: {len(written)} events written, {len(arrivals)} arrived")
                    transit[t.name].append([a - w for a, w in zip(arrivals, written, strict=True)])
        return transit

    transit = asyncio.run(measure())
    events = min(len(a) for runs_ in transit.values() for a in runs_)
    medians = {name: [statistics.median(run[k] for run in runs_) for k in range(events)]
               for name, runs_ in transit.items()}
    out: dict[str, Any] = {"runs": runs, "events_per_stream": events, "event_gap_ms": STREAM_GAP_MS,
                           "event_bytes": "≈ 2.3 MB (each partial and the final image is a 1K PNG)",
                           "targets": {}}
    for name, med in medians.items():
        added = [ms(m - d) for m, d in zip(med, medians["direct"], strict=True)]
        out["targets"][name] = {"transit_p50_ms": [ms(m) for m in med], "added_p50_ms_per_event": added,
                                "added_p50_ms_max": max(added)}
    worst = out["targets"]["gateway"]["added_p50_ms_max"]
    out["targets_met"] = {"≤ 2 ms added p50 per event": worst <= 2.0}
    return out


# --- 6. conversion ---

_CONVERSION_REFERENCE = r"""
import io, json, statistics, sys, time
data = open(sys.argv[1], "rb").read()
repeats = int(sys.argv[2])
out = {}
def best(fn):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); size = len(fn()); times.append(time.perf_counter() - t)
    return {"ms": round(statistics.median(times) * 1000, 2), "bytes": size}
try:
    import cv2, numpy as np
    cv2.setNumThreads(1)
    arr = np.frombuffer(data, np.uint8)
    out["opencv " + cv2.__version__] = {
        "webp": best(lambda: cv2.imencode(".webp", cv2.imdecode(arr, cv2.IMREAD_UNCHANGED), [cv2.IMWRITE_WEBP_QUALITY, 85])[1]),
        "jpeg": best(lambda: cv2.imencode(".jpg", cv2.imdecode(arr, cv2.IMREAD_UNCHANGED), [cv2.IMWRITE_JPEG_QUALITY, 90])[1]),
    }
except ImportError:
    pass
print(json.dumps(out))
"""


def conversion(*, quick: bool) -> dict[str, Any]:
    """``imaging.transcode`` against the same decode + encode done directly by each library
    installed (Pillow here; OpenCV from bench/.venv-peers), at the same settings (WEBP
    quality 85 at libwebp's default effort, method 4; JPEG quality 90). The candidates run
    in turn, round after round, so the machine's drifts touch them alike."""
    from PIL import Image

    from bench.emulator import photo_like
    from imagegate import imaging

    repeats = 3 if quick else 9
    data = photo_like(3840, 2160, "png")

    def pillow(fmt: str, **params: Any) -> Any:
        def run() -> bytes:
            out = io.BytesIO()
            with Image.open(io.BytesIO(data)) as im:
                im.save(out, fmt, **params)
            return out.getvalue()
        return run

    candidates: dict[tuple[str, str], Any] = {
        ("gateway (imaging.transcode)", "webp"): lambda: imaging.transcode(data, to_format="webp"),
        ("gateway (imaging.transcode)", "jpeg"): lambda: imaging.transcode(data, to_format="jpeg"),
        ("pillow, same settings", "webp"): pillow("WEBP", quality=imaging.WEBP_DEFAULT_QUALITY, method=imaging.WEBP_METHOD),
        ("pillow, same settings", "jpeg"): pillow("JPEG", quality=imaging.JPEG_DEFAULT_QUALITY),
        # Faster settings of the same encoder, for context: they buy speed with file size.
        ("pillow webp method=0", "webp"): pillow("WEBP", quality=imaging.WEBP_DEFAULT_QUALITY, method=0),
    }
    times: dict[tuple[str, str], list[float]] = {k: [] for k in candidates}
    sizes: dict[tuple[str, str], int] = {}
    for fn in candidates.values():
        fn()  # warm-up
    for _ in range(repeats):
        for key, fn in candidates.items():
            t = time.perf_counter()
            sizes[key] = len(fn())
            times[key].append(time.perf_counter() - t)
    results: dict[str, dict[str, Any]] = {}
    for (name, fmt), samples in times.items():
        results.setdefault(name, {})[fmt] = {"ms": round(statistics.median(samples) * 1000, 2),
                                             "bytes": sizes[(name, fmt)]}
    peers_python = PEERS_VENV / "bin" / "python"
    if peers_python.exists():
        with tempfile.NamedTemporaryFile(suffix=".png") as f:
            f.write(data)
            f.flush()
            proc = subprocess.run([str(peers_python), "-c", _CONVERSION_REFERENCE, f.name, str(repeats)],
                                  capture_output=True, text=True, timeout=600, check=False)
            if proc.returncode == 0:
                results.update(json.loads(proc.stdout))
            else:
                print(proc.stderr[-2000:])
    method0 = results.pop("pillow webp method=0")["webp"]
    out: dict[str, Any] = {"input": {"size": "3840x2160", "png_bytes": len(data)}, "encoders": results,
                           "pillow_webp_method0": method0}
    met = {}
    for fmt in ("webp", "jpeg"):
        ours = results["gateway (imaging.transcode)"][fmt]["ms"]
        refs = {name: r[fmt]["ms"] for name, r in results.items() if not name.startswith("gateway")}
        fastest = min(refs, key=refs.__getitem__)
        out[fmt] = {"gateway_ms": ours, "fastest": fastest, "fastest_ms": refs[fastest], "ratio": ratio(ours, refs[fastest])}
        met[f"{fmt}: ≤ 1.2 × fastest at equal settings"] = out[fmt]["ratio"] <= 1.2
    out["targets_met"] = met
    return out


# --- 7. sandbox ---


def sandbox(env: Env, *, quick: bool) -> dict[str, Any]:
    n = 5 if quick else 15

    async def run() -> list[float]:
        times = []
        async with load.session(limit=2) as s:
            for seed in range(n + 2):
                t = Target("sandbox", env.gateway_url + "/api/v1/images", {"Authorization": f"Bearer {env.key}"},
                           {"model": "imagegate/sandbox", "prompt": PROMPT, "resolution": "1K", "aspect_ratio": "1:1",
                            "output_format": "png", "seed": seed})
                elapsed, _ = await load.one(s, t)
                if seed >= 2:
                    times.append(elapsed)
        return times

    times = asyncio.run(run())
    return {"requests": n, "p50_ms": ms(statistics.median(times)), "min_ms": ms(min(times)), "max_ms": ms(max(times))}


RUN = {1: overhead, 2: throughput, 4: big_responses, 5: streaming, 7: sandbox}


# --- rendering ---


def render(number: int, r: dict[str, Any]) -> str:
    lines = [f"{number}. {NAMES[number]}"]
    if "error" in r:
        return lines[0] + f"\n   FAILED: {r['error']}"
    if number == 1:
        lines.append(f"   {'target':<12}{'p50 ms':>10}{'added p50':>11}{'p90 ms':>10}{'errors':>8}")
        for name, t in r["targets"].items():
            lines.append(f"   {name:<12}{t['p50_ms']:>10.2f}{t['added_p50_ms']:>11.2f}{t['p90_ms']:>10.2f}{t['errors']:>8}")
        lines.append(f"   gateway added / pass-through added = {r['gateway_vs_passthrough']}"
                     + (f";  gateway added / LiteLLM added = {r['gateway_vs_litellm']}" if "gateway_vs_litellm" in r else ""))
        if pair := r.get("metered_pair"):
            lines.append(f"   side by side, order alternating: gateway +{pair['gateway']['added_p50_ms']:.2f} ms, "
                         f"gw-metered +{pair['gw-metered']['added_p50_ms']:.2f} ms = {r['metered_vs_unmetered']} ×")
    elif number == 2:
        lines.append(f"   {'target':<12}{'req/s':>10}{'p50 ms':>10}{'CPU ms/req':>12}{'errors':>8}")
        for name, t in r["targets"].items():
            cpu = f"{t['cpu_ms_per_request']:.2f}" if t["cpu_ms_per_request"] is not None else "-"
            lines.append(f"   {name:<12}{t['rps']:>10.1f}{t['p50_ms'] or 0:>10.1f}{cpu:>12}{t['errors']:>8}")
        lines.append(f"   gateway / pass-through = {r['gateway_vs_passthrough']}"
                     + (f";  gateway / LiteLLM = {r['gateway_vs_litellm']}" if "gateway_vs_litellm" in r else ""))
    elif number == 3:
        if r.get("capped_by"):
            lines.append(f"   {r['streams_asked']} streams asked, {r['streams']} run: capped by {r['capped_by']}")
        lines.append(f"   {r['succeeded']}/{r['streams']} streams succeeded (upstream {r['upstream_latency_s']:g} s, "
                     f"opened over {r['ramp_s']:g} s); failures {r['failures'] or 'none'}")
        lines.append(f"   gateway RSS idle {r['idle_rss_mib']} MiB, peak {r['peak_rss_mib']} MiB; keep-alives per "
                     f"stream min {r['keepalives_per_stream_min']}, p50 {r['keepalives_per_stream_p50']}; "
                     f"stream time p50 {r['stream_seconds_p50']} s, max {r['stream_seconds_max']} s")
    elif number == 4:
        for run in r["runs"]:
            lines.append(f"   body {run['body_bytes'] / 2**20:.1f} MiB: gateway {run['gateway_ms']:.0f} ms "
                         f"(direct {run['direct_ms']:.0f} ms), RSS {run['rss_before_mib']} → peak "
                         f"{run['peak_rss_mib']} MiB (+{run['peak_growth_mib']} MiB = {run['growth_vs_body']} × body), "
                         f"pixel decodes {run['pixel_decodes']}, base64 decoded {run['b64_decoded_bytes'] / 2**20:.1f} MiB")
    elif number == 5:
        for name, t in r["targets"].items():
            lines.append(f"   {name:<12} transit p50 ms {t['transit_p50_ms']}  added per event {t['added_p50_ms_per_event']}")
    elif number == 6:
        for name, e in r["encoders"].items():
            lines.append(f"   {name:<30} webp {e['webp']['ms']:>8.1f} ms ({e['webp']['bytes'] / 1e6:.2f} MB)   "
                         f"jpeg {e['jpeg']['ms']:>7.1f} ms ({e['jpeg']['bytes'] / 1e6:.2f} MB)")
        m0 = r["pillow_webp_method0"]
        lines.append(f"   (pillow webp method=0: {m0['ms']:.1f} ms, {m0['bytes'] / 1e6:.2f} MB)")
        for fmt in ("webp", "jpeg"):
            lines.append(f"   {fmt}: gateway / fastest ({r[fmt]['fastest']}) = {r[fmt]['ratio']}")
    elif number == 7:
        lines.append(f"   p50 {r['p50_ms']:.1f} ms (min {r['min_ms']:.1f}, max {r['max_ms']:.1f}) over {r['requests']} requests")
    for name, ok in r.get("targets_met", {}).items():
        lines.append(f"   [{'PASS' if ok else 'MISS'}] {name}")
    return "\n".join(lines)


def summary(results: dict[str, dict[str, Any]]) -> str:
    lines = ["Summary"]
    for number, r in sorted(results.items(), key=lambda kv: int(kv[0])):
        if "error" in r:
            lines.append(f"  {number}. FAILED: {r['error']}")
            continue
        for name, ok in r.get("targets_met", {}).items():
            lines.append(f"  {number}. [{'PASS' if ok else 'MISS'}] {name}")
    return "\n".join(lines)
