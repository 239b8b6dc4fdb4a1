"""Input references: ``data:`` and http(s) URLs in, checked ``ReferenceImage``s out.

Nothing a client sends is trusted: the format is sniffed from magic bytes, dimensions are
read from the header and bounded before any pixel is decoded, and URLs are fetched only
from public addresses. The address check lives in the connector's resolver, so the socket
is opened to exactly the addresses that were checked (no second lookup to rebind), and
redirects are followed by hand so every hop passes the same checks.

Every failure is an ``InvalidImage`` (400) naming the reference, with one of the
``error_type``s ``invalid_image``, ``image_too_large``, ``unsupported_image_format`` or
``image_download_failed``. A URL whose scheme is neither ``data``, ``http`` nor ``https``
(also as a redirect target) is ``image_download_failed``: it is a URL we will not fetch.
"""

from __future__ import annotations

import asyncio
import binascii
import io
import ipaddress
import socket
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import aiohttp
import pybase64
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image
from yarl import URL

from imagegate.errors import InvalidImage
from imagegate.imaging import sniff_format
from imagegate.providers.base import MEDIA_TYPES, ReferenceImage

#: Magic bytes → format; the declared media type and Content-Type are ignored.
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}

#: Up to this many pixels an image is fully decoded to prove it is intact (bounded memory,
#: ~64 MiB RGBA); larger ones get Pillow's structural ``verify()`` only.
_FULL_DECODE_MAX_PIXELS = 4096 * 4096

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
#: Ask for exactly what we accept, so content negotiation never picks AVIF or SVG.
_ACCEPT = "image/png, image/jpeg, image/webp, image/gif"
_USER_AGENT = "imagegate (reference fetcher)"

#: Not covered by ``ipaddress``'s ``is_global`` on every Python we support.
_NAT64 = IPv6Network("64:ff9b::/96")  # embeds an IPv4 address; judged by that
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")  # RFC 8215 local-use translation
_CGNAT = IPv4Network("100.64.0.0/10")

_NON_PUBLIC = "refusing to fetch from a non-public address"


@dataclass(frozen=True, slots=True)
class ReferenceLimits:
    max_bytes: int = 20 * 1024 * 1024  # per image, encoded
    max_total_bytes: int = 64 * 1024 * 1024  # all references of one request
    max_pixels: int = 50_000_000  # width*height, from the header before any decode
    connect_timeout_s: float = 5.0  # DNS + TCP/TLS connect, per hop
    total_timeout_s: float = 20.0  # per fetch, all redirect hops and the body included
    max_redirects: int = 3
    #: CIDRs exempt from the non-public address refusal (an operator's internal asset hosts).
    allow_networks: tuple[str, ...] = ()


