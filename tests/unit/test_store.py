"""The persistence layer against real SQLite files: migrations, keys, generations."""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
import string
from collections import Counter
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError, StatementError

from imagegate.store import (
    GenerationRecord,
    KeyRecord,
    Store,
    hash_secret,
    new_generation_id,
)
from imagegate.store.migrate import alembic_config, downgrade, upgrade
from imagegate.store.models import ApiKey, Base

SECRET_RE = re.compile(r"^sk-ig-v1-[0-9a-f]{64}$")
LABEL_RE = re.compile(r"^sk-ig-v1-[0-9a-f]{3}\.\.\.[0-9a-f]{3}$")
GEN_ID_RE = re.compile(r"^gen-img-\d+-[A-Za-z0-9]{20}$")


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    return {name for (name,) in rows}


def _indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    return {name for (name,) in rows}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "imagegate.db"


@pytest.fixture
async def store(db_path: Path):
    upgrade(_url(db_path))
    store = Store(_url(db_path))
    yield store
    await store.close()


def _full_record(**overrides) -> GenerationRecord:
    values = dict(
        id=new_generation_id(),
        key_id=None,
        model="black-forest-labs/flux-1.1-pro",
        provider_name="Black Forest Labs",
        provider_slug="bfl",
        status="succeeded",
        http_status=200,
        error_message=None,
        streamed=True,
        cancelled=False,
        created_at=datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC),
        latency_ms=1234,
        generation_time_ms=5678,
        cost_usd=Decimal("0.003006"),
        num_images=2,
        num_references=1,
        usage={"cost": 0.003006, "prompt_tokens": 0, "completion_tokens": 2, "nested": {"a": [1]}},
        applied={
            "width": 1024,
            "height": 768,
            "aspect_ratio": "4:3",
            "resolution": "1K",
            "format": "png",
            "quality": "high",
            "dropped": ["seed"],
            "clamped": {"n": {"requested": 10, "applied": 4}},
        },
        images=[
            {"width": 1024, "height": 768, "media_type": "image/png", "bytes": 123456,
             "sha256": "ab" * 32},
            {"width": 1024, "height": 768, "media_type": "image/png", "bytes": 654321,
             "sha256": "cd" * 32},
        ],
        attempts=[
            {"provider_name": "Replicate", "provider_slug": "replicate", "status": "failed",
             "latency_ms": 300, "error": "upstream 503"},
            {"provider_name": "Black Forest Labs", "provider_slug": "bfl",
             "status": "succeeded", "latency_ms": 1234, "error": None},
        ],
        session_id="s" * 256,
        user="user-42 ünïcode",
        origin="https://example.com/app",
        app_title="My App",
    )
    values.update(overrides)
    return GenerationRecord(**values)


# migrations


def test_upgrade_creates_schema_on_fresh_file_in_missing_directory(db_path: Path) -> None:
    assert not db_path.parent.exists()
    upgrade(_url(db_path))
    assert _tables(db_path) == {
        "alembic_version", "accounts", "api_keys", "generations", "ledger", "reservations",
    }
    assert {
        "ix_api_keys_hash",
        "ix_generations_key_id_created_at",
        "ix_generations_created_at",
        "ix_generations_model_created_at",
        "ix_ledger_generation_id",
        "ix_ledger_key_id_created_at",
        "ix_ledger_account_id_created_at",
        "ix_reservations_expires_at",
    } <= _indexes(db_path)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]


def test_upgrade_twice_is_idempotent(db_path: Path) -> None:
    upgrade(_url(db_path))
    before = (_tables(db_path), _indexes(db_path))
    upgrade(_url(db_path))
    assert (_tables(db_path), _indexes(db_path)) == before


def test_downgrade_to_base_drops_every_table_and_upgrade_recreates_them(db_path: Path) -> None:
    upgrade(_url(db_path))
    downgrade(_url(db_path))
    assert _tables(db_path) == {"alembic_version"}
    assert _indexes(db_path) == set()
    upgrade(_url(db_path))
    assert {"api_keys", "generations"} <= _tables(db_path)


