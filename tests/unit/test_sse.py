"""The SSE decoder: every transcript gives the same events fed whole, byte by byte, or split."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorproxy.adapters.sse import ServerSentEvent, SSEDecoder

E = ServerSentEvent

OPENAI = (
    b'data: {"id":"1","choices":[{"delta":{"content":"Hi"}}]}\n\n'
    b'data: {"id":"1","choices":[{"delta":{"content":" there"}}]}\n\n'
    b"data: [DONE]\n\n",
    [
        E('{"id":"1","choices":[{"delta":{"content":"Hi"}}]}'),
        E('{"id":"1","choices":[{"delta":{"content":" there"}}]}'),
        E("[DONE]"),
    ],
)
OPENROUTER = (
    b": OPENROUTER PROCESSING\n\n"
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"a":1}\n\n'
    b":keep-alive\n"
    b'data: {"a":2}\n\n'
    b"data: [DONE]\n\n",
    [E('{"a":1}'), E('{"a":2}'), E("[DONE]")],
)
CRLF = (
    b'event: message_start\r\ndata: {"type":"message_start"}\r\n\r\n'
    b"event: ping\r\ndata: {}\r\n\r\n"
    b": comment\r\n\r\n"
    b"data: last\r\n\r\n",
    [
        E('{"type":"message_start"}', event="message_start"),
        E("{}", event="ping"),
        E("last"),
    ],
)
CR = (
    b"data: one\r\rdata: two\rdata: three\r\r",
    [E("one"), E("two\nthree")],
)
FIELDS = (
    "\ufeffdata: multi\ndata:line\ndata\ndata:  two spaces\n\n"
    "id: 7\nretry: 1500\nfoo: bar\nevent: custom\ndata: x\n\n"
    "id: a\0b\nretry: soon\ndata: y\n\n"
    "event: orphan\nid\n\n"
    "data: caf\u00e9 \u2603 \U0001f600\n\n",
    [
        E("multi\nline\n\n two spaces"),
        E("x", event="custom", id="7", retry=1500),
        E("y", id="7", retry=1500),
        E("caf\u00e9 \u2603 \U0001f600", id="", retry=1500),
    ],
)
MIXED_ENDINGS = (
    b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\n\rdata: e\r\n\n",
    [E("a\nb\nc"), E("d"), E("e")],
)
TRANSCRIPTS = {
    "openai": OPENAI,
    "openrouter": OPENROUTER,
    "crlf": CRLF,
    "cr": CR,
    "fields": (FIELDS[0].encode(), FIELDS[1]),
    "mixed-endings": MIXED_ENDINGS,
}


def decode(chunks: Iterable[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.flush())
    return events


def split_at(raw: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted(points), len(raw)]
    return [raw[start:end] for start, end in itertools.pairwise(edges)]


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_whole(name: str) -> None:
    raw, expected = TRANSCRIPTS[name]
    assert decode([raw]) == expected


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_byte_by_byte(name: str) -> None:
    raw, expected = TRANSCRIPTS[name]
    assert decode(raw[i : i + 1] for i in range(len(raw))) == expected


@pytest.mark.parametrize("name", TRANSCRIPTS)
@given(data=st.data())
def test_random_splits(name: str, data: st.DataObject) -> None:
    raw, expected = TRANSCRIPTS[name]
    points = data.draw(st.lists(st.integers(0, len(raw)), max_size=24))
    assert decode(split_at(raw, points)) == expected


def test_events_arrive_as_soon_as_their_blank_line_does() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\n") == [E("a")]
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"\r") == [E("b")]
    assert decoder.flush() == []


def test_cr_then_lf_in_the_next_feed_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r\n\r") == [E("a\nb")]
    assert decoder.feed(b"\n") == []
    assert decoder.flush() == []


def test_flush_dispatches_an_event_without_its_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n\ndata: [DONE]") == [E("1")]
    assert decoder.flush() == [E("[DONE]")]


def test_comments_and_fields_without_data_dispatch_nothing() -> None:
    assert decode([b": OPENROUTER PROCESSING\n\nevent: ping\n\nid: 3\nretry: 10\n\n"]) == []


def test_only_one_leading_bom_is_stripped() -> None:
    bom = b"\xef\xbb\xbf"
    assert decode([bom + b"data: x\n\n"]) == [E("x")]
    assert decode([bom, bom + b"data: x\n\n"]) == []  # the second BOM makes a field name
    assert decode([bom[:1], bom[1:2], bom[2:], b"data: y\n\n"]) == [E("y")]
    assert decode([b"data: z\n\n" + bom + b"data: w\n\n"]) == [E("z")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert decode([b"data: \xff\xfe\n\n"]) == [E("\ufffd\ufffd")]


def test_empty_feeds_change_nothing() -> None:
    decoder = SSEDecoder()
    for chunk in (b"", b"data: a", b"", b"\r", b"", b"\n", b"", b"\n"):
        events = decoder.feed(chunk)
    assert events == [E("a")]