class ReferenceLoader:
    """Loads a request's references. One per process: it keeps an HTTP connection pool.

    ``session``, when given, must have been built on ``guarded_connector(limits)`` with the
    same ``allow_networks`` (anything else could reach private addresses); the loader does
    not close it. ``resolver`` is the DNS lookup under the address check of the loader's own
    session (tests inject a fixed mapping).
    """

    def __init__(
        self,
        limits: ReferenceLimits = ReferenceLimits(),
        *,
        session: aiohttp.ClientSession | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._limits = limits
        self._allow = _parse_networks(limits.allow_networks)
        if session is not None:
            if resolver is not None:
                raise ValueError("pass the resolver to guarded_connector(), not with a session")
            connector = session.connector
            if connector is None or _GUARDED_CONNECTORS.get(connector) != self._allow:
                raise ValueError(
                    "session must use guarded_connector() with the same allow_networks"
                )
        self._session = session
        self._owns_session = session is None
        self._resolver = resolver

    async def load(self, urls: Sequence[str]) -> tuple[ReferenceImage, ...]:
        """All references in request order; the first failure (by index) is raised and the
        other loads are cancelled."""
        if not urls:
            return ()
        budget = _Budget(self._limits.max_total_bytes)
        tasks = [asyncio.create_task(self._load_one(i, url, budget)) for i, url in enumerate(urls)]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc
        return tuple(task.result() for task in tasks)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # --- one reference ---

    async def _load_one(self, index: int, url: str, budget: _Budget) -> ReferenceImage:
        try:
            if url[:5].lower() == "data:":
                data = await asyncio.to_thread(_decode_data_url, url, self._limits.max_bytes)
                budget.take(len(data))
            else:
                data = await self._fetch(url, budget)
            return await asyncio.to_thread(_inspect, data, self._limits.max_pixels)
        except _Refusal as refusal:
            raise InvalidImage(
                f"input_references[{index}]: {refusal.reason}",
                error_type=refusal.error_type,
                metadata={"param": f"input_references[{index}]"},
            ) from None

    async def _fetch(self, url: str, budget: _Budget) -> bytes:
        limits = self._limits
        session = self._get_session()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.total_timeout_s
        target = self._checked_url(url)
        try:
            for _hop in range(limits.max_redirects + 1):
                remaining = deadline - loop.time()
                if remaining <= 0:  # aiohttp reads a zero timeout as "none"
                    raise _Refusal("image_download_failed", "download failed (timed out)")
                timeout = aiohttp.ClientTimeout(
                    total=remaining, connect=min(limits.connect_timeout_s, remaining)
                )
                async with session.get(
                    target,
                    allow_redirects=False,
                    timeout=timeout,
                    headers={"Accept": _ACCEPT, "User-Agent": _USER_AGENT},
                ) as resp:
                    if resp.status in _REDIRECT_STATUSES:
                        target = self._redirect_target(target, resp)
                        continue
                    if not 200 <= resp.status < 300:
                        raise _Refusal(
                            "image_download_failed", f"download failed (HTTP {resp.status})"
                        )
                    return await _read_body(resp, limits.max_bytes, budget)
            raise _Refusal("image_download_failed", "download failed (too many redirects)")
        except _RefusedAddress:
            raise _Refusal("image_download_failed", _NON_PUBLIC) from None
        except TimeoutError:  # before ClientError: aiohttp's timeouts are both
            raise _Refusal("image_download_failed", "download failed (timed out)") from None
        except aiohttp.ClientConnectorDNSError:
            raise _Refusal("image_download_failed", "download failed (host not found)") from None
        except aiohttp.ClientConnectorError:
            raise _Refusal("image_download_failed", "download failed (cannot connect)") from None
        except (aiohttp.ClientError, OSError, ValueError):
            raise _Refusal("image_download_failed", "download failed") from None

    def _redirect_target(self, current: URL, resp: aiohttp.ClientResponse) -> URL:
        location = resp.headers.get("Location")
        if not location:
            raise _Refusal("image_download_failed", "download failed (redirect without Location)")
        try:
            target = current.join(URL(location))
        except ValueError:
            raise _Refusal("image_download_failed", "download failed (bad redirect)") from None
        return self._checked_url(str(target))

    def _checked_url(self, url: str) -> URL:
        """The URL to request, after the checks the resolver cannot make: the scheme, and
        literal addresses (aiohttp connects to those without asking the resolver)."""
        try:
            parsed = URL(url)
        except ValueError:
            raise _Refusal("image_download_failed", "not a valid URL") from None
        if parsed.scheme not in ("http", "https"):
            raise _Refusal("image_download_failed", "only http and https URLs can be fetched")
        host = parsed.host
        if not host:
            raise _Refusal("image_download_failed", "not a valid URL")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            if _is_legacy_numeric(host):
                raise _Refusal("image_download_failed", _NON_PUBLIC) from None
            return parsed  # a name: the guarded resolver checks what it resolves to
        if not _is_permitted(literal, self._allow):
            raise _Refusal("image_download_failed", _NON_PUBLIC)
        return parsed

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = guarded_connector(self._limits, resolver=self._resolver)
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # a proxy from the environment would bypass the address check
                cookie_jar=aiohttp.DummyCookieJar(),  # no state carried between fetches
            )
        return self._session


def guarded_connector(
    limits: ReferenceLimits = ReferenceLimits(),
    *,
    resolver: AbstractResolver | None = None,
    **connector_kwargs: object,
) -> aiohttp.TCPConnector:
    """A connector that only ever connects to addresses ``limits`` permits.

    For callers that manage the session passed to ``ReferenceLoader`` themselves. Must be
    created inside the running event loop.
    """
    allow = _parse_networks(limits.allow_networks)
    guard = _GuardedResolver(resolver or aiohttp.ThreadedResolver(), allow)
    connector = aiohttp.TCPConnector(resolver=guard, **connector_kwargs)  # type: ignore[arg-type]
    _GUARDED_CONNECTORS[connector] = allow
    return connector


# --- address policy ---

_Network = IPv4Network | IPv6Network
_Address = IPv4Address | IPv6Address

#: Connectors built by ``guarded_connector`` and the networks each one exempts.
_GUARDED_CONNECTORS: weakref.WeakKeyDictionary[aiohttp.BaseConnector, tuple[_Network, ...]] = (
    weakref.WeakKeyDictionary()
)


class _RefusedAddress(Exception):
    """Raised by the resolver. Not an ``OSError``, so aiohttp lets it through unwrapped."""


class _GuardedResolver(AbstractResolver):
    """Resolves through ``inner`` and refuses the host if ANY address is not permitted:
    a name that resolves to one public and one private address is a rebinding attempt."""

    def __init__(self, inner: AbstractResolver, allow: tuple[_Network, ...]) -> None:
        self._inner = inner
        self._allow = allow

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            try:
                address = ipaddress.ip_address(result["host"])
            except ValueError:
                raise _RefusedAddress(host) from None
            if not _is_permitted(address, self._allow):
                raise _RefusedAddress(host)
        return results

    async def close(self) -> None:
        await self._inner.close()