def test_alembic_command_downgrade_base_works_with_programmatic_config(db_path: Path) -> None:
    upgrade(_url(db_path))
    command.downgrade(alembic_config(_url(db_path)), "base")
    assert _tables(db_path) == {"alembic_version"}


async def test_upgrade_can_be_called_while_an_event_loop_is_running(db_path: Path) -> None:
    upgrade(_url(db_path))
    assert {"api_keys", "generations"} <= _tables(db_path)


def test_models_match_the_migrated_schema(db_path: Path) -> None:
    upgrade(_url(db_path))
    engine = create_sync_engine(f"sqlite:///{db_path}")
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_migrations_render_portable_postgresql_ddl() -> None:
    buffer = io.StringIO()
    url = "postgresql+asyncpg://u:p%40ss@localhost/imagegate"  # '%' must survive
    config = alembic_config(url, output_buffer=buffer)
    command.upgrade(config, "head", sql=True)
    command.downgrade(config, "head:base", sql=True)
    sql = buffer.getvalue()
    assert "CREATE TABLE api_keys" in sql
    assert "CREATE TABLE generations" in sql
    assert "TIMESTAMP WITH TIME ZONE" in sql
    assert '"user" TEXT' in sql  # reserved word, quoted
    assert "DEFAULT false" in sql
    assert "ON DELETE SET NULL" in sql
    assert "DROP TABLE generations" in sql


async def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(store: Store) -> None:
    async with store.engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() == 5000
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1


# keys


async def test_create_key_returns_plaintext_secret_and_record(store: Store) -> None:
    secret, key = await store.create_key("ci runner")
    assert SECRET_RE.match(secret)
    assert isinstance(key, KeyRecord)
    assert key.hash == hash_secret(secret)
    assert key.name == "ci runner"
    assert key.active and key.revoked_at is None and key.last_used_at is None
    assert key.is_management is False
    assert key.created_at.tzinfo is not None and key.created_at.utcoffset() == timedelta(0)


async def test_key_label_shows_first_and_last_three_random_characters(store: Store) -> None:
    secret, key = await store.create_key()
    random_part = secret.removeprefix("sk-ig-v1-")
    assert LABEL_RE.match(key.label)
    assert key.label == f"sk-ig-v1-{random_part[:3]}...{random_part[-3:]}"
    assert key.name == ""


async def test_management_flag_is_stored(store: Store) -> None:
    secret, key = await store.create_key("admin", is_management=True)
    assert key.is_management
    authed = await store.authenticate(secret)
    assert authed is not None and authed.is_management


async def test_authenticate_returns_key_and_records_last_use(store: Store) -> None:
    secret, key = await store.create_key("a")
    authed = await store.authenticate(secret)
    assert authed is not None
    assert authed.id == key.id and authed.hash == key.hash
    assert authed.last_used_at is not None
    [listed] = await store.list_keys()
    assert listed.last_used_at == authed.last_used_at


async def test_authenticate_unknown_or_malformed_secret_returns_none(store: Store) -> None:
    await store.create_key("a")
    assert await store.authenticate("sk-ig-v1-" + "0" * 64) is None
    assert await store.authenticate("") is None
    assert await store.authenticate("x" * 10_000) is None


async def test_authenticate_revoked_key_returns_none(store: Store) -> None:
    secret, key = await store.create_key("a")
    await store.revoke_key(key.hash)
    assert await store.authenticate(secret) is None


async def test_last_used_at_is_written_at_most_once_a_minute(store: Store) -> None:
    secret, key = await store.create_key("a")
    first = await store.authenticate(secret)
    second = await store.authenticate(secret)
    assert first is not None and second is not None
    assert second.last_used_at == first.last_used_at
    # a use more than a minute ago is refreshed (by a fresh Store: no in-process throttle)
    old = datetime.now(UTC) - timedelta(minutes=5)
    async with store.sessionmaker.begin() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=old))
    other = Store(str(store.engine.url))
    try:
        third = await other.authenticate(secret)
    finally:
        await other.close()
    assert third is not None and third.last_used_at is not None
    assert third.last_used_at > old + timedelta(minutes=4)


