"""Money end to end on a metered account, against the provider emulators.

For every endpoint of the shipped catalog, buffered and (where it streams) streamed: the cost
the client is shown is the charge in the generation's record and the change in the balance.
Upstreams that report usage no real one would (negative, not a number, beyond what the
endpoint declares) get a 502 and charge nothing; one that reports no usage is still billed.
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
from tests.waiting import wait_for_record

CREDITS = Decimal(100)


def settled_balance(live: LiveServer) -> Decimal:
    """The balance, once the generations before have their records (written in the
    transaction that charges them)."""
    return live.store_call(lambda s: s.get_account()).balance_usd


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, Emulator]]]:
    with every_provider(tmp_path_factory.mktemp("money")) as (live, emus):
        live.store_call(lambda s: s.add_credits(CREDITS))
        yield live, emus


def endpoints(streamed: bool) -> list[tuple[str, str]]:
    return [(m.id, e.provider_slug) for m in load_catalog().models() for e in m.endpoints
            if not streamed or e.supports_streaming]


def pinned(model: str, slug: str, **fields: object) -> dict:
    return {"model": model, "prompt": "a lighthouse at dusk", "provider": {"only": [slug], "allow_fallbacks": False},
            **fields}


def shown_cost_is_charged_and_recorded(live: LiveServer, generation_id: str, shown: float, before: Decimal) -> None:
    record = wait_for_record(live, generation_id)
    after = settled_balance(live)
    assert shown > 0
    assert Decimal(repr(shown)) == Decimal(repr(record["total_cost"])) == before - after, (shown, record, before, after)


@pytest.mark.parametrize(("model", "slug"), endpoints(streamed=False))
def test_buffered_cost_shown_is_cost_charged_and_recorded(metered, model: str, slug: str) -> None:
    live, _emus = metered
    before = settled_balance(live)
    response = httpx.post(f"{live.api_url}/images", json=pinned(model, slug), headers=live.auth(), timeout=60)
    assert response.status_code == 200, response.text
    shown_cost_is_charged_and_recorded(live, response.headers["x-generation-id"], response.json()["usage"]["cost"],
                                       before)


@pytest.mark.parametrize(("model", "slug"), endpoints(streamed=True))
def test_streamed_cost_shown_is_cost_charged_and_recorded(metered, model: str, slug: str) -> None:
    live, _emus = metered
    before = settled_balance(live)
    response = httpx.post(f"{live.api_url}/images", json=pinned(model, slug, stream=True, n=2),
                          headers=live.auth(), timeout=60)
    assert response.status_code == 200, response.text
    events = [orjson.loads(block[6:]) for block in response.content.split(b"\n\n") if block.startswith(b"data: {")]
    assert events[-1]["type"] == "image_generation.completed"
    shown_cost_is_charged_and_recorded(live, response.headers["x-generation-id"], events[-1]["usage"]["cost"], before)


#: Upstreams whose answers carry a usage object, and an endpoint of each that declares its most.
USAGE_TARGETS = {"openai": ("openai/gpt-image-2", "openai"),
                 "google": ("google/gemini-3.1-flash-image", "google-ai-studio")}


@pytest.mark.parametrize("family", USAGE_TARGETS)
@pytest.mark.parametrize(("fault", "says"), [("usage_negative", "is -"), ("usage_string", "is 'many'"),
                                             ("usage_absurd", "more than the endpoint's most")])
def test_impossible_usage_is_a_502_and_charges_nothing(metered, family: str, fault: str, says: str) -> None:
    live, emus = metered
    model, slug = USAGE_TARGETS[family]
    before = settled_balance(live)
    emus[family].fault(fault)
    response = httpx.post(f"{live.api_url}/images", json=pinned(model, slug), headers=live.auth(), timeout=60)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == 502 and "malformed answer" in error["message"] and says in error["message"]
    record = wait_for_record(live, response.headers["x-generation-id"])
    assert record["status"] == "failed" and record["total_cost"] == 0
    assert settled_balance(live) == before


@pytest.mark.parametrize("family", USAGE_TARGETS)
def test_an_answer_without_usage_is_still_billed(metered, family: str) -> None:
    live, emus = metered
    model, slug = USAGE_TARGETS[family]
    before = settled_balance(live)
    emus[family].fault("usage_missing")
    response = httpx.post(f"{live.api_url}/images", json=pinned(model, slug), headers=live.auth(), timeout=60)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["completion_tokens"] > 0
    shown_cost_is_charged_and_recorded(live, response.headers["x-generation-id"], usage["cost"], before)
