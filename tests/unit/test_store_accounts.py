"""Accounts, key limits, reservations, the ledger and activity, on real databases.

Every test that touches a database runs on a SQLite file and on PostgreSQL. PostgreSQL is
``$IMAGEGATE_TEST_POSTGRES_URL`` when set (a role that may CREATE DATABASE: each test gets
a database of its own), else a throwaway cluster this module starts with ``initdb`` and
``pg_ctl`` (found on PATH or under /usr/lib/postgresql/*/bin; as root it runs them as
the ``postgres`` user). Without either, or without asyncpg, the PostgreSQL cases skip.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from imagegate.store import (
    ACCOUNT_CREDITS,
    KEY_LIMIT,
    GenerationRecord,
    KeyDisabled,
    LimitExceeded,
    Settlement,
    Store,
    new_generation_id,
)
from imagegate.store.accounts import UNMETERED_USAGE_NOTE
from imagegate.store.db import create_engine
from imagegate.store.migrate import downgrade, upgrade
from imagegate.store.models import Base, LedgerEntry, Reservation
from imagegate.store.money import nano_to_usd, usd_to_nano
from imagegate.store.periods import period_start
from tests.postgres import admin as _admin
from tests.postgres import admin_blocking as _admin_blocking
from tests.waiting import eventually_async

D = Decimal


# --- databases: a SQLite file, and a PostgreSQL database per test ---


@pytest.fixture(scope="session")
def postgres_template(postgres_admin_url: str) -> Iterator[str]:
    """A migrated database to copy: much faster than migrating one per test."""
    name = f"imagegate_template_{uuid.uuid4().hex[:12]}"
    _admin_blocking(postgres_admin_url, f'CREATE DATABASE "{name}"')
    upgrade(make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False))
    yield name
    _admin_blocking(postgres_admin_url, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


async def _new_database(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, *, migrated: bool
) -> AsyncIterator[str]:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'imagegate.db'}"
        if migrated:
            upgrade(url)
        yield url
        return
    admin = request.getfixturevalue("postgres_admin_url")
    template = f' TEMPLATE "{request.getfixturevalue("postgres_template")}"' if migrated else ""
    name = f"imagegate_test_{uuid.uuid4().hex[:12]}"
    await _admin(admin, f'CREATE DATABASE "{name}"{template}')
    yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(loop_scope="function")
async def database_url(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> AsyncIterator[str]:
    """An empty database on each backend."""
    async for url in _new_database(request, backend, tmp_path, migrated=False):
        yield url


@pytest_asyncio.fixture(loop_scope="function")
async def store(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> AsyncIterator[Store]:
    """A ``Store`` on a migrated database on each backend."""
    async for url in _new_database(request, backend, tmp_path, migrated=True):
        store = Store(url)
        yield store
        await store.close()


@pytest_asyncio.fixture(loop_scope="function")
async def key(store: Store):
    return (await store.create_key("k"))[1]


async def _audit(store: Store, account_id: int = 1) -> None:
    """The invariants: balance = ledger sum (below zero only where a charge exceeded it);
    reserved + held ahead = sum of live reservations (allowances included)."""
    account = await store.get_account(account_id)
    async with store.engine.connect() as conn:
        live = await conn.scalar(
            select(func.coalesce(func.sum(Reservation.amount_nano), 0)).where(
                Reservation.account_id == account_id, Reservation.reaped_at.is_(None)
            )
        )
    assert account.reserved_usd + account.held_ahead_usd == nano_to_usd(int(live))
    if account.metered:
        assert account.balance_usd == await store.ledger_total(account_id)
        assert account.total_credits_usd - account.total_usage_usd == account.balance_usd


async def _reserve(store: Store, key_id: int, amount: str, **kwargs) -> str:
    generation_id = new_generation_id()
    await store.reserve(
        key_id=key_id, generation_id=generation_id, amount_usd=D(amount),
        ttl_s=kwargs.pop("ttl_s", 600), **kwargs,
    )
    return generation_id


# --- money helpers and periods (pure) ---


def test_reservations_round_up_and_charges_round_half_up_to_the_nano() -> None:
    assert usd_to_nano(D("0.0000000011"), round_up=True) == 2
    assert usd_to_nano(D("0.0000000011")) == 1
    assert usd_to_nano(D("0.0000000015")) == 2
    assert usd_to_nano(D("0.0000000014999")) == 1
    assert usd_to_nano("0.04") == 40_000_000
    assert nano_to_usd(40_000_000) == D("0.04")
    assert nano_to_usd(123_456_789_012_345_678) == D("123456789.012345678")
    assert nano_to_usd(0) == 0


def test_limit_periods_are_utc_calendar_day_iso_week_and_month() -> None:
    now = datetime(2025, 3, 5, 23, 30, tzinfo=timezone(timedelta(hours=-2)))  # Thu 01:30 UTC
    assert period_start(None, now) is None
    assert period_start("daily", now) == datetime(2025, 3, 6, tzinfo=UTC)
    assert period_start("weekly", now) == datetime(2025, 3, 3, tzinfo=UTC)  # Monday
    assert period_start("monthly", now) == datetime(2025, 3, 1, tzinfo=UTC)
    assert period_start("weekly", datetime(2025, 3, 2, 23, 59, tzinfo=UTC)) == datetime(
        2025, 2, 24, tzinfo=UTC
    )


# --- migrations ---


async def _raw(url: str, *statements: str, **params) -> list:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            result = None
            for statement in statements:
                result = await conn.execute(text(statement), params)
            return list(result.all()) if result is not None and result.returns_rows else []
    finally:
        await engine.dispose()


async def test_upgrade_to_0002_puts_existing_keys_in_the_unmetered_default_account(
    database_url: str,
) -> None:
    upgrade(database_url, "0001")
    await _raw(
        database_url,
        "INSERT INTO api_keys (hash, label, name, created_at, is_management) "
        "VALUES (:h, 'sk-ig-v1-aaa...bbb', 'old', :t, false)",
        "INSERT INTO generations (id, key_id, model, provider_name, status, http_status, "
        "streamed, cancelled, created_at, cost_usd, num_images, num_references, usage, "
        "applied, images, attempts) VALUES ('gen-img-1-a', 1, 'm', 'p', 'succeeded', 200, "
        "false, false, :t, '0.0030065', 1, 0, '{}', '{}', '[]', '[]')",
        t=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        h="ab" * 32,
    )
    upgrade(database_url)
    store = Store(database_url)
    try:
        account = await store.get_account()
        assert (account.id, account.name, account.metered) == (1, "default", False)
        old = await store.get_key("ab" * 32)
        assert old is not None and old.account_id == 1 and old.name == "old"
        assert old.limit_usd is None and old.limit_reset is None and not old.disabled
        assert old.updated_at == old.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        [cost_nano] = await _raw(database_url, "SELECT cost_nano FROM generations")
        assert cost_nano == (3_006_500,)
        _, new = await store.create_key("new")
        assert new.account_id == 1
    finally:
        await store.close()
    # PostgreSQL's id sequence is in step with the seeded account
    await _raw(database_url, "INSERT INTO accounts (name, created_at) VALUES ('b', :t)",
               t=datetime.now(UTC))
    assert await _raw(database_url, "SELECT id, name FROM accounts ORDER BY id") == [
        (1, "default"), (2, "b")
    ]


async def test_downgrade_from_0002_keeps_keys_and_generations(database_url: str) -> None:
    upgrade(database_url)
    store = Store(database_url)
    try:
        secret, key = await store.create_key("k", limit_usd=D(1), limit_reset="daily")
        await store.add_credits(D(5))
        generation_id = await _reserve(store, key.id, "0.5")
        await store.settle(generation_id, D("0.25"))
        await store.record_generation(
            GenerationRecord(id=generation_id, model="m", key_id=key.id, cost_usd=D("0.25"))
        )
    finally:
        await store.close()
    downgrade(database_url, "0001")
    rows = await _raw(database_url, "SELECT g.id, g.key_id, k.hash FROM generations g "
                      "JOIN api_keys k ON k.id = g.key_id")
    assert rows == [(generation_id, key.id, key.hash)]
    upgrade(database_url)
    store = Store(database_url)
    try:
        again = await store.authenticate(secret)
        assert again is not None and again.limit_usd is None and again.account_id == 1
        assert (await store.get_account()).metered is False
    finally:
        await store.close()


async def test_models_match_the_migrated_schema_on_each_backend(database_url: str) -> None:
    upgrade(database_url)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
                )
            )
    finally:
        await engine.dispose()
    assert diff == []


async def test_processes_starting_at_once_migrate_the_database_once(database_url: str) -> None:
    script = "import sys; from imagegate.store.migrate import upgrade; upgrade(sys.argv[1])"
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, database_url, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(4)
    ]
    errors = [(await process.communicate())[1] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, errors
    assert await _raw(database_url, "SELECT version_num FROM alembic_version") == [("0003",)]
    assert await _raw(database_url, "SELECT id, name FROM accounts") == [(1, "default")]


# --- accounts and credits ---


async def test_fresh_install_is_unmetered_and_never_refuses(store: Store, key) -> None:
    account = await store.get_account()
    assert account.balance_usd is None and not account.metered
    generation_id = await _reserve(store, key.id, "1000000")
    assert (await store.get_account()).reserved_usd == D(1000000)
    assert await store.settle(generation_id, D("0.04")) == D("0.04")
    account = await store.get_account()
    assert account.balance_usd is None
    assert account.total_usage_usd == D("0.04") and account.reserved_usd == 0
    assert (await store.key_usage(key.id)).usage == D("0.04")
    await _audit(store)


async def test_add_credits_meters_the_account_and_books_a_credit(store: Store) -> None:
    account = await store.add_credits(D("10.5"), note="invoice 1")
    assert account.metered and account.balance_usd == D("10.5")
    assert account.total_credits_usd == D("10.5") and account.total_usage_usd == 0
    account = await store.add_credits("0.000000001")
    assert account.balance_usd == D("10.500000001")
    async with store.engine.connect() as conn:
        notes = list(await conn.scalars(select(LedgerEntry.note).order_by(LedgerEntry.id)))
    assert notes == ["invoice 1", ""]
    await _audit(store)


@pytest.mark.parametrize("amount", ["0", "-1", "0.0000000004", "NaN"])
async def test_add_credits_refuses_amounts_that_are_not_positive(
    store: Store, amount: str
) -> None:
    with pytest.raises(ValueError):
        await store.add_credits(amount)
    assert not (await store.get_account()).metered


async def test_first_top_up_after_unmetered_usage_starts_the_balance_at_the_top_up(
    store: Store, key
) -> None:
    await store.settle(await _reserve(store, key.id, "1"), D("0.3"))
    account = await store.add_credits(D(10))
    assert account.balance_usd == D(10)
    assert account.total_usage_usd == D("0.3")
    assert account.total_credits_usd == D("10.3")  # the usage while unmetered, written off
    async with store.engine.connect() as conn:
        notes = list(await conn.scalars(select(LedgerEntry.note).where(
            LedgerEntry.kind == "credit").order_by(LedgerEntry.id)))
    assert notes == [UNMETERED_USAGE_NOTE, ""]
    await _audit(store)


# --- reserve, settle, release ---


async def test_reserve_settle_and_release_are_exact_to_the_nano(store: Store, key) -> None:
    await store.add_credits(D("1"))
    a = await _reserve(store, key.id, "0.3333333331")  # rounds up to 0.333333334
    b = await _reserve(store, key.id, "0.2")
    account = await store.get_account()
    assert account.reserved_usd == D("0.533333334") and account.balance_usd == 1
    assert await store.settle(a, D("0.1234567895")) == D("0.123456790")  # half-up
    await store.release(b)
    account = await store.get_account()
    assert account.balance_usd == D("0.87654321")
    assert account.reserved_usd == 0 and account.total_usage_usd == D("0.12345679")
    assert (await store.key_usage(key.id)).reserved == 0
    await _audit(store)


async def test_reservations_in_flight_count_against_the_balance(store: Store, key) -> None:
    await store.add_credits(D("1"))
    await _reserve(store, key.id, "0.6")
    with pytest.raises(LimitExceeded) as caught:
        await _reserve(store, key.id, "0.5")
    error = caught.value
    assert (error.source, error.needed_usd, error.available_usd) == (
        ACCOUNT_CREDITS, D("0.5"), D("0.4")
    )
    assert error.status == 402
    assert error.envelope()["error"]["metadata"]["limit_source"] == "openrouter_credits"
    await _reserve(store, key.id, "0.4")
    assert (await store.get_account()).reserved_usd == 1
    await _audit(store)


async def test_settle_charges_what_it_cost_past_the_reservation_and_warns(
    store: Store, key, caplog: pytest.LogCaptureFixture
) -> None:
    await store.add_credits(D(1))
    generation_id = await _reserve(store, key.id, "0.1")
    with caplog.at_level(logging.WARNING, logger="imagegate.store"):
        assert await store.settle(generation_id, D("0.25")) == D("0.25")
    assert f"generation {generation_id} cost 0.25 USD, more than its reservation of 0.1 USD" in caplog.text
    account = await store.get_account()
    assert account.balance_usd == D("0.75") and account.reserved_usd == 0
    await _audit(store)


async def test_settle_twice_charges_once_and_returns_the_same_amount(store: Store, key) -> None:
    await store.add_credits(D(1))
    generation_id = await _reserve(store, key.id, "0.5")
    assert await store.settle(generation_id, D("0.2")) == D("0.2")
    assert await store.settle(generation_id, D("0.4")) == D("0.2")
    assert (await store.get_account()).balance_usd == D("0.8")
    await _audit(store)


async def test_concurrent_settles_of_one_generation_charge_once(store: Store, key) -> None:
    await store.add_credits(D(1))
    generation_id = await _reserve(store, key.id, "0.5")
    others = [Store(str(store.engine.url.render_as_string(hide_password=False)))
              for _ in range(3)]
    try:
        charged = await asyncio.gather(
            *(s.settle(generation_id, D("0.2")) for s in [store, *others] for _ in range(5))
        )
    finally:
        await asyncio.gather(*(s.close() for s in others))
    assert set(charged) == {D("0.2")}
    assert (await store.get_account()).balance_usd == D("0.8")
    await _audit(store)


async def test_release_charges_nothing_and_is_idempotent(store: Store, key) -> None:
    await store.add_credits(D(1))
    generation_id = await _reserve(store, key.id, "0.5")
    await store.release(generation_id)
    await store.release(generation_id)
    await store.release("gen-img-0-neverreserved000000000")
    account = await store.get_account()
    assert account.balance_usd == 1 and account.reserved_usd == 0
    assert account.total_usage_usd == 0
    with pytest.raises(LookupError):
        await store.settle(generation_id, D("0.1"))
    await _audit(store)


async def test_settling_a_generation_never_reserved_raises_lookup_error(store: Store) -> None:
    with pytest.raises(LookupError):
        await store.settle("gen-img-0-neverreserved000000000", D("0.1"))


async def test_disabled_or_revoked_key_cannot_reserve(store: Store, key) -> None:
    await store.update_key(key.id, disabled=True)
    with pytest.raises(KeyDisabled) as caught:
        await _reserve(store, key.id, "0.1")
    assert caught.value.status == 403
    await store.update_key(key.id, disabled=False)
    await _reserve(store, key.id, "0.1")
    await store.delete_key(key.hash)
    with pytest.raises(KeyDisabled):
        await _reserve(store, key.id, "0.1")
    assert (await store.get_account()).reserved_usd == D("0.1")


async def test_unknown_key_cannot_reserve(store: Store) -> None:
    with pytest.raises(LookupError):
        await _reserve(store, 999, "0.1")


async def test_reserve_refuses_negative_amounts_and_ttl(store: Store, key) -> None:
    with pytest.raises(ValueError):
        await _reserve(store, key.id, "-0.1")
    with pytest.raises(ValueError):
        await _reserve(store, key.id, "0.1", ttl_s=0)


# --- concurrency: exactly as many reservations as the money covers ---


async def _race(stores: list[Store], key_id: int, attempts: int, amount: str) -> list:
    async def attempt(i: int) -> str | None:
        try:
            return await _reserve(stores[i % len(stores)], key_id, amount)
        except LimitExceeded as exc:
            return exc.source

    return await asyncio.gather(*(attempt(i) for i in range(attempts)))


async def _settle_all(store: Store, outcomes: list, cost: str) -> list[str]:
    admitted = [o for o in outcomes if o.startswith("gen-img-")]
    for generation_id in admitted:
        assert await store.settle(generation_id, D(cost)) == D(cost)
    return admitted


@pytest.mark.parametrize("pools", [1, 4])
async def test_200_concurrent_reservations_on_credit_for_10_admit_exactly_10(
    store: Store, key, pools: int
) -> None:
    await store.add_credits(D("0.4"))
    url = store.engine.url.render_as_string(hide_password=False)
    stores = [store] + [Store(url) for _ in range(pools - 1)]
    try:
        outcomes = await _race(stores, key.id, 200, "0.04")
    finally:
        await asyncio.gather(*(s.close() for s in stores[1:]))
    assert outcomes.count(ACCOUNT_CREDITS) == 190
    assert len(await _settle_all(store, outcomes, "0.04")) == 10
    account = await store.get_account()
    assert account.balance_usd == 0 and account.reserved_usd == 0
    assert await store.ledger_total() == 0
    await _audit(store)


async def test_200_concurrent_reservations_on_a_key_limit_for_10_admit_exactly_10(
    store: Store,
) -> None:
    _, key = await store.create_key("capped", limit_usd=D("0.4"), limit_reset="daily")
    url = store.engine.url.render_as_string(hide_password=False)
    stores = [store] + [Store(url) for _ in range(3)]
    try:
        outcomes = await _race(stores, key.id, 200, "0.04")
    finally:
        await asyncio.gather(*(s.close() for s in stores[1:]))
    assert outcomes.count(KEY_LIMIT) == 190
    await _settle_all(store, outcomes, "0.03")
    usage = await store.key_usage(key.id)
    assert usage.usage_daily == D("0.3") and usage.limit_remaining == D("0.1")
    await _audit(store)


_PROCESS_SCRIPT = """
import asyncio, sys
from decimal import Decimal
from imagegate.store import LimitExceeded, Store, new_generation_id

