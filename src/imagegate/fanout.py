"""Fan-out: ``n`` images from an upstream that makes fewer per call.

The job is split into concurrent calls of at most ``per_call`` images each, whose events are
merged into one stream with output indexes renumbered. When some calls fail and others
succeed, the images that succeeded are returned and only their calls are billed; when all
fail, the first failure is raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from decimal import Decimal

from imagegate.errors import ImagegateError
from imagegate.providers.base import (
    Done,
    Image,
    Partial,
    Provider,
    ProviderEvent,
    ProviderJob,
    Usage,
)

log = logging.getLogger(__name__)

_END = object()


def split(job: ProviderJob, per_call: int) -> list[ProviderJob]:
    """Sub-jobs of at most ``per_call`` images; seeds step by call so outputs differ."""
    jobs = []
    for call, start in enumerate(range(0, job.n, per_call)):
        seed = None if job.seed is None else job.seed + call
        jobs.append(dataclasses.replace(job, n=min(per_call, job.n - start), seed=seed))
    return jobs


def fan_out(provider: Provider, job: ProviderJob, per_call: int | None) -> AsyncIterator[ProviderEvent]:
    """The job's events: the provider's own when one call makes them all, else merged."""
    if per_call is None or job.n <= per_call:
        return provider.run(job)
    return _merged(provider, split(job, per_call))


async def _merged(provider: Provider, jobs: list[ProviderJob]) -> AsyncIterator[ProviderEvent]:
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()

    async def pump(call: int, sub_job: ProviderJob) -> None:
        try:
            async for event in provider.run(sub_job):
                await queue.put((call, event))
        except ImagegateError as exc:
            await queue.put((call, exc))
        finally:
            await queue.put((call, _END))

    tasks = [asyncio.create_task(pump(call, sub_job)) for call, sub_job in enumerate(jobs)]
    offsets = [sum(j.n for j in jobs[:call]) for call in range(len(jobs))]
    usages: list[Usage] = []
    failures: list[ImagegateError] = []
    produced = 0
    try:
        running = len(tasks)
        while running:
            call, item = await queue.get()
            if item is _END:
                running -= 1
            elif isinstance(item, ImagegateError):
                failures.append(item)
            elif isinstance(item, Partial):
                yield dataclasses.replace(item, index=offsets[call] + item.index)
            elif isinstance(item, Done):
                usages.append(item.usage)
            else:
                if isinstance(item, Image):
                    produced += 1
                yield item  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
    if not produced:
        raise failures[0] if failures else ImagegateError("no image was produced")
    if failures:
        log.info("fan-out: %d of %d calls failed (%s); returning %d images",
                 len(failures), len(jobs), failures[0].message, produced)
    yield Done(sum_usage(usages))


def sum_usage(usages: list[Usage]) -> Usage:
    """The calls' usage added up; a stated cost only when every call stated one."""
    if not usages:
        return Usage(requests=0)
    counted = [f.name for f in dataclasses.fields(Usage) if f.name != "stated_cost_usd"]
    stated = [u.stated_cost_usd for u in usages]
    return Usage(
        **{name: sum(getattr(u, name) for u in usages) for name in counted},
        stated_cost_usd=None if None in stated else sum(stated, Decimal(0)),
    )
