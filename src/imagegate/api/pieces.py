"""Answers written as the pieces they are made of: the JSON around each image, and the image
itself as the view of the upstream's read it arrived in. Megabytes of base64 are never
copied into one body first (measured, docs/benchmarks.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from imagegate.http_server import CLIENT_GONE, WRITE_CHUNK, WriteChunk

Pieces = Sequence[bytes | memoryview]
#: Told, once a response is over, whether it was handed over whole.
OnSent = Callable[[bool], object]


def client_gone(scope: Scope) -> bool:
    """Whether the client left before the response was complete, where the server can tell
    (``http_server.py``); elsewhere a response whose sends all returned counts as delivered."""
    check = scope.get("extensions", {}).get(CLIENT_GONE, {}).get("check")
    return bool(check and check())


class PiecesResponse(Response):
    """A whole answer of known length, sent piece by piece (one body message each).
    ``on_last`` runs just before the last piece is sent; ``on_sent`` is told whether the answer
    reached the client whole, however it ends."""

    media_type = "application/json"

    def __init__(
        self, pieces: list[bytes | memoryview], *, headers: dict[str, str], on_last: Callable[[], object],
        on_sent: OnSent,
    ) -> None:
        self.pieces = pieces
        self.on_last = on_last
        self.on_sent = on_sent
        super().__init__(None, headers={**headers, "Content-Length": str(sum(map(len, pieces)))})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        whole = False
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            last = len(self.pieces) - 1
            for i, piece in enumerate(self.pieces):
                if i == last:
                    self.on_last()
                await send({"type": "http.response.body", "body": piece, "more_body": i < last})
            whole = not client_gone(scope)
        finally:
            self.on_sent(whole)


class PiecesStream(StreamingResponse):
    """A streamed answer (chunked) whose content yields each chunk as its pieces.

    Where the server offers ``imagegate.write_chunk`` (``http_server.py``) a chunk goes out as
    its pieces in one vectored write; elsewhere it is joined and sent. That write goes past
    ``send``, so it is only for apps none of whose middleware buffers or rewrites a streamed
    body.
    """

    def __init__(self, content: AsyncIterator[Pieces], *, media_type: str, headers: dict[str, str]) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self.chunks = content  # what ``body_iterator`` holds, typed as what it yields
        self._write_chunk: WriteChunk | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._write_chunk = scope.get("extensions", {}).get(WRITE_CHUNK, {}).get("write")
        await super().__call__(scope, receive, send)

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for pieces in self.chunks:
            await self.send_chunk(send, pieces)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send_chunk(self, send: Send, pieces: Pieces) -> None:
        if self._write_chunk is not None and self._write_chunk(pieces):
            # Written; the empty body lets the server wait here while the client's buffer is full.
            await send({"type": "http.response.body", "body": b"", "more_body": True})
        else:
            body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            await send({"type": "http.response.body", "body": body, "more_body": True})
