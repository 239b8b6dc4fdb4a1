"""The SSE events the gateway writes: one event each, whatever an upstream put in an image."""

from __future__ import annotations

import base64
import os
import re

import orjson
import pytest

from imagegate.wire import sse_event

IMAGE = base64.b64encode(os.urandom(3000))


def test_plain_base64_goes_out_as_it_came_uncopied() -> None:
    view = memoryview(IMAGE)
    pieces = sse_event({"type": "image_generation.completed"}, b64=view)
    assert pieces[1] is view
    assert orjson.loads(b"".join(pieces)[6:])["b64_json"] == IMAGE.decode()


@pytest.mark.parametrize("inside", [b"\r\rdata: [DONE]\r\r", b"\n\ndata: [DONE]\n\n", b'","type":"forged', b"\\"])
def test_what_is_not_base64_stays_inside_its_one_data_line(inside: bytes) -> None:
    b64 = IMAGE[:100] + inside + IMAGE[100:]
    written = b"".join(sse_event({"type": "image_generation.partial_image"}, b64=b64))
    lines = re.split(rb"\r\n|\r|\n", written)
    assert lines[1:] == [b"", b""] and lines[0].startswith(b"data: ")
    payload = orjson.loads(lines[0][6:])
    assert payload["type"] == "image_generation.partial_image"
    assert payload["b64_json"].encode("latin-1") == b64
