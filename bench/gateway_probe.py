"""``imagegate`` exactly as shipped, plus counters the benchmark reads.

``python -m bench.gateway_probe serve --port P`` runs the real CLI (``imagegate serve``) after
wrapping a few functions with counters, and adds ``GET /_bench/probe`` to the app:

* ``pixel_decodes``: Pillow ``ImageFile.load`` calls (an image's pixels being decoded),
* ``header_probes``: Pillow ``Image.open`` calls (reads a header, decodes no pixels),
* ``b64_decoded_bytes``: base64 bytes turned back into image bytes by ``Blob.raw``,
* ``transcodes``: :func:`imagegate.imaging.transcode` calls.

Nothing else changes: the counters cost a few attribute look-ups per image.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import orjson
from PIL import Image, ImageFile

COUNTS: Counter[str] = Counter()


def _count(name: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        COUNTS[name] += 1
        return fn(*args, **kwargs)

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    from imagegate import imaging
    from imagegate.api import app as app_module
    from imagegate.providers import base

    ImageFile.ImageFile.load = _count("pixel_decodes", ImageFile.ImageFile.load)  # type: ignore[method-assign]
    Image.open = _count("header_probes", Image.open)  # type: ignore[assignment]
    imaging.transcode = _count("transcodes", imaging.transcode)  # type: ignore[assignment]

    raw_property = base.Blob.raw

    def raw(self: Any) -> bytes:
        if not self.decoded:
            COUNTS["b64_decoded_bytes"] += len(self.b64)
        return raw_property.fget(self)  # type: ignore[misc]

    base.Blob.raw = property(raw)  # type: ignore[assignment,method-assign]

    create_app = app_module.create_app

    def create_app_with_probe(*args: Any, **kwargs: Any) -> Any:
        from starlette.responses import Response

        app = create_app(*args, **kwargs)

        @app.get("/_bench/probe", include_in_schema=False)
        async def probe() -> Response:
            status = {}
            with open("/proc/self/status") as f:  # noqa: ASYNC230 - procfs, never blocks
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM"):
                        status[key] = int(value.split()[0]) * 1024
            return Response(orjson.dumps({**COUNTS, **status}), media_type="application/json")

        return app

    app_module.create_app = create_app_with_probe  # type: ignore[assignment]
    _diagnostic_skips()


def _diagnostic_skips() -> None:
    """``BENCH_DIAG_SKIP=store``: no reservation, settlement or generation record (the key
    look-up stays, cached as shipped), to measure what the database work costs. Diagnosis
    only; the benchmark never sets it."""
    import os
    from decimal import Decimal

    if "store" not in os.environ.get("BENCH_DIAG_SKIP", ""):
        return
    from imagegate.store import Store

    async def admit(self: Any, key: Any, **kwargs: Any) -> bool:
        return False

    async def finish(self: Any, settlement: Any) -> Decimal:
        return Decimal(0)

    Store.admit = admit  # type: ignore[method-assign]
    Store.finish = finish  # type: ignore[method-assign]


def main() -> None:
    install()
    from imagegate.cli import app

    sys.argv[0] = "imagegate"
    app()


if __name__ == "__main__":
    main()
