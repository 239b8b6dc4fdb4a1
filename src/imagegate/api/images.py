"""``POST /api/v1/images`` (and its alias): buffered JSON or SSE."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from imagegate.api.auth import authenticate
from imagegate.api.bodies import parse_body
from imagegate.api.openapi import AUTHENTICATED, errors, event_stream, json_body
from imagegate.api.pieces import OnSent, Pieces, PiecesResponse, PiecesStream, client_gone
from imagegate.api.schemas import ImageGenerationResponse, ImageStreamEvent
from imagegate.errors import ImagegateError, InvalidRequest, NotFound
from imagegate.generation import (
    Attempt,
    Failed,
    Finished,
    GatewayEvent,
    Generation,
    ImageOut,
    PartialOut,
    RelayedOut,
    TextOut,
)
from imagegate.wire import (
    IMAGE_ITEM_START,
    SSE_DONE,
    SSE_KEEPALIVE,
    ImageRequest,
    image_body_end,
    image_body_start,
    image_item_end,
    image_response_pieces,
    sse_event,
)

router = APIRouter()
log = logging.getLogger(__name__)
T = TypeVar("T")

#: Headers a browser client may read (OpenRouter exposes the first two).
EXPOSED_HEADERS = [
    "X-Generation-Id",
    "X-Provider-Name",
    "X-Imagegate-Provider",
    "X-Imagegate-Size",
    "X-Imagegate-Resolution",
    "X-Imagegate-Aspect-Ratio",
    "X-Imagegate-Format",
    "X-Imagegate-Quality",
    "X-Imagegate-Dropped",
    "X-Imagegate-Clamped",
]

_GENERATE_DOC: dict[str, Any] = {
    "summary": "Generate images",
    "description": "OpenRouter's `ImageGenerationRequest`. Returns `{created, data, usage}` as JSON, "
    "or `text/event-stream` when `stream` is true and the endpoint streams natively: `data:` events "
    "only (partial images, text chunks, one `image_generation.completed` per image, the last with "
    "the usage, or an `error` event), `: ` comments while waiting, and `data: [DONE]` last.",
    "openapi_extra": {**json_body(ImageRequest), **AUTHENTICATED},
    "responses": {
        200: {
            "model": ImageGenerationResponse,
            "description": "The images, as JSON, or as a stream of events when `stream` is true.",
            "content": {"text/event-stream": event_stream(ImageStreamEvent)},
            "headers": {
                "X-Generation-Id": {"description": "The generation's id, for `GET /generation`.",
                                    "required": True, "schema": {"type": "string"}},
                "X-Provider-Name": {"description": "The provider that made the images.",
                                    "required": True, "schema": {"type": "string"}},
            },
        },
        **errors(400, 401, 402, 403, 404, 413, 429, 500, 502, 503, 524, 529),
    },
}


@router.post("/images", tags=["Images"], **_GENERATE_DOC)
async def create_images(request: Request) -> Response:
    return await _generate(request)


@router.post("/images/generations", tags=["Images"], include_in_schema=True, **_GENERATE_DOC)
async def create_images_alias(request: Request) -> Response:
    """Alias of ``POST /images``, as on OpenRouter."""
    return await _generate(request)


@router.post("/images/edits", include_in_schema=False)
@router.post("/images/variations", include_in_schema=False)
async def no_edits() -> Response:
    # OpenRouter has no edits route: edits are `input_references` on /images.
    raise NotFound("Not Found")


def _header(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    return None if value is None else value[: MAX_HEADER_CHARS[name]]


def check_prompt(prompt: str, max_chars: int) -> None:
    if len(prompt) > max_chars:
        raise InvalidRequest(
            f"prompt is {len(prompt)} characters long; this gateway accepts at most {max_chars}",
            metadata={"param": "prompt", "max_chars": max_chars},
        )


def direct_routes(prefix: str) -> list[Route]:
    """``POST /images`` and its alias as plain Starlette routes, to go ahead of the API router's
    (which stay, for the OpenAPI document): FastAPI's routing and parameter solving cost
    ~0.1 ms per request here, a tenth of the gateway's own work on an image (measured)."""
    return [Route(prefix + path, _generate, methods=["POST"]) for path in ("/images", "/images/generations")]


#: A body at least this long (or of unknown length) is read only once its key is known good:
#: reading and parsing it costs more than a stranger should be able to make us spend. Smaller
#: ones are parsed first, so that a malformed request is a 400 before a 401, as on OpenRouter.
KEY_FIRST_FROM_BYTES = 64 * 1024
#: Longest client header value kept (title, referer, session id); the rest is cut off.
MAX_HEADER_CHARS = {"x-session-id": 256, "x-openrouter-title": 256, "x-title": 256, "http-referer": 2048}


