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

It also keeps clients from holding connections for nothing (``ConnectionLimits``): a request's
headers must arrive within ``header_timeout_s`` of the connection opening (or of the request's
first byte on a kept-alive one), its body within ``body_timeout_s`` of its headers, else the
connection is closed. Beyond ``max_connections`` open connections (which keeps file
descriptors for the upstream calls and the database), a new connection takes the place of the
one that has waited longest for a request to arrive whole (a stalled client, or an idle
kept-alive one); when every connection is busy with a request, the new one is closed. A flood
of stalled connections so evicts itself, and clients that send their requests get in. A
connection whose
answer went out before its request body was read (a 401, a 413) is closed rather than made to
read the rest.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

#: The ``scope["extensions"]`` key; its value is ``{"write": write_chunk}``.
WRITE_CHUNK = "imagegate.write_chunk"

WriteChunk = Callable[[Sequence[bytes | memoryview]], bool]

#: The ``scope["extensions"]`` key; its value is ``{"check": client_gone}``.
CLIENT_GONE = "imagegate.client_gone"


log = logging.getLogger(__name__)

#: Descriptors kept for everything but client connections (the database, logs, the journal),
#: beyond one upstream connection per client connection.
RESERVED_DESCRIPTORS = 256


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float | None = 10.0
    body_timeout_s: float | None = 60.0
    #: ``None``: no cap.
    max_connections: int | None = None


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to the hard one; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # not allowed here: keep what there is
            log.warning("could not raise the open files limit from %d to %d", soft, hard)
    return soft


def connection_cap(open_files: int) -> int:
    """Client connections a process with ``open_files`` descriptors can hold while each still
    gets an upstream connection and the process keeps ``RESERVED_DESCRIPTORS`` for the rest."""
    return max(16, (open_files - RESERVED_DESCRIPTORS) // 2)


class ImagegateHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), each request's scope offering ``write_chunk``,
    with the connection limits of ``limits`` (see ``protocol_with``)."""

    limits = ConnectionLimits()
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        waiting = _waiting(self.server_state)
        cap = self.limits.max_connections
        if cap is not None and len(self.connections) > cap:
            if (oldest := next(iter(waiting), None)) is None:
                _crowded.note(cap, evicted=False)
                transport.close()
                return
            _crowded.note(cap, evicted=True)
            oldest._evict()
        waiting[self] = None
        self._arm(self.limits.header_timeout_s, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        _waiting(self.server_state).pop(self, None)
        super().connection_lost(exc)

    def _evict(self) -> None:
        _waiting(self.server_state).pop(self, None)
        self._disarm()
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a kept-alive connection's next request
            self._arm(self.limits.header_timeout_s, "headers")

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # not an upgrade: a request to answer
            extensions = self.scope.setdefault("extensions", {})
            extensions[WRITE_CHUNK] = {"write": partial(_write_chunk, cycle)}
            extensions[CLIENT_GONE] = {"check": partial(_client_gone, cycle)}
            self._arm(self.limits.body_timeout_s, "body")  # disarmed when the body is complete

    def on_message_complete(self) -> None:
        self._disarm()
        _waiting(self.server_state).pop(self, None)  # a whole request: being answered
        super().on_message_complete()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            # Answered before its body was read (refused): reading the rest would be for nothing.
            self._disarm()
            self.transport.close()
            return
        super().on_response_complete()
        if not self.transport.is_closing():
            _waiting(self.server_state)[self] = None  # kept alive, idle: last in line

    def _arm(self, timeout_s: float | None, what: str) -> None:
        self._disarm()
        if timeout_s is not None and not self.transport.is_closing():
            self._deadline = self.loop.call_later(timeout_s, self._too_slow, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, what: str) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("closed a connection whose request %s did not arrive in time", what)
            self.transport.close()


def _waiting(server_state: object) -> dict[ImagegateHttpProtocol, None]:
    """A server's connections waiting for a request to arrive whole, longest waiting first."""
    waiting = getattr(server_state, "imagegate_waiting", None)
    if waiting is None:
        waiting = {}
        server_state.imagegate_waiting = waiting  # type: ignore[attr-defined]
    return waiting


class _Crowding:
    """Connections over the cap, logged once a minute at most (a flood would flood the log)."""

    def __init__(self) -> None:
        self.evicted = self.refused = 0
        self._logged_at = -60.0

    def note(self, cap: int, *, evicted: bool) -> None:
        if evicted:
            self.evicted += 1
        else:
            self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= 60:
            log.warning("%d connections open, at the cap (max_connections): %d waiting ones evicted for new "
                        "ones, %d new ones closed with every connection busy (so far)", cap, self.evicted,
                        self.refused)
            self._logged_at = now


_crowded = _Crowding()


def protocol_with(limits: ConnectionLimits) -> type[ImagegateHttpProtocol]:
    """The protocol class to give uvicorn (``http=``), with these limits."""
    return type("ImagegateHttpProtocol", (ImagegateHttpProtocol,), {"limits": limits})


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
