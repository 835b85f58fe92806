"""OpenAI chunk streams become Anthropic event streams that the official anthropic SDK accumulates
into the expected ``Message``; the output is the same however the upstream bytes are split."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import RawMessageStreamEvent
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from actorproxy import errors
from actorproxy.adapters.messages_stream import MessagesStreamEncoder

MODEL = "claude-latest"  # what the client asked for; the upstream reports its own model
DONE = b"data: [DONE]\n\n"
USAGE = {
    "prompt_tokens": 50,
    "completion_tokens": 12,
    "total_tokens": 62,
    "prompt_tokens_details": {"cached_tokens": 30},
}
_events = TypeAdapter[RawMessageStreamEvent](RawMessageStreamEvent)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    """One ``data:`` frame; ``extra`` goes into the choice (``choices=[]`` replaces them)."""
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None}
    body: dict[str, Any] = {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "upstream-model",
        "choices": [{**choice, **{k: v for k, v in extra.items() if k != "usage"}}],
    }
    if "usage" in extra:
        body["usage"] = extra["usage"]
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def usage_chunk(usage: dict[str, Any] = USAGE) -> bytes:
    body = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return b"data: " + json.dumps({**body, "choices": [], "usage": usage}).encode() + b"\n\n"


def call(index: int, arguments: str, **fields: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, **fields, "function": {"arguments": arguments}}]}


def start(index: int, call_id: str, name: str) -> dict[str, Any]:
    function = {"name": name, "arguments": ""}
    return {
        "tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]
    }


ROLE = chunk({"role": "assistant", "content": ""})
TEXT = ROLE + chunk({"content": "Hello"}) + chunk({"content": " world"}) + chunk(finish="stop")
TEXT += usage_chunk() + DONE
THINKING = b"".join(
    [
        ROLE,
        chunk({"reasoning_content": "Two plus"}),
        chunk({"reasoning_content": " two."}),
        chunk(
            {
                "thinking_blocks": [
                    {"type": "thinking", "thinking": "Two plus two.", "signature": "c2ln"}
                ]
            }
        ),
        chunk({"thinking_blocks": [{"type": "redacted_thinking", "data": "EmwKAhgB"}]}),
        chunk({"reasoning_content": "Check."}),
        chunk({"thinking_blocks": [{"type": "thinking", "thinking": "Check.", "signature": "c2"}]}),
        chunk({"content": "4"}),
        chunk(finish="stop"),
        usage_chunk(),
        DONE,
    ]
)
TOOLS = b"".join(
    [
        ROLE,
        chunk({"content": "Checking both."}),
        chunk(start(0, "call_a", "get_weather")),
        chunk(call(0, '{"city": ')),
        chunk(call(0, '"Paris"}')),
        chunk(start(1, "call_b", "get_time")),
        chunk(call(1, "{}")),
        chunk(finish="tool_calls"),
        usage_chunk(),
        DONE,
    ]
)
NOISY = b"".join(
    [
        b": OPENROUTER PROCESSING\r\n\r\n",
        ROLE.replace(b"\n", b"\r\n"),
        b'data: {"id":"gen-1","choices":[{"index":0,"delta":{"reasoning":"Hm.","future":[1]}}],'
        b'"usage":null,"x_extra":{"a":null}}\r\n\r\n',
        b"event: message\ndata: " + chunk({"content": "ok"})[6:],
        chunk({"content": None, "refusal": None}),
        chunk(finish="stop", stop_reason="END"),
        b": keep-alive\n\n",
        usage_chunk({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}),
        b"data: [DONE]",  # no final blank line
    ]
)
NO_USAGE = ROLE + chunk({"content": "abcdefgh"}) + chunk({"content": "é"}) + chunk(finish="length")
NO_USAGE += DONE
USAGE_WITH_FINISH = ROLE + chunk({"content": "x"}) + chunk(finish="stop", usage=USAGE) + DONE
INTERLEAVED = b"".join(
    [
        chunk(start(0, "call_a", "a")),
        chunk(start(1, "call_b", "b")),
        chunk(call(0, '{"n": 1}')),
        chunk(call(1, '{"n": 2}')),
        chunk(finish="tool_calls"),
        DONE,
    ]
)
NO_INDEX = b"".join(  # Gemini's OpenAI endpoint: whole calls, without index
    [
        chunk({"tool_calls": [{"id": "c1", "function": {"name": "a", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"id": "c2", "function": {"name": "b", "arguments": '{"x":1}'}}]}),
        chunk(finish="stop"),
        DONE,
    ]
)
NO_DONE = ROLE + chunk({"content": "Hi"}) + chunk(finish="stop")  # the body just ends
ERROR_FRAME = (
    ROLE
    + chunk({"content": "Hel"})
    + b'\n\ndata: {"error":{"message":"Nobody home.","type":"service_unavailable",'
    b'"param":null,"code":"no_healthy_provider"}}\n\n'
)
TRUNCATED = ROLE + chunk({"content": "Hel"})
GARBAGE = ROLE + chunk({"content": "Hel"}) + b"data: {not json\n\n" + chunk({"content": "lo"})
EMPTY = DONE

MESSAGES: dict[str, bytes] = {
    "text": TEXT,
    "thinking": THINKING,
    "tools": TOOLS,
    "noisy": NOISY,
    "no_usage": NO_USAGE,
    "usage_with_finish": USAGE_WITH_FINISH,
    "interleaved": INTERLEAVED,
    "no_index": NO_INDEX,
    "no_done": NO_DONE,
}
FAILURES: dict[str, bytes] = {
    "error_frame": ERROR_FRAME,
    "truncated": TRUNCATED,
    "garbage": GARBAGE,
    "empty": EMPTY,
}
TRANSCRIPTS = {**MESSAGES, **FAILURES}


def translate(pieces: Iterable[bytes]) -> tuple[bytes, MessagesStreamEncoder]:
    encoder = MessagesStreamEncoder(MODEL)
    out = b"".join(encoder.feed(piece) for piece in pieces)
    return out + encoder.end(), encoder


def whole(transcript: bytes) -> bytes:
    return translate([transcript])[0]


def frames(stream: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` per frame, each data checked against the SDK's event models."""
    assert stream.endswith(b"\n\n")
    result = []
    for frame in stream.decode().split("\n\n")[:-1]:
        event_line, data_line = frame.split("\n")
        name, data = (
            event_line.removeprefix("event: "),
            json.loads(data_line.removeprefix("data: ")),
        )
        assert data["type"] == name
        if name not in ("ping", "error"):
            _events.validate_python(data)
        result.append((name, data))
    return result


