"""Reference loading against a real HTTP server on 127.0.0.1 and real image bytes."""

from __future__ import annotations

import asyncio
import io
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator
from ipaddress import ip_address

import aiohttp
import pybase64
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image

from imagegate.errors import InvalidImage
from imagegate.references import (
    ReferenceLimits,
    ReferenceLoader,
    _is_public,
    guarded_connector,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

LOCAL = ("127.0.0.1/32",)


# --- image bytes ---


def encode(fmt: str, size: tuple[int, int] = (16, 12), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (200, 30, 60)).save(buf, format=fmt)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few dozen bytes whose header declares width×height RGB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + png_chunk(b"IEND", b"")
    )


PNG = encode("PNG")
JPEG = encode("JPEG")
WEBP = encode("WEBP")
GIF = encode("GIF", mode="P")
BMP = encode("BMP")
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
HTML = b"<!doctype html><html><body>not an image</body></html>"
BOMB = bomb_png(30_000, 30_000)  # 900 Mpx: past Pillow's own guard as well
SMALL_BOMB = bomb_png(8_000, 8_000)  # 64 Mpx: under Pillow's guard, over ours


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{pybase64.b64encode(data).decode()}"


# --- the test server ---


class Server:
    def __init__(self, port: int) -> None:
        self.port = port

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server() -> AsyncIterator[Server]:
    stop = asyncio.Event()

    def image(body: bytes, content_type: str = "image/png"):
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type=content_type)

        return handler

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/chain/{n - 1}" if n > 1 else "/png")

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        chunk = PNG + b"\0" * 65536
        for _ in range(2_000):  # ~128 MiB, far past any limit the tests use
            await resp.write(chunk)
        return resp

    async def slow_headers(request: web.Request) -> web.Response:
        await asyncio.wait_for(stop.wait(), timeout=5)
        return web.Response(body=PNG, content_type="image/png")

    async def slow_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        await resp.prepare(request)
        await resp.write(PNG[:8])
        while not stop.is_set():
            await resp.write(b"\0")
            await asyncio.sleep(0.05)
        return resp

    app = web.Application()
    app.router.add_get("/png", image(PNG))
    app.router.add_get("/jpeg", image(JPEG, "image/jpeg"))
    app.router.add_get("/webp", image(WEBP, "image/webp"))
    app.router.add_get("/html-as-png", image(HTML, "image/png"))
    app.router.add_get("/bomb", image(BOMB))
    app.router.add_get("/big", image(PNG + b"\0" * 200_000))
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/endless", endless)
    app.router.add_get("/slow-headers", slow_headers)
    app.router.add_get("/slow-body", slow_body)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Server(port)
    stop.set()
    await runner.cleanup()