async def main(url, key_id, attempts):
    store = Store(url)
    await store.get_account()  # connected: now wait for the start signal
    print("ready", flush=True)
    sys.stdin.readline()
    async def one():
        try:
            await store.reserve(key_id=key_id, generation_id=new_generation_id(),
                                amount_usd=Decimal("0.04"), ttl_s=600)
            return 1
        except LimitExceeded:
            return 0
    print(sum(await asyncio.gather(*(one() for _ in range(attempts)))), flush=True)
    await store.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


async def test_4_processes_reserving_at_once_admit_exactly_what_the_credit_covers(
    store: Store, key
) -> None:
    await store.add_credits(D("0.4"))
    url = store.engine.url.render_as_string(hide_password=False)
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PROCESS_SCRIPT, url, str(key.id), "50",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for process in processes:
        assert await process.stdout.readline() == b"ready\n"
    for process in processes:
        process.stdin.write(b"go\n")
    results = [await process.communicate() for process in processes]
    assert [process.returncode for process in processes] == [0] * 4
    assert sum(int(out) for out, _ in results) == 10
    account = await store.get_account()
    assert account.reserved_usd == D("0.4") and account.balance_usd == D("0.4")
    await _audit(store)


# --- key limits and their periods ---


async def test_key_limit_without_reset_caps_all_time_spending(store: Store) -> None:
    _, key = await store.create_key("k", limit_usd=D("0.1"))
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    await store.settle(await _reserve(store, key.id, "0.08", now=long_ago), D("0.08"),
                       now=long_ago)
    with pytest.raises(LimitExceeded) as caught:
        await _reserve(store, key.id, "0.03")
    assert (caught.value.source, caught.value.available_usd) == (KEY_LIMIT, D("0.02"))
    await _reserve(store, key.id, "0.02")


