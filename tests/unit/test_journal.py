"""The journal: a process killed between an answer and its record still bills it, on replay."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path

import pytest_asyncio

from imagegate.store import GenerationRecord, Store, new_generation_id, upgrade
from imagegate.store import journal as journal_module
from imagegate.store.journal import Journal, Started, recover


@pytest_asyncio.fixture(loop_scope="function")
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'journal.db'}"
    upgrade(url)
    store = Store(url)
    await store.add_credits(D(1))
    yield store
    await store.close()


async def begin(store: Store, journal: Journal, amount: str = "0.5") -> tuple[str, int]:
    """A generation reserved for and written down as started, as the gateway does."""
    key = (await store.list_keys())[0] if await store.count_active_keys() else (await store.create_key("j"))[1]
    generation_id = new_generation_id()
    await store.reserve(key_id=key.id, generation_id=generation_id, amount_usd=D(amount), ttl_s=600)
    journal.start(Started(generation_id, "imagegate/sandbox", key.id, key.account_id, False, 1_800_000_000))
    return generation_id, key.id


def delivered_record(generation_id: str, key_id: int, cost: str) -> GenerationRecord:
    return GenerationRecord(id=generation_id, model="imagegate/sandbox", key_id=key_id, cost_usd=D(cost),
                            num_images=1, usage={"cost": float(cost)})


def abandon(journal: Journal) -> None:
    """As a killed process leaves it: the file written, its lock gone."""
    import os

    os.close(journal._fd)  # noqa: SLF001 - the lock goes with the descriptor, as at a kill
    journal._fd = -1  # noqa: SLF001


async def test_a_delivered_generation_is_billed_and_a_started_one_released_on_replay(tmp_path: Path, store: Store) -> None:
    journal = Journal(tmp_path / "journal")
    served, key_id = await begin(store, journal, "0.4")
    cut, _ = await begin(store, journal, "0.4")
    journal.delivered(served, D("0.3"), delivered_record(served, key_id, "0.3"), reserved=True)
    abandon(journal)

    assert await recover(tmp_path / "journal", store) == 2
    account = await store.get_account()
    assert account.balance_usd == D("0.7") and account.reserved_usd == 0
    billed, interrupted = await store.get_generation(served), await store.get_generation(cut)
    assert (billed.status, billed.cost_usd) == ("succeeded", D("0.3"))
    assert (interrupted.status, interrupted.cost_usd) == ("failed", 0)
    assert journal_module.INTERRUPTED == interrupted.error_message
    assert list((tmp_path / "journal").iterdir()) == []  # replayed once, then gone


async def test_an_answer_the_client_left_before_its_end_is_not_billed_on_replay(tmp_path: Path, store: Store) -> None:
    journal = Journal(tmp_path / "journal")
    left, key_id = await begin(store, journal, "0.4")
    journal.delivered(left, D("0.3"), delivered_record(left, key_id, "0.3"), reserved=True)
    journal.withdrawn(left)
    abandon(journal)
    assert await recover(tmp_path / "journal", store) == 1
    assert (await store.get_generation(left)).status == "failed"
    assert (await store.get_account()).balance_usd == D(1)


async def test_a_generation_settled_before_the_kill_is_not_billed_twice(tmp_path: Path, store: Store) -> None:
    from imagegate.store import Settlement

    journal = Journal(tmp_path / "journal")
    served, key_id = await begin(store, journal)
    record = delivered_record(served, key_id, "0.3")
    journal.delivered(served, D("0.3"), record, reserved=True)
    await store.finish(Settlement(served, D("0.3"), record=record))  # killed before "finished" was written
    abandon(journal)
    assert await recover(tmp_path / "journal", store) == 0
    assert (await store.get_account()).balance_usd == D("0.7")


async def test_a_live_processs_journal_is_left_alone(tmp_path: Path, store: Store) -> None:
    journal = Journal(tmp_path / "journal")
    await begin(store, journal)
    assert await recover(tmp_path / "journal", store) == 0
    assert (await store.get_account()).reserved_usd == D("0.5")
    journal.close()


async def test_a_line_cut_off_by_the_kill_is_skipped(tmp_path: Path, store: Store) -> None:
    journal = Journal(tmp_path / "journal")
    cut, _ = await begin(store, journal)
    path = next((tmp_path / "journal").iterdir())
    with path.open("ab") as file:
        file.write(b'{"event": "delivered", "generation_id": "gen-img-')
    abandon(journal)
    assert await recover(tmp_path / "journal", store) == 1
    assert (await store.get_generation(cut)).status == "failed"


async def test_rotation_keeps_only_open_generations(tmp_path: Path, store: Store, monkeypatch) -> None:
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 1)
    journal = Journal(tmp_path / "journal")
    open_one, _ = await begin(store, journal, "0.1")
    done, _ = await begin(store, journal, "0.1")
    journal.finished(done)  # past the size: rewritten with the open generation alone
    [path] = (tmp_path / "journal").iterdir()
    assert open_one.encode() in path.read_bytes() and done.encode() not in path.read_bytes()
    journal.close()
    assert path.exists()  # something is still open: kept for a replay


def test_a_journal_lock_dies_with_its_process(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    script = f"from pathlib import Path; from imagegate.store.journal import Journal; Journal(Path({str(folder)!r}))"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    [path] = folder.iterdir()
    with journal_module._claimed(path) as claimed:  # noqa: SLF001
        assert claimed


async def test_without_a_reservation_a_delivered_generation_is_charged_directly_on_replay(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'unmetered.db'}"
    upgrade(url)
    store = Store(url)  # no credit added: unmetered, nothing is reserved
    try:
        journal = Journal(tmp_path / "journal")
        _secret, key = await store.create_key("free")
        served, cut = new_generation_id(), new_generation_id()
        for generation_id in (served, cut):
            journal.start(Started(generation_id, "imagegate/sandbox", key.id, key.account_id, False, 1_800_000_000))
        journal.delivered(served, D("0.3"), delivered_record(served, key.id, "0.3"), reserved=False)
        abandon(journal)
        assert await recover(tmp_path / "journal", store) == 2
        assert (await store.get_generation(served)).cost_usd == D("0.3")
        assert (await store.key_usage(key.id)).usage == D("0.3")
        assert (await store.get_generation(cut)).status == "failed"
    finally:
        await store.close()


async def test_a_dead_process_allowance_is_given_back_and_its_delivered_shares_charged(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'allowance.db'}"
    upgrade(url)
    dead, survivor = Store(url), Store(url)
    try:
        await dead.add_credits(D(10))
        _secret, key = await dead.create_key("k")
        journal = Journal(tmp_path / "journal", allowances=dead.allowance_owner)
        served, cut = new_generation_id(), new_generation_id()
        for generation_id in (served, cut):
            journal.start(Started(generation_id, "imagegate/sandbox", key.id, key.account_id, False, 1_800_000_000))
            assert (await dead.admit(key, amount_usd=D("0.5"), ttl_s=600)).share is not None
        held = (await survivor.get_account()).held_ahead_usd
        assert held >= D(1)  # both shares, and some ahead for the next requests
        journal.delivered(served, D("0.3"), delivered_record(served, key.id, "0.3"), reserved=False)
        abandon(journal)  # killed: its store never settles, never gives its allowance back

        assert await recover(tmp_path / "journal", survivor) == 2
        account = await survivor.get_account()
        assert (account.balance_usd, account.held_ahead_usd, account.reserved_usd) == (D("9.7"), 0, 0)
        assert (await survivor.get_generation(served)).cost_usd == D("0.3")
        assert (await survivor.get_generation(cut)).status == "failed"
    finally:
        await survivor.close()
        await dead.engine.dispose()
