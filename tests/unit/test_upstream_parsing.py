"""Reading upstream answers: server-sent events split out of reads cut anywhere, and JSON
documents parsed with their images lifted out, where they lie within a read."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
from collections.abc import AsyncIterator

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from imagegate.providers.http import LIFT_MIN_CHARS, SseEvent, _sse_events, loads_lifted

IMAGE = base64.b64encode(os.urandom(9000))
STREAM = b"".join((
    b": a comment\n\n",
    b"event: image_generation.partial_image\r\n",
    b'data: {"type":"image_generation.partial_image","b64_json":"' + IMAGE + b'","i":0}\r\n\r\n',
    b"data: first line\ndata:second line\n\n",
    b"event: ignored without data\n\n",
    b'data: {"type":"image_generation.completed","b64_json":"' + IMAGE[::-1] + b'"}\n\n',
    b"data: ended by\rdata: bare CRs\r\r",
    b"data: [DONE]\n\n",
    b"data: an event the stream ends without a blank line after",
))
EXPECTED = [
    ("image_generation.partial_image",
     b'{"type":"image_generation.partial_image","b64_json":"' + IMAGE + b'","i":0}'),
    (None, b"first line\nsecond line"),
    (None, b'{"type":"image_generation.completed","b64_json":"' + IMAGE[::-1] + b'"}'),
    (None, b"ended by\nbare CRs"),
    (None, b"[DONE]"),
]


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(stream)]
    return [stream[start:end] for start, end in itertools.pairwise(bounds)]


def events_of(reads: list[bytes]) -> list[SseEvent]:
    async def chunks() -> AsyncIterator[bytes]:
        for read in reads:
            yield read

    async def collect() -> list[SseEvent]:
        return [event async for event in _sse_events(chunks())]

    return asyncio.run(collect())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=30))
def test_events_are_the_same_however_the_stream_is_cut_into_reads(cuts: list[int]) -> None:
    events = events_of(split(STREAM, cuts))
    # The last line has no line end: the stream ended in the middle of it, so it is not an event.
    assert [(event.name, event.data) for event in events] == EXPECTED
    assert [len(event) for event in events] == [len(data) for _, data in EXPECTED]


def test_an_event_within_one_read_is_a_span_of_that_read_not_a_copy() -> None:
    read = STREAM
    image_event = events_of([read])[0]
    assert image_event.buffer is read
    assert read[image_event.start : image_event.end] == EXPECTED[0][1]


def test_a_cr_at_the_end_of_one_read_and_its_lf_in_the_next_is_one_line_end() -> None:
    events = events_of([b"data: x\r", b"\n\r", b"\ndata: y\r\n\r\n"])
    assert [event.data for event in events] == [b"x", b"y"]


def test_a_bare_cr_ends_a_line_as_for_every_event_source_client() -> None:
    events = events_of([b'data: {"b64_json":"AAAA\r\rdata: [DONE]\r\rBBBB"}\n\n'])
    assert [event.data for event in events] == [b'{"b64_json":"AAAA', b"[DONE]"]


def test_the_image_is_lifted_from_a_document_within_a_larger_buffer_without_a_copy() -> None:
    document = orjson.dumps({"type": "done", "b64_json": IMAGE.decode(), "usage": {"total_tokens": 3}})
    buffer = b"data: " + document + b"\n\nmore"
    parsed, lifted = loads_lifted(buffer, "b64_json", 6, 6 + len(document))
    assert parsed["type"] == "done" and parsed["usage"] == {"total_tokens": 3}
    value = lifted[parsed["b64_json"]]
    assert value == IMAGE and value.obj is buffer


def test_a_bounded_document_is_parsed_alone_and_short_or_escaped_values_stay_in_it() -> None:
    short = orjson.dumps({"b64_json": "abc", "n": 1})
    escaped = orjson.dumps({"b64_json": "a\\/b" * LIFT_MIN_CHARS})
    for document in (short, escaped):
        buffer = b"{" + document + b"}"
        parsed, lifted = loads_lifted(buffer, "b64_json", 1, 1 + len(document))
        assert parsed == orjson.loads(document) and lifted == {}
    assert loads_lifted(b"xx{not json", "b64_json", 2) == (None, {})
