"""SVG from upstreams made safe to hand to clients.

An SVG is a document, not only a picture: opened on its own (a saved file, a new tab, an
``<object>``, markup put into a page) it runs its scripts and event handlers, loads what it
references and follows its links. Every SVG an upstream sends passes through
:func:`sanitized_events` before anything else sees it (``generation.py`` wraps each provider
in :class:`SanitizingProvider`): images and previews labelled SVG are sanitized, and so is the
``draft`` text of a streaming SVG model, which is the markup of the image being made.

The sanitizer is Cloudflare's svg-hush (Rust, fuzzed, serving Cloudflare Images), through its
Python bindings py-svg-hush. It keeps an allowlist of SVG elements and attributes (no script,
no ``on*`` handler, no ``foreignObject``, nothing outside the SVG namespace, no animation of
``href`` or handlers), filters CSS, turns every URL into a same-origin path or drops it
(``javascript:`` and every other scheme, in attributes and in CSS ``url()`` alike; links of
``<a>`` dropped), drops ``data:`` URLs other than the raster images kept here, drops processing
instructions and comments, reads no external DTD and bounds entity expansion. Python has no
maintained SVG sanitizer of its own: ``nh3`` and ``bleach`` clean HTML, ``defusedxml`` only
defuses parsing, and the SVG packages on PyPI are prototypes or profile checkers.

Two limits come first. svg-hush holds the GIL while it works (about 0.1 s per MB of markup,
measured), so an SVG over :data:`MAX_SVG_BYTES` is refused. And it indents its output two
spaces per level, so a deeply nested document grows quadratically (a 600 KB one filled the
machine's memory): a first pass with the standard library's expat counts the levels and
refuses a document over :data:`MAX_INDENT_LEVELS`. It also refuses a document that is not
well-formed or that declares entities (however this Python's expat bounds their expansion).

An SVG that cannot be made safe is refused: as an image, the upstream's answer is malformed (a
502, and another provider may be tried); as a preview or a draft, it is dropped. So is an image
relayed while it arrives that is SVG (the gateway never asks for SVG to be relayed: it must be
whole to be sanitized). Markup under a raster label (an upstream that says PNG and sends an
SVG) fails the check that an image is what it says (``integrity.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from xml.parsers import expat

from py_svg_hush import filter_svg

from imagegate import imaging
from imagegate.errors import UpstreamError
from imagegate.providers.base import (
    MEDIA_TYPES,
    Blob,
    Done,
    Image,
    Partial,
    Provider,
    ProviderEvent,
    ProviderJob,
    RelayedImage,
    TextChunk,
)

log = logging.getLogger(__name__)

SVG = MEDIA_TYPES["svg"]
#: Largest SVG sanitized (svg-hush holds the GIL: about 0.8 s at this size).
MAX_SVG_BYTES = 8 * 1024 * 1024
#: Most levels of indentation svg-hush may write, all elements together (each element at depth
#: d is indented by 2·d spaces, twice when it has children): at most 16 MiB of indentation.
MAX_INDENT_LEVELS = 4 * 1024 * 1024
#: ``data:`` URLs kept, by type and subtypes: raster images (an ``<image>``'s embedded bitmap).
KEPT_DATA_URLS = {"image": ["png", "jpeg", "gif", "webp"]}


def sanitize_svg(data: bytes) -> bytes:
    """``data`` with everything that is not plain drawing taken out; ``ValueError``, saying
    why, when it cannot be made safe (see the module's docstring)."""
    if len(data) > MAX_SVG_BYTES:
        raise ValueError(f"it is over {MAX_SVG_BYTES} bytes")
    _check_nesting(data)
    try:
        return filter_svg(data, KEPT_DATA_URLS)
    except ValueError as exc:  # svg-hush: "XML parsing error", "No acceptable SVG elements" …
        raise ValueError(f"svg-hush refused it ({exc})") from None


@dataclass(frozen=True, slots=True)
class SanitizingProvider:
    """``provider``, with every SVG in its events sanitized (:func:`sanitized_events`)."""

    provider: Provider
    provider_name: str

    @property
    def slug(self) -> str:
        return self.provider.slug

    def run(self, job: ProviderJob) -> AsyncIterator[ProviderEvent]:
        return sanitized_events(self.provider.run(job), self.provider_name)


async def sanitized_events(
    events: AsyncIterator[ProviderEvent], provider_name: str
) -> AsyncIterator[ProviderEvent]:
    """``events`` with every SVG in them sanitized, or refused (see the module's docstring).

    ``draft`` text chunks are held until the image they draft (or the end), then passed on
    sanitized as one chunk: markup cannot be sanitized in pieces, and a client may render it.
    """
    drafts: list[str] = []
    async for event in events:
        if isinstance(event, TextChunk) and event.phase == "draft":
            drafts.append(event.text)
            continue
        if drafts and isinstance(event, Image | Done):
            if draft := await _sanitized_draft(drafts, provider_name):
                yield draft
            drafts = []
        if isinstance(event, Image):
            yield await _safe_image(event, provider_name)
        elif isinstance(event, Partial):
            if (preview := await _safe_preview(event, provider_name)) is not None:
                yield preview
        elif isinstance(event, RelayedImage) and _relayed_svg(event):
            event.relay.abandon()
            raise UpstreamError(f"{provider_name} sent an SVG image where none was asked for",
                                metadata={"provider_name": provider_name})
        else:
            yield event
    if drafts and (draft := await _sanitized_draft(drafts, provider_name)):
        yield draft


async def _safe_image(event: Image, provider_name: str) -> Image:
    metadata = {"provider_name": provider_name}
    if event.media_type != SVG:  # whether it is the raster image it says is ``integrity``'s check
        return event
    try:
        clean = await imaging.offload(sanitize_svg, event.image.raw)
    except ValueError as exc:
        raise UpstreamError(f"{provider_name} sent an SVG image that cannot be made safe: {exc}",
                            metadata=metadata) from None
    return replace(event, image=Blob.from_raw(clean))


async def _safe_preview(event: Partial, provider_name: str) -> Partial | None:
    try:
        if event.media_type != SVG:
            return event
        clean = await imaging.offload(sanitize_svg, event.image.raw)
    except ValueError as exc:
        log.info("%s: a preview was dropped: %s", provider_name, exc)
        return None
    return replace(event, image=Blob.from_raw(clean))


async def _sanitized_draft(drafts: list[str], provider_name: str) -> TextChunk | None:
    try:
        clean = await imaging.offload(sanitize_svg, "".join(drafts).encode("utf-8"))
    except ValueError as exc:
        log.info("%s: its draft markup was dropped: %s", provider_name, exc)
        return None
    return TextChunk(clean.decode("utf-8"), "draft")


def _relayed_svg(event: RelayedImage) -> bool:
    return event.media_type == SVG


def _check_nesting(data: bytes) -> None:
    parser = expat.ParserCreate()
    depth = levels = 0

    def start(_name: str, _attributes: dict[str, str]) -> None:
        nonlocal depth, levels
        depth += 1
        levels += depth
        if levels > MAX_INDENT_LEVELS:
            raise ValueError("it is nested too deeply")

    def end(_name: str) -> None:
        nonlocal depth
        depth -= 1

    def entity(name: str, *_declaration: object) -> None:
        raise ValueError(f"it declares an entity ({name}): no drawing needs one, attacks do")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = entity
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise ValueError(f"it is not well-formed XML ({exc})") from None
