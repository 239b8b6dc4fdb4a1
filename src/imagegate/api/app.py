"""The application factory: wiring, middleware, routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from imagegate import __version__
from imagegate.api import account, discovery, images, keys
from imagegate.api.errors import install_error_handlers
from imagegate.api.limits import BodySizeLimit
from imagegate.api.openapi import install_openapi
from imagegate.catalog import ServedCatalog, load_catalog
from imagegate.clock import Clock, system_clock
from imagegate.gateway import Gateway, GatewayOptions
from imagegate.health import HealthBook
from imagegate.health_redis import SharedHealthBook
from imagegate.providers import load_providers
from imagegate.providers.http import HttpPool
from imagegate.ratelimit import Limits, MemoryRateLimiter, RateLimiter
from imagegate.ratelimit_redis import RedisRateLimiter
from imagegate.references import ReferenceLimits, ReferenceLoader
from imagegate.settings import Settings, load_settings
from imagegate.store import Store, journal, upgrade
from imagegate.web import install_web
from imagegate.wire import ProviderPreferences

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def create_app(
    settings: Settings | None = None, *, on_started: Callable[[], None] | None = None, clock: Clock = system_clock
) -> FastAPI:
    """The API app; ``on_started`` runs once its start-up is done (``imagegate serve`` tunes the
    garbage collector there). ``clock`` says what day it is (sunsets) and stamps generations."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(upgrade, settings.database_url)
        store = Store(
            settings.database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout_s,
            cache_ttl_s=settings.cache_ttl_s,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        if replayed := await journal.recover(settings.journal_dir, store):
            log.warning("settled %d generations a process that died left open (its journal)", replayed)
        own_journal = journal.Journal(settings.journal_dir, allowances=store.allowance_owner)
        reaper = asyncio.create_task(_reap_forever(store, settings), name="reservation reaper")
        http = HttpPool()
        providers = load_providers(settings, http)
        catalog = ServedCatalog(load_catalog(settings.catalog_paths), set(providers.configured), clock)
        references = ReferenceLoader(
            ReferenceLimits(
                max_bytes=settings.reference_max_bytes,
                max_pixels=settings.reference_max_pixels,
                total_timeout_s=settings.reference_fetch_timeout_s,
                allow_networks=tuple(settings.reference_allow_networks),
            )
        )
        redis = _redis(settings.redis_url) if settings.redis_url else None
        limiter, health, sharing = _shared(redis) if redis else (MemoryRateLimiter(), HealthBook(), [])
        app.state.settings = settings
        app.state.limiter = limiter
        app.state.limits = Limits(settings.rate_limit_rpm, settings.rate_limit_concurrency)
        app.state.store = store
        app.state.providers = providers
        app.state.gateway = Gateway(
            catalog=catalog,
            providers=providers.configured,
            store=store,
            references=references,
            options=GatewayOptions(
                provider_timeout_s=settings.provider_timeout_s,
                default_preferences=ProviderPreferences.model_validate(settings.provider_preferences)
                if settings.provider_preferences
                else None,
                fallback_on_content_refusal=settings.fallback_on_content_refusal,
                cancel_on_disconnect=settings.cancel_on_disconnect,
                reservation_ttl_s=settings.reservation_ttl_s,
                record_output_sha256=settings.record_output_sha256,
                relay_images=settings.relay_images,
                relay_from_bytes=settings.relay_from_bytes,
            ),
            health=health,
            clock=clock,
            journal=own_journal,
        )
        renewer = asyncio.create_task(app.state.gateway.renew_reservations_forever(), name="reservation renewer")
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            reaper.cancel()
            await app.state.gateway.drain()
            renewer.cancel()
            for task in sharing:
                task.cancel()
            if redis:
                await redis.aclose()
            await references.close()
            await http.close()
            await store.close()
            own_journal.close()

    app = FastAPI(
        title="imagegate",
        version=__version__,
        summary="OpenRouter's Image API, self-hosted, in front of every image model.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # Operation ids are the route functions' names (`create_images`, `list_keys` …), as
        # client generators name their methods after them.
        generate_unique_id_function=lambda route: route.name,
    )
    install_openapi(app)
    install_error_handlers(app)
    for router in (images.router, discovery.router, account.router, keys.router):
        app.include_router(router, prefix=API_PREFIX)
    app.router.routes[:0] = images.direct_routes(API_PREFIX)

    @app.get("/api/v1/openapi.json", include_in_schema=False)
    async def openapi_alias() -> Response:
        return Response(_openapi_bytes(app), media_type="application/json")

    install_web(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_allow_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=images.EXPOSED_HEADERS,
    )
    return app


async def _reap_forever(store: Store, settings: Settings) -> None:
    """Settle what crashed processes left: their journals on this machine, and (from any
    machine) reservations no one renews any more. At start, then periodically."""
    while True:
        try:
            if replayed := await journal.recover(settings.journal_dir, store):
                log.warning("settled %d generations a process that died left open (its journal)", replayed)
            if released := await store.reap_expired():
                log.warning("released %d expired reservations (a process died mid-generation)", released)
        except Exception:  # a database hiccup must not end the loop
            log.exception("reaping expired reservations failed")
        await asyncio.sleep(settings.reap_interval_s)


def _shared(redis: Redis) -> tuple[RateLimiter, HealthBook, list[asyncio.Task[None]]]:
    """Rate limits and endpoint health shared with the other instances, and the tasks doing it."""
    limiter, health = RedisRateLimiter(redis), SharedHealthBook(redis)
    return limiter, health, [asyncio.create_task(limiter.renew_forever(), name="rate limit lease renewer"),
                             asyncio.create_task(health.sync_forever(), name="health sync")]


def _redis(url: str) -> Redis:
    """A client that gives up fast: rate limits and health fall back to this instance when
    Redis does not answer, rather than holding requests up (one reconnect, then an error)."""
    return Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1))


def _openapi_bytes(app: FastAPI) -> bytes:
    return orjson.dumps(app.openapi())
