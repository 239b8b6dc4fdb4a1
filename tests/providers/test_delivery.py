"""A buffered answer is billed only once the client has all of it.

A client that leaves part way through a large answer (ten 4K JPEGs from the OpenAI emulator,
about 7 MB) is not charged, whether the answer was held whole or relayed while it arrived; a
client that reads to the end is.
"""

from __future__ import annotations

import socket
import struct
from decimal import Decimal

import orjson
import pytest

from tests.conftest import LiveServer
from tests.waiting import wait_for_record

BODY = {"model": "openai/gpt-image-2", "prompt": "a harbour", "size": "3840x2160", "n": 10,
        "output_format": "jpeg", "output_compression": 100,
        "provider": {"only": ["openai"], "allow_fallbacks": False}}


def request(live: LiveServer) -> tuple[socket.socket, bytes]:
    """The request sent over a socket with a small receive buffer; the answer's head."""
    port = int(live.base_url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", port))
    body = orjson.dumps(BODY)
    sock.sendall(b"POST /api/v1/images HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
                 b"Content-Type: application/json\r\n"
                 + f"Authorization: Bearer {live.key}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    return sock, head


def generation_id(head: bytes) -> str:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-generation-id":
            return value.strip().decode()
    raise AssertionError(f"no generation id in {head!r}")


@pytest.fixture(params=["held whole", "relayed"])
def metered(request: pytest.FixtureRequest, make_server, emulator) -> LiveServer:
    openai = emulator("openai")
    live = make_server(providers={"openai": {"api_key": "test-key", "base_url": openai.url + "/v1"}},
                       relay_images=request.param == "relayed", relay_from_bytes=0)
    live.store_call(lambda s: s.add_credits(Decimal(10)))
    return live


def test_a_client_that_leaves_mid_answer_is_not_charged(metered: LiveServer) -> None:
    sock, head = request(metered)
    assert head.startswith(b"HTTP/1.1 200"), head
    sock.recv(64 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, as a crash does
    sock.close()
    record = wait_for_record(metered, generation_id(head))
    assert record["status"] == "cancelled" and record["total_cost"] == 0
    assert metered.store_call(lambda s: s.get_account()).balance_usd == Decimal(10)  # charged with the record


def test_a_client_that_reads_it_all_is_charged_what_it_was_shown(metered: LiveServer) -> None:
    sock, head = request(metered)
    received = bytearray(head)
    while chunk := sock.recv(1 << 20):  # to the end: the server closes the connection after it
        received += chunk
    sock.close()
    assert received.rstrip(b"\r\n0").endswith(b"}")
    cost = float(received.rsplit(b'"cost":', 1)[1].split(b",", 1)[0])
    record = wait_for_record(metered, generation_id(head))
    assert record["status"] == "succeeded" and record["total_cost"] == cost > 0
    assert metered.store_call(lambda s: s.get_account()).balance_usd == Decimal(10) - Decimal(repr(cost))
