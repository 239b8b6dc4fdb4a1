"""The provider contract: one normalized job in, one async stream of events out.

A synchronous upstream yields one ``Image`` per output and a ``Done``; a submit-and-poll
upstream yields ``Progress`` while it polls; a streaming upstream yields ``Partial`` first.
The gateway turns the same events into a JSON body or into SSE, so every provider reaches
the client the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pybase64

from imagegate.errors import UpstreamError
from imagegate.providers.relay import ByteRelay

if TYPE_CHECKING:
    from imagegate.sizing import AppliedSize

MEDIA_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "svg": "image/svg+xml",
    "gif": "image/gif",
}
FORMATS_BY_MEDIA_TYPE = {v: k for k, v in MEDIA_TYPES.items()}


#: Characters a decoded JSON string may hold that would end or escape one it is written into.
_BREAKS_JSON = ('"', "\\", "\n", "\r")


class Blob:
    """Encoded image bytes that may arrive raw or already base64-encoded.

    A provider's base64 that needs no conversion is forwarded without decoding, and raw
    bytes are encoded once; both directions are computed lazily and cached.
    """

    __slots__ = ("_raw", "_b64", "flaw")

    def __init__(self, *, raw: bytes | None = None, b64: bytes | memoryview | None = None) -> None:
        if raw is None and b64 is None:
            raise ValueError("a Blob needs raw bytes or base64")
        self._raw = raw
        self._b64 = b64
        #: Why base64 an upstream sent cannot be what it says, found where it was cheap to see.
        self.flaw: str | None = None

    @classmethod
    def from_raw(cls, raw: bytes) -> Blob:
        return cls(raw=raw)

    @classmethod
    def from_b64(cls, b64: bytes | memoryview | str) -> Blob:
        """``b64`` may be a view of a larger upstream body: forwarded without being copied.

        A ``str`` is a value a JSON parser decoded: escapes in it have become quotes,
        backslashes or line ends, which would break out of the JSON string it is written into
        (checked here, where it costs a scan at memory speed; the ends are checked later)."""
        if not isinstance(b64, str):
            return cls(b64=b64)
        blob = cls(b64=b64.encode("ascii", "replace"))
        if not b64.isascii() or any(c in b64 for c in _BREAKS_JSON):
            blob.flaw = "it holds characters that are not base64"
        return blob

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            assert self._b64 is not None
            self._raw = pybase64.b64decode(self._b64, validate=True)
        return self._raw

    @property
    def b64(self) -> bytes | memoryview:
        if self._b64 is None:
            assert self._raw is not None
            self._b64 = pybase64.b64encode(self._raw)
        return self._b64

    @property
    def decoded(self) -> bool:
        return self._raw is not None


@dataclass(frozen=True, slots=True)
class ReferenceImage:
    """An input reference, already fetched or decoded and checked against limits."""

    data: bytes
    media_type: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Usage:
    """What one generation consumed, in every unit a pricing line may bill.

    Providers fill in what their upstream reports; the gateway fills in what it can
    measure itself (image counts, pixels of outputs and references). Pixels, not megapixels:
    each pricing line says how many pixels its megapixel has.
    """

    output_images: int = 0
    output_pixels: int = 0
    output_image_tokens: int = 0
    input_images: int = 0
    input_pixels: int = 0
    input_image_tokens: int = 0
    input_text_tokens: int = 0
    input_fonts: int = 0
    #: Text the model wrote besides its images (thinking included), billed at a text rate.
    output_text_tokens: int = 0
    requests: int = 1
    #: What the upstream says it charged for the call, in USD; when given, it is the cost.
    stated_cost_usd: Decimal | None = None


def usage_count(raw: Any, what: str, provider_name: str) -> int:
    """A count from an upstream's usage (absent is 0). Anything but a non-negative whole
    number makes the answer malformed: a 502, and nothing is charged for it."""
    if raw is None:
        return 0
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise UpstreamError(
            f"{provider_name} returned a malformed answer: its usage says {what} is {raw!r}",
            metadata={"provider_name": provider_name},
        )
    return raw


@dataclass(frozen=True, slots=True)
class ProviderJob:
    """One generation, normalized and checked against the endpoint it is sent to.

    Every value here is one the endpoint accepts; parameters the endpoint does not list
    are already dropped (``None``).
    """

    upstream_model: str
    prompt: str
    n: int
    size: AppliedSize
    output_format: str  # the native format to ask the upstream for
    quality: str | None = None
    background: str | None = None
    output_compression: int | None = None
    seed: int | None = None
    references: tuple[ReferenceImage, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False
    #: ``time.monotonic()`` by which the upstream must have answered.
    deadline: float | None = None
    #: Endpoint-specific settings from the catalog (base URL overrides, deployment names ...).
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: The client waits for one buffered answer and nothing needs whole images first: a
    #: provider may hand each image of at least this many base64 bytes on while it arrives
    #: (``RelayedImage``). ``None``: never.
    relay_from: int | None = None


@dataclass(frozen=True, slots=True)
class Partial:
    """A preview of output ``index``; never billed."""

    index: int
    image: Blob
    media_type: str


@dataclass(frozen=True, slots=True)
class TextChunk:
    """Text the model writes: ``content``, ``reasoning``, or ``draft``, the markup of the image
    being made by an SVG model, in pieces (the gateway passes it on sanitized, whole:
    ``svgsafety.py``)."""

    text: str
    phase: str = "content"  # content | reasoning | draft


@dataclass(frozen=True, slots=True)
class Progress:
    """The upstream is still working (a poll came back pending)."""

    fraction: float | None = None


@dataclass(frozen=True, slots=True)
class Image:
    """One finished output image, encoded in ``media_type``."""

    image: Blob
    media_type: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class RelayedImage:
    """One output image still arriving: its base64 is ``relay.head``, then ``relay.chunks()``."""

    relay: ByteRelay
    media_type: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """The last event of a successful run."""

    usage: Usage


ProviderEvent = Partial | TextChunk | Progress | Image | RelayedImage | Done


@runtime_checkable
class Provider(Protocol):
    slug: str

    def run(self, job: ProviderJob) -> AsyncIterator[ProviderEvent]: ...
