"""One generation's run: its attempts, its events, and its record.

A ``Generation`` is prepared by the gateway (``gateway.py``) with everything the client could
get wrong already checked. ``start`` runs its attempts in a task of its own, so a client that
goes away does not kill a generation that is already paid for upstream: it completes, is
recorded, and is not billed to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pybase64

from imagegate import billing, imaging, integrity
from imagegate.billing import Cost
from imagegate.capabilities import (
    OutputPlan,
)
from imagegate.catalog import Endpoint, Model
from imagegate.errors import (
    ImagegateError,
    InternalError,
    UpstreamError,
    UpstreamTimeout,
)
from imagegate.fanout import fan_out
from imagegate.providers.base import (
    MEDIA_TYPES,
    Blob,
    Done,
    Image,
    Partial,
    ProviderJob,
    ReferenceImage,
    RelayedImage,
    TextChunk,
    Usage,
)
from imagegate.providers.relay import ByteRelay
from imagegate.ratelimit import NO_LEASE, Lease
from imagegate.sizing import AppliedSize
from imagegate.store import NOTHING_HELD, Admission, GenerationRecord, KeyRecord, Settlement
from imagegate.svgsafety import SanitizingProvider
from imagegate.wire import ImageRequest

if TYPE_CHECKING:
    from imagegate.gateway import Gateway

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a finished run waits for its consumer before recording "not delivered".
CONSUMER_GRACE_S = 600.0



# --- what a Generation emits to the API layer ---


@dataclass(frozen=True, slots=True)
class PartialOut:
    image_index: int  # which output it previews
    partial_index: int  # 0, 1, … per output, as OpenAI numbers partial images
    b64: bytes | memoryview
    media_type: str


@dataclass(frozen=True, slots=True)
class TextOut:
    text: str
    phase: str


@dataclass(frozen=True, slots=True)
class ImageOut:
    index: int
    b64: bytes | memoryview
    media_type: str


@dataclass(frozen=True, slots=True)
class RelayedOut:
    """An output image still arriving, to be sent on as it does (buffered answers only): its
    base64 is ``relay.head`` then ``relay.chunks()``. Once one is sent, no fallback is possible."""

    index: int
    relay: ByteRelay
    media_type: str
    attempt: Attempt
    #: Its entry of the record's images (``bytes`` filled in once it is complete).
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finished:
    usage: dict[str, Any]
    attempt: Attempt  # the endpoint that answered
    #: What was delivered: [{width, height, media_type, bytes, sha256}] per image (the sha256,
    #: when the operator records it, is filled in after delivery, before the record is written).
    images: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Failed:
    error: ImagegateError


GatewayEvent = PartialOut | TextOut | ImageOut | RelayedOut | Finished | Failed


@dataclass(frozen=True, slots=True)
class Attempt:
    """One endpoint, with the request already translated for it."""

    endpoint: Endpoint
    size: AppliedSize
    output: OutputPlan
    quality: str | None
    seed: int | None
    dropped: tuple[str, ...]
    options: Mapping[str, Any]

    def token_limits(self, *, streamed: bool) -> billing.TokenLimits:
        """The most tokens this endpoint declares it bills, for this attempt's size and quality
        where its catalog entry gives a rule for output image tokens."""
        settings = self.endpoint.settings
        limits = billing.TokenLimits.from_settings(settings)
        if rule := settings.get("output_image_tokens"):
            per_image = billing.output_image_tokens(
                rule, self.size.width, self.size.height, self.quality,
                streamed=streamed and self.endpoint.supports_streaming,
            )
            limits = replace(limits, output_per_image=per_image)
        return limits

    def usage_ceiling(self, n: int, prompt: str, references: Sequence[ReferenceImage], *, streamed: bool) -> Usage:
        """The most a generation on this endpoint can consume: what is reserved for it, and
        the bound on the tokens its upstream may report (references only where it takes them)."""
        endpoint = self.endpoint
        takes_references = "input_references" in endpoint.supported_parameters
        return billing.worst_case_usage(
            n=n,
            per_call=endpoint.settings.get("images_per_call"),
            rules=endpoint.size_rules,
            prompt=prompt,
            reference_pixels=[r.width * r.height for r in references] if takes_references else [],
            limits=self.token_limits(streamed=streamed),
        )

    def applied(self) -> dict[str, Any]:
        """What the client gets on this endpoint (headers and the generation record)."""
        applied: dict[str, Any] = {
            "provider_slug": self.endpoint.provider_slug,
            "width": self.size.width,
            "height": self.size.height,
            "resolution": self.size.resolution,
            "aspect_ratio": self.size.aspect_ratio,
            "output_format": self.output.final_format,
            "dropped": list(self.dropped),
            "clamped": sorted(self.size.clamped),
            "adjustments": list(self.size.adjustments),
            "converted": self.output.converts,
        }
        if self.quality is not None:
            applied["quality"] = self.quality
        if self.output.compression is not None:
            applied["output_compression"] = self.output.compression
        if self.output.transparent:
            applied["background"] = "transparent"
        return applied


@dataclass
class _Outcome:
    """What a run found out, for the generation record."""

    tried: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    #: Each output's description and its base64, when the record keeps sha256s (_hash_images).
    unhashed: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)
    usage: Usage | None = None
    cost: Cost = field(default_factory=lambda: Cost(billing.ZERO, billing.ZERO, billing.ZERO))
    error: ImagegateError | None = None
    answered: Attempt | None = None
    first_event_at: float | None = None
    #: The upstream call was cancelled (the client left and the operator cancels then).
    cancelled: bool = False


@dataclass
class _Answer:
    """One attempt's answer as it comes: its images, and the events it holds back until the
    attempt has succeeded (buffered mode) or passes on at once (relayed images)."""

    attempt: Attempt
    started: float
    held: list[GatewayEvent] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    unhashed: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)
    relayed: list[RelayedOut] = field(default_factory=list)


@dataclass
class Generation:
    """A prepared generation. ``start()`` runs it; ``events()`` reads what it produces.

    The consumer (the API layer) wraps its reading in ``consuming()`` and calls
    ``mark_delivered()`` once the client has the final result; the run waits for that before
    it records the outcome, so a result the client never received is never billed.
    """

    id: str
    request: ImageRequest
    key: KeyRecord
    model: Model
    attempts: list[Attempt]
    references: tuple[ReferenceImage, ...]
    gateway: Gateway
    streamed: bool = False
    #: The money held for it (none: no key limit, unmetered account; charged when it settles).
    admission: Admission = NOTHING_HELD
    #: Unix seconds, from the gateway's clock.
    created: int = 0
    delivered: bool = False
    origin: str | None = None  # the client's HTTP-Referer
    app_title: str | None = None  # the client's X-OpenRouter-Title / X-Title
    #: The rate-limit slot this generation holds until it ends (not until the client leaves).
    lease: Lease = NO_LEASE
    _outcome: _Outcome = field(default_factory=_Outcome)
    _handed_over: bool = False
    _started: float = 0.0
    _queue: asyncio.Queue[GatewayEvent | None] = field(default_factory=asyncio.Queue)
    _consumed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    @property
    def primary(self) -> Attempt:
        return self.attempts[0]

    def start(self) -> None:
        # Known from now on, so that a lookup right after the answer waits for its record.
        self.gateway.recording(self.id)
        self._task = asyncio.create_task(self._run(), name=f"generation {self.id}")
        self.gateway.track(self._task)

    async def events(self) -> AsyncIterator[GatewayEvent]:
        while (event := await self.next_event()) is not None:
            yield event

    async def next_event(self) -> GatewayEvent | None:
        """The next event; ``None`` once there are no more. A wait cancelled by its caller (a
        keep-alive's timeout) loses nothing: an event arriving meanwhile waits for the next call."""
        return await self._queue.get()

    @contextlib.contextmanager
    def consuming(self) -> Iterator[None]:
        try:
            yield
        finally:
            self._consumed.set()
            while not self._queue.empty():  # images no one will read: let their upstream finish
                if isinstance(event := self._queue.get_nowait(), RelayedOut):
                    event.relay.abandon()
            if not self.delivered and self.gateway.options.cancel_on_disconnect and self._task:
                self._task.cancel()  # the operator chose to stop paying for abandoned work

    def handing_over(self) -> None:
        """The last bytes of the client's answer are about to be written. Written down first
        (``store/journal.py``): a process killed once they are out still bills the answer."""
        outcome = self._outcome
        if self.gateway.journal is not None and outcome.answered is not None and outcome.error is None:
            self.gateway.journal.delivered(self.id, outcome.cost.total, self._record_of(outcome, billed=True),
                                           reserved=self.admission.reserved)
            self._handed_over = True

    def mark_delivered(self) -> None:
        """The client has the whole answer: it is billed."""
        self.delivered = True

    def withdraw(self) -> None:
        """The client left before the end of its answer (which may already be written down as
        handed over)."""
        if self._handed_over and self.gateway.journal is not None:
            self.gateway.journal.withdrawn(self.id)

    # --- the run ---

    async def _run(self) -> None:
        self._started = time.monotonic()
        outcome = self._outcome
        try:
            await self._try_attempts(outcome)
        except asyncio.CancelledError:
            outcome.cancelled = True
            raise
        except Exception:  # a bug of ours: masked for the client, logged in full
            log.exception("generation %s crashed", self.id)
            outcome.error = InternalError("Internal server error")
            await self._queue.put(Failed(outcome.error))
        finally:
            await self.lease.release()
            await self._queue.put(None)
            try:
                async with asyncio.timeout(CONSUMER_GRACE_S):  # no task of its own, unlike wait_for
                    await self._consumed.wait()
            except TimeoutError:
                log.warning("generation %s: consumer never finished reading", self.id)
            try:
                await self._record(outcome)
            finally:
                self.gateway.recorded(self.id)

    async def _try_attempts(self, outcome: _Outcome) -> None:
        sent_to_client = False
        for attempt in self.attempts:
            answer = _Answer(attempt, time.monotonic())
            try:
                async for event in self._run_attempt(attempt):
                    if outcome.first_event_at is None:
                        outcome.first_event_at = time.monotonic()
                    if isinstance(event, Usage):  # the provider's last word: the answer is complete
                        ceiling = self._ceiling(attempt)
                        self._check_reported(attempt, event, ceiling)
                        await self._answered(answer, outcome, event, ceiling)
                        continue  # what is left is the provider's own teardown (its connection)
                    if isinstance(event, ImageOut):
                        answer.images.append(_describe(event))
                        if self.gateway.options.record_output_sha256:  # else nothing keeps the image
                            answer.unhashed.append((answer.images[-1], event.b64))
                    if isinstance(event, RelayedOut):  # goes out now, and whatever was before it
                        answer.images.append(event.info)
                        answer.relayed.append(event)
                        if self._consumed.is_set():
                            event.relay.abandon()
                        for earlier in answer.held:
                            await self._queue.put(earlier)
                        answer.held.clear()
                        sent_to_client = True
                        await self._queue.put(event)
                        continue
                    if self.streamed:
                        sent_to_client = True
                        await self._queue.put(event)
                    else:
                        answer.held.append(event)
            except ImagegateError as exc:
                if outcome.answered is attempt:  # the client has its answer: a teardown problem only
                    log.info("generation %s: %s failed after its answer (%s)", self.id,
                             attempt.endpoint.provider_slug, exc.message)
                    return
                outcome.tried.append(_attempt_record(attempt, answer.started, exc))
                outcome.error = exc
                outcome.usage = None
                self.gateway.observe(attempt, ok=False, started=answer.started, status=exc.status, error=exc)
                can_fall_back = self.gateway.may_fall_back(exc) and not sent_to_client
                if can_fall_back and attempt is not self.attempts[-1]:
                    log.info("generation %s: %s failed (%s); falling back", self.id,
                             attempt.endpoint.provider_slug, exc.message)
                    continue
                await self._queue.put(Failed(exc))
                return
            if outcome.answered is not attempt:  # ended without a word on usage: measured instead
                await self._answered(answer, outcome, None, self._ceiling(attempt))
            return

    async def _answered(self, answer: _Answer, outcome: _Outcome, reported: Usage | None, ceiling: Usage) -> None:
        """The attempt succeeded: it is recorded, and the client gets what it is owed and Finished.
        ``ceiling`` is the most the attempt could consume (``_ceiling``)."""
        attempt = answer.attempt
        outcome.tried.append(_attempt_record(attempt, answer.started, None))
        megapixels = sum((i["width"] or 0) * (i["height"] or 0) for i in answer.images) / 1_000_000
        self.gateway.observe(attempt, ok=True, started=answer.started, megapixels=megapixels)
        for event in answer.relayed:
            event.info["bytes"] = integrity.decoded_length(event.relay.length, event.relay.tail)
        outcome.answered, outcome.error = attempt, None
        outcome.images, outcome.unhashed = answer.images, answer.unhashed
        for event in answer.held:
            await self._queue.put(event)
        usage = _measured_usage(reported or Usage(), answer.images, self._references_for(attempt))
        usage = self._unreported_tokens_priced(attempt, usage, len(answer.images), ceiling)
        outcome.usage = usage
        outcome.cost = billing.compute_cost(attempt.endpoint.pricing, usage, attempt.size.resolution)
        await self._queue.put(Finished(billing.usage_to_wire(usage, outcome.cost), attempt, answer.images))
        await asyncio.sleep(0)  # the client's answer goes out before the rest of this run

    async def _run_attempt(self, attempt: Attempt) -> AsyncIterator[GatewayEvent | Usage]:
        provider = self.gateway.providers[attempt.endpoint.provider]
        timeout = float(attempt.endpoint.settings.get("timeout_s", self.gateway.provider_timeout_s))
        name = attempt.endpoint.provider_name
        produced = 0
        partials: dict[int, int] = {}
        arriving: list[RelayedImage] = []  # relayed images whose end is still to be checked
        try:
            async with asyncio.timeout(timeout):
                per_call = attempt.endpoint.settings.get("images_per_call")
                safe = SanitizingProvider(provider, attempt.endpoint.provider_name)
                async for event in fan_out(safe, self._job(attempt, timeout), per_call):
                    if isinstance(event, Partial):
                        # A broken preview is dropped, not the attempt: previews are never billed,
                        # the final image is checked on its own, and a client is promised at most
                        # the previews it asked for (OpenAI sends fewer when the image is quick).
                        if problem := _image_problem(event.image, event.media_type, None, None):
                            log.warning("generation %s: dropped a preview: %s sent one that %s", self.id,
                                        name, problem)
                            continue
                        number = partials[event.index] = partials.get(event.index, -1) + 1
                        yield PartialOut(event.index, number, event.image.b64, event.media_type)
                    elif isinstance(event, TextChunk):
                        yield TextOut(event.text, event.phase)
                    elif isinstance(event, Image):
                        if problem := _image_problem(event.image, event.media_type, event.width, event.height):
                            raise self._malformed_image(name, problem)
                        blob, media_type = await _shape_output(event, attempt.output)
                        yield ImageOut(produced, blob.b64, media_type)
                        produced += 1
                    elif isinstance(event, RelayedImage):  # its start now, before a byte goes out
                        relay = event.relay
                        if problem := integrity.b64_start_problem(relay.head, event.media_type,
                                                                  event.width, event.height):
                            relay.abandon()  # its upstream may read on: nothing waits for it
                            raise self._malformed_image(name, problem)
                        arriving.append(event)
                        info = _image_info(event.width, event.height, event.media_type, None)
                        yield RelayedOut(produced, relay, event.media_type, attempt, info)
                        produced += 1
                    elif isinstance(event, Done) and produced:
                        self._check_relayed_ends(name, arriving)
                        yield event.usage
        except TimeoutError:
            raise UpstreamTimeout(f"{name} did not answer within {timeout:g} s") from None
        if produced == 0:
            raise UpstreamError(f"{name} returned no image")
        self._check_relayed_ends(name, arriving)  # an upstream that ended without a Done

    def _check_relayed_ends(self, provider_name: str, arriving: list[RelayedImage]) -> None:
        """The end of each relayed image that is complete. A bad one fails the attempt before its
        answer's end goes out: the client is cut off, as when an upstream breaks off mid-image."""
        while arriving:
            event = arriving.pop(0)
            relay = event.relay
            if relay.complete and (problem := integrity.b64_end_problem(relay.head, relay.tail, relay.length,
                                                                         event.media_type)):
                raise self._malformed_image(provider_name, problem)

    def _malformed_image(self, provider_name: str, problem: str) -> UpstreamError:
        """A malformed answer: a 502, nothing charged, and retryable (another endpoint may do better)."""
        log.warning("generation %s: %s returned a malformed image: it %s", self.id, provider_name, problem)
        return UpstreamError(f"{provider_name} returned an image that {problem}",
                             metadata={"provider_name": provider_name})

    def _ceiling(self, attempt: Attempt) -> Usage:
        return attempt.usage_ceiling(self.request.n or 1, self.request.prompt, self.references,
                                     streamed=self.streamed)

    def _check_reported(self, attempt: Attempt, reported: Usage, ceiling: Usage) -> None:
        """Usage that cannot be true (negative, not a number, beyond what the endpoint declares)
        makes the answer malformed: a 502, nothing charged."""
        limits = attempt.token_limits(streamed=self.streamed)
        if problem := billing.usage_problem(reported, ceiling, limits):
            name = attempt.endpoint.provider_name
            log.warning("generation %s: %s reported an impossible usage: %s", self.id, name, problem)
            raise UpstreamError(f"{name} returned a malformed answer: its usage says {problem}",
                                metadata={"provider_name": name})

    def _unreported_tokens_priced(self, attempt: Attempt, usage: Usage, images: int, ceiling: Usage) -> Usage:
        """Tokens a paid endpoint bills that its upstream did not report, taken as the most the
        endpoint declares for what was delivered (``ceiling``): an answer without usage is never free."""
        billed = {line.billable for line in attempt.endpoint.pricing if line.unit == "token" and line.cost_usd}
        filled: dict[str, int] = {}
        if "output_image" in billed and images and not usage.output_image_tokens:
            filled["output_image_tokens"] = ceiling.output_image_tokens // max(1, ceiling.output_images) * images
        if "input_image" in billed and usage.input_images and not usage.input_image_tokens:
            filled["input_image_tokens"] = ceiling.input_image_tokens
        if "input_text" in billed and self.request.prompt and not usage.input_text_tokens:
            filled["input_text_tokens"] = ceiling.input_text_tokens
        if not filled or usage.stated_cost_usd is not None:
            return usage
        log.warning("generation %s: %s reported no %s; billed as the most the endpoint declares", self.id,
                    attempt.endpoint.provider_name, ", ".join(filled))
        return replace(usage, **filled)

    def _references_for(self, attempt: Attempt) -> tuple[ReferenceImage, ...]:
        """References go only to endpoints that take them; elsewhere they are a dropped parameter."""
        return self.references if "input_references" in attempt.endpoint.supported_parameters else ()

    def _job(self, attempt: Attempt, timeout: float) -> ProviderJob:
        request, listed = self.request, attempt.endpoint.supported_parameters
        return ProviderJob(
            upstream_model=attempt.endpoint.upstream_model,
            prompt=request.prompt,
            n=request.n or 1,
            size=attempt.size,
            output_format=attempt.output.native_format,
            quality=attempt.quality,
            background=request.background if "background" in listed else None,
            output_compression=attempt.output.compression if "output_compression" in listed else None,
            seed=attempt.seed,
            references=self._references_for(attempt),
            options=attempt.options,
            stream=self.streamed and attempt.endpoint.supports_streaming,
            deadline=time.monotonic() + timeout,
            settings=attempt.endpoint.settings,
            relay_from=self.gateway.options.relay_from_bytes if self._may_relay(attempt) else None,
        )

    def _may_relay(self, attempt: Attempt) -> bool:
        """Whether images may go out while they arrive: a buffered answer from one upstream call,
        nothing to convert, sanitize or hash (all of which need whole images)."""
        per_call = attempt.endpoint.settings.get("images_per_call")
        options = self.gateway.options
        return (
            options.relay_images
            and not self.streamed
            and not attempt.output.converts
            and attempt.output.native_format != "svg"
            and not options.record_output_sha256
            and (per_call is None or (self.request.n or 1) <= per_call)
        )

    async def _record(self, outcome: _Outcome) -> None:
        if outcome.error is None and outcome.answered is not None and outcome.unhashed:
            await _hash_images(outcome.unhashed)
        # The images are the client's now: not held while the settlement waits for its batch.
        outcome.unhashed = []
        record = self._record_of(outcome)
        # Charged what was delivered, nothing otherwise; the record goes in the same transaction.
        settlement = Settlement(
            self.id, outcome.cost.total if record.status == "succeeded" else None,
            reserved=self.admission.reserved, share=self.admission.share,
            key_id=self.key.id, account_id=self.key.account_id, record=record,
        )
        try:
            await self.gateway.store.finish(settlement)
        except Exception:  # the journal still has it: settled when a process next replays it
            log.exception("generation %s: could not settle and record it", self.id)
        else:
            if self.gateway.journal is not None:
                self.gateway.journal.finished(self.id)

    def _record_of(self, outcome: _Outcome, *, billed: bool | None = None) -> GenerationRecord:
        """The generation's record as things stand: billed when its answer was delivered (or
        as it will be once handed over, ``billed=True``)."""
        error, answered = outcome.error, outcome.answered
        last = answered or _attempt_by_slug(self.attempts, outcome.tried[-1]["provider_slug"] if outcome.tried else None)
        succeeded = error is None and answered is not None
        billed = succeeded and (self.delivered if billed is None else billed)
        status = "succeeded" if billed else "cancelled" if succeeded or outcome.cancelled else "failed"
        usage, started = outcome.usage, self._started
        return GenerationRecord(
            id=self.id,
            key_id=self.key.id,
            model=self.model.id,
            provider_name=last.endpoint.provider_name if last else "",
            provider_slug=last.endpoint.provider_slug if last else None,
            status=status,
            http_status=200 if error is None else error.status,
            error_message=None if error is None else error.message,
            streamed=self.streamed,
            cancelled=status == "cancelled",
            created_at=datetime.fromtimestamp(self.created, UTC),
            latency_ms=None if outcome.first_event_at is None else round((outcome.first_event_at - started) * 1000),
            generation_time_ms=round((time.monotonic() - started) * 1000),
            num_images=len(outcome.images) if succeeded else 0,
            num_references=len(self._references_for(last)) if last else 0,
            usage={} if usage is None else billing.usage_to_wire(usage, outcome.cost, billed=billed),
            applied=(last or self.primary).applied(),
            images=outcome.images if succeeded else [],
            attempts=outcome.tried,
            session_id=self.request.session_id,
            user=self.request.user,
            origin=self.origin,
            app_title=self.app_title,
        )


async def _shape_output(event: Image, plan: OutputPlan) -> tuple[Blob, str]:
    """Convert only what the client asked for and the upstream could not give."""
    if not plan.converts and event.media_type == MEDIA_TYPES.get(plan.final_format, event.media_type):
        return event.image, event.media_type
    if event.media_type == MEDIA_TYPES["svg"]:
        return event.image, event.media_type  # vectors are never rasterized
    converted = await imaging.transcode_async(
        event.image.raw,
        to_format=plan.final_format,
        compression=plan.compression,
        transparent=plan.convert_transparency,
    )
    return Blob.from_raw(converted), MEDIA_TYPES[plan.final_format]


def _image_problem(image: Blob, media_type: str, width: int | None, height: int | None) -> str | None:
    """What is wrong with an upstream's image, read from its two ends (``integrity``): its raw
    bytes when it came as such, else its base64, never decoded whole."""
    if image.decoded:
        return integrity.raw_problem(image.raw, media_type, width, height)
    if image.flaw:
        return f"is not valid base64: {image.flaw}"
    return integrity.b64_problem(image.b64, media_type, width, height)


def _measured_usage(reported: Usage, images: list[dict[str, Any]], references: tuple[ReferenceImage, ...]) -> Usage:
    """The provider's usage, with counts the gateway measured itself taking precedence.

    References are sent with every upstream call, so a fanned-out generation consumes them
    once per call. Whatever else the provider reported (tokens, a stated cost) is kept.
    """
    output_pixels = sum((img["width"] or 0) * (img["height"] or 0) for img in images)
    calls = max(1, reported.requests)
    return replace(
        reported,
        output_images=len(images) or reported.output_images,
        output_pixels=output_pixels or reported.output_pixels,
        input_images=len(references) * calls,
        input_pixels=sum(ref.width * ref.height for ref in references) * calls,
    )


#: Base64 decoded to read an output's dimensions from its header (48 KiB of image).
HEADER_B64_CHARS = 64 * 1024
#: Base64 holding a PNG's width and height (whole 4-character groups).
PNG_SIZE_B64_CHARS = -(-imaging.PNG_SIZE_BYTES // 3) * 4
#: Base64 decoded at a time while hashing an output (a multiple of 4: chunks decode alone).
HASH_CHUNK_B64_CHARS = 1 << 20


def _describe(image: ImageOut) -> dict[str, Any]:
    """Dimensions and size of an output: what the record keeps instead of the payload.

    Nothing is decoded whole: the dimensions come from the header (see ``_dimensions``), the
    size from the base64 length. The ``sha256`` is filled in by :func:`_hash_images` once the
    client has the image, when the operator asked for it (``record_output_sha256``);
    otherwise it stays ``None``.
    """
    b64 = image.b64
    try:
        width, height = _dimensions(b64)
    except ValueError:  # binascii.Error is one too
        width = height = None
    return _image_info(width, height, image.media_type, integrity.decoded_length(len(b64), bytes(b64[-2:])))


def _dimensions(b64: bytes | memoryview) -> tuple[int, int]:
    """An image's width and height from its header: a PNG's from its first bytes, any other
    from the first 48 KiB, or from the whole image when its metadata runs past that."""
    if size := imaging.png_size(pybase64.b64decode(b64[:PNG_SIZE_B64_CHARS], validate=True)):
        return size
    try:
        info = imaging.probe(pybase64.b64decode(b64[:HEADER_B64_CHARS], validate=True))
    except ValueError:
        if len(b64) <= HEADER_B64_CHARS:
            raise
        info = imaging.probe(Blob.from_b64(b64).raw)  # metadata past the first 48 KiB
    return info.width, info.height


def _image_info(width: int | None, height: int | None, media_type: str, size: int | None) -> dict[str, Any]:
    return {"width": width, "height": height, "media_type": media_type, "bytes": size, "sha256": None}


def _sha256_b64(b64: bytes | memoryview) -> str | None:
    """sha256 of the image a base64 text holds, decoded a chunk at a time; None when invalid."""
    digest = hashlib.sha256()
    with memoryview(b64) as view:
        try:
            for start in range(0, len(view), HASH_CHUNK_B64_CHARS):
                digest.update(pybase64.b64decode(view[start : start + HASH_CHUNK_B64_CHARS], validate=True))
        except ValueError:
            return None
    return digest.hexdigest()


def _hash_images(unhashed: list[tuple[dict[str, Any], bytes]]) -> asyncio.Future[None]:
    """Fill in each output's ``sha256``, computed on the imaging pool (started at once)."""

    def hash_all() -> None:
        for info, b64 in unhashed:
            info["sha256"] = digest = _sha256_b64(b64)
            if digest is None:
                log.warning("an output of %s bytes is not valid base64; its sha256 is unknown", info["bytes"])

    return asyncio.get_running_loop().run_in_executor(imaging.EXECUTOR, hash_all)


def _attempt_record(attempt: Attempt, started: float, error: ImagegateError | None) -> dict[str, Any]:
    return {
        "provider_name": attempt.endpoint.provider_name,
        "provider_slug": attempt.endpoint.provider_slug,
        "status": 200 if error is None else error.status,
        "latency_ms": round((time.monotonic() - started) * 1000),
        "error": None if error is None else error.message,
    }


def _attempt_by_slug(attempts: list[Attempt], slug: str | None) -> Attempt | None:
    return next((a for a in attempts if a.endpoint.provider_slug == slug), None)
