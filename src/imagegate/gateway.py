"""The gateway: everything one generation needs, and its preparation.

``prepare`` does everything that can fail because of the client (model, routing,
capabilities, sizing, format rules, references, credit) and so turns into an HTTP error
before any response starts; the ``Generation`` it returns runs the rest (``generation.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from imagegate import billing
from imagegate.capabilities import (
    check_background,
    dropped_parameters,
    no_provider_error,
    plan_output,
    rejections,
    requested_parameters,
)
from imagegate.catalog import Endpoint, ServedCatalog
from imagegate.clock import Clock, system_clock
from imagegate.errors import (
    ContentRefused,
    ImagegateError,
    InvalidRequest,
    NotFound,
    UpstreamError,
)
from imagegate.generation import Attempt, Generation
from imagegate.health import HealthBook
from imagegate.providers.base import Provider, ReferenceImage
from imagegate.references import ReferenceLoader
from imagegate.routing import endpoint_key, merge_preferences, route
from imagegate.sizing import SizeRequest, parse_size, resolve_size
from imagegate.store import KeyRecord, Store, new_generation_id
from imagegate.store.journal import Journal, Started
from imagegate.wire import ImageRequest, ProviderPreferences

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    provider_timeout_s: float = 300.0
    #: Operator-wide provider preferences, merged under each request's own.
    default_preferences: ProviderPreferences | None = None
    fallback_on_content_refusal: bool = False
    #: Cancel the upstream call when the client disconnects, instead of letting it finish.
    cancel_on_disconnect: bool = False
    #: A reservation expires this long after its last renewal: how soon the money a crashed
    #: process held is released. Live ones are renewed every third of it.
    reservation_ttl_s: float = 120.0
    #: Hash each delivered image into its generation record (costs ~1 ms of CPU per 1K PNG).
    record_output_sha256: bool = False
    #: Send images and previews on while they arrive from the upstream (no fallback once an
    #: image's first byte is out).
    relay_images: bool = True
    #: Only images of at least this many base64 bytes are relayed; smaller ones are held whole
    #: (cheaper at a few megabytes, measured).
    relay_from_bytes: int = 8 * 1024 * 1024


class Gateway:
    """Holds what every generation needs: catalog, providers, store, reference loader."""

    def __init__(
        self,
        *,
        catalog: ServedCatalog,
        providers: Mapping[str, Provider],
        store: Store,
        references: ReferenceLoader,
        options: GatewayOptions | None = None,
        health: HealthBook | None = None,
        clock: Clock = system_clock,
        journal: Journal | None = None,
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        #: Where generations in flight are written down as they go, for a process that is killed.
        self.journal = journal
        self.providers = dict(providers)
        self.store = store
        self.references = references
        self.options = options or GatewayOptions()
        self.health = health or HealthBook()
        #: Generations of this process not yet on record, so a lookup can wait for them.
        self._unrecorded: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def provider_timeout_s(self) -> float:
        return self.options.provider_timeout_s

    def may_fall_back(self, error: ImagegateError) -> bool:
        """Upstream outages, timeouts, 5xx and 429 fall back; the client's own mistakes never do,
        and a content refusal only when the operator opted in."""
        if isinstance(error, ContentRefused):
            return self.options.fallback_on_content_refusal
        return isinstance(error, UpstreamError) and error.retryable

    def observe(self, attempt: Attempt, *, ok: bool, started: float, megapixels: float = 0.0,
                status: int = 200, error: ImagegateError | None = None) -> None:
        """Feed one upstream outcome into the endpoint's health (client errors say nothing of it)."""
        if error is not None and not isinstance(error, UpstreamError):
            return
        self.health.record(endpoint_key(attempt.endpoint), ok=ok, latency_s=time.monotonic() - started,
                           megapixels=megapixels, status=status)

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def in_flight(self) -> int:
        """Generations of this process started and not yet on record."""
        return len(self._unrecorded)

    def recording(self, generation_id: str) -> None:
        """The generation has started; its record is on its way."""
        self._unrecorded[generation_id] = asyncio.Event()

    def recorded(self, generation_id: str) -> None:
        if event := self._unrecorded.pop(generation_id, None):
            event.set()

    async def until_recorded(self, generation_id: str, timeout: float = 10.0) -> None:
        """Wait (briefly) for a finished generation of this process to be on record: a client
        that asks for it right after its response must find it."""
        if event := self._unrecorded.get(generation_id):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)

    async def renew_reservations_forever(self) -> None:
        """The heartbeat that keeps the money this process holds from being reaped."""
        ttl = self.options.reservation_ttl_s
        while True:
            await asyncio.sleep(ttl / 4)  # three beats may be missed before anything is reaped
            try:
                await self.store.heartbeat(ttl)
            except Exception:  # the next beat tries again, well before expiry
                log.exception("renewing reservations failed")

    async def drain(self, timeout: float = 30.0) -> None:
        """Let running generations finish and be recorded (graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    async def prepare(self, request: ImageRequest, key: KeyRecord, *, stream: bool) -> Generation:
        model = self.catalog.get(request.model)
        if model is None:
            raise model_not_found(self.catalog, request.model)
        reference_urls = request.reference_urls
        fields = request.model_dump(exclude_none=True)
        resolution = _resolution_with_size_tier(request)
        if resolution is not None:
            fields["resolution"] = resolution
        requested = requested_parameters(fields, len(reference_urls))

        prefs = merge_preferences(self.options.default_preferences, request.provider)
        routed = route(model.endpoints, prefs, health=self.health)
        if not routed:
            raise NotFound(
                f"No allowed providers are available for {model.id}",
                metadata={"param": "provider", "endpoints": [e.provider_slug for e in model.endpoints]},
            )
        found = []
        capable = []
        for endpoint in routed:
            problems = rejections(endpoint, requested)
            found += problems
            if not problems:
                capable.append(endpoint)
        if not capable:
            raise no_provider_error(model.id, requested, found, len(model.endpoints))

        attempts = [self._attempt(endpoint, request, requested, prefs) for endpoint in capable]
        check_background(request.background, request.output_format)
        references = await self.references.load(reference_urls) if reference_urls else ()
        created = int(self.clock().timestamp())
        generation_id = new_generation_id(created)
        # The worst case over every endpoint it may fall back to: a 402 now, never a debt later.
        # Written down before money is held: a process killed at any point after holding it
        # leaves a journal that releases it (``store/journal.py``).
        if self.journal is not None:
            self.journal.start(Started(generation_id, model.id, key.id, key.account_id, stream, created))
        try:
            admission = await self.store.admit(
                key,
                amount_usd=lambda: max(self._worst_case_cost(a, request, references, stream) for a in attempts),
                ttl_s=self.options.reservation_ttl_s,
            )
        except BaseException:  # refused (402) or failed: nothing held, nothing to record
            if self.journal is not None:
                self.journal.finished(generation_id)
            raise
        return Generation(
            id=generation_id,
            request=request,
            key=key,
            model=model,
            attempts=attempts,
            references=references,
            gateway=self,
            streamed=stream,
            admission=admission,
            created=created,
        )

    @staticmethod
    def _worst_case_cost(
        attempt: Attempt, request: ImageRequest, references: tuple[ReferenceImage, ...], stream: bool
    ) -> Decimal:
        ceiling = attempt.usage_ceiling(request.n or 1, request.prompt, references, streamed=stream)
        return billing.most_expensive_cost(attempt.endpoint.pricing, ceiling)

    def _attempt(
        self, endpoint: Endpoint, request: ImageRequest, requested: Mapping[str, Any],
        prefs: ProviderPreferences | None,
    ) -> Attempt:
        listed = endpoint.supported_parameters
        size = resolve_size(
            SizeRequest(
                resolution=requested.get("resolution") if "resolution" in listed else None,
                aspect_ratio=request.aspect_ratio if "aspect_ratio" in listed else None,
                size=request.size if request.size and parse_size(request.size)[1] else None,
            ),
            endpoint.size_rules,
        )
        return Attempt(
            endpoint=endpoint,
            size=size,
            output=plan_output(endpoint, request.output_format, request.background, request.output_compression),
            quality=request.quality if "quality" in listed else None,
            seed=request.seed if "seed" in listed else None,
            dropped=tuple(dropped_parameters(endpoint, requested)),
            options=_passthrough(endpoint, prefs),
        )


def model_not_found(catalog: ServedCatalog, model_id: str) -> NotFound:
    """The 404 for a model this gateway does not serve, saying when it was retired if it was."""
    if retired := catalog.retired_since(model_id):
        return NotFound(
            f"Model {model_id} was retired on {retired.isoformat()}: its providers no longer serve it",
            metadata={"param": "model", "retired": retired.isoformat()},
        )
    return NotFound(
        f"Model {model_id} does not exist or has no image endpoint configured", metadata={"param": "model"}
    )


# --- helpers ---


def _resolution_with_size_tier(request: ImageRequest) -> str | None:
    """A tier ``size`` is the same as ``resolution``; the two must agree."""
    if not request.size:
        return request.resolution
    tier, _pixels = parse_size(request.size)
    if tier is None:
        return request.resolution
    if request.resolution is not None and request.resolution != tier:
        raise InvalidRequest(
            f'size "{request.size}" conflicts with resolution "{request.resolution}"',
            metadata={"param": "size"},
        )
    return tier


def _passthrough(endpoint: Endpoint, prefs: ProviderPreferences | None) -> dict[str, Any]:
    """``provider.options[slug]`` for this endpoint, limited to its allow-list."""
    options = (prefs.options if prefs else None) or {}
    chosen: dict[str, Any] = {}
    for slug in (endpoint.provider_slug.split("/", 1)[0], endpoint.provider_slug):
        chosen.update(options.get(slug) or {})
    allowed = set(endpoint.allowed_passthrough_parameters)
    return {k: v for k, v in chosen.items() if k in allowed}