async def test_key_limit_refusal_leaves_nothing_reserved(store: Store) -> None:
    _, key = await store.create_key("k", limit_usd=D("0.1"))
    await store.add_credits(D(1))
    with pytest.raises(LimitExceeded):
        await _reserve(store, key.id, "0.2")
    assert (await store.get_account()).reserved_usd == 0
    assert (await store.key_usage(key.id)).reserved == 0


@pytest.mark.parametrize(
    ("reset", "spent_at", "still_same_period", "next_period"),
    [
        ("daily", datetime(2025, 3, 4, 23, 59, tzinfo=UTC),
         datetime(2025, 3, 4, 23, 59, 59, tzinfo=UTC), datetime(2025, 3, 5, tzinfo=UTC)),
        ("weekly", datetime(2025, 3, 3, 0, 0, tzinfo=UTC),  # a Monday
         datetime(2025, 3, 9, 23, 59, 59, tzinfo=UTC), datetime(2025, 3, 10, tzinfo=UTC)),
        ("monthly", datetime(2025, 1, 1, tzinfo=UTC),
         datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)),
    ],
)
async def test_key_limit_resets_at_the_start_of_the_next_utc_period(
    store: Store, reset: str, spent_at: datetime, still_same_period: datetime,
    next_period: datetime,
) -> None:
    _, key = await store.create_key("k", limit_usd=D("1"), limit_reset=reset)
    await store.settle(await _reserve(store, key.id, "0.9", now=spent_at), D("0.9"),
                       now=spent_at)
    with pytest.raises(LimitExceeded) as caught:
        await _reserve(store, key.id, "0.5", now=still_same_period)
    assert caught.value.available_usd == D("0.1")
    usage = await store.key_usage(key.id, now=still_same_period)
    assert usage.limit_remaining == D("0.1")
    await _reserve(store, key.id, "0.5", now=next_period)
    usage = await store.key_usage(key.id, now=next_period)
    assert usage.limit_remaining == D("0.5")  # 1 less the 0.5 now reserved
    assert usage.usage == D("0.9")


