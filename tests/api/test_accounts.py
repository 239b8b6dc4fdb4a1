"""Credits, spending limits and key management through the HTTP API and the official SDK."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest
from openrouter import OpenRouter, errors

from imagegate.store import Store
from tests.conftest import LiveServer
from tests.waiting import eventually, wait_for_record

IMAGE = {"model": "imagegate/sandbox", "prompt": "x", "resolution": "512"}  # $0.01 per image


def with_store(server: LiveServer, action):
    async def run():
        store = Store(server.database_url)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def sdk(server: LiveServer, key: str | None = None) -> OpenRouter:
    return OpenRouter(api_key=key or server.key, server_url=server.api_url)


def post(server: LiveServer, body: dict, key: str | None = None) -> httpx.Response:
    with server.client() as client:
        return client.post("/images", json=body, headers=server.auth(key))


def test_200_concurrent_requests_with_credit_for_10_images_admit_exactly_10(make_server) -> None:
    server = make_server()
    with_store(server, lambda s: s.add_credits(Decimal("0.10")))

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.api_url, timeout=120, limits=limits) as client:
            return await asyncio.gather(*(client.post("/images", json=IMAGE, headers=server.auth())
                                          for _ in range(200)))

    responses = asyncio.run(burst())
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(402) == 190
    refused = next(r for r in responses if r.status_code == 402).json()["error"]
    assert refused["metadata"]["limit_source"] == "openrouter_credits"
    # The last generations settle just after their responses.
    account = eventually(lambda: with_store(server, lambda s: s.get_account()),
                         lambda a: a.total_usage_usd == Decimal("0.10"))
    ledger = with_store(server, lambda s: s.ledger_total())
    assert account.balance_usd == Decimal("0") == ledger
    assert account.reserved_usd == 0 == account.held_ahead_usd


def test_failed_generation_costs_nothing(make_server) -> None:
    server = make_server()
    with_store(server, lambda s: s.add_credits(Decimal("1")))
    failing = {**IMAGE, "provider": {"options": {"imagegate": {"fail": "upstream_error"}}}}
    failed = post(server, failing)
    assert failed.status_code == 502
    wait_for_record(server, failed.headers["x-generation-id"])
    account = with_store(server, lambda s: s.get_account())
    assert account.balance_usd == Decimal("1") and account.total_usage_usd == 0


def test_key_limit_is_a_402_with_key_limit_source(make_server) -> None:
    server = make_server()
    secret, _ = with_store(server, lambda s: s.create_key("capped", limit_usd=Decimal("0.02"), limit_reset="daily"))
    answers = [post(server, IMAGE, secret) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    for answer in answers:
        wait_for_record(server, answer.headers["x-generation-id"], secret)
    refused = post(server, IMAGE, secret)
    assert refused.status_code == 402
    assert refused.json()["error"]["metadata"]["limit_source"] == "openrouter_key_limit"
    assert post(server, IMAGE).status_code == 200  # other keys are not affected


def test_current_key_and_credits_in_openrouter_shapes(make_server) -> None:
    server = make_server()
    with_store(server, lambda s: s.add_credits(Decimal("5")))
    secret, _ = with_store(server, lambda s: s.create_key("dev", limit_usd=Decimal("1"), limit_reset="monthly"))
    answer = post(server, IMAGE, secret)
    assert answer.status_code == 200
    wait_for_record(server, answer.headers["x-generation-id"], secret)
    key = sdk(server, secret).api_keys.get_current_key_metadata().data
    assert key.usage == pytest.approx(0.01) and key.usage_monthly == pytest.approx(0.01)
    assert key.limit == 1 and key.limit_remaining == pytest.approx(0.99) and key.limit_reset == "monthly"
    assert key.is_management_key is False
    credits = sdk(server).credits.get_credits().data
    assert credits.total_credits == 5 and credits.total_usage == pytest.approx(0.01)


def test_key_management_needs_a_management_key_and_works_through_the_sdk(make_server) -> None:
    server = make_server()
    with pytest.raises(errors.UnauthorizedResponseError):
        sdk(server).api_keys.list()
    admin, _ = with_store(server, lambda s: s.create_key("admin", is_management=True))
    client = sdk(server, admin)
    created = client.api_keys.create(name="ci", limit=2.5, limit_reset="weekly")
    assert created.key.startswith("sk-ig-v1-") and created.data.limit == 2.5
    key_hash = created.data.hash
    assert key_hash in {k.hash for k in client.api_keys.list().data}
    assert client.api_keys.get(hash=key_hash).data.name == "ci"
    updated = client.api_keys.update(hash=key_hash, disabled=True, limit=None)
    assert updated.data.disabled is True and updated.data.limit is None
    disabled = post(server, IMAGE, created.key)
    assert disabled.status_code == 403
    client.api_keys.delete(hash=key_hash)
    assert post(server, IMAGE, created.key).status_code == 401
    with pytest.raises(errors.NotFoundResponseError):
        client.api_keys.get(hash=key_hash)


def test_key_limit_beyond_what_the_ledger_holds_is_400_not_500(make_server) -> None:
    server = make_server()
    admin, _ = with_store(server, lambda s: s.create_key("admin", is_management=True))
    with server.client(headers=server.auth(admin)) as client:
        created = client.post("/keys", json={"name": "rich", "limit": 1e300})
        assert created.status_code == 400 and "limit" in created.json()["error"]["message"]
        key_hash = client.post("/keys", json={"name": "ok", "limit": 1e9}).json()["data"]["hash"]
        assert client.patch(f"/keys/{key_hash}", json={"limit": 1e19}).status_code == 400


def test_nul_characters_in_what_the_database_keeps_or_searches_by_are_400(make_server) -> None:
    # PostgreSQL text cannot hold them: the writes and lookups failed (500s, unsettled generations).
    server = make_server()
    admin, _ = with_store(server, lambda s: s.create_key("admin", is_management=True))
    nul_hash = "sk-ig-v1-" + "\x00" * 55  # 64 characters, the length of a key's hash
    in_path = nul_hash.replace("\x00", "%00")
    with server.client(headers=server.auth(admin)) as client:
        answers = [
            client.post("/keys", json={"name": "a\x00b"}),
            client.get(f"/keys/{in_path}"),
            client.patch(f"/keys/{in_path}", json={"name": "x"}),
            client.delete(f"/keys/{in_path}"),
            client.get("/activity", params={"model": "\x00"}),
            client.get("/activity", params={"key": nul_hash}),
            client.get("/generation", params={"id": "gen-\x00"}),
        ]
    assert [a.status_code for a in answers] == [400] * len(answers)


@pytest.mark.parametrize(("param", "value"), [
    ("offset", 2**64),  # past SQL's 64-bit integers
    ("since", "0001-01-01T00:00:00+23:59"),  # before the first UTC time there is
    ("until", "9999-12-31T23:59:59-23:59"),  # after the last
])
def test_activity_query_values_the_database_cannot_hold_are_400_not_500(
    server: LiveServer, param: str, value: object
) -> None:
    with server.client() as client:
        response = client.get("/activity", params={param: value}, headers=server.auth())
    assert response.status_code == 400 and param in response.json()["error"]["message"]


def test_activity_filters_by_key_model_and_time(make_server) -> None:
    server = make_server()
    other, _ = with_store(server, lambda s: s.create_key("other"))
    answers = [(post(server, IMAGE), None), (post(server, {**IMAGE, "model": "imagegate/sandbox-tiers"}), None),
               (post(server, IMAGE, other), other)]
    for answer, key in answers:
        wait_for_record(server, answer.headers["x-generation-id"], key)
    with server.client() as client:
        mine = client.get("/activity", headers=server.auth()).json()
        assert {g["model"] for g in mine["data"]} == {"imagegate/sandbox", "imagegate/sandbox-tiers"}
        assert len(mine["data"]) == 2
        tiers = client.get("/activity", params={"model": "imagegate/sandbox-tiers"}, headers=server.auth()).json()
        assert [g["model"] for g in tiers["data"]] == ["imagegate/sandbox-tiers"]
        future = client.get("/activity", params={"since": "2999-01-01T00:00:00"}, headers=server.auth()).json()
        assert future["data"] == []
        assert client.get("/activity", params={"key": "0" * 64}, headers=server.auth()).status_code == 403
