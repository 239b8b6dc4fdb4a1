"""Upstreams that answer 200 with an image no client can use, end to end on a metered account.

Base64 that is not base64, an image cut short, bytes of no image format, an image of another
format than the one its upstream declares: each is a malformed answer, a 502 in OpenRouter's
error envelope (an error event in a stream) naming the provider and the flaw, charging nothing,
recorded failed; with fallbacks allowed the next endpoint serves instead, in a stream too when
nothing of it went out yet. A spoiled preview is dropped from a stream, which goes on. The emulators spoil an image when a fault is queued
(``tests/emulators/base.py``, ``IMAGE_FAULTS``).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import orjson
import pytest

from imagegate.catalog import load_catalog
from tests.conftest import LiveServer
from tests.emulators.base import Emulator
from tests.providers.test_catalog_end_to_end import every_provider
from tests.providers.test_money import settled_balance
from tests.waiting import wait_for_record

#: What the gateway says about each fault (the emulators' images are PNGs unless asked otherwise;
#: BFL's are JPEGs).
SAYS = {
    "image_garbage_base64": "is not valid base64: it holds '!'",
    "image_truncated": "ends before its",
    "image_not_an_image": "does not start with",
    "image_wrong_type": "is declared image/png but is a JPEG",
}
#: Per family: a model, its endpoints (the second serves when the first fails), and the faults
#: its answers can carry. BFL and Stability send raw bytes whose format the gateway reads from
#: the bytes themselves (so neither base64 nor a declared type), and both providers already
#: refuse bytes of no image format.
TARGETS = {
    "openai": ("openai/gpt-image-2", ("openai", "azure"), tuple(SAYS)),
    "google": ("google/gemini-3.1-flash-image", ("google-ai-studio", "google-vertex/global"), tuple(SAYS)),
    "bfl": ("black-forest-labs/flux.2-klein-4b", ("black-forest-labs",), ("image_truncated",)),
    "stability": ("stability-ai/sd3.5-flash", ("stability",), ("image_truncated",)),
}
CASES = [(family, fault) for family, (_, _, faults) in TARGETS.items() for fault in faults]
#: Only OpenAI's endpoints stream (elsewhere a request for a stream gets a buffered answer).
STREAMED_CASES = [(family, fault) for family, fault in CASES if family == "openai"]
FALLBACK_CASES = [(family, fault) for family, fault in CASES if len(TARGETS[family][1]) > 1]


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, Emulator]]]:
    with every_provider(tmp_path_factory.mktemp("malformed")) as (live, emus):
        live.store_call(lambda s: s.add_credits(Decimal(100)))
        yield live, emus


def provider_name(model: str, slug: str) -> str:
    return next(e.provider_name for e in load_catalog().get(model).endpoints if e.provider_slug == slug)


def request(model: str, slugs: tuple[str, ...], *, fallbacks: bool, **fields: object) -> dict:
    return {"model": model, "prompt": "a lighthouse at dusk",
            "provider": {"order": list(slugs), "only": list(slugs), "allow_fallbacks": fallbacks}, **fields}


def sse_events(raw: bytes) -> list[dict]:
    return [orjson.loads(block[6:]) for block in raw.split(b"\n\n") if block.startswith(b"data: {")]


def failed_and_unbilled(live: LiveServer, generation_id: str, before: Decimal, message: str) -> None:
    record = wait_for_record(live, generation_id)
    assert record["status"] == "failed" and record["http_status"] == 502, record
    assert record["error_message"] == message and record["total_cost"] == 0
    assert settled_balance(live) == before


def served_as_usual(live: LiveServer, model: str, slug: str) -> None:
    """The endpoint's next answer is served: the failure was the answer's, not the endpoint's
    (and its health's count of failures in a row starts again, for the next test)."""
    response = httpx.post(f"{live.api_url}/images", json=request(model, (slug,), fallbacks=False),
                          headers=live.auth(), timeout=60)
    assert response.status_code == 200, response.text
    assert wait_for_record(live, response.headers["x-generation-id"])["status"] == "succeeded"  # and settled


@pytest.mark.parametrize(("family", "fault"), CASES)
def test_a_malformed_image_is_a_502_and_charges_nothing(metered, family: str, fault: str) -> None:
    live, emus = metered
    model, (slug, *_), _ = TARGETS[family]
    before = settled_balance(live)
    emus[family].fault(fault)
    response = httpx.post(f"{live.api_url}/images", json=request(model, (slug,), fallbacks=False),
                          headers=live.auth(), timeout=60)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    name = provider_name(model, slug)
    assert error["code"] == 502 and error["metadata"]["provider_name"] == name
    assert error["message"].startswith(f"{name} returned an image that ") and SAYS[fault] in error["message"]
    failed_and_unbilled(live, response.headers["x-generation-id"], before, error["message"])
    served_as_usual(live, model, slug)


@pytest.mark.parametrize(("family", "fault"), STREAMED_CASES)
def test_a_malformed_image_ends_a_stream_with_an_error_and_charges_nothing(metered, family: str, fault: str) -> None:
    live, emus = metered
    model, (slug, *_), _ = TARGETS[family]
    before = settled_balance(live)
    emus[family].fault(fault)
    response = httpx.post(f"{live.api_url}/images", json=request(model, (slug,), fallbacks=False, stream=True),
                          headers=live.auth(), timeout=60)
    assert response.status_code == 200  # the stream had started
    events = sse_events(response.content)
    assert not any(e["type"].endswith(".completed") for e in events)
    error = events[-1]["error"]
    assert events[-1]["type"] == "error" and error["code"] == "upstream_error" and error["type"] == "provider_error"
    assert error["message"].startswith(f"{provider_name(model, slug)} returned an image that ")
    assert SAYS[fault] in error["message"]
    failed_and_unbilled(live, response.headers["x-generation-id"], before, error["message"])
    served_as_usual(live, model, slug)


@pytest.mark.parametrize(("family", "fault"), FALLBACK_CASES)
def test_the_next_endpoint_serves_when_the_first_sends_a_malformed_image(metered, family: str, fault: str) -> None:
    live, emus = metered
    model, slugs, _ = TARGETS[family]
    emus[family].fault(fault)  # the first call takes it; both endpoints are the same emulator
    response = httpx.post(f"{live.api_url}/images", json=request(model, slugs, fallbacks=True),
                          headers=live.auth(), timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegate-provider"] == slugs[1]
    record = wait_for_record(live, response.headers["x-generation-id"])
    assert record["status"] == "succeeded" and record["total_cost"] == response.json()["usage"]["cost"]
    failed, served = record["provider_responses"]
    assert failed["provider_slug"] == slugs[0] and failed["status"] == 502 and SAYS[fault] in failed["error"]
    assert served["provider_slug"] == slugs[1] and served["status"] == 200
    served_as_usual(live, model, slugs[0])


@pytest.mark.parametrize("fault", SAYS)
def test_the_next_endpoint_serves_a_stream_when_nothing_went_out_before_the_malformed_image(metered, fault: str) -> None:
    live, emus = metered
    model, slugs, _ = TARGETS["openai"]
    for spoiled in (f"partial_{fault}", f"partial_{fault}", fault):  # both previews dropped, then the image
        emus["openai"].fault(spoiled)
    response = httpx.post(f"{live.api_url}/images", json=request(model, slugs, fallbacks=True, stream=True),
                          headers=live.auth(), timeout=60)
    events = sse_events(response.content)
    assert [e["type"].split(".")[-1] for e in events] == ["partial_image", "partial_image", "completed"], events
    record = wait_for_record(live, response.headers["x-generation-id"])
    assert record["status"] == "succeeded" and record["provider_name"] == provider_name(model, slugs[1])
    assert [a["status"] for a in record["provider_responses"]] == [502, 200]
    assert record["total_cost"] == events[-1]["usage"]["cost"]
    served_as_usual(live, model, slugs[0])


@pytest.mark.parametrize("fault", SAYS)
def test_a_malformed_preview_is_dropped_and_the_stream_goes_on(metered, fault: str) -> None:
    live, emus = metered
    model, (slug, *_), _ = TARGETS["openai"]
    before = settled_balance(live)
    emus["openai"].fault(f"partial_{fault}")  # the first of the image's two previews
    response = httpx.post(f"{live.api_url}/images", json=request(model, (slug,), fallbacks=False, stream=True),
                          headers=live.auth(), timeout=60)
    events = sse_events(response.content)
    assert [e["type"] for e in events] == ["image_generation.partial_image", "image_generation.completed"]
    assert events[0]["partial_image_index"] == 0
    record = wait_for_record(live, response.headers["x-generation-id"])
    assert record["status"] == "succeeded"
    assert Decimal(repr(events[-1]["usage"]["cost"])) == Decimal(repr(record["total_cost"])) == before - settled_balance(live)