async def test_key_usage_reports_utc_day_week_month_and_total(store: Store) -> None:
    _, key = await store.create_key("k", limit_usd=D(10), limit_reset="monthly")
    now = datetime(2025, 3, 12, 12, 0, tzinfo=UTC)  # a Wednesday
    spends = {
        datetime(2025, 3, 12, 0, 0, tzinfo=UTC): "0.01",  # today
        datetime(2025, 3, 10, 9, 0, tzinfo=UTC): "0.02",  # this week (Monday)
        datetime(2025, 3, 9, 23, 59, tzinfo=UTC): "0.04",  # this month, last week
        datetime(2025, 2, 28, 23, 59, tzinfo=UTC): "0.08",  # last month
    }
    for at, cost in spends.items():
        await store.settle(await _reserve(store, key.id, cost, now=at), D(cost), now=at)
    await _reserve(store, key.id, "1", now=now)
    usage = await store.key_usage(key.id, now=now)
    assert (usage.usage_daily, usage.usage_weekly, usage.usage_monthly, usage.usage) == (
        D("0.01"), D("0.03"), D("0.07"), D("0.15")
    )
    assert (usage.limit, usage.limit_reset, usage.reserved) == (D(10), "monthly", D(1))
    assert usage.limit_remaining == D("8.93")


async def test_key_without_limit_reports_no_remaining(store: Store, key) -> None:
    usage = await store.key_usage(key.id)
    assert usage.limit is None and usage.limit_remaining is None and usage.usage == 0


async def test_lowering_a_key_limit_applies_to_the_next_reservation(store: Store, key) -> None:
    await _reserve(store, key.id, "0.5")
    await store.update_key(key.id, limit_usd=D("0.6"))
    with pytest.raises(LimitExceeded) as caught:
        await _reserve(store, key.id, "0.2")
    assert caught.value.source == KEY_LIMIT
    await store.update_key(key.id, limit_usd=None)
    await _reserve(store, key.id, "0.2")


# --- crashed processes: reaping and late settles ---


