"""The web app's routes over plain HTTP: pages, assets, headers; the API is untouched."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import LiveServer


def get(server: LiveServer, path: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}{path}", timeout=30)


@pytest.mark.parametrize(("path", "title"), [("/", "Image models"), ("/playground", "Playground")])
def test_pages_are_html_with_a_strict_policy(server: LiveServer, path: str, title: str) -> None:
    response = get(server, path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert f"<title>{title}" in response.text
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_every_asset_a_page_names_is_served(server: LiveServer) -> None:
    pending = ["/", "/playground"]
    seen: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        response = get(server, path)
        assert response.status_code == 200, path
        if path.endswith(".js"):
            assert "javascript" in response.headers["content-type"], path
        if path.endswith((".js", ".html")) or path in ("/", "/playground"):
            # <script src>, <link href>, <img src> and ES module imports (relative to /static/js/).
            pending += re.findall(r'(?:src|href)="(/static/[^"]+)"', response.text)
            pending += [f"/static/js/{name}" for name in re.findall(r'from "\./([\w-]+\.js)"', response.text)]
    assert {"/static/app.css", "/static/js/models-page.js", "/static/js/playground-page.js", "/static/js/sse.js"} <= seen


def test_api_and_service_routes_stay_json(server: LiveServer) -> None:
    assert get(server, "/healthz").json() == {"status": "ok"}
    assert get(server, "/openapi.json").json()["info"]["title"] == "imagegate"
    assert get(server, "/api/v1/images/models").status_code == 200
    missing = get(server, "/static/nothing-here.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == 404
    paths = get(server, "/openapi.json").json()["paths"]
    assert not any(p == "/" or p.startswith(("/static", "/playground")) for p in paths)
