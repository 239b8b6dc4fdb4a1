"""Black Forest Labs (FLUX.2, FLUX.1 Kontext): submit a task, poll it, download the result.

Wire (providers.md §4; BFL's API reference): ``POST {base}/v1/{model}`` with the ``x-key``
header and a JSON body answers ``{id, polling_url, cost, input_mp, output_mp}``; ``GET
polling_url`` answers a ``status`` until it is ``Ready`` with ``result.sample``, a signed URL on
an asset host that expires after about ten minutes, so it is downloaded at once. One image per
task: the catalog sets ``images_per_call: 1`` and the gateway fans out for larger ``n``.

``cost`` is what BFL charges for the task, in credits: the submit answer's is its estimate, a
``Ready`` poll may carry the settled one (``SettledCostResultResponse``), which wins. The cost
BFL states is the cost; the catalog's lines price a task only when BFL states none.

The polling URL is absolute and may name another host (``api.us1.bfl.ai`` …). The key goes
only to the configured base URL's own scheme, host and port, or to a host matching
``trusted_hosts`` (``*.bfl.ai`` unless configured, same scheme as the base URL); a polling
URL anywhere else is refused without being contacted. Result downloads never carry the key.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import pybase64

from imagegate import imaging
from imagegate.errors import (
    InternalError,
    InvalidRequest,
    UpstreamError,
    UpstreamTimeout,
)
from imagegate.providers import NotConfigured, require
from imagegate.providers.base import (
    Blob,
    Done,
    Image,
    Progress,
    ProviderEvent,
    ProviderJob,
    Usage,
)
from imagegate.providers.http import (
    HttpPool,
    Reply,
    error_message,
    polling,
    upstream_error,
)

log = logging.getLogger(__name__)

SLUG = "black-forest-labs"
NAME = "Black Forest Labs"

DEFAULT_BASE_URL = "https://api.bfl.ai"
SUBMIT_PATH = "/v1/{model}"
#: The documented legacy poll form, for a submit answer without ``polling_url``.
LEGACY_POLL_PATH = "/v1/get_result?id={id}"
#: Hosts BFL hands out polling URLs on (api.us1.bfl.ai, api.eu2.bfl.ai, gateway.bfl.ai).
DEFAULT_TRUSTED_HOSTS = ("*.bfl.ai",)
DEFAULT_PORTS = {"http": 80, "https": 443}

#: ``input_image``, ``input_image_2`` … ``input_image_8``: BFL's most references (FLUX.2).
REFERENCE_FIELDS = ("input_image", *(f"input_image_{i}" for i in range(2, 9)))

#: BFL recommends polling every 0.5–1.5 s; generations take ~5–60 s.
POLL_FIRST_DELAY_S = 0.5
POLL_MAX_DELAY_S = 2.0
#: Consecutive 429/5xx/connection failures of the poll tolerated: the task is paid for already.
MAX_POLL_FAILURES = 3

# Poll ``status`` values (BFL's API reference).
READY = "Ready"
PENDING = frozenset({"Pending"})
#: Moderation status → what was refused.
MODERATED = {"Request Moderated": "the request", "Content Moderated": "the generated image"}
FAILED = frozenset({"Error", "Failed", "Task not found"})

#: "1 credit = $0.01 USD" (https://docs.bfl.ai/quick_start/pricing).
USD_PER_CREDIT = Decimal("0.01")


# --- wire request ---


def build_request(job: ProviderJob) -> dict[str, Any]:
    """The submit body: size as width/height (FLUX.2) or an aspect ratio (Kontext)."""
    if len(job.references) > len(REFERENCE_FIELDS):
        raise InvalidRequest(f"{NAME} takes at most {len(REFERENCE_FIELDS)} reference images")
    body: dict[str, Any] = {"prompt": job.prompt, "output_format": job.output_format}
    if job.settings.get("sizing") == "aspect_ratio":
        body["aspect_ratio"] = job.size.aspect_ratio
    else:
        body["width"], body["height"] = job.size.width, job.size.height
    if job.seed is not None:
        body["seed"] = job.seed
    for field, reference in zip(REFERENCE_FIELDS, job.references, strict=False):
        # Raw base64: BFL takes a URL or base64 without the ``data:`` prefix.
        body[field] = pybase64.b64encode(reference.data).decode("ascii")
    body.update(job.options)  # already limited to the endpoint's allowed passthrough keys
    return body


# --- the provider ---


class BlackForestLabsProvider:
    """FLUX.2 and FLUX.1 Kontext on BFL's API, one image per task (see the module docstring)."""

    slug = SLUG
    name = NAME
    env: ClassVar[Mapping[str, str]] = {
        "api_key": "BFL_API_KEY",
        "base_url": "BFL_BASE_URL",
        "trusted_hosts": "BFL_TRUSTED_HOSTS",
    }

    def __init__(
        self,
        http: HttpPool,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        trusted_hosts: Iterable[str] = DEFAULT_TRUSTED_HOSTS,
        poll_interval_s: float = POLL_FIRST_DELAY_S,
    ) -> None:
        self._http = http
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._base = _origin(self._base_url)
        self._trusted_hosts = tuple(h.strip().lower() for h in trusted_hosts if h.strip())
        self._poll_interval_s = poll_interval_s

    @classmethod
    def configure(cls, config: Mapping[str, Any], http: HttpPool) -> BlackForestLabsProvider:
        api_key = require(config, "api_key", "BFL_API_KEY")
        base_url = str(config.get("base_url") or DEFAULT_BASE_URL)
        if _origin(base_url) is None:
            raise NotConfigured("BFL_BASE_URL must be an http(s) URL")
        hosts = config.get("trusted_hosts") or DEFAULT_TRUSTED_HOSTS
        return cls(
            http,
            api_key=api_key,
            base_url=base_url,
            trusted_hosts=hosts.split(",") if isinstance(hosts, str) else hosts,
            poll_interval_s=float(config.get("poll_interval_s", POLL_FIRST_DELAY_S)),
        )

    async def run(self, job: ProviderJob) -> AsyncIterator[ProviderEvent]:
        if job.n != 1:
            raise InternalError(
                f"{NAME} makes one image per task: its endpoints need images_per_call: 1"
            )
        polling_url, estimated = await self._submit(job)
        headers = self._poll_headers(polling_url)
        answer = None
        failures = 0
        async for _ in polling(
            NAME,
            deadline=job.deadline,
            first_delay=self._poll_interval_s,
            max_delay=POLL_MAX_DELAY_S,
        ):
            try:
                reply = await self._http.request(
                    NAME, "GET", polling_url, deadline=job.deadline, headers=headers
                )
            except UpstreamTimeout:
                raise
            except UpstreamError:  # the connection failed: the task itself goes on
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise
                continue
            if reply.status == 429 or reply.status >= 500:
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise _error(reply)
                continue
            failures = 0
            answer = parse_poll(reply)
            if answer.sample is not None:
                break
            yield Progress(answer.progress)
        assert answer is not None and answer.sample is not None  # polling() raises at the deadline
        data = await self._http.download(NAME, answer.sample, deadline=job.deadline)
        try:
            info = imaging.probe(data)
        except ValueError:
            raise UpstreamError(f"{NAME} returned a result that is not an image") from None
        yield Image(Blob.from_raw(data), info.media_type, info.width, info.height)
        settled = answer.credits if answer.credits is not None else estimated
        yield Done(_usage(job, settled))

    async def _submit(self, job: ProviderJob) -> tuple[str, Decimal | None]:
        """Creates the task; its polling URL and the credits BFL says it will charge."""
        url = self._base_url + SUBMIT_PATH.format(model=quote(job.upstream_model, safe=""))
        reply = await self._http.request(
            NAME,
            "POST",
            url,
            deadline=job.deadline,
            headers={"x-key": self._api_key},
            json=build_request(job),
        )
        if not reply.ok:
            raise _error(reply)
        body = reply.json()
        task_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise UpstreamError(
                f"{NAME} answered the submit without a task id", metadata={"provider_name": NAME}
            )
        polling_url = body.get("polling_url")
        if not isinstance(polling_url, str) or not polling_url:
            polling_url = self._base_url + LEGACY_POLL_PATH.format(id=quote(task_id, safe=""))
        return polling_url, _credits(body.get("cost"))

    def _poll_headers(self, url: str) -> dict[str, str]:
        """``x-key`` for a trusted polling host; any other host is refused before contact."""
        origin = _origin(url)
        if origin is not None and self._base is not None:
            scheme, host, _port = origin
            if origin == self._base or (
                scheme == self._base[0] and _matches(host, self._trusted_hosts)
            ):
                return {"x-key": self._api_key}
        host = urlsplit(url).hostname or url[:100]
        log.warning("%s: refusing to poll %s, which is not a trusted host", NAME, host)
        raise UpstreamError(
            f"{NAME} handed out a polling URL on {host}, which is not one of its trusted hosts "
            "(configure BFL_TRUSTED_HOSTS to allow it)",
            metadata={"provider_name": NAME},
        )