async def test_plaintext_secret_never_appears_in_database_files(
    store: Store, db_path: Path
) -> None:
    secrets_ = [await store.create_key(f"k{i}") for i in range(3)]
    for secret, _ in secrets_:
        await store.authenticate(secret)
    await store.revoke_key(secrets_[0][1].label)
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    assert any(p.name.endswith("-wal") for p in files)  # looked at while the store is open
    blob = b"".join(p.read_bytes() for p in files)
    for secret, key in secrets_:
        random_part = secret.removeprefix("sk-ig-v1-")
        assert secret.encode() not in blob
        assert random_part.encode() not in blob
        assert random_part[:16].encode() not in blob
        assert key.hash.encode() in blob  # sanity: we are reading the right bytes


async def test_revoke_by_full_hash(store: Store) -> None:
    secret, key = await store.create_key("a")
    revoked = await store.revoke_key(key.hash)
    assert revoked is not None and revoked.id == key.id
    assert not revoked.active and revoked.revoked_at is not None
    assert await store.authenticate(secret) is None


async def test_revoke_by_unique_hash_prefix(store: Store) -> None:
    secret, key = await store.create_key("a")
    other_secret, _ = await store.create_key("b")
    revoked = await store.revoke_key(key.hash[:8].upper())
    assert revoked is not None and revoked.id == key.id
    assert await store.authenticate(secret) is None
    assert await store.authenticate(other_secret) is not None


async def test_revoke_by_label(store: Store) -> None:
    secret, key = await store.create_key("a")
    revoked = await store.revoke_key(key.label)
    assert revoked is not None and revoked.id == key.id
    assert await store.authenticate(secret) is None


async def test_revoke_by_the_secret_itself(store: Store) -> None:
    secret, key = await store.create_key("a")
    revoked = await store.revoke_key(secret)
    assert revoked is not None and revoked.id == key.id


async def test_revoke_unknown_ident_returns_none(store: Store) -> None:
    await store.create_key("a")
    assert await store.revoke_key("0123456789abcdef0123") is None
    assert await store.revoke_key("sk-ig-v1-zzz...zzz") is None
    assert await store.revoke_key("not a key") is None
    assert await store.count_active_keys() == 1


async def test_revoke_with_prefix_shorter_than_eight_characters_raises(store: Store) -> None:
    _, key = await store.create_key("a")
    with pytest.raises(ValueError, match="at least 8"):
        await store.revoke_key(key.hash[:7])
    assert await store.count_active_keys() == 1


async def _insert_key(store: Store, *, hash: str, label: str, revoked: bool = False) -> None:
    now = datetime.now(UTC)
    async with store.sessionmaker.begin() as session:
        session.add(
            ApiKey(hash=hash, label=label, name="", created_at=now,
                   revoked_at=now if revoked else None)
        )


async def test_ambiguous_hash_prefix_raises_value_error_and_revokes_nothing(store: Store) -> None:
    await _insert_key(store, hash="deadbeef" + "1" * 56, label="sk-ig-v1-111...111")
    await _insert_key(store, hash="deadbeef" + "2" * 56, label="sk-ig-v1-222...222")
    with pytest.raises(ValueError, match="matches 2 keys"):
        await store.revoke_key("deadbeef")
    assert await store.count_active_keys() == 2
    revoked = await store.revoke_key("deadbeef2")
    assert revoked is not None and revoked.label == "sk-ig-v1-222...222"


