"""``python -m bench``: every scenario side by side in one run; a table, and JSON under bench/results/.

Starts on 127.0.0.1 what it needs (the OpenAI emulator with image-sized payloads, the
gateway with a fresh SQLite file, a minimal aiohttp pass-through proxy, LiteLLM's proxy from
``bench/.venv-peers`` when it is installed), warms each up, measures, stops everything.

    python -m bench                       # all scenarios
    python -m bench --only 1,2 --quick    # a subset, fewer samples
    python -m bench --long-count 2000     # scenario 3 with fewer streams
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.procs import BENCH, Stack
from imagegate.memory import tune_malloc

RESULTS = BENCH / "results"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", default="1,2,3,4,5,6,7", help="comma-separated scenario numbers")
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run, not for the record)")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    parser.add_argument("--long-count", type=int, default=10_000, help="scenario 3: concurrent streams")
    parser.add_argument("--long-latency-s", type=float, default=30.0, help="scenario 3: upstream time")
    parser.add_argument("--long-ramp-s", type=float, default=20.0, help="scenario 3: time to open all streams")
    parser.add_argument("--gateway-src", type=Path, default=None,
                        help="run the gateway from another checkout's src/ (before/after comparisons)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/<time>.json)")
    args = parser.parse_args()
    if args.gateway_src:
        os.environ["BENCH_GATEWAY_SRC"] = str(args.gateway_src.resolve())
    only = {int(x) for x in args.only.split(",") if x.strip()}
    _raise_fd_limit()
    # The load generator shares the machine with what it measures: it keeps its buffers (not
    # fresh pages per answer) and reads answers without holding them, so that most of the CPU
    # goes to the proxies (measured: 1.55 → 1.02 CPU ms per 1K answer).
    tune_malloc()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass

    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "scenarios": {},
    }
    started = time.monotonic()
    with Stack() as stack:
        print(f"logs: {stack.logdir}", file=sys.stderr)
        env = None
        if only & {1, 2, 4, 5, 7}:
            env = scenarios.Env.start(stack, litellm=not args.no_litellm)
        for number in sorted(only):
            name = scenarios.NAMES[number]
            print(f"\n== {number}. {name} ==", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            try:
                if number == 3:
                    result = scenarios.long_generations(stack, count=args.long_count,
                                                        latency_s=args.long_latency_s,
                                                        ramp_s=args.long_ramp_s)
                elif number == 6:
                    result = scenarios.conversion(quick=args.quick)
                else:
                    assert env is not None
                    result = scenarios.RUN[number](env, quick=args.quick)
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
                import traceback

                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}"}
            result["seconds"] = round(time.monotonic() - t0, 1)
            report["scenarios"][str(number)] = result
            print(scenarios.render(number, result), flush=True)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    print("\n" + scenarios.summary(report["scenarios"]))
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    text = json.dumps(report, indent=2, default=str)
    out.write_text(text + "\n")
    if not args.quick and args.out is None:
        (RESULTS / "latest.json").write_text(text + "\n")
    print(f"\nwritten: {out}")
    return 0


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
