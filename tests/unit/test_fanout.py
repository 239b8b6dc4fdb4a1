"""Fan-out of n images over an upstream that makes fewer per call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from imagegate.errors import UpstreamError
from imagegate.fanout import fan_out, split, sum_usage
from imagegate.providers.base import Blob, Done, Image, Partial, ProviderJob, Usage
from imagegate.sizing import AppliedSize


def job(n: int, seed: int | None = 10) -> ProviderJob:
    return ProviderJob(upstream_model="m", prompt="p", n=n, output_format="png", seed=seed,
                       size=AppliedSize(64, 64, "512", "1:1"))


class OnePerCall:
    """An upstream making one image per call at a stated $0.03; ``fail_seeds`` fail and
    ``unstated_seeds`` state no cost."""

    slug = "fake"

    def __init__(self, fail_seeds: set[int] = frozenset(), unstated_seeds: set[int] = frozenset()) -> None:
        self.fail_seeds = fail_seeds
        self.unstated_seeds = unstated_seeds
        self.calls: list[ProviderJob] = []

    async def run(self, job: ProviderJob) -> AsyncIterator:
        self.calls.append(job)
        assert job.n == 1
        if job.seed in self.fail_seeds:
            raise UpstreamError("boom")
        yield Partial(0, Blob.from_raw(b"p"), "image/png")
        yield Image(Blob.from_raw(f"img{job.seed}".encode()), "image/png")
        stated = None if job.seed in self.unstated_seeds else Decimal("0.03")
        yield Done(Usage(output_images=1, output_pixels=500_000, requests=1, stated_cost_usd=stated))


def test_split_steps_seeds_so_outputs_differ() -> None:
    assert [(j.n, j.seed) for j in split(job(5), 2)] == [(2, 10), (2, 11), (1, 12)]
    assert [j.seed for j in split(job(3, seed=None), 1)] == [None, None, None]


async def test_fan_out_makes_n_calls_and_sums_usage() -> None:
    provider = OnePerCall()
    events = [e async for e in fan_out(provider, job(3), 1)]
    assert len(provider.calls) == 3
    assert sorted(e.image.raw for e in events if isinstance(e, Image)) == [b"img10", b"img11", b"img12"]
    assert sorted(e.index for e in events if isinstance(e, Partial)) == [0, 1, 2]
    done = events[-1]
    assert isinstance(done, Done)
    assert done.usage.output_images == 3 and done.usage.requests == 3
    assert done.usage.output_pixels == 1_500_000
    assert done.usage.stated_cost_usd == Decimal("0.09")  # each call stated what it charged


async def test_partial_failure_returns_successes_and_bills_only_them() -> None:
    events = [e async for e in fan_out(OnePerCall(fail_seeds={11}), job(3), 1)]
    assert len([e for e in events if isinstance(e, Image)]) == 2
    assert events[-1].usage.requests == 2 and events[-1].usage.output_images == 2


async def test_a_cost_is_stated_for_the_calls_only_when_every_call_stated_one() -> None:
    events = [e async for e in fan_out(OnePerCall(unstated_seeds={11}), job(3), 1)]
    assert events[-1].usage.stated_cost_usd is None  # the lines price all three instead


async def test_total_failure_raises() -> None:
    with pytest.raises(UpstreamError):
        [e async for e in fan_out(OnePerCall(fail_seeds={10, 11}), job(2), 1)]


async def test_no_split_when_the_upstream_makes_enough_per_call() -> None:
    provider = OnePerCall()
    [e async for e in fan_out(provider, job(1), 4)]
    assert len(provider.calls) == 1


def test_summed_usage_keeps_text_tokens_and_a_cost_every_call_stated() -> None:
    calls = [Usage(output_text_tokens=96, stated_cost_usd=Decimal("0.03")),
             Usage(output_text_tokens=4, stated_cost_usd=Decimal("0.01"))]
    total = sum_usage(calls)
    assert total.output_text_tokens == 100 and total.stated_cost_usd == Decimal("0.04")
    assert sum_usage([*calls, Usage()]).stated_cost_usd is None  # one call's cost is unknown