# --- response parsing ---


@dataclass(frozen=True, slots=True)
class PollAnswer:
    """A poll that did not fail: the result URL once ready, the progress while pending."""

    sample: str | None = None
    progress: float | None = None
    #: The settled cost in credits, when the ready answer carries one.
    credits: Decimal | None = None


def parse_poll(reply: Reply) -> PollAnswer:
    """The sample URL (and settled cost) when ready, the progress while pending; raises otherwise."""
    body = reply.json()
    status = body.get("status") if isinstance(body, dict) else None
    if not reply.ok and status not in FAILED:
        raise _error(reply)
    metadata = {"provider_name": NAME, "upstream_status": reply.status}
    if status == READY:
        result = body.get("result")
        sample = result.get("sample") if isinstance(result, dict) else None
        if not isinstance(sample, str) or not sample:
            raise UpstreamError(
                f"{NAME} reported the task ready without a result URL", metadata=metadata
            )
        return PollAnswer(sample=sample, credits=_credits(body.get("cost")))
    if status in PENDING:
        progress = body.get("progress")
        fraction = progress if isinstance(progress, (int, float)) and 0 <= progress <= 1 else None
        return PollAnswer(progress=fraction)
    if status in MODERATED:
        reasons = _reasons(body.get("details"))
        message = f"{status}: {MODERATED[status]} was flagged" + (
            f" ({reasons})" if reasons else ""
        )
        raise upstream_error(NAME, reply, message=message, refused=True)
    if status in FAILED:
        details = _reasons(body.get("details"))
        raise UpstreamError(
            f"{NAME} failed the generation: task status {status}"
            + (f" ({details})" if details else ""),
            metadata=metadata,
        )
    raise UpstreamError(
        f"{NAME} answered the poll with an unknown status {str(status)[:50]!r}", metadata=metadata
    )


