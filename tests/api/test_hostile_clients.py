"""Clients that attack: bodies that cost to read, connections held for nothing, headers and
prompts without end. Each is refused cheaply, and service goes on for everyone else."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import threading

import httpx
import orjson
import pytest

from imagegate.http_server import RESERVED_DESCRIPTORS, connection_cap
from tests.conftest import LiveServer
from tests.waiting import eventually, wait_for_record

IMAGE = {"model": "imagegate/sandbox", "prompt": "a red fox"}


def connect(server: LiveServer) -> socket.socket:
    url = httpx.URL(server.base_url)
    sock = socket.create_connection((url.host, url.port), timeout=30)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:  # closed with what we sent still unread
        pass
    return received


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_a_big_body_without_a_valid_key_is_refused_before_it_is_read(server: LiveServer) -> None:
    sock = connect(server)
    head = (b"POST /api/v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer sk-ig-v1-wrong\r\nContent-Length: 64000000\r\n\r\n")
    sock.sendall(head + b'{"model": "imagegate/sandbox", "prompt": "' + b"a" * 1024)
    answer = read_answer(sock)  # while 63.9 MB of the body were never sent
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 401"), answer[:200]
    assert orjson.loads(body)["error"]["code"] == 401


def test_a_big_body_with_a_valid_key_is_read_and_answered(server: LiveServer) -> None:
    body = orjson.dumps({**IMAGE, "user": "u" * 100_000})  # over the size where the key goes first
    response = httpx.post(f"{server.api_url}/images", content=body, headers=server.auth(), timeout=30)
    assert response.status_code == 200, response.text


def test_an_ordinary_malformed_body_is_a_400_even_without_a_key(server: LiveServer) -> None:
    response = httpx.post(f"{server.api_url}/images", content=b"{not json", timeout=30)
    assert response.status_code == 400  # OpenRouter's order: the body before the key


def test_a_body_of_a_million_tiny_fields_is_refused_without_being_parsed(server: LiveServer) -> None:
    fields = b",".join(b'"k%d":1' % i for i in range(300_000))
    body = b'{"model": "imagegate/sandbox", "prompt": "x", "provider": {' + fields + b"}}"
    response = httpx.post(f"{server.api_url}/images", content=body, headers=server.auth(), timeout=30)
    assert response.status_code == 400
    assert "too many fields" in response.json()["error"]["message"]


def test_a_prompt_over_the_configured_length_is_a_400_and_nothing_runs(make_server) -> None:
    live = make_server(max_prompt_chars=100)
    ok = httpx.post(f"{live.api_url}/images", json={**IMAGE, "prompt": "p" * 100}, headers=live.auth(), timeout=30)
    assert ok.status_code == 200
    wait_for_record(live, ok.headers["x-generation-id"])
    long = httpx.post(f"{live.api_url}/images", json={**IMAGE, "prompt": "p" * 101}, headers=live.auth(), timeout=30)
    assert long.status_code == 400
    error = long.json()["error"]
    assert error["metadata"]["param"] == "prompt" and "at most 100" in error["message"]
    assert "x-generation-id" not in long.headers
    assert len(live.store_call(lambda s: s.list_generations())) == 1


def test_client_headers_are_cut_before_they_are_stored(server: LiveServer) -> None:
    headers = {**server.auth(), "X-Title": "t" * 1_000_000, "HTTP-Referer": "https://r.example/" + "r" * 100_000,
               "X-Session-Id": "s" * 10_000}
    response = httpx.post(f"{server.api_url}/images", json=IMAGE, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    wait_for_record(server, response.headers["x-generation-id"])
    [record] = [r for r in server.store_call(lambda s: s.list_generations(limit=1000))
                if r.id == response.headers["x-generation-id"]]
    assert (len(record.app_title), len(record.origin), len(record.session_id)) == (256, 2048, 256)


def stalled_flood(server: LiveServer, count: int) -> list[socket.socket]:
    """Half the connections stop in the middle of their headers, half in the middle of their body."""
    socks = []
    for i in range(count):
        sock = connect(server)
        if i % 2:
            sock.sendall(b"POST /api/v1/images HTTP/1.1\r\nHost: x\r\nContent-Len")
        else:
            sock.sendall(b"POST /api/v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + b"Authorization: Bearer " + server.key.encode() + b"\r\nContent-Length: 1000\r\n\r\n{")
        socks.append(sock)
    return socks


def test_a_flood_of_stalled_connections_is_closed_and_service_goes_on(make_server) -> None:
    live = make_server(header_timeout_s=1.0, body_timeout_s=1.0, max_connections=40)
    slow = {**IMAGE, "provider": {"options": {"imagegate": {"latency_ms": 1500}}}}
    in_flight: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: in_flight.append(
        httpx.post(f"{live.api_url}/images", json=slow, headers=live.auth(), timeout=60)))
    worker.start()
    eventually(lambda: live.app.state.gateway.in_flight, lambda n: n == 1)  # the slow generation started
    flood = stalled_flood(live, 100)  # beyond the cap: they evict each other
    try:
        # New clients are served while the flood is on, and work under way goes on.
        response = _post_or_none(live)
        assert response is not None and response.status_code == 200 and response.json()["data"]
        worker.join(timeout=60)
        assert in_flight and in_flight[0].status_code == 200
        # Every stalled connection is closed by the server, evicted or timed out.
        eventually(lambda: sum(closed_by_server(s) for s in flood), lambda n: n == len(flood), within_s=30)
    finally:
        for sock in flood:
            sock.close()


def _post_or_none(live: LiveServer) -> httpx.Response | None:
    try:
        return httpx.post(f"{live.api_url}/images", json=IMAGE, headers=live.auth(), timeout=10)
    except httpx.HTTPError:
        return None


def test_past_the_cap_a_new_connection_takes_the_place_of_the_longest_waiting(make_server) -> None:
    live = make_server(header_timeout_s=30.0, max_connections=10)
    stalled = stalled_flood(live, 10)
    more = stalled_flood(live, 3)  # each takes the place of the oldest
    try:
        response = _post_or_none(live)  # takes the place of the next oldest, and is served
        assert response is not None and response.status_code == 200
        assert [closed_by_server(s) for s in stalled + more] == [True] * 4 + [False] * 9
    finally:
        for sock in stalled + more:
            sock.close()


def test_past_the_cap_with_every_connection_busy_a_new_one_is_closed(make_server) -> None:
    live = make_server(max_connections=4)
    slow = {**IMAGE, "provider": {"options": {"imagegate": {"latency_ms": 1500}}}}
    busy = [threading.Thread(target=lambda: httpx.post(f"{live.api_url}/images", json=slow, headers=live.auth(),
                                                        timeout=60)) for _ in range(4)]
    for thread in busy:
        thread.start()
    eventually(lambda: live.app.state.gateway.in_flight, lambda n: n == 4)
    extra = connect(live)
    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_answer(extra) == b""  # closed without an answer: no connection could give way
    extra.close()
    for thread in busy:
        thread.join(timeout=60)
    assert _post_or_none(live).status_code == 200


def test_the_open_files_limit_is_raised_to_the_hard_limit_at_start() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    script = (
        "import resource; from imagegate.http_server import raise_open_files_limit;"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, (256, {hard}));"
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == [str(hard), str(hard)]


@pytest.mark.parametrize("open_files", [1024, 20_000, 65_536])
def test_the_connection_cap_leaves_an_upstream_connection_each_and_descriptors_for_the_rest(open_files: int) -> None:
    cap = connection_cap(open_files)
    assert 2 * cap + RESERVED_DESCRIPTORS <= open_files
    assert cap >= (open_files - RESERVED_DESCRIPTORS) // 2 - 1
