"""``imagegate.write_chunk``: uvicorn with imagegate's protocol writes a chunk as its pieces.

A tiny ASGI app is served by the real uvicorn on loopback, once with imagegate's protocol and
once with uvicorn's own, and read over a raw socket, so the chunked framing itself is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware

from imagegate.api.app import create_app
from imagegate.api.limits import BodySizeLimit
from imagegate.api.pieces import PiecesStream
from imagegate.http_server import WRITE_CHUNK, ImagegateHttpProtocol
from imagegate.settings import Settings
from tests.conftest import serve_asgi

IMAGE = b"iVBORw0KGgo" * 50_000  # ~550 kB, as base64 of an image would be
# Views are made per use: a test elsewhere checks that no image-sized view outlives its answer.
PIECES = (b'data: {"type":"image_generation.partial_image","b64_json":"', IMAGE, b'"}\n\n')


def _pieces() -> list[bytes | memoryview]:
    return [PIECES[0], memoryview(IMAGE), PIECES[2]]


@contextlib.contextmanager
def _serving(app: Any, protocol: Any) -> Iterator[int]:
    port, stop = serve_asgi(app, http=protocol)
    try:
        yield port
    finally:
        stop()


def _get(port: int, path: str = "/") -> bytes:
    """The raw answer to one request (the server closes the connection after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        received = bytearray()
        while chunk := sock.recv(1 << 20):
            received += chunk
    return bytes(received)


def _chunks(raw: bytes) -> list[bytes]:
    """The chunks of a chunked body, as framed on the wire (the terminating one left out)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks = []
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n"
            return chunks
        chunks.append(body[:size])
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


class WritesChunks:
    """Answers with a stream of ``PIECES`` twice, recording what ``write_chunk`` said at each step."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        write = scope.get("extensions", {}).get(WRITE_CHUNK, {}).get("write")
        self.results["offered"] = write is not None
        sized = scope["path"] == "/sized"
        if write is not None:
            self.results["before the response"] = write(_pieces())
        headers = [(b"content-length", b"%d" % (2 * sum(map(len, PIECES))))] if sized else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(2):
            if write is not None and write(_pieces()):
                self.results["during"] = True
                await send({"type": "http.response.body", "body": b"", "more_body": True})
            else:
                self.results["during"] = False
                await send({"type": "http.response.body", "body": b"".join(PIECES), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if write is not None:
            self.results["after the response"] = write(_pieces())


@pytest.fixture
def app() -> WritesChunks:
    return WritesChunks()


def test_a_chunk_written_as_pieces_is_one_well_formed_chunk(app: WritesChunks) -> None:
    with _serving(app, ImagegateHttpProtocol) as port:
        chunks = _chunks(_get(port))
    assert app.results == {"offered": True, "before the response": False, "during": True, "after the response": False}
    assert chunks == [b"".join(PIECES)] * 2


def test_uvicorns_own_protocol_offers_nothing_and_the_same_bytes_go_out(app: WritesChunks) -> None:
    with _serving(app, "httptools") as port:
        chunks = _chunks(_get(port))
    assert app.results == {"offered": False, "during": False}
    assert chunks == [b"".join(PIECES)] * 2


def test_a_response_of_known_length_is_never_written_as_chunks(app: WritesChunks) -> None:
    with _serving(app, ImagegateHttpProtocol) as port:
        raw = _get(port, "/sized")
    assert app.results["during"] is False  # the body went through send, unframed
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"".join(PIECES) * 2


def test_an_event_stream_reads_the_same_through_either_protocol() -> None:
    async def events() -> Any:
        for i in range(3):
            yield [b'data: {"i":%d,"b64_json":"' % i, memoryview(IMAGE), b'"}\n\n']
        yield (b"data: [DONE]\n\n",)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await PiecesStream(events(), media_type="text/event-stream", headers={})(scope, receive, send)

    bodies = []
    for protocol in (ImagegateHttpProtocol, "httptools"):
        with _serving(app, protocol) as port:
            bodies.append(b"".join(_chunks(_get(port))))
    expected = b"".join(b'data: {"i":%d,"b64_json":"%s"}\n\n' % (i, IMAGE) for i in range(3)) + b"data: [DONE]\n\n"
    assert bodies == [expected, expected]


def test_no_middleware_of_the_app_rewrites_a_streamed_body(tmp_path: Any) -> None:
    # write_chunk goes past `send`: a middleware that rewrote bodies (compression, say) would
    # see the empty messages only. Whoever adds one must route streams around it first.
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"))
    allowed = {BodySizeLimit, CORSMiddleware, ServerErrorMiddleware, ExceptionMiddleware}
    assert {m.cls for m in app.user_middleware} <= allowed


def test_a_client_gone_is_not_written_to() -> None:
    results: list[bool] = []
    gone = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        write = scope["extensions"][WRITE_CHUNK]["write"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        results.append(write(_pieces()))
        await asyncio.get_running_loop().run_in_executor(None, gone.wait, 10)
        while (await receive())["type"] != "http.disconnect":
            pass
        results.append(write(_pieces()))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    with _serving(app, ImagegateHttpProtocol) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
        gone.set()
        deadline = time.monotonic() + 10
        while len(results) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert results == [True, False]