async def test_reap_expired_releases_only_expired_reservations(store: Store, key) -> None:
    await store.add_credits(D(1))
    t0 = datetime.now(UTC)
    stale = await _reserve(store, key.id, "0.3", ttl_s=60, now=t0 - timedelta(minutes=5))
    fresh = await _reserve(store, key.id, "0.2", ttl_s=600, now=t0)
    assert await store.reap_expired(now=t0) == 1
    assert await store.reap_expired(now=t0) == 0
    assert (await store.get_account()).reserved_usd == D("0.2")
    assert (await store.key_usage(key.id)).reserved == D("0.2")
    await store.release(stale)  # a no-op now
    assert (await store.get_account()).reserved_usd == D("0.2")
    await store.settle(fresh, D("0.2"))
    await _audit(store)


async def test_late_settle_after_reaping_charges_in_full_and_the_account_owes(
    store: Store, key, caplog: pytest.LogCaptureFixture
) -> None:
    await store.add_credits(D("0.5"))
    t0 = datetime.now(UTC)
    slow = await _reserve(store, key.id, "0.4", ttl_s=60, now=t0 - timedelta(minutes=5))
    assert await store.reap_expired(now=t0) == 1
    assert await store.settle(slow, D("0.3")) == D("0.3")  # no settled charge is lost
    assert (await store.get_account()).balance_usd == D("0.2")

    other = await _reserve(store, key.id, "0.2", ttl_s=60, now=t0 - timedelta(minutes=5))
    assert await store.reap_expired(now=t0) == 1
    spender = await _reserve(store, key.id, "0.15")
    await store.settle(spender, D("0.15"))
    with caplog.at_level(logging.WARNING, logger="imagegate.store"):
        assert await store.settle(other, D("0.2")) == D("0.2")
    assert f"generation {other}: charge of 0.2 USD is more than the balance of 0.05 USD" in caplog.text
    account = await store.get_account()
    assert account.balance_usd == D("-0.15") and account.total_usage_usd == D("0.65")
    with pytest.raises(LimitExceeded):  # nothing more until it is topped up
        await _reserve(store, key.id, "0.01")
    await _audit(store)


async def test_reaping_from_several_stores_at_once_releases_each_reservation_once(
    store: Store, key
) -> None:
    await store.add_credits(D(10))
    t0 = datetime.now(UTC)
    for _ in range(20):
        await _reserve(store, key.id, "0.1", ttl_s=1, now=t0 - timedelta(minutes=1))
    url = store.engine.url.render_as_string(hide_password=False)
    stores = [store] + [Store(url) for _ in range(3)]
    try:
        counts = await asyncio.gather(*(s.reap_expired(now=t0) for s in stores))
    finally:
        await asyncio.gather(*(s.close() for s in stores[1:]))
    assert sum(counts) == 20
    assert (await store.get_account()).reserved_usd == 0
    assert (await store.key_usage(key.id)).reserved == 0
    await _audit(store)


async def test_reaped_reservations_are_forgotten_after_a_week(store: Store, key) -> None:
    t0 = datetime.now(UTC)
    generation_id = await _reserve(store, key.id, "0.1", ttl_s=60, now=t0)
    assert await store.reap_expired(now=t0 + timedelta(minutes=2)) == 1
    await store.reap_expired(now=t0 + timedelta(days=8))
    with pytest.raises(LookupError):
        await store.settle(generation_id, D("0.1"))


# --- keys ---


async def test_create_key_with_limit_and_reset_round_trips(store: Store) -> None:
    secret, key = await store.create_key(
        "capped", limit_usd="2.50", limit_reset="weekly", is_management=True
    )
    assert (key.limit_usd, key.limit_reset, key.account_id) == (D("2.5"), "weekly", 1)
    assert not key.disabled and key.updated_at == key.created_at
    authed = await store.authenticate(secret)
    assert authed is not None and (authed.limit_usd, authed.limit_reset) == (D("2.5"), "weekly")


async def test_create_key_refuses_unknown_reset_and_negative_limit(store: Store) -> None:
    with pytest.raises(ValueError, match="limit_reset"):
        await store.create_key("k", limit_usd=1, limit_reset="hourly")
    with pytest.raises(ValueError, match="negative"):
        await store.create_key("k", limit_usd="-1")
    assert await store.count_active_keys() == 0


async def test_update_key_changes_only_the_fields_given(store: Store) -> None:
    _, key = await store.create_key("k", limit_usd=1, limit_reset="daily")
    updated = await store.update_key(key.hash, name="renamed")
    assert updated is not None
    assert (updated.name, updated.limit_usd, updated.limit_reset) == ("renamed", 1, "daily")
    assert updated.updated_at >= key.updated_at
    updated = await store.update_key(key.label, limit_usd=None, limit_reset=None, disabled=True)
    assert updated is not None
    assert (updated.name, updated.limit_usd, updated.limit_reset, updated.disabled) == (
        "renamed", None, None, True
    )
    with pytest.raises(ValueError):
        await store.update_key(key.id, limit_reset="yearly")
    assert await store.update_key("0123456789abcdef", name="x") is None


async def test_get_key_by_id_hash_prefix_label_or_secret(store: Store) -> None:
    secret, key = await store.create_key("k")
    for ident in (key.id, key.hash, key.hash[:10], key.label, secret):
        found = await store.get_key(ident)
        assert found is not None and found.id == key.id, ident
    assert await store.get_key(12345) is None
    assert await store.get_key("f" * 64) is None


async def test_disabled_key_still_authenticates_marked_disabled(store: Store) -> None:
    secret, key = await store.create_key("k")
    await store.update_key(key.id, disabled=True)
    authed = await store.authenticate(secret)
    assert authed is not None and authed.disabled


async def test_delete_key_revokes_it_and_keeps_its_usage(store: Store, key) -> None:
    await store.settle(await _reserve(store, key.id, "0.1"), D("0.1"))
    deleted = await store.delete_key(key.hash)
    assert deleted is not None and not deleted.active
    assert (await store.get_key(key.id)) is not None
    assert (await store.key_usage(key.id)).usage == D("0.1")


# --- activity ---


def _generation(key_id: int | None, model: str, at: datetime, cost: str, **kw) -> GenerationRecord:
    return GenerationRecord(
        id=kw.pop("id", None) or new_generation_id(at.timestamp()), key_id=key_id, model=model, created_at=at,
        cost_usd=D(cost), num_images=kw.pop("num_images", 1), **kw,
    )


