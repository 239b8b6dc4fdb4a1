"""Request body size limit (413), enforced while the body streams in."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegate.errors import PayloadTooLarge


class BodySizeLimit:
    """Refuses bodies over ``max_bytes``: at once from Content-Length, else when the count passes it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _send_413(send, self.max_bytes)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request payload too large: the limit is {max_bytes} bytes",
        metadata={"max_bytes": max_bytes},
    )


async def _send_413(send: Send, max_bytes: int) -> None:
    body = orjson.dumps(too_large(max_bytes).envelope())
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})