def final_message(stream: bytes) -> dict[str, Any]:
    """What the SDK's own stream accumulator makes of ``stream``."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx2.Response(200, content=stream, headers=headers)

    client = anthropic.Anthropic(
        api_key="test",
        base_url="http://proxy.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as events:
        message = events.get_final_message()
    dumped: dict[str, Any] = message.model_dump(exclude_none=True)
    return dumped


def sdk_error(stream: bytes) -> anthropic.APIStatusError:
    with pytest.raises(anthropic.APIStatusError) as caught:
        final_message(stream)
    return caught.value


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def usage(input_tokens: int, output: int, cached: int = 0) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
    }


def message(
    content: list[dict[str, Any]], reason: str, counted: dict[str, int], **extra: Any
) -> dict[str, Any]:
    body = {"id": "msg_s1", "type": "message", "role": "assistant", "model": MODEL}
    return {**body, "content": content, "stop_reason": reason, "usage": counted, **extra}


EXPECTED: dict[str, dict[str, Any]] = {
    "text": message([text("Hello world")], "end_turn", usage(20, 12, 30)),
    "thinking": message(
        [
            {"type": "thinking", "thinking": "Two plus two.", "signature": "c2ln"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "thinking", "thinking": "Check.", "signature": "c2"},
            text("4"),
        ],
        "end_turn",
        usage(20, 12, 30),
    ),
    "tools": message(
        [
            text("Checking both."),
            tool("call_a", "get_weather", {"city": "Paris"}),
            tool("call_b", "get_time", {}),
        ],
        "tool_use",
        usage(20, 12, 30),
    ),
    "noisy": message(
        [{"type": "thinking", "thinking": "Hm.", "signature": ""}, text("ok")],
        "stop_sequence",
        usage(9, 2),
        stop_sequence="END",
    ),
    # no usage: output estimated from the 10 UTF-8 bytes generated, input left as message_start's
    "no_usage": message([text("abcdefghé")], "max_tokens", usage(0, 3)),
    "usage_with_finish": message([text("x")], "end_turn", usage(20, 12, 30)),
    "interleaved": message(
        [tool("call_a", "a", {"n": 1}), tool("call_b", "b", {"n": 2})], "tool_use", usage(0, 4)
    ),
    "no_index": message([tool("c1", "a", {}), tool("c2", "b", {"x": 1})], "tool_use", usage(0, 3)),
    "no_done": message([text("Hi")], "end_turn", usage(0, 1)),
}


@pytest.mark.parametrize("name", MESSAGES)
def test_the_sdk_accumulates_the_expected_message(name: str) -> None:
    assert final_message(whole(MESSAGES[name])) == EXPECTED[name]


def test_the_event_sequence_follows_anthropics() -> None:
    events = frames(whole(TOOLS))
    assert [(name, data.get("index")) for name, data in events] == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[0][1]["message"] == {
        "id": "msg_s1",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage(0, 0),
    }
    assert events[5][1]["content_block"] == tool("call_a", "get_weather", {})
    assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"city": '}
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": usage(20, 12, 30),
    }


def test_without_usage_message_delta_has_only_the_output_estimate() -> None:
    events = dict(frames(whole(NO_USAGE)))
    assert events["message_delta"]["usage"] == {"output_tokens": 3}


@pytest.mark.parametrize(
    ("name", "kind", "status"),
    [
        ("error_frame", "overloaded_error", 503),  # service_unavailable; Anthropic's 529
        ("truncated", "api_error", 502),
        ("garbage", "api_error", 502),
        ("empty", "api_error", 502),
    ],
)
def test_failures_end_the_stream_with_an_error_event(name: str, kind: str, status: int) -> None:
    out, encoder = translate([FAILURES[name]])
    events = frames(out)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == kind
    assert "message_stop" not in [name for name, _ in events]
    assert encoder.error is not None
    assert encoder.error.status == status
    error = sdk_error(out)
    assert error.type == kind
    assert error.api_message == events[-1][1]["error"]["message"]


def test_the_proxy_error_frame_keeps_its_message() -> None:
    out, encoder = translate([ERROR_FRAME])
    assert out.endswith(
        b"event: error\n"
        b'data: {"type":"error","error":{"type":"overloaded_error","message":"Nobody home."}}\n\n'
    )
    assert isinstance(encoder.error, errors.UpstreamHTTPError)
    assert [name for name, _ in frames(out)][-2] == "content_block_delta"  # the text so far


def test_text_before_garbage_is_delivered_and_later_input_ignored() -> None:
    encoder = MessagesStreamEncoder(MODEL)
    out = encoder.feed(GARBAGE)
    assert b'"text":"Hel"' in out and b'"text":"lo"' not in out
    assert encoder.feed(TEXT) == b""
    assert encoder.end() == b""


def test_input_after_the_end_is_ignored() -> None:
    encoder = MessagesStreamEncoder(MODEL)
    out = encoder.feed(TEXT)
    assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert encoder.feed(chunk({"content": "late"}) + DONE) == b""
    assert encoder.end() == b""
    assert encoder.error is None


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_byte_by_byte_equals_whole(name: str) -> None:
    transcript = TRANSCRIPTS[name]
    pieces = [transcript[i : i + 1] for i in range(len(transcript))]
    assert translate(pieces)[0] == whole(transcript)


@given(
    name=st.sampled_from(sorted(TRANSCRIPTS)),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_random_splits_equal_whole(name: str, cuts: list[int]) -> None:
    transcript = TRANSCRIPTS[name]
    points = sorted({cut % (len(transcript) + 1) for cut in cuts})
    bounds = [0, *points, len(transcript)]
    pieces = [transcript[a:b] for a, b in itertools.pairwise(bounds)]
    assert translate(pieces)[0] == whole(transcript)
