"""The floor for a Python proxy: bytes in, bytes out, no parsing.

``python -m bench.passthrough --port P --upstream http://127.0.0.1:E``

aiohttp server and client on uvloop, one pooled client session. A buffered request body is
forwarded with the caller's ``Authorization`` and ``Content-Type``; the answer goes back
with its status and content type. Event streams are relayed chunk by chunk as they arrive;
every other answer is read whole and sent in one write, as a buffering gateway does.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

FORWARDED = ("Authorization", "Content-Type", "Accept")


def make_app(upstream: str) -> web.Application:
    upstream = upstream.rstrip("/")
    app = web.Application(client_max_size=256 * 1024 * 1024)

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
        session: aiohttp.ClientSession = app["session"]
        async with session.request(request.method, upstream + request.path_qs, data=body, headers=headers) as up:
            content_type = up.headers.get("Content-Type", "application/octet-stream")
            if content_type.startswith("text/event-stream"):
                response = web.StreamResponse(status=up.status, headers={"Content-Type": content_type})
                await response.prepare(request)
                async for chunk in up.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
            data = await up.read()
            return web.Response(status=up.status, body=data, headers={"Content-Type": content_type})

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(make_app(args.upstream), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
