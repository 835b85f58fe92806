"""Reading the real usage of a finished response (``limits/usage.py``)."""

from __future__ import annotations

import json

import pytest

from actorproxy.limits import usage

USAGE_CHUNK = (
    b'data: {"id":"c","choices":[],'
    b'"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}\n\n'
)
STREAM = [
    b'data: {"id":"c","choices":[{"delta":{"content":"a"}}],"usage":null}\n\n',
    b'data: {"id":"c","choices":[{"delta":{"content":"b"}}],"usage":null}\n\n',
    USAGE_CHUNK,
    b"data: [DONE]\n\n",
]


@pytest.mark.parametrize(
    ("body", "total"),
    [
        (json.dumps({"usage": {"total_tokens": 9, "prompt_tokens": 4}}).encode(), 9),
        (json.dumps({"usage": {"prompt_tokens": 4, "completion_tokens": 3}}).encode(), 7),
        (json.dumps({"object": "list", "usage": {"prompt_tokens": 4}}).encode(), 4),
        (json.dumps({"usage": None}).encode(), None),
        (json.dumps({"usage": {}}).encode(), None),
        (json.dumps({"usage": {"total_tokens": "many"}}).encode(), None),
        (b'{"choices": []}', None),
        (b"not json", None),
        (b"", None),
    ],
)
def test_from_body(body: bytes, total: int | None) -> None:
    assert usage.from_body(body) == total


def test_a_stream_gives_its_usage_chunk_whole_or_split_anywhere() -> None:
    data = b"".join(STREAM)
    for cut in range(len(data) - len(USAGE_CHUNK) - 20, len(data) + 1):
        tail = usage.StreamTail()
        for piece in (*STREAM[:2], data[len(STREAM[0]) + len(STREAM[1]) : cut], data[cut:]):
            tail.feed(piece)
        assert tail.total() == 12, cut


def test_crlf_frames_and_withheld_usage() -> None:
    tail = usage.StreamTail()
    tail.feed(USAGE_CHUNK.replace(b"\n", b"\r\n"))
    assert tail.total() == 12
    quiet = usage.StreamTail()
    quiet.feed(STREAM[0])
    quiet.feed(b"data: [DONE]\n\n")
    assert quiet.total() is None
    assert quiet.total(withheld=USAGE_CHUNK) == 12


def test_only_the_last_pieces_are_kept() -> None:
    tail = usage.StreamTail()
    tail.feed(USAGE_CHUNK)
    for _ in range(usage.TAIL_PIECES):
        tail.feed(STREAM[0])
    assert tail.total() is None  # an early usage chunk is not the stream's total
