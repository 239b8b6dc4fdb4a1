"""Every listed model of every provider, through the public API, against its emulator.

For each endpoint of each non-sandbox model, every value of each descriptor it lists (enum
values, both ends of ranges, a seed where supported) is sent once through a real imagegate
server pinned to that endpoint; the answer must be a 200 with what the request asked for.
Streaming endpoints also stream once.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from PIL import Image

from imagegate.catalog import Endpoint, Model, load_catalog
from tests.conftest import LiveServer, start_server
from tests.emulators import google as google_emulator
from tests.emulators.base import Emulator, EmulatorServer
from tests.emulators.images import synth

SANDBOX = "imagegate"
REFERENCE = "data:image/png;base64," + base64.b64encode(synth(128, 96, "png")).decode()


@contextlib.contextmanager
def every_provider(folder: Path, **server_options: Any) -> Iterator[tuple[LiveServer, dict[str, Emulator]]]:
    """All four emulators and one imagegate server configured against every provider."""
    import importlib

    servers = {name: EmulatorServer(Emulator(importlib.import_module(f"tests.emulators.{name}")))
               for name in ("openai", "google", "bfl", "stability")}
    emus = {name: server.start() for name, server in servers.items()}
    service_account = folder / "service-account.json"
    service_account.write_text(json.dumps(google_emulator.service_account(emus["google"])))
    providers = {
        "openai": {"api_key": "test-key", "base_url": emus["openai"].url + "/v1"},
        "azure": {"api_key": "test-key", "endpoint": emus["openai"].url},
        "google-ai-studio": {"api_key": "test-key", "base_url": emus["google"].url + "/v1beta"},
        "google-vertex": {"project": "imagegate-test", "credentials_file": str(service_account),
                          "base_url": emus["google"].url + "/v1"},
        "black-forest-labs": {"api_key": "bfl-key", "base_url": emus["bfl"].url, "trusted_hosts": "localhost",
                              "poll_interval_s": 0.01},
        "stability": {"api_key": "sk-test", "base_url": emus["stability"].url},
    }
    live, stop = start_server(folder, providers=providers, **server_options)
    try:
        yield live, emus
    finally:
        stop()
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, Emulator]]]:
    with every_provider(tmp_path_factory.mktemp("catalog-e2e")) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(stack: tuple[LiveServer, dict[str, Emulator]]) -> LiveServer:
    return stack[0]


def cases() -> list[tuple[str, str, str, object]]:
    """(model, endpoint slug, parameter, value) for every descriptor value of every endpoint."""
    found = []
    for model in load_catalog().models():
        for endpoint in model.endpoints:
            if endpoint.provider == SANDBOX:
                continue
            found.append((model.id, endpoint.provider_slug, "prompt-only", None))
            for name, descriptor in endpoint.supported_parameters.items():
                if descriptor.type == "enum":
                    values = list(descriptor.values)
                elif descriptor.type == "range":
                    low = max(descriptor.min, 1) if name == "input_references" else descriptor.min
                    values = sorted({low, descriptor.max})  # no references at all is the prompt-only case
                else:
                    values = [1234]
                found += [(model.id, endpoint.provider_slug, name, v) for v in values]
    return found


def streaming_endpoints() -> list[tuple[str, str]]:
    return [(m.id, e.provider_slug) for m in load_catalog().models() for e in m.endpoints
            if e.provider != SANDBOX and e.supports_streaming]


def body_for(model: Model, endpoint: Endpoint, name: str, value: object) -> dict:
    body: dict = {"model": model.id, "prompt": "a lighthouse on a cliff",
                  "provider": {"only": [endpoint.provider_slug], "allow_fallbacks": False}}
    if name == "prompt-only":
        return body
    if name == "input_references":
        body["input_references"] = [{"type": "image_url", "image_url": {"url": REFERENCE}}] * int(value)
        return body
    body[name] = value
    if name == "output_compression" and "output_format" not in body:
        body["output_format"] = "jpeg"  # compression applies to lossy formats
    if name == "background" and value == "transparent":
        body["output_format"] = "png"
    if name == "resolution" and value == "4K" and "aspect_ratio" in endpoint.supported_parameters:
        body["aspect_ratio"] = "1:1"
    return body


@pytest.mark.parametrize(("model_id", "slug", "name", "value"), cases(),
                         ids=lambda v: str(v))
def test_every_listed_descriptor_value_generates(gateway: LiveServer, model_id: str, slug: str,
                                                 name: str, value: object) -> None:
    model = load_catalog().get(model_id)
    endpoint = next(e for e in model.endpoints if e.provider_slug == slug)
    body = body_for(model, endpoint, name, value)
    with gateway.client() as client:
        response = client.post("/images", json=body, headers=gateway.auth())
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegate-provider"] == slug
    payload = response.json()
    expected = int(value) if name == "n" else 1
    assert len(payload["data"]) == expected
    assert payload["usage"]["cost"] > 0
    first = payload["data"][0]
    raw = base64.b64decode(first["b64_json"])
    if first["media_type"] != "image/svg+xml":
        image = Image.open(io.BytesIO(raw))
        assert f"{image.width}x{image.height}" == response.headers["x-imagegate-size"]
        if name == "output_format":
            assert first["media_type"] == f"image/{value}"
        if name == "aspect_ratio" and value != "auto" and "aspect_ratio" not in response.headers["x-imagegate-clamped"]:
            w, h = (float(x) for x in str(value).split(":"))
            assert abs(image.width / image.height - w / h) / (w / h) < 0.05
        if name == "background" and value == "transparent":
            assert image.mode in ("RGBA", "LA", "P")


@pytest.mark.parametrize(("model_id", "slug"), streaming_endpoints())
def test_streaming_endpoints_stream_partials_and_a_completed_event(gateway: LiveServer, model_id: str,
                                                                   slug: str) -> None:
    body = {"model": model_id, "prompt": "a fox", "stream": True,
            "provider": {"only": [slug], "allow_fallbacks": False}}
    with gateway.client() as client:
        raw = client.post("/images", json=body, headers=gateway.auth()).content
    events = [orjson.loads(block[6:]) for block in raw.split(b"\n\n") if block.startswith(b"data: {")]
    types = [e["type"] for e in events]
    assert "image_generation.partial_image" in types
    assert types[-1] == "image_generation.completed"
    assert events[-1]["usage"]["cost"] > 0
    assert raw.endswith(b"data: [DONE]\n\n")


def test_every_shipped_model_is_listed_when_its_provider_is_configured(gateway: LiveServer) -> None:
    with gateway.client() as client:
        listed = {m["id"] for m in client.get("/images/models").json()["data"]}
    assert {m.id for m in load_catalog().models()} <= listed


def test_unconfigured_providers_are_not_listed(server: LiveServer) -> None:
    with server.client() as client:
        listed = {m["id"] for m in client.get("/images/models").json()["data"]}
    assert all(model.startswith("imagegate/") for model in listed)




#: One endpoint per emulator family, pinned so the fault is not routed around.
FAULT_TARGETS = {
    "openai": ("openai/gpt-image-2", "openai"),
    "google": ("google/gemini-3.1-flash-image", "google-ai-studio"),
    "bfl": ("black-forest-labs/flux.2-pro", "black-forest-labs"),
    "stability": ("stability-ai/stable-image-core", "stability"),
}
FAULTS = {
    "rate_limit": 429,
    "server_error": 502,
    "overloaded": 529,
    "bad_key": 502,
    "timeout_status": 524,
    "drop": 502,
    "malformed": 502,
}


@pytest.mark.parametrize("family", FAULT_TARGETS)
@pytest.mark.parametrize(("fault", "status"), FAULTS.items())
def test_upstream_faults_give_the_documented_status_envelope_and_no_charge(
    stack: tuple[LiveServer, dict[str, Emulator]], family: str, fault: str, status: int
) -> None:
    import time

    live, emus = stack
    model, slug = FAULT_TARGETS[family]
    emus[family].fault(fault, times=1)
    body = {"model": model, "prompt": "x", "provider": {"only": [slug], "allow_fallbacks": False}}
    with live.client() as client:
        response = client.post("/images", json=body, headers=live.auth())
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == status and error["message"]
        assert "test-key" not in response.text and "Traceback" not in response.text
        if fault == "rate_limit":
            assert response.headers.get("retry-after") == "2"
        if fault == "bad_key":
            assert error["metadata"]["provider_key_rejected"] is True
        generation_id = response.headers["x-generation-id"]
        deadline = time.monotonic() + 5
        while (record := client.get("/generation", params={"id": generation_id}, headers=live.auth())).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    data = record.json()["data"]
    assert data["status"] == "failed" and data["total_cost"] == 0 and data["num_media_completion"] == 0
    emus[family].clear()
