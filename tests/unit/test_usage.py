"""Real usage read back from the response the proxy holds (``limits.usage``)."""

from __future__ import annotations

from actorproxy.limits.keys import TokenUsage
from actorproxy.limits.usage import from_body, from_stream

BODY = (
    b'{"id":"c","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,'
    b'"total_tokens":17,"prompt_tokens_details":{"cached_tokens":4}}}'
)


def test_a_whole_body_gives_its_usage() -> None:
    assert from_body(BODY) == TokenUsage(12, 5, 4)
    assert from_body(b'{"id":"c","choices":[]}') is None
    assert from_body(b"not json") is None


def test_embeddings_have_prompt_and_total_only() -> None:
    assert from_body(b'{"usage":{"prompt_tokens":8,"total_tokens":8}}') == TokenUsage(8, 0)


def test_a_stream_gives_the_usage_of_its_last_usage_event_however_it_is_split() -> None:
    stream = (
        b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
        b"data: " + BODY + b"\n\n"
        b"data: [DONE]\n\n"
    )
    for size in (1, 7, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert from_stream(chunks) == TokenUsage(12, 5, 4)


def test_a_stream_without_usage_gives_none() -> None:
    assert from_stream([b'data: {"choices":[],"usage":null}\n\n', b"data: [DONE]\n\n"]) is None
    assert from_stream([]) is None
