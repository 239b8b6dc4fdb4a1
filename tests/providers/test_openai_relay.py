"""Buffered answers relayed while the upstream still sends them (OpenAI-shaped JSON answers).

The gateways here relay from the 64 KiB head on (``relay_from_bytes=0``; by default answers
under 8 MiB are held whole). The emulator's JPEGs at quality 100 are ~170 KB of base64, so they
are relayed; its PNG gradients (~13 KB) are not, and take the buffered path.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import io
import time
from collections.abc import Callable
from decimal import Decimal

import httpx
import openai as openai_sdk
import orjson
import pytest
from PIL import Image as PILImage

from imagegate.providers.relay import HEAD_B64_CHARS
from tests.conftest import LiveServer
from tests.emulators import openai as emulated
from tests.emulators.base import Emulator
from tests.providers.test_money import settled_balance

BODY = {"model": "openai/gpt-image-2", "prompt": "a lighthouse at dusk", "output_format": "jpeg",
        "resolution": "1K", "aspect_ratio": "1:1"}


@pytest.fixture
def emu(emulator: Callable[..., Emulator]) -> Emulator:
    return emulator("openai")


@pytest.fixture
def gateway(make_server: Callable[..., LiveServer], emu: Emulator) -> Callable[..., LiveServer]:
    def start(**settings) -> LiveServer:
        settings.setdefault("relay_from_bytes", 0)  # relay from the 64 KiB head on
        return make_server(
            providers={"openai": {"api_key": emulated.API_KEY, "base_url": emu.url + "/v1"}}, **settings
        )

    return start


def jpeg(b64: str) -> PILImage.Image:
    image = PILImage.open(io.BytesIO(base64.b64decode(b64, validate=True)))
    image.load()
    return image


def post(server: LiveServer, body: dict) -> tuple[httpx.Headers, bytes]:
    with server.client() as client, client.stream("POST", "/images", json=body, headers=server.auth()) as response:
        assert response.status_code == 200
        return response.headers, response.read()


def record(server: LiveServer, generation_id: str) -> dict:
    with server.client() as client:
        return client.get("/generation", params={"id": generation_id}, headers=server.auth()).json()["data"]


def test_a_large_image_is_relayed_while_it_arrives_and_recorded_as_delivered(gateway) -> None:
    server = gateway()
    headers, raw = post(server, BODY)
    assert "content-length" not in headers and headers["transfer-encoding"] == "chunked"
    assert headers["x-imagegate-size"] == "1024x1024" and headers["x-provider-name"] == "OpenAI"
    answer = orjson.loads(raw)
    [image] = answer["data"]
    assert len(image["b64_json"]) > HEAD_B64_CHARS and image["media_type"] == "image/jpeg"
    assert jpeg(image["b64_json"]).size == (1024, 1024)
    assert answer["usage"]["cost"] > 0
    recorded = record(server, headers["x-generation-id"])
    assert recorded["images"][0]["bytes"] == len(base64.b64decode(image["b64_json"]))
    assert recorded["total_cost"] == pytest.approx(answer["usage"]["cost"])


def test_relayed_and_buffered_answers_carry_the_same_fields(gateway) -> None:
    relayed_headers, relayed = post(gateway(), BODY)
    buffered_headers, buffered = post(gateway(relay_images=False), BODY)
    assert "content-length" in buffered_headers
    relayed_answer, buffered_answer = orjson.loads(relayed), orjson.loads(buffered)
    assert relayed_answer.keys() == buffered_answer.keys()
    assert relayed_answer["usage"] == buffered_answer["usage"]
    assert [d.keys() for d in relayed_answer["data"]] == [d.keys() for d in buffered_answer["data"]]
    for name in ("x-imagegate-size", "x-imagegate-format", "x-provider-name"):
        assert relayed_headers[name] == buffered_headers[name]


def test_several_images_are_relayed_in_order(gateway, emu: Emulator) -> None:
    _, raw = post(gateway(), {**BODY, "n": 3})
    images = orjson.loads(raw)["data"]
    assert len(images) == 3 and len({i["b64_json"] for i in images}) == 3
    assert all(jpeg(i["b64_json"]).size == (1024, 1024) for i in images)
    assert emu.requests[-1].json()["n"] == 3  # one upstream call


def test_an_upstream_that_escapes_slashes_is_relayed_unescaped(gateway, emu: Emulator) -> None:
    emu.fault("escaped_slashes")
    _, raw = post(gateway(), BODY)
    [image] = orjson.loads(raw)["data"]
    assert "\\" not in image["b64_json"] and jpeg(image["b64_json"]).size == (1024, 1024)


def test_an_upstream_cut_mid_image_cuts_the_client_off_and_charges_nothing(gateway, emu: Emulator) -> None:
    server = gateway()
    emu.fault("cut_body")
    with server.client() as client, client.stream("POST", "/images", json=BODY, headers=server.auth()) as response:
        assert response.status_code == 200  # the answer had started
        generation_id = response.headers["x-generation-id"]
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    recorded = record(server, generation_id)
    assert recorded["status"] == "failed" and "broke off" in recorded["error_message"]
    assert recorded["total_cost"] == 0 and recorded["num_media_completion"] == 0
    headers, _ = post(server, BODY)  # the next request is served as usual
    assert headers["x-provider-name"] == "OpenAI"


def test_a_small_image_is_buffered_and_sent_with_its_length(gateway) -> None:
    headers, raw = post(gateway(), {**BODY, "output_format": "png"})
    assert int(headers["content-length"]) == len(raw)


def test_the_official_openai_sdk_reads_a_relayed_answer(gateway) -> None:
    server = gateway()
    client = openai_sdk.OpenAI(base_url=server.api_url, api_key=server.key, max_retries=0)
    result = client.images.generate(model="openai/gpt-image-2", prompt="a lighthouse at dusk",
                                    output_format="jpeg", size="1024x1024")
    assert jpeg(result.data[0].b64_json).size == (1024, 1024)


def test_answers_under_the_relay_threshold_are_held_whole(gateway) -> None:
    headers, raw = post(gateway(relay_from_bytes=8 * 1024 * 1024), BODY)  # the default
    assert int(headers["content-length"]) == len(raw)
    assert jpeg(orjson.loads(raw)["data"][0]["b64_json"]).size == (1024, 1024)


def test_a_client_leaving_mid_relay_lets_the_generation_finish_unbilled(gateway, emu: Emulator) -> None:
    server = gateway()
    emu.fault("trickle_body")  # the upstream takes ~0.5 s to send the image
    with server.client() as client, client.stream("POST", "/images", json=BODY, headers=server.auth()) as response:
        generation_id = response.headers["x-generation-id"]
        next(response.iter_raw())  # the first relayed bytes, then the client goes away
    deadline = time.monotonic() + 10
    while True:
        with server.client() as client:
            found = client.get("/generation", params={"id": generation_id}, headers=server.auth())
        if found.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    recorded = found.json()["data"]
    assert recorded["status"] == "cancelled" and recorded["total_cost"] == 0
    headers, _ = post(server, BODY)  # the upstream connection and the server are fine
    assert headers["x-provider-name"] == "OpenAI"


def test_a_generation_waiting_for_its_settlement_holds_none_of_its_images(
    gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under load settlements wait for their batch; the answers are the clients' by then."""
    from imagegate.store import Store

    finish = Store.finish
    outcomes: list[bool] = []

    async def finish_once_images_are_gone(self, settlement):  # noqa: ANN001, ANN202
        for _ in range(100):  # the answer may still be on its way to the client
            gc.collect()
            if not any(type(o) is memoryview and o.nbytes >= 50_000 for o in gc.get_objects()):
                outcomes.append(True)
                break
            await asyncio.sleep(0.02)
        else:
            outcomes.append(False)
        return await finish(self, settlement)

    monkeypatch.setattr(Store, "finish", finish_once_images_are_gone)
    server = gateway(relay_from_bytes=8 * 1024 * 1024)  # held whole: the image is a view of the answer
    headers, raw = post(server, BODY)
    assert len(orjson.loads(raw)["data"][0]["b64_json"]) >= 50_000
    deadline = time.monotonic() + 10
    while not outcomes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert outcomes == [True]