async def test_list_generations_filters_by_key_model_and_time_newest_first(
    store: Store,
) -> None:
    _, a = await store.create_key("a")
    _, b = await store.create_key("b")
    t = datetime(2025, 3, 1, tzinfo=UTC)
    records = [
        _generation(a.id, "x/one", t, "0.01"),
        _generation(a.id, "x/two", t + timedelta(hours=1), "0.02"),
        _generation(b.id, "x/one", t + timedelta(hours=2), "0.03"),
        _generation(a.id, "x/one", t + timedelta(hours=3), "0.04"),
    ]
    for record in records:
        await store.record_generation(record)
    assert await store.list_generations() == records[::-1]
    assert await store.list_generations(key_id=a.id) == [records[3], records[1], records[0]]
    assert await store.list_generations(model="x/one", key_id=a.id) == [records[3], records[0]]
    window = await store.list_generations(since=t + timedelta(hours=1),
                                          until=t + timedelta(hours=3))
    assert window == [records[2], records[1]]
    assert await store.list_generations(limit=2, offset=1) == [records[2], records[1]]
    with pytest.raises(ValueError):
        await store.list_generations(limit=0)


async def test_usage_by_model_sums_requests_images_and_cost_exactly(store: Store) -> None:
    _, a = await store.create_key("a")
    _, b = await store.create_key("b")
    t = datetime(2025, 3, 1, tzinfo=UTC)
    for record in [
        _generation(a.id, "x/one", t, "0.1", num_images=2),
        _generation(a.id, "x/one", t + timedelta(minutes=1), "0.2", num_images=1),
        _generation(a.id, "x/one", t + timedelta(minutes=2), "0", num_images=0,
                    status="failed", http_status=502),
        _generation(a.id, "x/two", t, "0.000000001"),
        _generation(b.id, "x/two", t + timedelta(days=1), "5"),
    ]:
        await store.record_generation(record)
    assert await store.usage_by_model(key_id=a.id) == [
        {"model": "x/one", "requests": 3, "images": 3, "cost_usd": D("0.3")},
        {"model": "x/two", "requests": 1, "images": 1, "cost_usd": D("0.000000001")},
    ]
    assert await store.usage_by_model(since=t + timedelta(hours=1)) == [
        {"model": "x/two", "requests": 1, "images": 1, "cost_usd": D(5)},
    ]
    assert await store.usage_by_model(until=t - timedelta(days=1)) == []


async def test_renewed_reservations_survive_reaping_and_unrenewed_ones_are_released(tmp_path) -> None:
    from datetime import timedelta
    from decimal import Decimal

    from imagegate.store import Store, upgrade
    from imagegate.store.coltypes import utcnow

    url = f"sqlite+aiosqlite:///{tmp_path / 'renew.db'}"
    upgrade(url)
    store = Store(url)
    try:
        await store.add_credits(Decimal("1"))
        _secret, key = await store.create_key("k")
        start = utcnow()
        for gid in ("gen-a", "gen-b"):
            await store.reserve(key_id=key.id, generation_id=gid, amount_usd=Decimal("0.25"), ttl_s=10, now=start)
        assert await store.renew(["gen-a"], ttl_s=10, now=start + timedelta(seconds=8)) == 1
        assert await store.reap_expired(now=start + timedelta(seconds=12)) == 1  # gen-b only
        assert (await store.get_account()).reserved_usd == Decimal("0.25")
        assert await store.renew(["gen-b"], ttl_s=10, now=start + timedelta(seconds=13)) == 0
        assert await store.settle("gen-a", Decimal("0.2")) == Decimal("0.2")
        account = await store.get_account()
        assert account.reserved_usd == 0 and account.balance_usd == Decimal("0.8")
    finally:
        await store.close()


# --- settlements in batches, direct charges, admission ---


async def test_settlements_finishing_together_share_one_transaction_and_book_exactly(
    store: Store, key
) -> None:
    await store.add_credits(D(1))
    charged, released, overrun = (await _reserve(store, key.id, "0.5"), await _reserve(store, key.id, "0.3"),
                               await _reserve(store, key.id, "0.1"))
    settlements = [
        Settlement(charged, D("0.2"), record=_generation(key.id, "x/one", datetime.now(UTC), "0", id=charged)),
        Settlement(released, None, record=_generation(key.id, "x/one", datetime.now(UTC), "0", id=released,
                                                       status="failed", http_status=502)),
        Settlement(overrun, D("0.7"), record=_generation(key.id, "x/one", datetime.now(UTC), "0", id=overrun)),
    ]
    commits = 0

    def count(*_args) -> None:
        nonlocal commits
        commits += 1

    for engine in store.write_engines:
        event.listen(engine, "commit", count)
    try:
        results = await asyncio.gather(*(store.finish(s) for s in settlements))
    finally:
        for engine in store.write_engines:
            event.remove(engine, "commit", count)
    assert commits == 1
    assert results == [D("0.2"), D(0), D("0.7")]  # the last past its reservation, in full
    account = await store.get_account()
    assert account.balance_usd == D("0.1") and account.reserved_usd == 0
    recorded = {g.id: g.cost_usd for g in await store.list_generations()}
    assert recorded == {charged: D("0.2"), released: D(0), overrun: D("0.7")}
    assert (await store.key_usage(key.id)).usage == D("0.9")
    await _audit(store)


async def test_a_failing_settlement_does_not_take_the_rest_of_its_batch_down(store: Store, key) -> None:
    first, second = await _reserve(store, key.id, "0.5"), await _reserve(store, key.id, "0.5")
    duplicate = _generation(key.id, "x/one", datetime.now(UTC), "0")
    await store.record_generation(duplicate)
    results = await asyncio.gather(
        store.finish(Settlement(first, D("0.1"), record=_generation(key.id, "m", datetime.now(UTC), "0", id=first))),
        store.finish(Settlement(second, D("0.1"), record=duplicate)),
        return_exceptions=True,
    )
    assert results[0] == D("0.1")
    assert isinstance(results[1], IntegrityError)
    assert {g.id for g in await store.list_generations()} == {first, duplicate.id}
    assert (await store.key_usage(key.id)).usage == D("0.1")  # the failed one booked nothing
    await _audit(store)


