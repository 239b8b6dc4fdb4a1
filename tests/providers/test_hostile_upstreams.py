"""Upstreams that are broken or hostile, through a real imagegate server: what they send reaches
the client only as what it claims to be (one event per event, an image without script) and
never carries the gateway's own secrets."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable

import orjson
import pytest

from imagegate.redaction import REDACTED
from tests.conftest import LiveServer
from tests.emulators import openai as emulated
from tests.emulators.base import ECHO_HEADERS_FAULT, Emulator
from tests.waiting import wait_for_record


@pytest.fixture
def emu(emulator: Callable[..., Emulator]) -> Emulator:
    return emulator("openai")


@pytest.fixture
def openai_server(make_server: Callable[..., LiveServer], emu: Emulator) -> LiveServer:
    return make_server(providers={"openai": {"api_key": emulated.API_KEY, "base_url": emu.url + "/v1"}})


def event_source_data(stream: bytes) -> list[bytes]:
    """The data of each event a browser's EventSource would dispatch: lines end at CR, LF or
    CRLF, a blank line ends an event (the WHATWG HTML standard, "Interpreting an event stream")."""
    events, data = [], []
    for line in re.split(rb"\r\n|\r|\n", stream):
        if not line:
            if data:
                events.append(b"\n".join(data))
            data = []
        elif line.startswith(b"data:"):
            data.append(line[6:] if line.startswith(b"data: ") else line[5:])
    return events


# --- SVG with script ---

SCRIPTED_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" '
    b'height="64" onload="alert(1)"><script>alert(2)</script><a xlink:href="javascript:alert(3)">'
    b'<circle cx="32" cy="32" r="30" fill="#3346d3" onmouseover="alert(4)"/></a>'
    b'<foreignObject><iframe xmlns="http://www.w3.org/1999/xhtml" src="javascript:alert(5)"/>'
    b"</foreignObject></svg>"
)


def test_an_svg_from_an_upstream_reaches_the_client_without_its_script(
    emulator: Callable[..., Emulator], make_server: Callable[..., LiveServer]
) -> None:
    google = emulator("google")
    google.state["image"] = ("image/svg+xml", SCRIPTED_SVG)
    config = {"api_key": "test-key", "base_url": f"{google.url}/v1beta"}
    live = make_server(providers={"google-ai-studio": config})
    body = {"model": "google/gemini-3.1-flash-image", "prompt": "a blue dot"}
    with live.client() as client:
        response = client.post("/images", json=body, headers=live.auth())
    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    assert item["media_type"] == "image/svg+xml"
    svg = base64.b64decode(item["b64_json"])
    assert b"<circle" in svg and b'r="30"' in svg
    for sign in (b"alert", b"onload", b"onmouseover", b"script", b"javascript", b"foreignObject", b"iframe"):
        assert sign not in svg


def test_markup_an_upstream_labels_as_png_is_refused(openai_server: LiveServer, emu: Emulator) -> None:
    emu.state["image"] = SCRIPTED_SVG
    body = {"model": "openai/gpt-image-1.5", "prompt": "a blue dot"}
    with openai_server.client() as client:
        response = client.post("/images", json=body, headers=openai_server.auth())
    assert response.status_code == 502
    assert response.json()["error"]["message"].startswith("OpenAI returned an image that is not a valid PNG")
    assert "alert" not in response.text


# --- line ends inside an upstream's values ---


@pytest.mark.parametrize("fault", ["cr_in_value", "escaped_line_ends_in_value"])
def test_line_ends_inside_an_upstream_value_never_make_an_event_of_their_own(
    openai_server: LiveServer, emu: Emulator, fault: str
) -> None:
    emu.fault(fault)
    body = {"model": "openai/gpt-image-1.5", "prompt": "a fox", "stream": True}
    with openai_server.client() as client:
        response = client.post("/images", json=body, headers=openai_server.auth())
    assert response.status_code == 200
    *events, done = event_source_data(response.content)
    assert done == b"[DONE]"
    assert all(isinstance(orjson.loads(data), dict) for data in events), events
    assert emulated.INJECTED_EVENT[6:] not in events


# --- the gateway's own credentials ---

#: The gateway's key for the emulated OpenAI: of no shape a pattern knows.
GATEWAY_KEY = "gw-4f9c2a7e1b-upstream"


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_echoing_the_request_headers_never_passes_the_gateway_key_on(
    make_server: Callable[..., LiveServer], emu: Emulator, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    caplog.set_level(logging.INFO, logger="imagegate")
    live = make_server(providers={"openai": {"api_key": GATEWAY_KEY, "base_url": emu.url + "/v1"}})
    emu.fault(ECHO_HEADERS_FAULT)
    body = {"model": "openai/gpt-image-1.5", "prompt": "a fox", "stream": stream}
    with live.client() as client:
        response = client.post("/images", json=body, headers=live.auth())
    assert emu.requests[-1].headers["Authorization"] == f"Bearer {GATEWAY_KEY}"
    # The echo reaches the client, the record and the log, each time without the key.
    assert response.status_code == (200 if stream else 502)
    assert "Headers: " in response.text and REDACTED in response.text
    record = wait_for_record(live, response.headers["x-generation-id"])
    assert REDACTED in record["error_message"] and REDACTED in record["provider_responses"][-1]["error"]
    assert GATEWAY_KEY not in response.text + orjson.dumps(record).decode()
    if not stream:  # a buffered failure is logged with its message
        assert REDACTED in caplog.text
    assert GATEWAY_KEY not in caplog.text


# --- base64 that would break out of the JSON string it is written into ---


@pytest.mark.parametrize("stream", [False, True])
def test_escapes_inside_an_upstreams_base64_never_reach_the_clients_json(
    openai_server: LiveServer, emu: Emulator, stream: bool
) -> None:
    emu.fault("image_json_breakout")
    body = {"model": "openai/gpt-image-1.5", "prompt": "a blue dot", "stream": stream}
    with openai_server.client() as client:
        response = client.post("/images", json=body, headers=openai_server.auth())
    assert b"forged" not in response.content
    if stream:
        assert response.status_code == 200
        [error] = [e["error"] for e in map(orjson.loads, event_source_data(response.content)[:-1]) if "error" in e]
        assert error["message"] == "OpenAI returned an image that is not valid base64: it holds characters that are not base64"
    else:  # read as it arrives, where an escape in an image's value fails the answer
        assert response.status_code == 502
        assert response.json()["error"]["message"] == "OpenAI returned a malformed response"
    record = wait_for_record(openai_server, response.headers["x-generation-id"])
    assert record["status"] == "failed" and record["total_cost"] == 0


def test_escapes_inside_a_parsed_image_value_never_reach_the_clients_json(
    make_server: Callable[..., LiveServer], emulator: Callable[..., Emulator]
) -> None:
    google = emulator("google")
    google.fault("image_json_breakout")
    live = make_server(providers={"google-ai-studio": {"api_key": "test-key", "base_url": f"{google.url}/v1beta"}})
    body = {"model": "google/gemini-3.1-flash-image", "prompt": "a blue dot"}
    with live.client() as client:
        response = client.post("/images", json=body, headers=live.auth())
    assert response.status_code == 502 and b"forged" not in response.content
    assert response.json()["error"]["message"] == (
        "Google AI Studio returned an image that is not valid base64: it holds characters that are not base64")