# --- relayed images that are not what they say (see also test_malformed_images.py) ---


def metered(server: LiveServer) -> Decimal:
    server.store_call(lambda s: s.add_credits(Decimal(100)))
    return settled_balance(server)


BAD_STARTS = {
    "image_garbage_base64": "OpenAI returned an image that is not valid base64: it holds '!'",
    "image_not_an_image": "OpenAI returned an image that is not a valid JPEG: it does not start with a JPEG SOI marker",
}


@pytest.mark.parametrize("fault", BAD_STARTS)
def test_a_relayed_image_with_a_bad_start_is_a_502_before_any_of_it_goes_out(gateway, emu: Emulator, fault: str) -> None:
    says = BAD_STARTS[fault]
    server = gateway()
    before = metered(server)
    emu.fault(fault)
    with server.client() as client:
        response = client.post("/images", json=BODY, headers=server.auth())
    assert response.status_code == 502 and response.json()["error"]["message"] == says
    recorded = record(server, response.headers["x-generation-id"])
    assert recorded["status"] == "failed" and recorded["error_message"] == says and recorded["total_cost"] == 0
    assert settled_balance(server) == before


def test_a_relayed_image_cut_short_cuts_the_client_off_and_charges_nothing(gateway, emu: Emulator) -> None:
    server = gateway()
    before = metered(server)
    emu.fault("image_truncated")  # two thirds of the JPEG: well past the head that is checked first
    with server.client() as client, client.stream("POST", "/images", json=BODY, headers=server.auth()) as response:
        assert response.status_code == 200  # the answer had started
        generation_id = response.headers["x-generation-id"]
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    recorded = record(server, generation_id)
    assert recorded["status"] == "failed" and recorded["total_cost"] == 0 and recorded["num_media_completion"] == 0
    assert recorded["error_message"] == "OpenAI returned an image that is not a valid JPEG: it ends before its EOI marker"
    assert settled_balance(server) == before
    headers, _ = post(server, BODY)  # the next request is served as usual
    assert headers["x-provider-name"] == "OpenAI"


@pytest.mark.parametrize("fault", BAD_STARTS)
def test_the_next_endpoint_serves_when_a_relayed_image_starts_wrong(make_server, emu: Emulator, fault: str) -> None:
    server = make_server(relay_from_bytes=0, providers={
        "openai": {"api_key": emulated.API_KEY, "base_url": emu.url + "/v1"},
        "azure": {"api_key": emulated.API_KEY, "endpoint": emu.url},
    })
    emu.fault(fault)
    body = {**BODY, "provider": {"order": ["openai", "azure"], "allow_fallbacks": True}}
    headers, raw = post(server, body)
    assert headers["x-provider-name"] == "Azure" and "content-length" not in headers  # relayed too
    assert jpeg(orjson.loads(raw)["data"][0]["b64_json"]).size == (1024, 1024)
    assert [a["status"] for a in record(server, headers["x-generation-id"])["provider_responses"]] == [502, 200]
