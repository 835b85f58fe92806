"""The real usage of a finished response (``limits/usage.py``), read once by the provider actor."""

from __future__ import annotations

import json

import pytest

from actorproxy.limits import usage
from actorproxy.limits.usage import TokenUsage, from_body

BODY = (
    b'{"id":"c","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,'
    b'"total_tokens":17,"prompt_tokens_details":{"cached_tokens":4}}}'
)
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


def test_a_whole_body_gives_its_usage() -> None:
    assert from_body(BODY) == TokenUsage(12, 5, 4)


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
    found = from_body(body)
    assert (None if found is None else found.total) == total


def test_embeddings_have_prompt_and_total_only() -> None:
    assert from_body(b'{"usage":{"prompt_tokens":8,"total_tokens":8}}') == TokenUsage(8, 0)


def tail_of(pieces: list[bytes]) -> usage.StreamTail:
    tail = usage.StreamTail()
    for piece in pieces:
        tail.feed(piece)
    return tail


def test_a_stream_gives_its_usage_chunk_whole_or_split_anywhere() -> None:
    data = b"".join(STREAM)
    for cut in range(len(data) - len(USAGE_CHUNK) - 20, len(data) + 1):
        pieces = [*STREAM[:2], data[len(STREAM[0]) + len(STREAM[1]) : cut], data[cut:]]
        assert tail_of(pieces).usage() == TokenUsage(7, 5), cut


@pytest.mark.parametrize("size", [1, 7, 64])
def test_a_stream_split_into_tiny_pieces_still_gives_its_usage(size: int) -> None:
    stream = STREAM[0] + b"data: " + BODY + b"\n\n" + b"data: [DONE]\n\n"
    pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
    assert tail_of(pieces).usage() == TokenUsage(12, 5, 4)


def test_crlf_frames_and_withheld_usage() -> None:
    assert tail_of([USAGE_CHUNK.replace(b"\n", b"\r\n")]).usage() == TokenUsage(7, 5)
    quiet = tail_of([STREAM[0], b"data: [DONE]\n\n"])
    assert quiet.usage() is None
    assert quiet.usage(withheld=USAGE_CHUNK) == TokenUsage(7, 5)


def test_only_the_end_of_the_stream_is_kept() -> None:
    filler = [STREAM[0]] * (usage.TAIL_BYTES // len(STREAM[0]) + 2)
    assert tail_of([USAGE_CHUNK, *filler]).usage() is None  # an early usage chunk is not the total
    assert tail_of([USAGE_CHUNK, *filler[:2]]).usage() == TokenUsage(7, 5)
