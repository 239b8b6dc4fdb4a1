"""The HTTP server imagegate runs on: uvicorn's httptools protocol, plus one ASGI extension.

``imagegate.write_chunk`` (in ``scope["extensions"]``) writes one chunk of a chunked response
as the pieces it is made of, in one vectored write, instead of ASGI's one ``bytes`` body per
message. An image event of a stream is the JSON around the image plus the image itself (a
view of the upstream's read): sent through ``send``, it is joined once by the app (a body is
one ``bytes``) and once more by uvicorn (chunk size line + body + CRLF): two copies of a
2.3 MB event took 245–345 µs in place (measured, docs/benchmarks.md). Written as pieces, it
is copied only by the kernel.

The extension returns ``False`` when it cannot write the chunk (no response started yet, one
that is not chunked or already complete, a client that is gone): the caller then sends the
chunk the standard way. After a written chunk the caller still sends an empty body message,
so that uvicorn's flow control (waiting while the client's socket buffer is full) and its
disconnect handling apply as for any other body. Apps run on another server never see the
extension and use ``send`` alone.

The write goes past ``send``, and so past every middleware wrapping it: it is only for apps
none of whose middleware buffers or rewrites a streamed body (``tests/api/test_http_server.py``
holds imagegate's stack to that).

``imagegate.client_gone`` tells whether the client went away while the response was being
sent: uvicorn's ``send`` then returns as if all were well, and an answer that never arrived
whole must not be billed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

#: The ``scope["extensions"]`` key; its value is ``{"write": write_chunk}``.
WRITE_CHUNK = "imagegate.write_chunk"

WriteChunk = Callable[[Sequence[bytes | memoryview]], bool]

#: The ``scope["extensions"]`` key; its value is ``{"check": client_gone}``.
CLIENT_GONE = "imagegate.client_gone"


class ImagegateHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), each request's scope offering ``write_chunk``."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # not an upgrade: a request to answer
            extensions = self.scope.setdefault("extensions", {})
            extensions[WRITE_CHUNK] = {"write": partial(_write_chunk, cycle)}
            extensions[CLIENT_GONE] = {"check": partial(_client_gone, cycle)}


def _write_chunk(cycle: RequestResponseCycle, pieces: Sequence[bytes | memoryview]) -> bool:
    """One chunk of ``cycle``'s chunked response, written as ``pieces``; whether it was."""
    try:
        writable = (
            cycle.chunked_encoding is True
            and cycle.response_started
            and not cycle.response_complete
            and not cycle.disconnected
            and not cycle.transport.is_closing()
        )
    except AttributeError:  # a uvicorn whose cycle keeps its state otherwise: send() will do
        return False
    if not writable:
        return False
    size = sum(map(len, pieces))
    if size:  # an empty chunk would end the response
        cycle.transport.writelines([b"%x\r\n" % size, *pieces, b"\r\n"])
    return True


def _client_gone(cycle: RequestResponseCycle) -> bool:
    """Whether the connection was lost before ``cycle``'s response was complete."""
    return bool(getattr(cycle, "disconnected", False))