async def test_unmetered_account_and_key_without_limit_hold_nothing_and_are_charged_directly(
    store: Store, key
) -> None:
    generation_id = new_generation_id()
    assert not await store.admit(key, amount_usd=D(5), ttl_s=60)
    async with store.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Reservation)) == 0
    record = _generation(key.id, "x/one", datetime.now(UTC), "0", id=generation_id)
    settlement = Settlement(generation_id, D("0.04"), reserved=False, key_id=key.id,
                            account_id=key.account_id, record=record)
    assert await store.finish(settlement) == D("0.04")
    assert (await store.key_usage(key.id)).usage == D("0.04")
    assert (await store.get_account()).total_usage_usd == D("0.04")
    assert (await store.get_generation(generation_id)).cost_usd == D("0.04")
    await _audit(store)


async def test_admit_prices_a_worst_case_given_as_a_callable_only_when_it_holds_money(store: Store) -> None:
    priced: list[str] = []

    def worst_case(amount: str):
        return lambda: priced.append(amount) or D(amount)

    _, free = await store.create_key("free")
    assert not await store.admit(free, amount_usd=worst_case("9"), ttl_s=60)
    assert priced == []
    _, limited = await store.create_key("limited", limit_usd=D(1))
    assert await store.admit(limited, amount_usd=worst_case("0.5"), ttl_s=60)
    with pytest.raises(LimitExceeded):
        await store.admit(limited, amount_usd=worst_case("0.6"), ttl_s=60)
    assert priced == ["0.5", "0.6"]
    usage = await store.key_usage(limited.id)
    assert (usage.held_ahead, usage.reserved, usage.limit_remaining) == (D("0.5"), 0, D(1))
    await _audit(store)


async def test_admit_reserves_when_a_key_limit_or_a_metered_account_could_refuse(store: Store) -> None:
    _, limited = await store.create_key("limited", limit_usd=D(1))
    assert await store.admit(limited, amount_usd=D("0.5"), ttl_s=60)
    with pytest.raises(LimitExceeded):
        await store.admit(limited, amount_usd=D("0.6"), ttl_s=60)
    _, free = await store.create_key("free")
    assert not await store.admit(free, amount_usd=D(9), ttl_s=60)
    await store.add_credits(D(1))
    assert await store.admit(free, amount_usd=D("0.2"), ttl_s=60)
    with pytest.raises(LimitExceeded) as refused:
        await store.admit(free, amount_usd=D(9), ttl_s=60)
    assert refused.value.source == ACCOUNT_CREDITS
    await _audit(store)


async def test_cached_state_follows_this_stores_changes_at_once_and_others_within_the_ttl(
    store: Store,
) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    cached, other = Store(url, cache_ttl_s=0.5), Store(url)
    try:
        secret, key = await cached.create_key("k")
        _, spender = await cached.create_key("spender")
        assert await cached.authenticate(secret) is not None
        assert not await cached.admit(spender, amount_usd=D(5), ttl_s=60)
        # Another process revokes the key and meters the account: seen once the TTL is over.
        await other.revoke_key(key.id)
        await other.add_credits(D(1))
        assert await cached.authenticate(secret) is not None
        assert not await cached.admit(spender, amount_usd=D(5), ttl_s=60)
        await eventually_async(lambda: cached.authenticate(secret), lambda found: found is None)
        with pytest.raises(LimitExceeded):  # metered now, and 5 USD is more than it holds
            await cached.admit(spender, amount_usd=D(5), ttl_s=60)
        # Changes made through the caching store itself apply at once.
        secret, key = await cached.create_key("k2")
        assert await cached.authenticate(secret) is not None
        await cached.update_key(key.id, disabled=True)
        assert (await cached.authenticate(secret)).disabled
        await cached.revoke_key(key.id)
        assert await cached.authenticate(secret) is None
    finally:
        await asyncio.gather(cached.close(), other.close())


async def test_a_burst_finding_its_key_and_account_uncached_reads_each_once(store: Store) -> None:
    url = store.engine.url.render_as_string(hide_password=False)
    cached = Store(url, cache_ttl_s=60)
    lookups: list[str] = []
    accounts: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT") and "api_keys" in statement:
            lookups.append(statement)
        elif statement.lstrip().upper().startswith("SELECT") and "FROM accounts" in statement:
            accounts.append(statement)

    event.listen(cached.engine.sync_engine, "before_cursor_execute", count)
    try:
        secret, _ = await cached.create_key("burst")
        found = await asyncio.gather(*(cached.authenticate(secret) for _ in range(50)))
        assert all(k is not None and k.name == "burst" for k in found)
        assert len(lookups) == 1
        unknown = await asyncio.gather(*(cached.authenticate("sk-ig-v1-" + "x" * 40) for _ in range(20)))
        assert unknown == [None] * 20 and len(lookups) == 2
        admitted = await asyncio.gather(*(
            cached.admit(found[0], amount_usd=D(1), ttl_s=60) for _ in range(50)
        ))
        assert not any(admitted) and len(accounts) == 1  # unmetered: nothing held, read once
        # A revocation made through this store while a look-up is under way is not undone by
        # the look-up's (older) read.
        secret2, key2 = await cached.create_key("changing")
        pending = asyncio.ensure_future(cached.authenticate(secret2))
        await cached.revoke_key(key2.id)
        await pending
        assert await cached.authenticate(secret2) is None
    finally:
        await cached.close()


async def test_200_concurrent_admissions_batch_their_holds_and_admit_exactly_what_credit_covers(
    store: Store,
) -> None:
    await store.add_credits(D("0.4"))
    _, limited = await store.create_key("limited", limit_usd=D("0.2"))
    _, free = await store.create_key("free")
    url = store.engine.url.render_as_string(hide_password=False)
    other = Store(url)  # a second process racing for the same credit
    commits = 0

    def count(*_args) -> None:
        nonlocal commits
        commits += 1

    async def admit(s: Store, key) -> str:
        try:
            await s.admit(key, amount_usd=D("0.04"), ttl_s=60)
        except LimitExceeded as exc:
            return exc.source
        return "held"

    for engine in store.write_engines:
        event.listen(engine, "commit", count)
    try:
        outcomes = await asyncio.gather(*(
            admit(s, k) for _ in range(50) for s in (store, other) for k in (limited, free)
        ))
    finally:
        for engine in store.write_engines:
            event.remove(engine, "commit", count)
        await other.close()
    assert outcomes.count("held") == 10  # 0.4 of credit, 0.04 each
    assert outcomes.count(KEY_LIMIT) <= 95  # the limited key may have 5 at most (0.2)
    assert (await store.key_usage(limited.id)).held_ahead <= D("0.2")
    assert commits < 100  # 100 admissions through this store, far fewer transactions
    account = await store.get_account()
    assert (account.held_ahead_usd, account.reserved_usd) == (D("0.4"), 0)
    await _audit(store)


