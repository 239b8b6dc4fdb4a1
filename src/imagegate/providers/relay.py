"""Relaying images while they arrive: the base64 of a JSON answer forwarded as it is read.

A buffering gateway holds a whole multi-megabyte answer before sending a byte of it; under an
ASGI server that costs ~3-4 ms per 2.3 MB image at concurrency 1 (docs/benchmarks.md). Here a
provider reads its upstream's JSON answer in the chunks it arrives in:

* ``JsonValueScanner`` splits the chunks into the document and the long string values of one
  member (``"b64_json"``), without copying or decoding the values;
* each image's value is handed on through a ``ByteRelay`` (bounded: a slow client slows the
  upstream read instead of filling memory) as soon as its first ``HEAD_B64_CHARS`` are in, enough
  to know the image's format and size;
* the rest of the document (usage, size, format) is parsed once the answer is complete.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from imagegate.errors import UpstreamError

#: Base64 held back before an image is relayed: 48 KiB of image, enough for its header.
HEAD_B64_CHARS = 64 * 1024
#: Base64 a relay buffers ahead of its reader before the writer waits.
RELAY_BUFFER_BYTES = 4 * 1024 * 1024
#: Base64 a reader takes at a time: every piece sent costs a trip through the ASGI stack,
#: and upstream reads are often 16-64 KiB.
RELAY_PIECE_BYTES = 512 * 1024
#: Base64 kept from the end of a value: what is checked at an image's end (integrity.py).
TAIL_B64_CHARS = 24

START, VALUE, END = "start", "value", "end"
#: Longest member text (key, whitespace, colon, quote) found when two reads cut it in two.
_STRADDLE = 64


class ByteRelay:
    """A bounded channel of base64 chunks from the provider (writer) to the response (reader).

    The reader may ``abandon`` it (its client left): from then on chunks are dropped, so the
    writer still reads its upstream answer to the end and the generation is recorded.
    """

    def __init__(self, head: bytes, max_buffered: int = RELAY_BUFFER_BYTES, piece: int = RELAY_PIECE_BYTES) -> None:
        self.head = head
        self._piece = min(piece, max_buffered)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._max_buffered = max_buffered
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._ended = False
        self._error: BaseException | None = None
        self._abandoned = False
        #: Base64 characters of the whole value, head included; its last ``TAIL_B64_CHARS``.
        self.length = len(head)
        self.tail = head[-TAIL_B64_CHARS:]

    async def put(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.length += len(chunk)
        self.tail = (self.tail + chunk[-TAIL_B64_CHARS:])[-TAIL_B64_CHARS:]
        while self._buffered >= self._max_buffered and not self._abandoned:
            self._writable.clear()
            await self._writable.wait()
        if self._abandoned:
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= self._piece:
            self._readable.set()

    def end(self, error: BaseException | None = None) -> None:
        """The value is complete, or (``error``) will never be: the reader stops either way."""
        if not self._ended:
            self._ended, self._error = True, error
            self._readable.set()

    def abandon(self) -> None:
        self._abandoned = True
        self._chunks.clear()
        self._buffered = 0
        self._writable.set()

    @property
    def complete(self) -> bool:
        return self._ended and self._error is None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The value after its head, as it arrives, in pieces of at least ``piece`` bytes (but
        the last); raises ``UpstreamError`` if it broke off."""
        while True:
            if self._chunks and (self._buffered >= self._piece or self._ended):
                piece = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                self._writable.set()
                yield piece
            elif self._ended:
                if self._error is not None:
                    raise UpstreamError("the upstream answer broke off in the middle of an image") from self._error
                return
            else:
                self._readable.clear()
                await self._readable.wait()


