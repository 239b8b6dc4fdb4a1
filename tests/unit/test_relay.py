"""The relay mechanism: a JSON answer split into its document and image values as it arrives."""

from __future__ import annotations

import asyncio
import base64
import os

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagegate.errors import UpstreamError
from imagegate.providers.relay import (
    END,
    START,
    VALUE,
    ByteRelay,
    JsonValueScanner,
    lifted_index,
)

IMAGES = [base64.b64encode(os.urandom(size)) for size in (3000, 70_000, 1)]
ANSWER = orjson.dumps({
    "created": 1,
    "note": 'a string that mentions \\"b64_json\\": \\"x\\" inside it',
    "data": [{"b64_json": image.decode()} for image in IMAGES],
    "size": "1024x1024",
    "usage": {"output_tokens": 7},
})


def scan(text: bytes, cuts: list[int]) -> tuple[list[bytes], object]:
    scanner = JsonValueScanner("b64_json")
    values: list[bytes] = []
    current: list[bytes] = []
    bounds = [0, *sorted(set(cuts)), len(text)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        for kind, item in scanner.feed(text[start:end]):
            if kind == START:
                current = []
            elif kind == VALUE:
                current.append(item)
            else:
                assert kind == END
                values.append(b"".join(current))
    return values, scanner.document()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(ANSWER) - 1), max_size=40))
def test_values_and_document_survive_any_split_of_the_answer(cuts: list[int]) -> None:
    values, document = scan(ANSWER, cuts)
    assert values == IMAGES
    assert [lifted_index(item["b64_json"]) for item in document["data"]] == [0, 1, 2]
    assert document["usage"] == {"output_tokens": 7} and document["size"] == "1024x1024"
    assert "b64_json" in document["note"]  # the look-alike inside another string is left alone


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(ANSWER) - 1), max_size=40))
def test_escaped_slashes_are_unescaped_even_across_reads(cuts: list[int]) -> None:
    escaped = ANSWER.replace(b"/", b"\\/")
    values, document = scan(escaped, cuts)
    assert values == IMAGES
    assert document["size"] == "1024x1024"


def test_any_other_escape_in_a_value_is_refused() -> None:
    with pytest.raises(UpstreamError):
        scan(b'{"data":[{"b64_json":"abc\\u0041def"}]}', [])


def test_an_answer_cut_inside_a_value_has_no_document() -> None:
    values, document = scan(ANSWER[: len(ANSWER) // 2], [])
    assert document is None


async def test_a_relay_makes_its_writer_wait_for_a_slow_reader() -> None:
    relay = ByteRelay(b"head", max_buffered=10)
    await relay.put(b"0123456789")
    writer = asyncio.create_task(relay.put(b"abc"))
    await asyncio.sleep(0.01)
    assert not writer.done()  # full: waits for the reader
    reader = relay.chunks()
    assert await anext(reader) == b"0123456789"
    await asyncio.wait_for(writer, 1)
    relay.end()
    assert [chunk async for chunk in reader] == [b"abc"]
    assert relay.complete and relay.length == len(b"head0123456789abc") and relay.tail == b"head0123456789abc"


async def test_an_abandoned_relay_lets_its_writer_finish_and_drops_the_rest() -> None:
    relay = ByteRelay(b"", max_buffered=4)
    await relay.put(b"1234")
    writer = asyncio.create_task(relay.put(b"5678"))
    await asyncio.sleep(0.01)
    relay.abandon()
    await asyncio.wait_for(writer, 1)
    await relay.put(b"more")
    assert relay.length == 12  # still counted, for the record


async def test_a_relay_that_breaks_off_raises_at_its_reader() -> None:
    relay = ByteRelay(b"h")
    await relay.put(b"x")
    relay.end(ConnectionResetError("gone"))
    reader = relay.chunks()
    assert await anext(reader) == b"x"
    with pytest.raises(UpstreamError):
        await anext(reader)