# --- allowances: money held ahead, requests admitted from it without a write ---


def _commits(store: Store) -> list[int]:
    counted = [0]

    def count(*_args) -> None:
        counted[0] += 1

    for engine in store.write_engines:
        event.listen(engine, "commit", count)
    return counted


def _ended(key, admission, cost: str | None) -> Settlement:
    generation_id = new_generation_id()
    status = "succeeded" if cost is not None else "failed"
    return Settlement(generation_id, None if cost is None else D(cost), reserved=False, share=admission.share,
                      key_id=key.id, account_id=key.account_id,
                      record=_generation(key.id, "x/one", datetime.now(UTC), cost or "0", id=generation_id, status=status))


async def test_requests_are_admitted_from_an_allowance_written_once_for_many(store: Store, key) -> None:
    await store.add_credits(D(100))
    commits = _commits(store)
    admitted = [await store.admit(key, amount_usd=D("0.04"), ttl_s=60) for _ in range(20)]
    assert all(a.share is not None for a in admitted)
    assert commits[0] == 1  # one write held money ahead for all twenty
    assert (await store.get_account()).held_ahead_usd == D("1.28")  # 32 worst cases
    for admission in admitted[:10]:
        await store.finish(_ended(key, admission, "0.03"))
    for admission in admitted[10:]:
        await store.finish(_ended(key, admission, None))  # failed: charged nothing
    account = await store.get_account()
    # Charged ones leave the allowance as their own reservations would have been released.
    assert (account.balance_usd, account.held_ahead_usd) == (D("99.7"), D("0.88"))
    assert (await store.key_usage(key.id)).usage == D("0.3")
    await _audit(store)


async def test_one_process_refuses_exactly_what_reservations_of_their_own_would(store: Store) -> None:
    await store.add_credits(D(1))
    _, first = await store.create_key("first")
    _, second = await store.create_key("second")
    # The first key's allowance keeps spare money once its request failed...
    await store.finish(_ended(first, await store.admit(first, amount_usd=D("0.04"), ttl_s=60), None))
    assert (await store.get_account()).held_ahead_usd > 0
    # ...which the second key gets back when it needs the account's every cent.
    big = await store.admit(second, amount_usd=D("0.99"), ttl_s=60)
    with pytest.raises(LimitExceeded) as refused:
        await store.admit(first, amount_usd=D("0.02"), ttl_s=60)
    assert refused.value.source == ACCOUNT_CREDITS and refused.value.available_usd == D("0.01")
    await store.finish(_ended(second, big, "0.5"))
    assert (await store.admit(first, amount_usd=D("0.5"), ttl_s=60)).share is not None
    # A key limit counts the key's own spare money as available, and refuses past it.
    await store.add_credits(D(1))
    _, capped = await store.create_key("capped", limit_usd=D("0.3"))
    await store.admit(capped, amount_usd=D("0.2"), ttl_s=60)
    with pytest.raises(LimitExceeded) as refused:
        await store.admit(capped, amount_usd=D("0.11"), ttl_s=60)
    assert refused.value.source == KEY_LIMIT and refused.value.available_usd == D("0.1")
    await _audit(store)


async def test_an_allowance_holds_ahead_at_most_a_small_share_of_what_is_left(store: Store, key) -> None:
    await store.add_credits(D("3.2"))
    await store.admit(key, amount_usd=D("0.04"), ttl_s=60)
    assert (await store.get_account()).held_ahead_usd == D("0.2")  # 1/16 of 3.2, not 32 × 0.04


async def test_the_heartbeat_gives_back_an_idle_allowance_and_forgets_a_reaped_one(store: Store, key) -> None:
    await store.add_credits(D(10))
    await store.finish(_ended(key, await store.admit(key, amount_usd=D("0.04"), ttl_s=60), "0.04"))
    await store.heartbeat(60)  # used since the last beat: kept, renewed
    assert (await store.get_account()).held_ahead_usd > 0
    await store.heartbeat(60)  # unused since: given back
    await store.wait_idle()
    account = await store.get_account()
    assert (account.balance_usd, account.held_ahead_usd) == (D("9.96"), 0)

    # A process that missed its renewals finds its allowance reaped and opens another.
    admission = await store.admit(key, amount_usd=D("0.04"), ttl_s=60)
    assert await store.reap_expired(now=datetime.now(UTC) + timedelta(minutes=5)) == 1
    assert (await store.get_account()).held_ahead_usd == 0
    await store.heartbeat(60)
    await store.finish(_ended(key, admission, "0.04"))  # charged; nothing left to release
    again = await store.admit(key, amount_usd=D("0.04"), ttl_s=60)
    assert again.share.allowance_id != admission.share.allowance_id
    account = await store.get_account()
    assert (account.balance_usd, account.held_ahead_usd) == (D("9.92"), D("0.62"))  # 1/16 of what is left
    await _audit(store)


async def test_a_key_changed_through_the_store_stops_admitting_from_its_old_allowance(store: Store) -> None:
    await store.add_credits(D(10))
    _, key = await store.create_key("k", limit_usd=D(5))
    before = await store.admit(key, amount_usd=D("0.04"), ttl_s=60)
    await store.update_key(key.id, limit_usd=D("0.05"))
    with pytest.raises(LimitExceeded) as refused:  # the old allowance held more than 0.05 allows
        await store.admit(key, amount_usd=D("0.04"), ttl_s=60)
    assert refused.value.source == KEY_LIMIT
    await store.finish(_ended(key, before, "0.04"))
    await store.wait_idle()
    assert (await store.get_account()).held_ahead_usd == 0  # given back once its request ended
    await _audit(store)
