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

START, VALUE, END = "start", "value", "end"


class ByteRelay:
    """A bounded channel of base64 chunks from the provider (writer) to the response (reader).

    The reader may ``abandon`` it (its client left): from then on chunks are dropped, so the
    writer still reads its upstream answer to the end and the generation is recorded.
    """

    def __init__(self, head: bytes, max_buffered: int = RELAY_BUFFER_BYTES) -> None:
        self.head = head
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._max_buffered = max_buffered
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._ended = False
        self._error: BaseException | None = None
        self._abandoned = False
        #: Base64 characters of the whole value, head included; its last two (for padding).
        self.length = len(head)
        self.tail = head[-2:]

    async def put(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.length += len(chunk)
        self.tail = (self.tail + chunk)[-2:]
        while self._buffered >= self._max_buffered and not self._abandoned:
            self._writable.clear()
            await self._writable.wait()
        if self._abandoned:
            return
        self._chunks.append(chunk)
        self._buffered += len(chunk)
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
        """The value after its head, as it arrives; raises ``UpstreamError`` if it broke off."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                self._writable.set()
                yield chunk
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
        self._scan_from = 0
        self._in_value = False
        self._pending_backslash = False
        self.values = 0

    def feed(self, chunk: bytes) -> Iterator[tuple[str, Any]]:
        while chunk:
            if self._in_value:
                chunk = yield from self._value(chunk)
                continue
            self._doc += chunk
            chunk = b""
            match = self._member.search(self._doc, self._scan_from)
            while match is not None and match.start() and self._doc[match.start() - 1] == 0x5C:
                match = self._member.search(self._doc, match.end())  # escaped: inside another string
            if match is None:
                # A member may straddle two reads: look back a little next time.
                self._scan_from = max(self._scan_from, len(self._doc) - 256)
                continue
            chunk = bytes(self._doc[match.end():])
            del self._doc[match.end():]
            self._doc += b"\\u0000lifted:%d" % self.values
            self._scan_from = len(self._doc)
            self._in_value = True
            yield START, self.values

    def _value(self, chunk: bytes) -> Iterator[tuple[str, Any]]:
        """Value bytes up to its closing quote; returns what follows it."""
        if self._pending_backslash:
            self._pending_backslash = False
            if chunk[:1] != b"/":
                raise UpstreamError("an image in the upstream answer is not plain base64")
            yield VALUE, b"/"
            chunk = chunk[1:]
        end = chunk.find(b'"')
        part = chunk if end < 0 else chunk[:end]
        if b"\\" in part:
            part = self._unescape(part)
        if part:
            yield VALUE, part
        if end < 0:
            return b""
        self._in_value = False
        self.values += 1
        yield END, self.values - 1
        return chunk[end:]  # the closing quote belongs to the document

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


def lifted_index(value: Any) -> int | None:
    """Which value a placeholder of ``JsonValueScanner.document`` stands for."""
    if isinstance(value, str) and value.startswith("\x00lifted:"):
        return int(value[len("\x00lifted:"):])
    return None