async def test_ambiguous_label_raises_value_error_and_revokes_nothing(store: Store) -> None:
    await _insert_key(store, hash="a" * 64, label="sk-ig-v1-abc...xyz")
    await _insert_key(store, hash="b" * 64, label="sk-ig-v1-abc...xyz")
    with pytest.raises(ValueError, match="longer hash prefix"):
        await store.revoke_key("sk-ig-v1-abc...xyz")
    assert await store.count_active_keys() == 2


async def test_revoke_prefers_the_one_active_key_among_matches(store: Store) -> None:
    await _insert_key(store, hash="a" * 64, label="sk-ig-v1-abc...xyz", revoked=True)
    await _insert_key(store, hash="b" * 64, label="sk-ig-v1-abc...xyz")
    revoked = await store.revoke_key("sk-ig-v1-abc...xyz")
    assert revoked is not None and revoked.hash == "b" * 64
    assert await store.count_active_keys() == 0


async def test_revoking_a_revoked_key_returns_it_unchanged(store: Store) -> None:
    _, key = await store.create_key("a")
    first = await store.revoke_key(key.hash)
    second = await store.revoke_key(key.hash)
    assert first is not None and second is not None
    assert second.revoked_at == first.revoked_at


async def test_list_keys_and_count_active_keys(store: Store) -> None:
    _, a = await store.create_key("a")
    _, b = await store.create_key("b")
    _, c = await store.create_key("c")
    await store.revoke_key(b.hash)
    assert [k.name for k in await store.list_keys()] == ["a", "b", "c"]
    assert [k.name for k in await store.list_keys(include_revoked=False)] == ["a", "c"]
    assert await store.count_active_keys() == 2
    assert {k.id for k in await store.list_keys()} == {a.id, b.id, c.id}


# generations


