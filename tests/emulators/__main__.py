"""Run one emulator standalone: ``python -m tests.emulators <provider> --port N [--latency-ms X]``."""

from __future__ import annotations

import argparse
import importlib
import signal
import threading

from tests.emulators.base import Emulator, EmulatorServer

EMULATORS = ("openai", "google", "bfl", "stability")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators")
    parser.add_argument("provider", choices=EMULATORS)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=int, default=0, help="added to every request")
    args = parser.parse_args()
    module = importlib.import_module(f"tests.emulators.{args.provider}")
    server = EmulatorServer(Emulator(module, latency_ms=args.latency_ms), port=args.port)
    emulator = server.start()
    print(f"{args.provider} emulator on {emulator.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
