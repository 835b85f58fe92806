"""Anthropic's Messages event streams translated to OpenAI chunks: same output however split.

The transcripts in tests/transcripts/anthropic are written in Anthropic's wire format (named
events, one JSON ``data`` line each, blank-line separated).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorproxy import errors
from actorproxy.adapters.anthropic_stream import AnthropicStreamTranslator
from actorproxy.adapters.base import Exchange
from tests import spec

CREATED = 1_700_000_000
DONE = b"data: [DONE]\n\n"
CHUNK = "CreateChatCompletionStreamResponse"
HERE = Path(__file__).resolve().parent.parent / "transcripts" / "anthropic"
TRANSCRIPTS = {path.stem: path.read_bytes() for path in sorted(HERE.glob("*.sse"))}
COMPLETE = sorted(name for name in TRANSCRIPTS if name != "error_midstream")
SIGNATURE = (
    "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds+/Ii6YGR2TWhq3ZpUMaTCcgIuH0ZpBUuQ4vC1Qx"
    "BB8Nq/xAsSiYfE+EykSq23ufDwgKs8ywSbKQRPTbuUOP1/bpdr4bo3x0M3E+n9YXz6Ji3fdbXE3ZSmuP6+CBX+lLc1i+"
    "PLDTf2GGC8ekE1Ar2NTXAVd4LBDuHGjxEGu6lRkNCa/ZP7KUmn0u9cbhS8fzj2/M2c="
)
THINKING_PARTS = (
    "I need to find the GCD of 1071 and 462 using the Euclidean algorithm.\n\n"
    "1071 = 2 \u00d7 462 + 147",
    "\n462 = 3 \u00d7 147 + 21\n147 = 7 \u00d7 21 + 0",
    "\n\nSo the GCD is 21.",
)
GCD_THINKING = "".join(THINKING_PARTS)
REDACTED = (
    "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ5sQ7vB8URj2"
    "pLmN3kBf+yz7y"
)


def usage(prompt: int, completion: int, cached: int | None = 0) -> dict[str, Any]:
    total: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        total["prompt_tokens_details"] = {"cached_tokens": cached}
    return total


@dataclass
class Reply:
    """A stream put back together as a client library would."""

    id: str
    model: str
    content: str = ""
    reasoning: str = ""
    thinking_blocks: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[tuple[str, str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None


MODEL = "claude-sonnet-4-5-20250929"
EXPECTED = {
    "text": Reply(
        id="chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
        model=MODEL,
        content="Hello! Grüße aus Zürich 👋 How can I help?\nAsk away.",
        finish_reason="stop",
        usage=usage(25, 15),
    ),
    "tool_use": Reply(
        id="chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U",
        model=MODEL,
        content="Okay, let's check the weather for São Paulo:",
        tool_calls=[
            (
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "get_weather",
                {
                    "location": "São Paulo, BR",
                    "unit": "celsius",
                    "days": [1, 2],
                    "note": "line\nbreak é",
                },
            )
        ],
        finish_reason="tool_calls",
        usage=usage(472, 89, cached=None),
    ),
    "parallel_tools": Reply(
        id="chatcmpl-msg_01Aq9w938a90dw8q",
        model="claude-opus-4-1-20250805",
        content="I'll look up both at once.",
        tool_calls=[
            ("toolu_01A09q90qw90lq917835lq9", "get_weather", {"city": "Paris"}),
            ("toolu_01B5kTy5Pt7vDPjBbHx2Wx4P", "get_time", {"timezone": "Europe/Paris"}),
            ("toolu_01C8mNoArgs2zQ", "list_alarms", {}),
        ],
        finish_reason="tool_calls",
        usage=usage(610, 142),
    ),
    "thinking": Reply(
        id="chatcmpl-msg_01BqMdPtfRvRC2sVWhGKZLu6",
        model=MODEL,
        content="The greatest common divisor of 1071 and 462 is **21**.",
        reasoning=GCD_THINKING,
        thinking_blocks=[{"type": "thinking", "thinking": GCD_THINKING, "signature": SIGNATURE}],
        finish_reason="stop",
        usage=usage(48, 187),
    ),
    "redacted_thinking": Reply(
        id="chatcmpl-msg_01Rd7cTd9aW2kLq3vN8xYpZs",
        model="claude-3-7-sonnet-20250219",
        content="Yes.",
        reasoning="The user wants a short answer.",
        thinking_blocks=[
            {"type": "redacted_thinking", "data": REDACTED},
            {
                "type": "thinking",
                "thinking": "The user wants a short answer.",
                "signature": "ErUBCkYIAxgCIkB0e3JhbmRvbQ==",
            },
        ],
        finish_reason="stop",
        usage=usage(97, 64),
    ),
    "unknown": Reply(
        id="chatcmpl-msg_01UnKn0wnEvEnTs7yY8zZ9aA",
        model=MODEL,
        content="It is sunny in New York, with a high of 75°F.",
        finish_reason="stop",
        usage=usage(2048, 310),
    ),
    "cache_usage": Reply(
        id="chatcmpl-msg_01CaCheUsaGe5TqWz7yXo3bN",
        model=MODEL,
        content="The contract's term is 24 months.",
        finish_reason="stop",
        usage=usage(12 + 15000 + 2000, 9, cached=15000),
    ),
    "max_tokens": Reply(
        id="chatcmpl-msg_01MaXT0kEns8hQ2rLp4VvUuW",
        model="claude-haiku-4-5-20251001",
        content="The history of Rome begins with",
        finish_reason="length",
        usage=usage(30, 5),
    ),
    "refusal": Reply(
        id="chatcmpl-msg_01ReFuSaL0bq8sNw3mXpDk2H",
        model=MODEL,
        content="I can't help",
        finish_reason="content_filter",
        usage=usage(41, 4),
    ),
    "stop_sequence": Reply(
        id="chatcmpl-msg_01StOpSeQ7dKe2LmNb5VcXz1",
        model=MODEL,
        content="1, 2, 3, 4",
        finish_reason="stop",
        usage=usage(19, 11),
    ),
}


# --- helpers ----------------------------------------------------------------------------------


def translator(*, include_usage: bool = False) -> AnthropicStreamTranslator:
    exchange = Exchange(
        endpoint="chat",
        body=b'{"model": "alias", "messages": [], "stream": true}',
        model="alias",
        upstream_model="claude-configured",
        stream=True,
        request_id="req_7",
        headers=[],
        created=CREATED,
    )
    return AnthropicStreamTranslator(exchange, include_usage=include_usage)


@dataclass(frozen=True)
class Outcome:
    body: bytes  # what the client got
    withheld: bytes
    error: tuple[type[errors.ProxyError], int, str, str | None, str] | None = None


def run(pieces: Iterable[bytes], *, include_usage: bool = False) -> Outcome:
    stream = translator(include_usage=include_usage)
    body = b""
    try:
        for piece in pieces:
            body += stream.feed(piece)
        body += stream.end()
    except errors.ProxyError as exc:
        caught = (type(exc), exc.status, exc.type, exc.code, exc.message)
        return Outcome(body, stream.withheld(), caught)
    return Outcome(body, stream.withheld())


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def chunks(body: bytes) -> list[Any]:
    return spec.validate_sse_chunks(CHUNK, body)


def deltas(body: bytes) -> list[dict[str, Any]]:
    return [chunk["choices"][0]["delta"] for chunk in chunks(body) if chunk["choices"]]


def reassemble(decoded: list[Any]) -> Reply:
    reply = Reply(id=decoded[0]["id"], model=decoded[0]["model"])
    calls: dict[int, list[str]] = {}
    for chunk in decoded:
        assert (chunk["id"], chunk["model"], chunk["created"]) == (reply.id, reply.model, CREATED)
        reply.usage = chunk.get("usage") or reply.usage
        for choice in chunk["choices"]:
            delta = choice["delta"]
            reply.content += delta.get("content") or ""
            reply.reasoning += delta.get("reasoning_content", "")
            reply.thinking_blocks += delta.get("thinking_blocks", [])
            for call in delta.get("tool_calls", []):
                slot = calls.setdefault(call["index"], ["", "", ""])
                slot[0] += call.get("id", "")
                slot[1] += call["function"].get("name", "")
                slot[2] += call["function"].get("arguments", "")
            if choice["finish_reason"] is not None:
                assert reply.finish_reason is None, "a second finish_reason"
                reply.finish_reason = choice["finish_reason"]
    assert sorted(calls) == list(range(len(calls)))
    reply.tool_calls = [
        (i, n, json.loads(args)) for i, n, args in (calls[k] for k in sorted(calls))
    ]
    return reply


def anthropic_tool_inputs(transcript: bytes) -> list[tuple[str, str, Any]]:
    """The client tool calls of a transcript, read straight from its events: the oracle."""
    starts: dict[int, tuple[str, str]] = {}
    parts: dict[int, list[str]] = {}
    for line in transcript.decode().splitlines():
        if not line.startswith("data: "):
            continue
        event = json.loads(line.removeprefix("data: "))
        if event["type"] == "content_block_start" and event["content_block"]["type"] == "tool_use":
            block = event["content_block"]
            starts[event["index"]] = (block["id"], block["name"])
            parts[event["index"]] = []
        elif event["type"] == "content_block_delta" and event["index"] in parts:
            parts[event["index"]].append(event["delta"]["partial_json"])
    return [(*starts[i], json.loads("".join(parts[i]) or "{}")) for i in sorted(starts)]


# --- building streams in tests ----------------------------------------------------------------

START = {
    "type": "message_start",
    "message": {
        "id": "msg_x",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    },
}


def event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def stream_of(*content: dict[str, Any], stop_reason: str = "end_turn") -> bytes:
    delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {}}
    events = [START, *content, delta, {"type": "message_stop"}]
    outcome = run([b"".join(event(item) for item in events)])
    assert outcome.error is None
    return outcome.body


# --- splitting --------------------------------------------------------------------------------


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("name", sorted(TRANSCRIPTS))
def test_whole_and_byte_by_byte_agree(name: str, include_usage: bool) -> None:
    transcript = TRANSCRIPTS[name]
    whole = run([transcript], include_usage=include_usage)
    assert run(bytewise(transcript), include_usage=include_usage) == whole
    crlf = transcript.replace(b"\n", b"\r\n")
    assert run(bytewise(crlf), include_usage=include_usage) == whole
    assert run([crlf], include_usage=include_usage) == whole


@given(
    st.sampled_from(sorted(TRANSCRIPTS)),
    st.lists(st.integers(min_value=0), max_size=16),
    st.booleans(),
)
def test_random_splits_agree(name: str, cuts: list[int], include_usage: bool) -> None:
    transcript = TRANSCRIPTS[name]
    assert run(split(transcript, cuts), include_usage=include_usage) == run(
        [transcript], include_usage=include_usage
    )


# --- what the client sees ---------------------------------------------------------------------


@pytest.mark.parametrize("name", COMPLETE)
def test_reassembled_stream(name: str) -> None:
    outcome = run([TRANSCRIPTS[name]])
    assert outcome.error is None
    decoded = chunks(outcome.body)
    (total,) = chunks(outcome.withheld + DONE)
    assert total["choices"] == []
    assert reassemble([*decoded, total]) == EXPECTED[name]
    assert reassemble(decoded).tool_calls == anthropic_tool_inputs(TRANSCRIPTS[name])


@pytest.mark.parametrize("name", COMPLETE)
def test_usage_chunk_goes_to_the_client_when_asked(name: str) -> None:
    hidden, shown = run([TRANSCRIPTS[name]]), run([TRANSCRIPTS[name]], include_usage=True)
    assert shown.withheld == b""
    assert all("usage" not in chunk for chunk in chunks(hidden.body))
    decoded = chunks(shown.body)
    assert all(chunk["usage"] is None for chunk in decoded[:-1])
    assert decoded[-1]["choices"] == []
    assert decoded[-1]["usage"] == EXPECTED[name].usage
    assert shown.body == hidden.body.replace(b"}\n\n", b',"usage":null}\n\n').replace(
        DONE, hidden.withheld + DONE
    )


@pytest.mark.parametrize("name", COMPLETE)
def test_the_stream_opens_with_the_role_and_ends_with_one_done(name: str) -> None:
    body = run([TRANSCRIPTS[name]]).body
    assert deltas(body)[0] == {"role": "assistant", "content": ""}
    assert body.count(b"[DONE]") == 1
    assert body.endswith(b"}\n\n" + DONE)
    assert all(c["choices"][0]["logprobs"] is None for c in chunks(body))


def test_text_chunks() -> None:
    decoded = chunks(run([TRANSCRIPTS["text"]]).body)
    assert [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in decoded] == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hello"}, None),
        ({"content": "! Grüße aus Zürich 👋"}, None),
        ({"content": " How can I help?\nAsk away."}, None),
        ({}, "stop"),
    ]
    assert {c["object"] for c in decoded} == {"chat.completion.chunk"}


def test_tool_call_chunks() -> None:
    calls = [
        d["tool_calls"]
        for d in deltas(run([TRANSCRIPTS["parallel_tools"]]).body)
        if "tool_calls" in d
    ]
    assert calls == [
        [
            {
                "index": 0,
                "id": "toolu_01A09q90qw90lq917835lq9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
        [{"index": 0, "function": {"arguments": '{"city": '}}],
        [{"index": 0, "function": {"arguments": '"Paris"}'}}],
        [
            {
                "index": 1,
                "id": "toolu_01B5kTy5Pt7vDPjBbHx2Wx4P",
                "type": "function",
                "function": {"name": "get_time", "arguments": ""},
            }
        ],
        [{"index": 1, "function": {"arguments": '{"timezone"'}}],
        [{"index": 1, "function": {"arguments": ': "Europe/Paris"}'}}],
        [
            {
                "index": 2,
                "id": "toolu_01C8mNoArgs2zQ",
                "type": "function",
                "function": {"name": "list_alarms", "arguments": ""},
            }
        ],
        [{"index": 2, "function": {"arguments": "{}"}}],  # no input streamed: "{}" at its stop
    ]


def test_thinking_chunks() -> None:
    assert deltas(run([TRANSCRIPTS["thinking"]]).body)[1:] == [
        *({"reasoning_content": part} for part in THINKING_PARTS),
        {
            "thinking_blocks": [
                {"type": "thinking", "thinking": GCD_THINKING, "signature": SIGNATURE}
            ]
        },
        {"content": "The greatest common divisor of 1071 and 462 is **21**."},
        {},
    ]


def test_redacted_thinking_chunk() -> None:
    assert deltas(run([TRANSCRIPTS["redacted_thinking"]]).body)[1] == {
        "thinking_blocks": [{"type": "redacted_thinking", "data": REDACTED}]
    }


def test_unknown_events_blocks_and_deltas_are_skipped() -> None:
    assert deltas(run([TRANSCRIPTS["unknown"]]).body) == [
        {"role": "assistant", "content": ""},
        {"content": "It is sunny in New York, "},
        {"content": "with a high of 75°F."},
        {},
    ]


def test_a_tool_use_start_with_its_input() -> None:
    body = stream_of(
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": 1}},
        },
        {"type": "content_block_stop", "index": 0},
        stop_reason="tool_use",
    )
    (start,) = deltas(body)[1]["tool_calls"]
    assert start == {
        "index": 0,
        "id": "toolu_9",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a":1}'},
    }
    assert reassemble(chunks(body)).tool_calls == [("toolu_9", "f", {"a": 1})]


def test_a_text_block_that_starts_with_text() -> None:
    body = stream_of(
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": "Hi"},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    )
    assert reassemble(chunks(body)).content == "Hi!"


def test_a_message_without_message_delta_still_finishes() -> None:
    body = run([event(START), event({"type": "message_stop"})]).body
    assert [c["choices"][0]["finish_reason"] for c in chunks(body)] == [None, "stop"]


def test_a_usage_only_message_delta_finishes_nothing() -> None:
    update = {
        "type": "message_delta",
        "delta": {"stop_reason": None},
        "usage": {"output_tokens": 7},
    }
    outcome = run([event(START), event(update), event({"type": "message_stop"})])
    assert [c["choices"][0]["finish_reason"] for c in chunks(outcome.body)] == [None, "stop"]
    assert chunks(outcome.withheld + DONE)[0]["usage"]["completion_tokens"] == 7


# --- the end of the stream ----------------------------------------------------------------------


def test_bytes_after_message_stop_are_ignored() -> None:
    late = b'event: content_block_delta\ndata: {"type":"content_block_delta"}\n\ngarbage\n\n'
    assert run([TRANSCRIPTS["text"] + late]) == run([TRANSCRIPTS["text"]])
    stream = translator()
    stream.feed(TRANSCRIPTS["text"])
    assert stream.feed(b"data: {oops\n\n") == b""
    assert stream.end() == b""


def test_a_last_event_without_its_blank_line_counts() -> None:
    assert run([TRANSCRIPTS["text"].rstrip(b"\n")]) == run([TRANSCRIPTS["text"]])


def test_end_after_message_stop_adds_nothing() -> None:
    stream = translator()
    body = stream.feed(TRANSCRIPTS["text"])
    assert body.endswith(DONE)
    assert stream.end() == b""


@pytest.mark.parametrize("name", COMPLETE)
def test_a_stream_cut_before_message_stop_ended_early(name: str) -> None:
    events = TRANSCRIPTS[name].split(b"\n\n")
    for cut in range(len(events) - 2):  # the last two are message_stop and ""
        outcome = run([b"\n\n".join(events[:cut]) + b"\n\n"])
        assert outcome.error is not None
        assert outcome.error[:2] == (errors.UpstreamProtocolError, 502)
        assert "the upstream stream ended early" in outcome.error[4]
        assert DONE not in outcome.body


# --- errors -----------------------------------------------------------------------------------


def test_an_error_event_after_content() -> None:
    outcome = run([TRANSCRIPTS["error_midstream"]])
    assert outcome.error == (
        errors.UpstreamHTTPError,
        503,
        "service_unavailable",
        "overloaded",
        "Overloaded",
    )
    assert reassemble(chunks(outcome.body + DONE)).content == "Once upon a time"
    assert outcome.withheld == b""


def test_the_error_is_raised_after_the_frames_before_it() -> None:
    stream = translator()
    first = stream.feed(TRANSCRIPTS["error_midstream"])
    assert b"Once upon" in first
    with pytest.raises(errors.UpstreamHTTPError) as caught:
        stream.feed(b"")
    assert caught.value.retryable
    with pytest.raises(errors.UpstreamHTTPError):
        stream.end()


@pytest.mark.parametrize(
    ("kind", "status", "openai_type", "code"),
    [
        ("overloaded_error", 503, "service_unavailable", "overloaded"),
        ("rate_limit_error", 429, "requests", "rate_limit_exceeded"),
        ("api_error", 500, "server_error", None),
        ("invalid_request_error", 400, "invalid_request_error", None),
        ("request_too_large", 413, "invalid_request_error", "request_too_large"),
        ("a_new_error", 502, "upstream_error", "a_new_error"),
    ],
)
def test_error_events(kind: str, status: int, openai_type: str, code: str | None) -> None:
    error = {"type": "error", "error": {"type": kind, "message": "went wrong"}}
    outcome = run([event(error)])
    assert outcome.error == (errors.UpstreamHTTPError, status, openai_type, code, "went wrong")
    assert outcome.body == b""


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"[1, 2]",
        b'"message_start"',
        b'{"no_type": true}',
        b'{"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x"}}',
        b'{"type": "message_delta", "delta": "stop"}',
        b'{"type": "error"}',
    ],
)
def test_unparseable_events_are_not_understood(data: bytes) -> None:
    stream = translator()
    started = stream.feed(event(START))
    assert b'"role":"assistant"' in started
    with pytest.raises(errors.CannotUnderstand):
        stream.feed(b"data: " + data + b"\n\n")
    stream = translator()
    assert stream.feed(event(START) + b"data: " + data + b"\n\n") == started
    with pytest.raises(errors.CannotUnderstand):
        stream.end()


def test_content_before_message_start_is_not_understood() -> None:
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "x"},
    }
    outcome = run([event({"type": "ping"}) + event(delta)])
    assert outcome.error is not None
    assert outcome.error[0] is errors.CannotUnderstand


def test_thinking_tokens_reach_the_usage_chunk() -> None:
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 9, "output_tokens_details": {"thinking_tokens": 7}},
    }
    items: list[dict[str, Any]] = [START, delta, {"type": "message_stop"}]
    outcome = run([b"".join(event(item) for item in items)])
    usage_chunk = json.loads(outcome.withheld.removeprefix(b"data: "))
    assert usage_chunk["usage"]["completion_tokens"] == 9
    assert usage_chunk["usage"]["completion_tokens_details"] == {"reasoning_tokens": 7}