def test_new_generation_id_matches_format() -> None:
    ids = {new_generation_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(GEN_ID_RE.match(i) for i in ids)
    assert new_generation_id(1_700_000_000.9).startswith("gen-img-1700000000-")



def test_generation_id_characters_are_uniform_over_the_62_alphanumerics() -> None:
    counts = Counter("".join(new_generation_id().rsplit("-", 1)[1] for _ in range(20_000)))
    assert set(counts) == set(string.ascii_letters + string.digits)
    expected = 20_000 * 20 / 62  # ≈ 6,452 each, σ ≈ 80; a modulo bias would put 8 of them at ≈ 8,065
    assert all(abs(n - expected) < 500 for n in counts.values()), counts.most_common(3)

async def test_record_and_get_generation_round_trips_every_field(store: Store) -> None:
    _, key = await store.create_key("a")
    record = _full_record(key_id=key.id)
    await store.record_generation(record)
    got = await store.get_generation(record.id)
    assert got == record
    for f in fields(GenerationRecord):
        assert getattr(got, f.name) == getattr(record, f.name), f.name
        assert type(getattr(got, f.name)) is type(getattr(record, f.name)), f.name
    assert got is not None
    assert got.cost_usd == Decimal("0.003006") and str(got.cost_usd) == "0.003006"
    assert got.created_at.tzinfo is not None


async def test_failed_generation_with_defaults_round_trips(store: Store) -> None:
    record = GenerationRecord(
        id=new_generation_id(), model="m", status="failed", http_status=502,
        error_message="all providers failed",
    )
    await store.record_generation(record)
    assert await store.get_generation(record.id) == record


async def test_cost_is_stored_as_exact_normalized_decimal_text(
    store: Store, db_path: Path
) -> None:
    costs = {
        "a": Decimal("0.003006"),
        "b": Decimal("0.0400"),
        "c": Decimal("1E+2"),
        "d": "0.1",
        "e": Decimal("0.000000000000000000000001"),
    }
    ids = {}
    for name, cost in costs.items():
        record = _full_record(cost_usd=cost)
        ids[name] = record.id
        await store.record_generation(record)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT id, cost_usd FROM generations"))).all()
    raw = {generation_id: cost for generation_id, cost in rows}
    assert raw[ids["a"]] == "0.003006"
    assert raw[ids["b"]] == "0.04"
    assert raw[ids["c"]] == "100"
    assert raw[ids["d"]] == "0.1"
    assert raw[ids["e"]] == "0.000000000000000000000001"
    got = await store.get_generation(ids["e"])
    assert got is not None and got.cost_usd == Decimal("1E-24")


def test_generation_record_normalizes_cost_and_created_at() -> None:
    record = GenerationRecord(
        id="gen-img-1-aaaaaaaaaaaaaaaaaaaa", model="m", cost_usd="0.5",
        created_at=datetime(2025, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    assert record.cost_usd == Decimal("0.5") and isinstance(record.cost_usd, Decimal)
    assert record.created_at == datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
    assert record.created_at.tzinfo is UTC
    assert GenerationRecord(id="x", model="m", cost_usd=0.1).cost_usd == Decimal("0.1")


def test_generation_record_rejects_bad_status_and_cost() -> None:
    with pytest.raises(ValueError, match="status"):
        GenerationRecord(id="x", model="m", status="ok")
    with pytest.raises(ValueError):
        GenerationRecord(id="x", model="m", cost_usd=Decimal("NaN"))
    with pytest.raises(ValueError):
        GenerationRecord(id="x", model="m", cost_usd="lots")
    with pytest.raises(ValueError, match="session_id"):
        GenerationRecord(id="x", model="m", session_id="s" * 257)


async def test_json_fields_accept_tuples_sets_dataclasses_and_decimals(store: Store) -> None:
    @dataclass(frozen=True)
    class Applied:
        width: int
        clamped: frozenset[str]
        adjustments: tuple[str, ...]

    record = _full_record(
        applied={"size": Applied(512, frozenset({"size", "aspect_ratio"}), ("a", "b"))},
        usage={"cost": Decimal("0.04"), 3: "int key", "at": datetime(2026, 1, 2, 3, 4, 5), "nan": float("nan")},
    )
    await store.record_generation(record)
    got = await store.get_generation(record.id)
    assert got is not None
    assert got.applied == {
        "size": {"width": 512, "clamped": ["aspect_ratio", "size"], "adjustments": ["a", "b"]}
    }
    # A naive datetime is UTC; a float JSON cannot hold is stored as null.
    assert got.usage == {"cost": 0.04, "3": "int key", "at": "2026-01-02T03:04:05+00:00", "nan": None}


async def test_json_fields_refuse_what_json_cannot_hold(store: Store) -> None:
    with pytest.raises(StatementError, match="not JSON serializable"):
        await store.record_generation(_full_record(usage={"x": object()}))


async def test_get_generation_is_scoped_to_the_given_key(store: Store) -> None:
    _, a = await store.create_key("a")
    _, b = await store.create_key("b")
    record = _full_record(key_id=a.id)
    await store.record_generation(record)
    assert await store.get_generation(record.id, key_id=a.id) == record
    assert await store.get_generation(record.id, key_id=b.id) is None
    assert await store.get_generation(record.id) == record
    assert await store.get_generation("gen-img-0-doesnotexist00000000") is None


async def test_recording_the_same_generation_id_twice_raises(store: Store) -> None:
    record = _full_record()
    await store.record_generation(record)
    with pytest.raises(IntegrityError):
        await store.record_generation(record)


async def test_generation_for_unknown_key_id_violates_foreign_key(store: Store) -> None:
    with pytest.raises(IntegrityError):
        await store.record_generation(_full_record(key_id=999))


async def test_concurrent_record_generation_from_50_tasks_all_land(store: Store) -> None:
    _, key = await store.create_key("a")
    records = [
        _full_record(key_id=key.id, cost_usd=Decimal(i) / 1000, num_images=i) for i in range(50)
    ]
    await asyncio.gather(*(store.record_generation(r) for r in records))
    async with store.engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM generations"))).scalar()
    assert count == 50
    got = await asyncio.gather(*(store.get_generation(r.id, key_id=key.id) for r in records))
    assert got == records