def _parse_networks(cidrs: Sequence[str]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _is_permitted(address: _Address, allow: tuple[_Network, ...]) -> bool:
    # ::ffff:a.b.c.d is the IPv4 host a.b.c.d, for the exemption as for the refusal.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allow):
        return True
    return _is_public(address)


def _is_public(address: _Address) -> bool:
    # NAT64 (inside the reserved ::/8) reaches the IPv4 address it embeds; judge that one.
    if isinstance(address, IPv6Address) and address in _NAT64:
        return _is_public(IPv4Address(int(address) & 0xFFFFFFFF))
    if (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    ):
        return False
    if isinstance(address, IPv4Address):
        return address not in _CGNAT
    if address.is_site_local or address in _NAT64_LOCAL:
        return False
    # 6to4 tunnels to the IPv4 address it embeds; that one must be public too.
    if address.sixtofour is not None:
        return _is_public(address.sixtofour)
    return True


def _is_legacy_numeric(host: str) -> bool:
    """``2130706433``, ``0x7f.0.0.1``, ``127.1``: forms ``inet_aton`` maps onto an address
    but ``ipaddress`` does not parse. Refused outright instead of guessing what they mean."""
    bare = host.rstrip(".")
    try:
        socket.inet_aton(bare)
    except OSError:
        return bare.replace(".", "").isdigit()
    return True


# --- bytes ---


class _Refusal(Exception):
    """A failure of one reference, before it is given the reference's index."""

    def __init__(self, error_type: str, reason: str) -> None:
        super().__init__(reason)
        self.error_type = error_type
        self.reason = reason


class _Budget:
    """Bytes left for all references of one request; shared by the concurrent loads."""

    def __init__(self, total: int) -> None:
        self._left = total

    def take(self, n: int) -> None:
        self._left -= n
        if self._left < 0:
            raise _Refusal("image_too_large", "references together exceed the size limit")


async def _read_body(resp: aiohttp.ClientResponse, max_bytes: int, budget: _Budget) -> bytes:
    too_large = _Refusal("image_too_large", f"image exceeds {max_bytes} bytes")
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            raise too_large
        budget.take(len(chunk))
    return bytes(body)


def _decode_data_url(url: str, max_bytes: int) -> bytes:
    header, comma, payload = url[5:].partition(",")
    if not comma or header.rpartition(";")[2].lower() != "base64":
        raise _Refusal("invalid_image", "data URLs must be base64-encoded (data:<type>;base64,)")
    try:
        encoded = payload.encode("ascii")
    except UnicodeEncodeError:
        raise _Refusal("invalid_image", "data URL payload is not valid base64") from None
    encoded = encoded.translate(None, b" \t\r\n\f\v")  # tolerate MIME-style line breaks
    # Bound the decoded size (3 bytes per 4 characters) before allocating it.
    if len(encoded) // 4 * 3 - encoded[-2:].count(b"=") > max_bytes:
        raise _Refusal("image_too_large", f"image exceeds {max_bytes} bytes")
    try:
        return pybase64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _Refusal("invalid_image", "data URL payload is not valid base64") from None


def _inspect(data: bytes, max_pixels: int) -> ReferenceImage:
    """Format from magic bytes, size from the header (bounded before any decode), then proof
    that the pixels decode. Runs in a worker thread."""
    if not data:
        raise _Refusal("invalid_image", "image is empty")
    fmt = sniff_format(data)
    if fmt not in _PIL_FORMATS:  # svg included: references must be raster images
        raise _Refusal(
            "unsupported_image_format", "unsupported image format (png, jpeg, webp, gif)"
        )
    too_many_pixels = _Refusal("image_too_large", f"image exceeds {max_pixels} pixels")
    try:
        # ``formats`` keeps Pillow to the sniffed parser; ``open`` reads the header only.
        with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise too_many_pixels
            img.verify()
        if width * height <= _FULL_DECODE_MAX_PIXELS:
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as img:
                img.load()
    except _Refusal:
        raise
    # Pillow's own bomb guard (its global limit, left as configured) may fire first.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_many_pixels from None
    except Exception:  # noqa: BLE001 -- Pillow signals corrupt data with many exception types
        raise _Refusal("invalid_image", f"image data is not a readable {fmt}") from None
    if width <= 0 or height <= 0:
        raise _Refusal("invalid_image", f"image data is not a readable {fmt}")
    return ReferenceImage(data=data, media_type=MEDIA_TYPES[fmt], width=width, height=height)
