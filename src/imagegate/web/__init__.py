"""The browser app: the models page at ``/`` and the image playground at ``/playground``.

Plain HTML, CSS and ES modules shipped inside the package and served by the gateway itself, so
it works offline with no build step. The pages read the public discovery API and call
``POST /api/v1/images`` like any other client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
PAGES = {"/": "index.html", "/playground": "playground.html"}

# The playground keeps an API key in this origin's localStorage: scripts may come from here
# alone and may talk to this gateway alone. Cache-Control makes browsers revalidate (ETag), so
# an upgraded gateway never runs with stale modules.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _StaticFiles(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(HEADERS)
        return response


def install_web(app: FastAPI) -> None:
    """Serve the pages and their assets (``/static/…``) from ``app``."""
    for path, name in PAGES.items():
        app.add_api_route(path, _page(STATIC_DIR / name), methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/static", _StaticFiles(directory=STATIC_DIR), name="static")


def _page(file: Path) -> Any:
    async def page() -> Response:
        return FileResponse(file, media_type="text/html; charset=utf-8", headers=HEADERS)

    page.__name__ = f"web_{file.stem}"
    return page
