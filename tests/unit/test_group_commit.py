"""Group commit: concurrent writes share batches; each caller gets its own item's result."""

from __future__ import annotations

import asyncio

import pytest

from imagegate.store.batching import GroupCommit


class Recorder:
    def __init__(self, fail_on: set[int] | None = None, pause_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on or set()
        self.pause_s = pause_s

    async def write(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        await asyncio.sleep(self.pause_s)  # the database round trip
        if self.fail_on & set(items) and len(items) > 1:
            raise RuntimeError("the whole transaction failed")
        return [ValueError(f"bad {i}") if i in self.fail_on else i * 10 for i in items]


async def test_a_lone_write_goes_out_at_once() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write)
    assert await asyncio.wait_for(commit.submit(1), 1) == 10
    assert recorder.batches == [[1]]


async def test_writes_arriving_during_a_batch_go_together_in_the_next() -> None:
    recorder = Recorder(pause_s=0.05)
    commit = GroupCommit(recorder.write)
    first = asyncio.create_task(commit.submit(0))
    await asyncio.sleep(0.01)  # the first batch is being written
    results = await asyncio.gather(*(commit.submit(i) for i in range(1, 21)))
    assert await first == 0
    assert results == [i * 10 for i in range(1, 21)]
    assert recorder.batches == [[0], list(range(1, 21))]


async def test_with_a_gathering_window_a_lone_write_waits_for_company() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write, gather_s=0.05)
    first = asyncio.create_task(commit.submit(0))
    await asyncio.sleep(0.01)  # inside the window: no batch yet
    assert recorder.batches == []
    assert await asyncio.gather(first, commit.submit(1)) == [0, 10]
    assert recorder.batches == [[0, 1]]


async def test_with_a_gathering_window_every_batch_waits_for_company() -> None:
    recorder = Recorder(pause_s=0.02)
    commit = GroupCommit(recorder.write, gather_s=0.05)
    first = asyncio.create_task(commit.submit(0))
    await asyncio.sleep(0.06)  # the first batch is being written
    second = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0.02)  # written now; the next batch is gathering
    assert recorder.batches == [[0]]
    third = asyncio.create_task(commit.submit(2))
    assert await asyncio.gather(first, second, third) == [0, 10, 20]
    assert recorder.batches == [[0], [1, 2]]


async def test_a_full_batch_does_not_wait_for_the_gathering_window() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write, max_batch=4, gather_s=10)
    results = await asyncio.wait_for(asyncio.gather(*(commit.submit(i) for i in range(8))), 1)
    assert results == [i * 10 for i in range(8)]
    assert recorder.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]


async def test_batches_are_capped_in_size() -> None:
    recorder = Recorder()
    commit = GroupCommit(recorder.write, max_batch=8)
    assert await asyncio.gather(*(commit.submit(i) for i in range(20))) == [i * 10 for i in range(20)]
    assert [len(b) for b in recorder.batches] == [8, 8, 4]


async def test_an_item_that_fails_alone_fails_only_its_caller() -> None:
    recorder = Recorder(fail_on={3})
    commit = GroupCommit(recorder.write)
    results = await asyncio.gather(*(commit.submit(i) for i in range(5)), return_exceptions=True)
    assert [r for i, r in enumerate(results) if i != 3] == [0, 10, 20, 40]
    assert isinstance(results[3], ValueError)
    # The failed batch was retried item by item.
    assert recorder.batches[0] == [0, 1, 2, 3, 4] and recorder.batches[1:] == [[i] for i in range(5)]


async def test_a_cancelled_caller_does_not_take_its_write_back() -> None:
    recorder = Recorder(pause_s=0.05)
    commit = GroupCommit(recorder.write)
    caller = asyncio.create_task(commit.submit(7))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await commit.wait_idle()
    assert recorder.batches == [[7]]