class JsonValueScanner:
    """Splits a JSON text fed in chunks into the document and the string values of ``key``.

    ``feed`` returns ``(START, index)``, ``(VALUE, bytes)`` and ``(END, index)`` items for each
    value of ``key`` (its text as sent, unescaped of JSON's optional ``\\/``); everything else
    is kept, with a placeholder string where each value was, and parsed by ``document``.
    A value holding any other escape sequence cannot be base64 and fails the answer.
    """

    def __init__(self, key: str) -> None:
        self._member = re.compile(rb'"' + re.escape(key.encode()) + rb'"\s*:\s*"')
        self._doc = bytearray()
        self._in_value = False
        self._pending_backslash = False
        self.values = 0

    def feed(self, chunk: bytes) -> Iterator[tuple[str, Any]]:
        # Offsets and views into ``chunk``, never slices of it: a read may be megabytes, and
        # every fresh copy that size costs its page faults too.
        view, pos = memoryview(chunk), 0
        while pos < len(chunk):
            if self._in_value:
                pos = yield from self._value(chunk, view, pos)
                continue
            start = self._find_value(chunk, pos)
            if start is None:
                self._doc += view[pos:]
                return
            self._doc += view[pos:start]
            self._doc += b"\\u0000lifted:%d" % self.values
            self._in_value = True
            pos = start
            yield START, self.values

    def _find_value(self, chunk: bytes, pos: int) -> int | None:
        """Where the next value of the member starts in ``chunk`` (after its opening quote)."""
        # A member cut in two by the reads: it starts in what is kept and ends in this read.
        tail = bytes(self._doc[-_STRADDLE:])
        probe = tail + chunk[pos : pos + _STRADDLE]
        for match in self._member.finditer(probe):
            if match.start() >= len(tail):
                break
            if match.end() > len(tail) and not _escaped(probe, match.start()):
                return pos + match.end() - len(tail)
        match = self._member.search(chunk, pos)
        while match is not None:
            before = chunk[match.start() - 1] if match.start() > pos else (self._doc[-1] if self._doc else 0)
            if before != 0x5C:  # not escaped, so not inside another string
                return match.end()
            match = self._member.search(chunk, match.end())
        return None

    def _value(self, chunk: bytes, view: memoryview, pos: int) -> Iterator[tuple[str, Any]]:
        """Value bytes (views of ``chunk``) up to its closing quote; returns where it stopped."""
        if self._pending_backslash:
            self._pending_backslash = False
            if chunk[pos : pos + 1] != b"/":
                raise UpstreamError("an image in the upstream answer is not plain base64")
            yield VALUE, b"/"
            pos += 1
        end = chunk.find(b'"', pos)
        stop = len(chunk) if end < 0 else end
        if stop > pos:
            part: bytes | memoryview = view[pos:stop]
            if chunk.find(b"\\", pos, stop) >= 0:
                part = self._unescape(bytes(part))
            if part:
                yield VALUE, part
        if end < 0:
            return len(chunk)
        self._in_value = False
        self.values += 1
        yield END, self.values - 1
        return end  # the closing quote belongs to the document

    def _unescape(self, part: bytes) -> bytes:
        if part.endswith(b"\\") and not part.endswith(b"\\\\"):
            self._pending_backslash, part = True, part[:-1]
        unescaped = part.replace(b"\\/", b"/")
        if b"\\" in unescaped:
            raise UpstreamError("an image in the upstream answer is not plain base64")
        return unescaped

    def document(self) -> Any:
        """The parsed document, each value replaced by ``"\\x00lifted:<n>"``; ``None`` when the
        text was not JSON or ended inside a value."""
        if self._in_value:
            return None
        try:
            return orjson.loads(self._doc)
        except orjson.JSONDecodeError:
            return None


def _escaped(text: bytes, at: int) -> bool:
    return at > 0 and text[at - 1] == 0x5C


def lifted_index(value: Any) -> int | None:
    """Which value a placeholder of ``JsonValueScanner.document`` stands for."""
    if isinstance(value, str) and value.startswith("\x00lifted:"):
        return int(value[len("\x00lifted:"):])
    return None