def _usage(job: ProviderJob, credits: Decimal | None) -> Usage:
    """One task, at the cost BFL stated; BFL also bills the references' megapixels (the
    gateway measures the output)."""
    return Usage(
        output_images=1,
        input_images=len(job.references),
        input_pixels=sum(r.width * r.height for r in job.references),
        requests=1,
        stated_cost_usd=None if credits is None else credits * USD_PER_CREDIT,
    )


def _credits(value: Any) -> Decimal | None:
    """BFL's ``cost``: credits as a JSON number (nullable); anything else is no statement."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    credits = Decimal(str(value))  # the number as written, not its binary value
    return credits if credits.is_finite() and credits >= 0 else None


def _reasons(details: Any) -> str:
    """BFL's ``details``: moderation reasons (``{"Moderation Reasons": ["…"]}``) or an error text."""
    if isinstance(details, dict):
        items = [
            r for value in details.values() for r in (value if isinstance(value, list) else [value])
        ]
        return ", ".join(str(r) for r in items if r)[:200]
    return "" if details in (None, "", []) else str(details)[:200]


# --- error mapping specifics ---


def _error(reply: Reply) -> UpstreamError:
    """BFL's failed answers through the shared table.

    FastAPI shapes: ``{"detail": "…"}`` or a 422's ``{"detail": [{"loc", "msg", "type"}]}``,
    shown as ``width: …; height: …``. A 429 (more than 24 active tasks) may carry its wait in
    the body (``retry_after``) rather than in a Retry-After header.
    """
    body = reply.json()
    detail = body.get("detail") if isinstance(body, dict) else None
    message = None
    if isinstance(detail, list) and detail:
        message = "; ".join(_validation_item(item) for item in detail[:5])
    wait = body.get("retry_after") if isinstance(body, dict) else None
    stated = float(wait) if isinstance(wait, (int, float)) and not isinstance(wait, bool) else None
    return upstream_error(NAME, reply, message=message or error_message(reply), retry_after_s=stated)


def _validation_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = [str(part) for part in item.get("loc") or () if part != "body"]
    msg = str(item.get("msg") or item.get("type") or "invalid")
    return f"{'.'.join(loc)}: {msg}" if loc else msg


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an http(s) URL, default ports filled in."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def _matches(host: str, patterns: Iterable[str]) -> bool:
    """Exact host, or ``*.example.com`` for any subdomain of example.com."""
    return any(host.endswith(p[1:]) if p.startswith("*.") else host == p for p in patterns)
