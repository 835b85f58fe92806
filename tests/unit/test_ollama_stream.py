"""Ollama's NDJSON streams translated to OpenAI SSE: same output however the bytes are split."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorproxy import errors
from actorproxy.adapters.base import Endpoint, Exchange, StreamTranslator
from actorproxy.adapters.ollama import OllamaAdapter
from actorproxy.adapters.tool_repair import parse_tool_calls
from tests import spec

CREATED = 1_700_000_000
MODEL = "llama3.2:latest"
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
METRICS = {
    "total_duration": 7_000_000,
    "load_duration": 1_000_000,
    "prompt_eval_count": 12,
    "prompt_eval_duration": 2_000_000,
    "eval_count": 3,
    "eval_duration": 4_000_000,
}


def line(content: str = "", **message: Any) -> dict[str, Any]:
    body = {"role": "assistant", "content": content, **message}
    return {"model": MODEL, "created_at": "2024-01-01T00:00:00Z", "message": body, "done": False}


def last(reason: str = "stop", **extra: Any) -> dict[str, Any]:
    return {**line(), "done": True, "done_reason": reason, **METRICS, **extra}


def ndjson(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in lines)


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": arguments}}


TEXT = ndjson(line("Hel"), line("lo"), line(" world"), last())
TOOLS = ndjson(
    line(tool_calls=[call("get_weather", city="Paris")]),
    line(tool_calls=[call("get_weather", city="Oslo"), call("now")]),
    last(),
)
THINKING = ndjson(line(thinking="Let me"), line(thinking=" think."), line("4"), last())
NOISY = (
    b"\n"
    + json.dumps(
        {**line("Hi"), "future": [1, {"x": None}], "message": {"content": "Hi", "new": 1}}
    ).encode()
    + b"\r\n\n"
    + json.dumps(last("length")).encode()
    + b"\n\n"
)
TEXT_CALL = ndjson(
    line("```json\n"),
    line('{"name": "get_weather", '),
    line('"arguments": {"city": "Rome"}}'),
    line("\n```"),
    last(),
)
GENERATE = b"".join(
    json.dumps(item).encode() + b"\n"
    for item in [
        {"model": MODEL, "response": "Once", "done": False},
        {"model": MODEL, "response": " upon", "done": False},
        {
            "model": MODEL,
            "response": "",
            "done": True,
            "done_reason": "length",
            "context": [1],
            **METRICS,
        },
    ]
)
CHAT_REQUEST: dict[str, Any] = {"model": "alias", "messages": [{"role": "user", "content": "hi"}]}
TOOLS_REQUEST = {**CHAT_REQUEST, "tools": [WEATHER_TOOL]}
TRANSCRIPTS: dict[str, tuple[Endpoint, bytes, dict[str, Any], bool]] = {
    "text": ("chat", TEXT, CHAT_REQUEST, False),
    "tools": ("chat", TOOLS, TOOLS_REQUEST, False),
    "thinking": ("chat", THINKING, CHAT_REQUEST, False),
    "noisy": ("chat", NOISY, CHAT_REQUEST, False),
    "repaired": ("chat", TEXT_CALL, TOOLS_REQUEST, True),
    "generate": ("completions", GENERATE, {"model": "alias", "prompt": "x"}, False),
}


def translator(
    endpoint: Endpoint, request: dict[str, Any], *, repair: bool = False
) -> StreamTranslator:
    exchange = Exchange(
        endpoint=endpoint,
        body=json.dumps({**request, "stream": True}).encode(),
        model="alias",
        upstream_model="llama3.2",
        stream=True,
        request_id="req_9",
        headers=[],
        created=CREATED,
    )
    stream = OllamaAdapter(repair_tool_calls=repair).open_stream(exchange)
    assert stream is not None
    return stream


def run(
    pieces: Iterable[bytes],
    endpoint: Endpoint = "chat",
    request: dict[str, Any] = CHAT_REQUEST,
    *,
    repair: bool = False,
) -> tuple[bytes, bytes]:
    """What the client gets, and what is withheld for the record."""
    stream = translator(endpoint, request, repair=repair)
    out = b"".join(stream.feed(piece) for piece in pieces)
    return out + stream.end(), stream.withheld()


def chunks(body: bytes, endpoint: Endpoint = "chat") -> list[Any]:
    name = (
        "CreateChatCompletionStreamResponse"
        if endpoint == "chat"
        else "CreateCompletionStreamResponse"
    )
    return spec.validate_sse_chunks(name, body)


def deltas(body: bytes) -> list[dict[str, Any]]:
    return [chunk["choices"][0]["delta"] for chunk in chunks(body) if chunk["choices"]]


# --- splitting --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TRANSCRIPTS))
def test_whole_and_byte_by_byte_agree(name: str) -> None:
    endpoint, transcript, request, repair = TRANSCRIPTS[name]
    whole = run([transcript], endpoint, request, repair=repair)
    bytewise = run(
        [transcript[i : i + 1] for i in range(len(transcript))], endpoint, request, repair=repair
    )
    assert bytewise == whole
    chunks(whole[0], endpoint)
    if whole[1]:
        chunks(whole[1] + b"data: [DONE]\n\n", endpoint)


@given(st.sampled_from(sorted(TRANSCRIPTS)), st.lists(st.integers(min_value=0), max_size=12))
def test_random_splits_agree(name: str, cuts: list[int]) -> None:
    endpoint, transcript, request, repair = TRANSCRIPTS[name]
    points = sorted({cut % (len(transcript) + 1) for cut in cuts})
    bounds = zip([0, *points], [*points, len(transcript)], strict=True)
    pieces = [transcript[a:b] for a, b in bounds]
    assert run(pieces, endpoint, request, repair=repair) == run(
        [transcript], endpoint, request, repair=repair
    )


# --- chat -------------------------------------------------------------------------------------


def test_text_stream() -> None:
    body, withheld = run([TEXT])
    decoded = chunks(body)
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in decoded} == {
        ("chatcmpl-req_9", CREATED, MODEL, "chat.completion.chunk")
    }
    assert [c["choices"][0]["delta"] for c in decoded] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {"content": " world"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in decoded] == [None] * 4 + ["stop"]
    assert all("usage" not in c for c in decoded)
    assert decoded[-1]["timings"] == {
        "prompt_ms": 2.0,
        "predicted_ms": 4.0,
        "load_ms": 1.0,
        "total_ms": 7.0,
    }
    (usage,) = chunks(withheld + b"data: [DONE]\n\n")
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def test_usage_goes_to_the_client_when_asked() -> None:
    request = {**CHAT_REQUEST, "stream_options": {"include_usage": True}}
    body, withheld = run([TEXT], request=request)
    decoded = chunks(body)
    assert withheld == b""
    assert all(c["usage"] is None for c in decoded[:-1])
    assert decoded[-1]["choices"] == []
    assert decoded[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    assert body.endswith(b"data: [DONE]\n\n")


def test_tool_calls_across_lines() -> None:
    body, _ = run([TOOLS], request=TOOLS_REQUEST)
    decoded = chunks(body)
    calls = [c for d in deltas(body) for c in d.get("tool_calls", [])]
    assert calls == [
        {
            "index": 0,
            "id": "call_req_9_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {
            "index": 1,
            "id": "call_req_9_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
        {
            "index": 2,
            "id": "call_req_9_2",
            "type": "function",
            "function": {"name": "now", "arguments": "{}"},
        },
    ]
    assert decoded[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_thinking_streams_as_reasoning_content() -> None:
    body, _ = run([THINKING])
    assert deltas(body)[1:] == [
        {"reasoning_content": "Let me"},
        {"reasoning_content": " think."},
        {"content": "4"},
        {},
    ]


def test_unknown_fields_blank_lines_and_crlf_are_tolerated() -> None:
    body, _ = run([NOISY])
    decoded = chunks(body)
    assert deltas(body)[1:] == [{"content": "Hi"}, {}]
    assert decoded[-1]["choices"][0]["finish_reason"] == "length"


def test_a_last_line_without_newline_counts() -> None:
    body, _ = run([TEXT.rstrip(b"\n")])
    assert body == run([TEXT])[0]


def test_lines_after_the_last_are_ignored() -> None:
    assert run([TEXT + ndjson(line("late")) + b"garbage\n"]) == run([TEXT])


def test_error_line_mid_stream() -> None:
    stream = translator("chat", CHAT_REQUEST)
    first = stream.feed(ndjson(line("Hel")))
    assert b'"Hel"' in first
    with pytest.raises(errors.UpstreamFailed) as caught:
        stream.feed(b'{"error":"an error was encountered while running the model: CUDA OOM"}\n')
    assert "CUDA OOM" in caught.value.message
    assert caught.value.status == 502


ERROR_MID_STREAM = ndjson(line("Hel"), line("lo")) + b'{"error": "model runner stopped"}\n'


@given(st.lists(st.integers(min_value=0, max_value=len(ERROR_MID_STREAM)), max_size=6))
def test_frames_before_an_error_line_are_delivered_first(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    bounds = zip([0, *points], [*points, len(ERROR_MID_STREAM)], strict=True)
    stream = translator("chat", CHAT_REQUEST)
    out = b""
    with pytest.raises(errors.UpstreamFailed) as caught:
        for a, b in bounds:
            out += stream.feed(ERROR_MID_STREAM[a:b])
        stream.end()
    assert caught.value.message == "Ollama reported an error: model runner stopped"
    assert [d.get("content") for d in deltas(out + b"data: [DONE]\n\n")] == ["", "Hel", "lo"]
    with pytest.raises(errors.UpstreamFailed):
        stream.feed(b"")


@pytest.mark.parametrize(
    "garbage",
    [
        b"data: {}\n",
        b"<html>\n",
        b"[1, 2]\n",
        b'{"message": {"content": 7}}\n',
        b'{"done": "yes"}\n',
    ],
)
def test_garbage_is_not_understood(garbage: bytes) -> None:
    stream = translator("chat", CHAT_REQUEST)
    with pytest.raises(errors.CannotUnderstand):
        stream.feed(garbage)
    stream = translator("chat", CHAT_REQUEST)
    assert b'"ok"' in stream.feed(ndjson(line("ok")) + garbage)
    with pytest.raises(errors.CannotUnderstand):
        stream.end()


@pytest.mark.parametrize(
    "body", [b"", ndjson(line("Hel")), ndjson(line("Hel")) + b'{"model": "m", "mess']
)
def test_a_stream_without_its_last_line_is_a_protocol_error(body: bytes) -> None:
    stream = translator("chat", CHAT_REQUEST)
    with pytest.raises((errors.UpstreamProtocolError, errors.CannotUnderstand)) as caught:
        stream.feed(body)
        stream.end()
    assert caught.value.status == 502
    if body.endswith(b"\n") or not body:
        assert isinstance(caught.value, errors.UpstreamProtocolError)


# --- tool repair in streams -------------------------------------------------------------------


def test_repaired_call_in_a_stream() -> None:
    body, _ = run([TEXT_CALL], request=TOOLS_REQUEST, repair=True)
    decoded = chunks(body)
    assert deltas(body) == [
        {"role": "assistant", "content": ""},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_req_9_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                }
            ]
        },
        {},
    ]
    assert decoded[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_plain_text_is_not_held_back_with_repair_on() -> None:
    stream = translator("chat", TOOLS_REQUEST, repair=True)
    assert b'"Sunny"' in stream.feed(ndjson(line("Sunny")))
    assert b'" today"' in stream.feed(ndjson(line(" today")))


def test_json_that_is_no_call_is_released_at_the_end() -> None:
    transcript = ndjson(line('{"answer"'), line(": 42}"), last())
    stream = translator("chat", TOOLS_REQUEST, repair=True)
    assert b"answer" not in stream.feed(ndjson(line('{"ans')))
    body, _ = run([transcript], request=TOOLS_REQUEST, repair=True)
    assert "".join(d.get("content", "") for d in deltas(body)) == '{"answer": 42}'
    other = ndjson(line('{"name": "rm_rf", '), line('"arguments": {}}'), last())
    body, _ = run([other], request=TOOLS_REQUEST, repair=True)
    assert (
        "".join(d.get("content", "") for d in deltas(body)) == '{"name": "rm_rf", "arguments": {}}'
    )
    assert chunks(body)[-1]["choices"][0]["finish_reason"] == "stop"


def test_repair_needs_offered_tools() -> None:
    assert run([TEXT_CALL], repair=True) == run([TEXT_CALL])


# --- generate ---------------------------------------------------------------------------------


def test_generate_stream() -> None:
    request = {"model": "alias", "prompt": "x", "stream_options": {"include_usage": True}}
    body, withheld = run([GENERATE], "completions", request)
    decoded = chunks(body, "completions")
    assert withheld == b""
    assert {(c["id"], c["object"], c["model"]) for c in decoded} == {
        ("cmpl-req_9", "text_completion", MODEL)
    }
    assert [c["choices"] for c in decoded] == [
        [{"text": "Once", "index": 0, "logprobs": None, "finish_reason": None}],
        [{"text": " upon", "index": 0, "logprobs": None, "finish_reason": None}],
        [{"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}],
        [],
    ]
    assert decoded[2]["timings"]["total_ms"] == 7.0
    assert decoded[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def test_generate_error_line() -> None:
    stream = translator("completions", {"model": "alias", "prompt": "x"})
    body = b'{"model": "m", "response": "a", "done": false}\n{"error": "boom"}\n'
    assert b'"text":"a"' in stream.feed(body)
    with pytest.raises(errors.UpstreamFailed):
        stream.end()


def test_embeddings_have_no_stream() -> None:
    exchange = Exchange("embeddings", b'{"model": "m", "input": "a"}', "m", "m", True, "r", [])
    assert OllamaAdapter().open_stream(exchange) is None


@given(st.lists(st.text(min_size=1), max_size=6))
def test_repair_never_changes_text_that_is_no_call(pieces: list[str]) -> None:
    text = "".join(pieces)
    transcript = ndjson(*(line(piece) for piece in pieces), last())
    body, _ = run([transcript], request=TOOLS_REQUEST, repair=True)
    if parse_tool_calls(text, {"get_weather"}) is None:
        assert "".join(d.get("content", "") for d in deltas(body)) == text
        assert chunks(body)[-1]["choices"][0]["finish_reason"] == "stop"