class FixedResolver(AbstractResolver):
    """DNS as a table; unknown names fail like a real NXDOMAIN."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=addr,
                port=port,
                family=socket.AF_INET6 if ip_address(addr).version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for addr in self.table[host]
        ]

    async def close(self) -> None:
        pass


@pytest_asyncio.fixture(loop_scope="session")
async def make_loader() -> AsyncIterator:
    loaders: list[ReferenceLoader] = []

    def make(resolver: AbstractResolver | None = None, **limits) -> ReferenceLoader:
        limits.setdefault("allow_networks", LOCAL)
        loader = ReferenceLoader(ReferenceLimits(**limits), resolver=resolver)
        loaders.append(loader)
        return loader

    yield make
    for loader in loaders:
        await loader.close()


async def refused(loader: ReferenceLoader, urls: list[str], error_type: str) -> InvalidImage:
    with pytest.raises(InvalidImage) as info:
        await loader.load(urls)
    err = info.value
    assert err.status == 400
    assert err.error_type == error_type
    assert err.metadata["error_type"] == error_type
    index = err.metadata["param"]
    assert err.message.startswith(f"{index}: ")
    return err


# --- data URLs ---


@pytest.mark.parametrize(
    ("data", "media_type"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp"), (GIF, "image/gif")],
)
async def test_data_url_of_each_supported_format_loads_with_its_dimensions(
    make_loader, data, media_type
):
    (ref,) = await make_loader().load([data_url(data, media_type)])
    assert (ref.data, ref.media_type, ref.width, ref.height) == (data, media_type, 16, 12)


async def test_declared_media_type_is_ignored_in_favour_of_the_sniffed_one(make_loader):
    (ref,) = await make_loader().load([data_url(PNG, "image/jpeg")])
    assert ref.media_type == "image/png"


async def test_data_url_payload_may_be_wrapped_across_lines(make_loader):
    b64 = pybase64.b64encode(JPEG).decode()
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))
    (ref,) = await make_loader().load([f"data:image/jpeg;base64,{wrapped}\n"])
    assert ref.data == JPEG


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,not*base64!",
        "data:image/png;base64,iVBORw0KGgo",  # bad padding
        "data:image/png;base64,iVBORw0KGgo\u00e9AAA",
        "data:image/png,%89PNG%0D%0A",  # not base64 at all
        "data:image/png;base64",  # no payload separator
    ],
)
async def test_malformed_data_url_is_invalid_image(make_loader, url):
    err = await refused(make_loader(), [url], "invalid_image")
    assert err.metadata["param"] == "input_references[0]"


@pytest.mark.parametrize(
    ("data", "declared"),
    [(SVG, "image/svg+xml"), (BMP, "image/bmp"), (HTML, "image/png"), (b"\0" * 64, "image/png")],
)
async def test_formats_other_than_png_jpeg_webp_gif_are_unsupported(make_loader, data, declared):
    await refused(make_loader(), [data_url(data, declared)], "unsupported_image_format")


@pytest.mark.parametrize(
    "data",
    [PNG[:8] + b"garbage" * 10, JPEG[: len(JPEG) // 2], b"RIFF\0\0\0\0WEBPVP8 junk", b""],
)
async def test_corrupt_bytes_of_a_known_format_are_invalid_image(make_loader, data):
    await refused(make_loader(), [data_url(data)], "invalid_image")


async def test_oversized_data_url_is_refused_before_decoding(make_loader):
    # Not even valid base64: image_too_large (not invalid_image) proves no decode ran.
    await refused(
        make_loader(max_bytes=1000), ["data:image/png;base64," + "*" * 1400], "image_too_large"
    )
    await refused(make_loader(max_bytes=len(PNG) - 1), [data_url(PNG)], "image_too_large")
    (ref,) = await make_loader(max_bytes=len(PNG)).load([data_url(PNG)])
    assert ref.data == PNG


@pytest.mark.parametrize(
    "bomb", [BOMB, SMALL_BOMB], ids=["past-pillow-guard", "under-pillow-guard"]
)
async def test_decompression_bomb_is_image_too_large_without_decoding(make_loader, bomb):
    assert len(bomb) < 200
    started = time.monotonic()
    err = await refused(make_loader(), [data_url(bomb)], "image_too_large")
    assert "pixels" in err.message
    assert time.monotonic() - started < 1


async def test_max_pixels_is_configurable(make_loader):
    await refused(make_loader(max_pixels=16 * 12 - 1), [data_url(PNG)], "image_too_large")
    (ref,) = await make_loader(max_pixels=16 * 12).load([data_url(PNG)])
    assert ref.width * ref.height == 16 * 12


async def test_references_together_over_the_total_limit_are_too_large(make_loader):
    loader = make_loader(max_total_bytes=2 * len(PNG) + len(JPEG) - 1)
    await refused(loader, [data_url(PNG), data_url(JPEG), data_url(PNG)], "image_too_large")
    loader = make_loader(max_total_bytes=2 * len(PNG) + len(JPEG))
    assert len(await loader.load([data_url(PNG), data_url(JPEG), data_url(PNG)])) == 3


async def test_no_references_load_as_an_empty_tuple(make_loader):
    assert await make_loader().load([]) == ()


# --- http(s) URLs ---


async def test_images_over_http_load_in_request_order(make_loader, server):
    refs = await make_loader().load(
        [server.url("/webp"), data_url(GIF), server.url("/png"), server.url("/jpeg")]
    )
    assert [r.media_type for r in refs] == ["image/webp", "image/gif", "image/png", "image/jpeg"]
    assert [r.data for r in refs] == [WEBP, GIF, PNG, JPEG]


async def test_content_type_is_not_trusted(make_loader, server):
    await refused(make_loader(), [server.url("/html-as-png")], "unsupported_image_format")


async def test_bomb_over_http_is_image_too_large(make_loader, server):
    await refused(make_loader(), [server.url("/bomb")], "image_too_large")


async def test_redirect_within_the_limit_is_followed(make_loader, server):
    (ref,) = await make_loader().load([server.url("/redirect?to=/png")])
    assert ref.data == PNG
    (ref,) = await make_loader(max_redirects=3).load([server.url("/chain/3")])
    assert ref.data == PNG


async def test_too_many_redirects_and_loops_fail(make_loader, server):
    err = await refused(
        make_loader(max_redirects=2), [server.url("/chain/3")], "image_download_failed"
    )
    assert "redirects" in err.message
    await refused(make_loader(), [server.url("/loop")], "image_download_failed")


async def test_non_2xx_fails_with_the_status_in_the_message(make_loader, server):
    err = await refused(
        make_loader(), [data_url(PNG), server.url("/missing")], "image_download_failed"
    )
    assert err.message == "input_references[1]: download failed (HTTP 404)"
    assert err.metadata["param"] == "input_references[1]"


async def test_declared_content_length_over_the_limit_is_refused_early(make_loader, server):
    await refused(make_loader(max_bytes=65536), [server.url("/big")], "image_too_large")


async def test_endless_body_is_cut_off_at_the_limit(make_loader, server):
    started = time.monotonic()
    await refused(make_loader(max_bytes=256 * 1024), [server.url("/endless")], "image_too_large")
    assert time.monotonic() - started < 2


async def test_streamed_bytes_count_towards_the_total_limit(make_loader, server):
    loader = make_loader(max_bytes=10 * 1024 * 1024, max_total_bytes=512 * 1024)
    err = await refused(loader, [server.url("/endless")], "image_too_large")
    assert "together" in err.message


@pytest.mark.parametrize("path", ["/slow-headers", "/slow-body"])
async def test_slow_server_times_out(make_loader, server, path):
    started = time.monotonic()
    err = await refused(
        make_loader(total_timeout_s=0.3), [server.url(path)], "image_download_failed"
    )
    assert "timed out" in err.message
    assert time.monotonic() - started < 2


async def test_unreachable_port_fails_to_download(make_loader):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = await refused(make_loader(), [f"http://127.0.0.1:{port}/png"], "image_download_failed")
    assert "connect" in err.message


async def test_unknown_host_fails_to_download(make_loader):
    loader = make_loader(resolver=FixedResolver({}))
    err = await refused(loader, ["http://nowhere.example.test/png"], "image_download_failed")
    assert "not found" in err.message


async def test_one_failure_cancels_the_others_and_reports_its_index(make_loader, server):
    started = time.monotonic()
    err = await refused(
        make_loader(total_timeout_s=10),
        [server.url("/slow-headers"), "data:image/png;base64,!!!!"],
        "invalid_image",
    )
    assert err.metadata["param"] == "input_references[1]"
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/png", "file:///etc/passwd", "gopher://x/"])
async def test_schemes_other_than_http_https_and_data_are_refused(make_loader, url):
    await refused(make_loader(), [url], "image_download_failed")


async def test_redirect_to_another_scheme_is_refused(make_loader, server):
    await refused(
        make_loader(), [server.url("/redirect?to=file:///etc/passwd")], "image_download_failed"
    )


# --- non-public addresses ---


async def test_loopback_is_refused_unless_its_network_is_allowed(make_loader, server):
    err = await refused(
        make_loader(allow_networks=()), [server.url("/png")], "image_download_failed"
    )
    assert err.message == "input_references[0]: refusing to fetch from a non-public address"
    (ref,) = await make_loader(allow_networks=LOCAL).load([server.url("/png")])
    assert ref.data == PNG


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/png",
        "http://images.example.test:{port}/png",  # a name that resolves to 127.0.0.2
    ],
)
async def test_redirect_from_an_allowed_host_to_a_non_allowed_private_one_is_refused(
    make_loader, server, target
):
    resolver = FixedResolver({"images.example.test": ["127.0.0.2"]})
    url = server.url("/redirect?to=" + target.format(port=server.port))
    err = await refused(make_loader(resolver=resolver), [url], "image_download_failed")
    assert "non-public" in err.message


async def test_hostnames_are_checked_by_what_they_resolve_to(make_loader, server):
    resolver = FixedResolver({"images.example.test": ["127.0.0.1"]})
    url = server.url("/png", host="images.example.test")
    (ref,) = await make_loader(resolver=resolver).load([url])  # allowed network
    assert ref.data == PNG
    err = await refused(
        make_loader(resolver=resolver, allow_networks=()), [url], "image_download_failed"
    )
    assert "non-public" in err.message


async def test_a_name_with_any_private_address_is_refused(make_loader, server):
    resolver = FixedResolver({"mixed.example.test": ["93.184.215.14", "10.0.0.7"]})
    url = server.url("/png", host="mixed.example.test")
    err = await refused(make_loader(resolver=resolver), [url], "image_download_failed")
    assert "non-public" in err.message


@pytest.mark.parametrize(
    "host",
    [
        "[::ffff:127.0.0.1]",
        "2130706433",
        "0x7f.0.0.1",
        "017700000001",
        "127.1",
        "127.0.0.1.",
    ],
)
async def test_disguised_loopback_literals_are_refused(make_loader, server, host):
    url = f"http://{host}:{server.port}/png"
    err = await refused(make_loader(allow_networks=()), [url], "image_download_failed")
    assert "non-public" in err.message


@pytest.mark.parametrize("host", ["2130706433", "0x7f.0.0.1", "127.1"])
async def test_legacy_numeric_hosts_are_refused_even_inside_an_allowed_network(
    make_loader, server, host
):
    url = f"http://{host}:{server.port}/png"
    err = await refused(make_loader(), [url], "image_download_failed")
    assert "non-public" in err.message


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254", "127.0.0.1",
        "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1",
        "::", "::1", "fc00::1", "fd12::1", "fe80::1", "fec0::1", "ff02::1", "::ffff:10.0.0.1",
        "2002:7f00:1::", "64:ff9b::a00:1", "64:ff9b:1::1", "::7f00:1",
    ],
)  # fmt: skip
async def test_non_public_addresses_are_not_public(address):
    assert not _is_public(ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "2002:5db8:d70e::", "64:ff9b::808:808"],
)
async def test_public_addresses_are_public(address):
    assert _is_public(ip_address(address))


@pytest.mark.parametrize(
    "host", ["10.0.0.1", "100.64.0.1", "169.254.169.254", "[fe80::1]", "[fd00::1]", "[::]"]
)
async def test_literal_private_addresses_are_refused_without_connecting(make_loader, host):
    err = await refused(make_loader(), [f"http://{host}/png"], "image_download_failed")
    assert "non-public" in err.message


# --- sessions ---


async def test_an_injected_session_must_use_a_guarded_connector(server):
    limits = ReferenceLimits(allow_networks=LOCAL)
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(ValueError):
            ReferenceLoader(limits, session=plain)
    async with aiohttp.ClientSession(connector=guarded_connector(limits)) as guarded:
        loader = ReferenceLoader(limits, session=guarded)
        (ref,) = await loader.load([server.url("/png")])
        assert ref.data == PNG
        await loader.close()
        assert not guarded.closed  # the caller owns it
        with pytest.raises(ValueError):  # a different exemption than the connector's
            ReferenceLoader(ReferenceLimits(), session=guarded)


async def test_a_loader_is_reusable_across_requests(make_loader, server):
    loader = make_loader()
    for _ in range(3):
        assert len(await loader.load([server.url("/png"), server.url("/jpeg")])) == 2