async def _generate(request: Request) -> Response:
    state = request.app.state
    length = request.headers.get("content-length", "")
    key_first = not length.isdigit() or int(length) >= KEY_FIRST_FROM_BYTES
    key = await authenticate(request, state.store) if key_first else None
    image_request = parse_body(await request.body(), ImageRequest)
    if key is None:
        key = await authenticate(request, state.store)
    check_prompt(image_request.prompt, state.settings.max_prompt_chars)
    if image_request.session_id is None and (session := _header(request, "x-session-id")):
        image_request = image_request.model_copy(update={"session_id": session})
    wants_stream = bool(image_request.stream)
    lease = await state.limiter.acquire(key.hash, state.limits)
    try:
        generation = await state.gateway.prepare(image_request, key, stream=wants_stream)
    except BaseException:
        await lease.release()
        raise
    generation.lease = lease
    streaming = wants_stream and generation.primary.endpoint.supports_streaming
    generation.streamed = streaming
    generation.origin = _header(request, "http-referer")
    generation.app_title = _header(request, "x-openrouter-title") or _header(request, "x-title")
    generation.start()
    if streaming:
        return PiecesStream(
            _sse(generation, state.settings.sse_keepalive_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **_headers(generation, generation.primary)},
        )
    return await _buffered(generation, request)


async def _buffered(generation: Generation, request: Request) -> Response:
    consuming: contextlib.AbstractContextManager[None] | None = generation.consuming()
    consuming.__enter__()
    try:
        events = aiter(generation.events())
        try:
            images, outcome = await _unless_client_leaves(request, _first_result(events))
        except _ClientLeft:
            return Response(status_code=499)  # the generation itself goes on and is recorded, unbilled
        except ImagegateError as exc:
            exc.headers.setdefault("X-Generation-Id", generation.id)  # the failure is on record too
            raise
        handed_over, consuming = consuming, None  # the response ends it, sent or abandoned

        def on_sent(whole: bool) -> None:
            if whole:  # billed only once the client has all of it
                generation.mark_delivered()
            else:
                generation.withdraw()
            handed_over.__exit__(None, None, None)

        if isinstance(outcome, RelayedOut):
            return _RelayResponse(
                _relayed_body(generation, images, outcome, events),
                headers=_headers(generation, outcome.attempt, [outcome.info]),
                on_sent=on_sent,
            )
        pieces = image_response_pieces(
            generation.created, ((img.b64, img.media_type) for img in images), outcome.usage
        )
        return PiecesResponse(pieces, headers=_headers(generation, outcome.attempt, outcome.images),
                              on_last=generation.handing_over, on_sent=on_sent)
    finally:
        if consuming is not None:
            consuming.__exit__(None, None, None)


class _ClientLeft(Exception):
    """The client disconnected while its answer was being waited for."""


async def _unless_client_leaves(request: Request, waiting: Coroutine[Any, Any, T]) -> T:
    """``waiting``'s result, awaited in the caller's own task; ``_ClientLeft`` if the client
    disconnects first (a watcher task then cancels the wait). Running the wait as a task of
    its own beside the watcher cost ~40 µs more per request (measured)."""
    handler = asyncio.current_task()
    assert handler is not None
    left = False

    def on_gone(watcher: asyncio.Task[None]) -> None:
        nonlocal left
        if not watcher.cancelled() and watcher.exception() is None:
            left = True
            handler.cancel()

    watcher = asyncio.create_task(_client_gone(request))
    watcher.add_done_callback(on_gone)
    try:
        return await waiting
    except asyncio.CancelledError:
        if not left:
            raise
        handler.uncancel()
        raise _ClientLeft from None
    finally:
        watcher.remove_done_callback(on_gone)
        watcher.cancel()


async def _first_result(events: AsyncIterator[GatewayEvent]) -> tuple[list[ImageOut], Finished | RelayedOut]:
    """A buffered generation's images and its end, or the first image to relay as it arrives."""
    images: list[ImageOut] = []
    async for event in events:
        if isinstance(event, ImageOut):
            images.append(event)
        elif isinstance(event, Finished | RelayedOut):
            return images, event
        elif isinstance(event, Failed):
            raise event.error
    raise ImagegateError("Generation ended without a result")


class _RelayBroken(Exception):
    """The generation failed after its answer started: the answer must not look complete."""


async def _relayed_body(
    generation: Generation, images: list[ImageOut], first: RelayedOut, events: AsyncIterator[GatewayEvent]
) -> AsyncIterator[Pieces]:
    """The buffered answer's JSON written while its images arrive; ``usage`` comes last."""
    yield (image_body_start(generation.created),)
    separator = b""
    for image in images:  # held whole before the first relayed one
        yield (separator + IMAGE_ITEM_START, image.b64, image_item_end(image.media_type))
        separator = b","
    event: GatewayEvent | None = first
    while True:
        if isinstance(event, RelayedOut):
            yield (separator + IMAGE_ITEM_START, event.relay.head)
            try:
                async for chunk in event.relay.chunks():
                    yield (chunk,)
            except ImagegateError as exc:
                raise _RelayBroken(exc.message) from exc
            finally:
                if not event.relay.complete:
                    event.relay.abandon()
            yield (image_item_end(event.media_type),)
        elif isinstance(event, ImageOut):
            yield (separator + IMAGE_ITEM_START, event.b64, image_item_end(event.media_type))
        elif isinstance(event, Finished):
            generation.handing_over()
            yield (image_body_end(event.usage),)
            return
        elif isinstance(event, Failed):
            raise _RelayBroken(event.error.message)
        elif event is None:
            raise _RelayBroken("the generation ended without a result")
        separator = b","
        event = await anext(events, None)


