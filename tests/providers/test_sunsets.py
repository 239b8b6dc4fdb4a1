"""The shipped catalog two years from today, through the public API with every provider
configured: what a user sees once models are past their sunset.

Retired models are gone from every listing and from routing, and asking for one says when it
was retired; every model still served generates.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from imagegate.catalog import Model, load_catalog
from imagegate.clock import fixed_clock
from tests.conftest import LiveServer
from tests.emulators.base import Emulator
from tests.providers.test_catalog_end_to_end import every_provider

TWO_YEARS_AHEAD = datetime.now(UTC) + timedelta(days=2 * 366)
CATALOG = load_catalog()


def retired(model: Model) -> bool:
    return all(e.retired_on(TWO_YEARS_AHEAD.date()) for e in model.endpoints)


RETIRED = [m for m in CATALOG.models() if retired(m)]
SERVED = [m for m in CATALOG.models() if not retired(m)]


@pytest.fixture(scope="module")
def future(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, Emulator]]]:
    with every_provider(tmp_path_factory.mktemp("sunsets"), clock=fixed_clock(TWO_YEARS_AHEAD)) as running:
        yield running


@pytest.fixture(scope="module")
def gateway(future: tuple[LiveServer, dict[str, Emulator]]) -> LiveServer:
    return future[0]


def test_the_shipped_catalog_has_retired_models_by_then() -> None:
    # What the rest of this module checks: OpenAI retires gpt-image-1.5 and 1-mini on 2026-12-01.
    assert {"openai/gpt-image-1.5", "openai/gpt-image-1-mini"} <= {m.id for m in RETIRED}
    assert "openai/gpt-image-2" in {m.id for m in SERVED}


def test_retired_models_are_gone_from_every_listing(gateway: LiveServer) -> None:
    with gateway.client() as client:
        image_models = {m["id"] for m in client.get("/images/models").json()["data"]}
        general = {m["id"] for m in client.get("/models", params={"output_modalities": "image"}).json()["data"]}
    assert image_models == general == {m.id for m in SERVED}


@pytest.mark.parametrize("model", [m.id for m in RETIRED])
def test_asking_for_a_retired_model_says_since_when(gateway: LiveServer, model: str) -> None:
    sunset = max(e.sunset for e in CATALOG.get(model).endpoints).isoformat()
    with gateway.client() as client:
        generated = client.post("/images", json={"model": model, "prompt": "a fox"}, headers=gateway.auth())
        endpoints = client.get(f"/images/models/{model}/endpoints")
        records = client.get(f"/images/models/{model}/endpoints", params={"include_unconfigured": "true"})
        credits = client.get("/credits", headers=gateway.auth()).json()["data"]
    for response in (generated, endpoints):
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["code"] == 404
        assert f"retired on {sunset}" in error["message"]
        assert error["metadata"]["retired"] == sunset
    assert "x-generation-id" not in generated.headers
    assert credits["total_usage"] == 0
    # The operator's view (the web pages ask for it) keeps the records, each saying why.
    assert records.status_code == 200
    assert [e["retired"] for e in records.json()["endpoints"]] == [sunset] * len(CATALOG.get(model).endpoints)


@pytest.mark.parametrize(("model", "slug"), [(m.id, e.provider_slug) for m in SERVED for e in m.endpoints
                                             if not e.retired_on(TWO_YEARS_AHEAD.date())])
def test_every_model_still_served_generates(gateway: LiveServer, model: str, slug: str) -> None:
    body = {"model": model, "prompt": "a lighthouse", "provider": {"only": [slug], "allow_fallbacks": False}}
    with gateway.client() as client:
        response = client.post("/images", json=body, headers=gateway.auth())
        record = client.get(f"/images/models/{model}/endpoints", params={"include_unconfigured": "true"})
    assert response.status_code == 200, response.text
    assert response.headers["x-imagegate-provider"] == slug
    assert all(e["retired"] is None for e in record.json()["endpoints"] if e["provider_slug"] == slug)