class _RelayResponse(PiecesStream):
    """A relayed answer. If the generation fails after it started, the answer is left
    incomplete and the server closes the connection: the client sees a cut, never a
    well-formed answer missing an image. ``on_sent`` is told, however it ends, whether the
    client got all of it."""

    def __init__(self, content: AsyncIterator[Pieces], *, headers: dict[str, str], on_sent: OnSent) -> None:
        super().__init__(content, media_type="application/json", headers=headers)
        self._on_sent = on_sent
        self._ended = False

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
            self._ended = True
        except _RelayBroken as exc:  # raised before the answer's end is sent: it stays open-ended
            log.warning("a relayed answer was cut off: %s", exc)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        whole = False
        try:
            await super().__call__(scope, receive, send)
            whole = self._ended and not client_gone(scope)
        finally:
            self._on_sent(whole)


async def _client_gone(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _sse(generation: Generation, keepalive_s: float) -> AsyncIterator[Pieces]:
    """``data:`` events only, ``: `` comments while waiting, ``data: [DONE]`` at the end."""
    with generation.consuming():
        yield SSE_KEEPALIVE  # flushes the headers at once
        pending_image: ImageOut | None = None  # held back: the last one carries the usage
        while True:
            try:
                async with asyncio.timeout(keepalive_s):
                    event = await generation.next_event()
            except TimeoutError:
                yield SSE_KEEPALIVE
                continue
            if event is None:
                break
            if isinstance(event, PartialOut):
                if pending_image is not None and event.image_index != pending_image.index:
                    yield _completed(generation, pending_image, None)  # keep each image's events together
                    pending_image = None
                yield sse_event(
                    {"type": "image_generation.partial_image", "partial_image_index": event.partial_index},
                    b64=event.b64,
                )
            elif isinstance(event, TextOut):
                yield sse_event({"type": "image_generation.text_chunk", "text": event.text, "phase": event.phase})
            elif isinstance(event, ImageOut):
                if pending_image is not None:
                    yield _completed(generation, pending_image, None)
                pending_image = event
            elif isinstance(event, Finished):
                generation.handing_over()
                if pending_image is not None:
                    yield _completed(generation, pending_image, event.usage)
                    pending_image = None
                generation.mark_delivered()
            elif isinstance(event, Failed):
                if pending_image is not None:  # delivered before the failure: still the client's
                    yield _completed(generation, pending_image, None)
                    pending_image = None
                yield _error_event(event.error)
        yield SSE_DONE


def _completed(generation: Generation, image: ImageOut, usage: dict[str, Any] | None) -> Pieces:
    payload: dict[str, Any] = {
        "type": "image_generation.completed",
        "media_type": image.media_type,
        "created": generation.created,
    }
    if usage is not None:
        payload["usage"] = usage
    return sse_event(payload, b64=image.b64)


def _error_event(error: ImagegateError) -> Pieces:
    code = error.error_type or ("upstream_error" if error.status >= 500 else "invalid_request")
    return sse_event({
        "type": "error",
        "error": {
            "code": code,
            "message": error.message,
            "param": error.metadata.get("param"),
            "type": "provider_error" if error.status >= 500 else "invalid_request_error",
        },
    })


def _headers(generation: Generation, attempt: Attempt, delivered: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """What was applied; the size is the delivered image's own when it is known."""
    applied = attempt.applied()
    if delivered and delivered[0].get("width"):
        applied["width"], applied["height"] = delivered[0]["width"], delivered[0]["height"]
    headers = {
        "X-Generation-Id": generation.id,
        "X-Provider-Name": attempt.endpoint.provider_name,
        "X-Imagegate-Provider": attempt.endpoint.provider_slug,
        "X-Imagegate-Size": f"{applied['width']}x{applied['height']}",
        "X-Imagegate-Resolution": applied["resolution"],
        "X-Imagegate-Aspect-Ratio": applied["aspect_ratio"],
        "X-Imagegate-Format": applied["output_format"],
        "X-Imagegate-Dropped": ",".join(applied["dropped"]),
        "X-Imagegate-Clamped": ",".join(applied["clamped"]),
    }
    if "quality" in applied:
        headers["X-Imagegate-Quality"] = applied["quality"]
    return headers


