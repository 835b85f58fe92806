"""The Anthropic adapter: request head, replies, errors and models (sans-IO), then whole
conversations through the fake Anthropic upstream on a loopback socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai.types.chat
import pytest
import trio

from actorproxy import errors
from actorproxy.adapters.anthropic import AnthropicAdapter
from actorproxy.adapters.base import Exchange
from actorproxy.net.base import Headers, UpstreamRequest
from tests import spec
from tests.fakes.anthropic_upstream import (
    DEFAULT_MODELS,
    FakeAnthropic,
    StreamError,
    open_fake_anthropic,
)
from tests.unit.test_anthropic_request import check_contract

CREATED = 1_700_000_000
MODEL = DEFAULT_MODELS[0]
HELLO = [{"role": "user", "content": "hello"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


def exchange(
    body: dict[str, Any], *, stream: bool = False, headers: Headers | None = None
) -> Exchange:
    raw = json.dumps(body).encode()
    return Exchange("chat", raw, "alias", MODEL, stream, "req_1", headers or [], CREATED)


def message(*content: dict[str, Any], stop: str | None = "end_turn", **usage: int | None) -> bytes:
    return json.dumps(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-reported",
            "content": list(content),
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5} | usage,
        }
    ).encode()


def reply(body: bytes) -> Any:
    decoded = json.loads(AnthropicAdapter(api_key="k").decode_response(exchange({}), body))
    spec.validate("CreateChatCompletionResponse", decoded)
    openai.types.chat.ChatCompletion.model_validate(decoded)
    return decoded


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


# --- the request head ---------------------------------------------------------------------------


def test_request_line_and_headers() -> None:
    adapter = AnthropicAdapter(
        api_key="sk-ant",
        beta=["a-2025", "b-2026"],
        headers={"X-Extra": "1", "Anthropic-Version": "v9"},
    )
    incoming = [
        (b"traceparent", b"00-abc-def-01"),
        (b"tracestate", b"k=v"),
        (b"authorization", b"Bearer client-key"),
        (b"cookie", b"secret"),
    ]
    request = adapter.encode_request(
        exchange({"model": "alias", "messages": HELLO}, headers=incoming)
    )
    assert (request.method, request.target) == (b"POST", "/v1/messages")
    headers = dict(request.headers)
    assert len(headers) == len(request.headers)
    assert headers == {
        b"content-type": b"application/json",
        b"anthropic-version": b"v9",
        b"x-api-key": b"sk-ant",
        b"anthropic-beta": b"a-2025,b-2026",
        b"x-extra": b"1",
        b"x-request-id": b"req_1",
        b"traceparent": b"00-abc-def-01",
        b"tracestate": b"k=v",
    }


def test_minimal_headers() -> None:
    request = AnthropicAdapter(api_key=None).encode_request(
        exchange({"model": "alias", "messages": HELLO})
    )
    assert dict(request.headers) == {
        b"content-type": b"application/json",
        b"anthropic-version": b"2023-06-01",
        b"x-request-id": b"req_1",
    }


def test_models_request_and_list() -> None:
    adapter = AnthropicAdapter(api_key="sk-ant", beta=["x"])
    request = adapter.models_request()
    assert (request.method, request.target, request.body) == (b"GET", "/v1/models?limit=1000", b"")
    assert dict(request.headers) == {
        b"anthropic-version": b"2023-06-01",
        b"x-api-key": b"sk-ant",
        b"anthropic-beta": b"x",
    }
    listing = {"data": [{"id": "claude-a", "type": "model"}, {"id": "claude-b"}], "has_more": True}
    assert adapter.decode_models(json.dumps(listing).encode()) == ["claude-a", "claude-b"]
    with pytest.raises(errors.CannotUnderstand):
        adapter.decode_models(b'{"models": []}')


# --- replies ------------------------------------------------------------------------------------


def test_text_reply() -> None:
    body = reply(message(text("Hello"), text(", world"), cache_read_input_tokens=None))
    assert body == {
        "id": "chatcmpl-msg_01",
        "object": "chat.completion",
        "created": CREATED,
        "model": "claude-reported",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello, world", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def test_tool_use_reply() -> None:
    use = {
        "type": "tool_use",
        "id": "toolu_9",
        "name": "get_weather",
        "input": {"city": "Paris", "n": 1},
    }
    choice = reply(message(use, stop="tool_use"))["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris","n":1}'},
        }
    ]
    with_text = reply(message(text("Let me check."), use, stop="tool_use"))["choices"][0]
    assert with_text["message"]["content"] == "Let me check."


def test_thinking_reply() -> None:
    blocks = [
        {"type": "thinking", "thinking": "First, ", "signature": "s1"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "then.", "signature": "s2"},
    ]
    details = {"output_tokens_details": {"thinking_tokens": 4}}
    raw = json.loads(message(*blocks, text("Answer")))
    raw["usage"] |= details
    body = reply(json.dumps(raw).encode())
    assert body["choices"][0]["message"]["reasoning_content"] == "First, then."
    assert body["choices"][0]["message"]["thinking_blocks"] == blocks
    assert body["choices"][0]["message"]["content"] == "Answer"
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}


def test_unknown_blocks_are_skipped_and_nothing_is_an_empty_text() -> None:
    server = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    result = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}
    body = reply(message(server, result, text("Found it.")))
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Found it.",
        "refusal": None,
    }
    assert reply(message(stop="max_tokens"))["choices"][0]["message"]["content"] == ""


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(stop: str | None, finish: str) -> None:
    assert reply(message(text("x"), stop=stop))["choices"][0]["finish_reason"] == finish


def test_usage_counts_cached_input_as_prompt_tokens() -> None:
    usage = reply(
        message(
            text("x"),
            input_tokens=3,
            cache_read_input_tokens=100,
            cache_creation_input_tokens=20,
            output_tokens=7,
        )
    )["usage"]
    assert usage == {
        "prompt_tokens": 123,
        "completion_tokens": 7,
        "total_tokens": 130,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


@pytest.mark.parametrize(
    "body",
    [
        b"<html>",
        b'{"type": "message"}',
        b'{"id": 1}',
        b'{"id": "m", "model": "x", "content": [], "stop_reason": 3}',
    ],
)
def test_unreadable_replies(body: bytes) -> None:
    with pytest.raises(errors.CannotUnderstand):
        AnthropicAdapter(api_key="k").decode_response(exchange({}), body)


# --- errors -------------------------------------------------------------------------------------


def anthropic_error(kind: str, message: str = "boom") -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (400, "invalid_request_error", (400, "invalid_request_error", None)),
        (401, "authentication_error", (401, "invalid_request_error", "invalid_api_key")),
        (403, "permission_error", (403, "invalid_request_error", "permission_denied")),
        (404, "not_found_error", (404, "invalid_request_error", "not_found")),
        (413, "request_too_large", (413, "invalid_request_error", "request_too_large")),
        (429, "rate_limit_error", (429, "requests", "rate_limit_exceeded")),
        (500, "api_error", (500, "server_error", None)),
        (504, "timeout_error", (504, "timeout", "upstream_timeout")),
        (529, "overloaded_error", (503, "service_unavailable", "overloaded")),
        (418, "teapot_error", (418, "upstream_error", "teapot_error")),
    ],
)
def test_error_map(status: int, kind: str, expected: tuple[int, str, str | None]) -> None:
    error = AnthropicAdapter(api_key="k").decode_error(status, [], anthropic_error(kind, "why"))
    assert isinstance(error, errors.UpstreamHTTPError)
    assert (error.status, error.type, error.code) == expected
    assert error.message == "why"
    assert error.retryable == (expected[0] in {429, 500, 503, 504})


def test_error_keeps_rate_limit_headers() -> None:
    headers = [
        (b"retry-after", b"7"),
        (b"retry-after-ms", b"6500"),
        (b"anthropic-ratelimit-requests-remaining", b"0"),
        (b"request-id", b"req_x"),
    ]
    error = AnthropicAdapter(api_key="k").decode_error(
        429, headers, anthropic_error("rate_limit_error")
    )
    assert error.headers == headers[:3]


def test_error_without_an_anthropic_body() -> None:
    error = AnthropicAdapter(api_key="k").decode_error(502, [], b"<html>Bad gateway</html>")
    assert (error.status, error.type, error.code) == (502, "upstream_error", None)
    assert "502" in error.message
    overloaded = AnthropicAdapter(api_key="k").decode_error(529, [], b"")
    assert (overloaded.status, overloaded.code, overloaded.retryable) == (503, "overloaded", True)


# --- through the fake upstream ------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with open_fake_anthropic() as fake:
        yield fake


@pytest.fixture
async def http(fake: FakeAnthropic) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        yield client


async def send(http: httpx.AsyncClient, request: UpstreamRequest) -> httpx.Response:
    with trio.fail_after(10):
        return await http.request(
            request.method.decode(), request.target, headers=request.headers, content=request.body
        )


async def complete(http: httpx.AsyncClient, adapter: AnthropicAdapter, body: dict[str, Any]) -> Any:
    """One turn: the OpenAI ``body`` to the fake and its answer back, as the client sees it."""
    request = adapter.encode_request(exchange(body))
    check_contract(json.loads(request.body))
    response = await send(http, request)
    if response.status_code >= 400:
        headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
        raise adapter.decode_error(response.status_code, headers, response.content)
    return reply_of(adapter, response.content)


def reply_of(adapter: AnthropicAdapter, body: bytes) -> Any:
    decoded = json.loads(adapter.decode_response(exchange({}), body))
    spec.validate("CreateChatCompletionResponse", decoded)
    return decoded


async def test_tool_calling_conversation_round_trips(
    fake: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    adapter = AnthropicAdapter(api_key=fake.api_key)
    asked = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather in Paris?"},
    ]
    first = await complete(http, adapter, {"model": "alias", "messages": asked, "tools": [WEATHER]})
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_fake0"
    assert json.loads(call["function"]["arguments"]) == {"query": "weather in Paris?"}
    history = [
        *asked,
        choice["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21C"},
    ]
    second = await complete(
        http, adapter, {"model": "alias", "messages": history, "tools": [WEATHER]}
    )
    assert second["choices"][0]["message"]["content"] == "echo: sunny, 21C"
    assert second["choices"][0]["finish_reason"] == "stop"
    assert second["id"] == "chatcmpl-msg_fake1"
    sent = fake.requests[1].json()
    assert sent["system"] == [text("be brief")]
    assert [turn["role"] for turn in sent["messages"]] == ["user", "assistant", "user"]


async def test_thinking_blocks_survive_the_round_trip(
    fake: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    adapter = AnthropicAdapter(api_key=fake.api_key)
    first = await complete(
        http, adapter, {"model": "alias", "messages": HELLO, "reasoning_effort": "low"}
    )
    said = first["choices"][0]["message"]
    assert said["reasoning_content"] == "The user said: hello"
    assert [block["type"] for block in said["thinking_blocks"]] == ["thinking"]
    assert first["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}
    assert fake.requests[0].json()["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    history = [*HELLO, said, {"role": "user", "content": "and again"}]
    second = await complete(
        http, adapter, {"model": "alias", "messages": history, "reasoning_effort": "low"}
    )
    assert second["choices"][0]["message"]["content"] == "echo: and again"


async def test_cache_control_reports_cached_tokens(
    http: httpx.AsyncClient, fake: FakeAnthropic
) -> None:
    cached = {
        "type": "text",
        "text": "a long shared prefix",
        "cache_control": {"type": "ephemeral"},
    }
    messages = [{"role": "system", "content": [cached]}, *HELLO]
    body = await complete(
        http, AnthropicAdapter(api_key=fake.api_key), {"model": "alias", "messages": messages}
    )
    assert body["usage"]["prompt_tokens"] == 5
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}


async def test_upstream_rejections_become_openai_errors(
    http: httpx.AsyncClient, fake: FakeAnthropic
) -> None:
    wrong_key = AnthropicAdapter(api_key="sk-wrong")
    with pytest.raises(errors.UpstreamHTTPError) as unauthorized:
        await complete(http, wrong_key, {"model": "alias", "messages": HELLO})
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "invalid_api_key")
    adapter = AnthropicAdapter(api_key=fake.api_key)
    unknown = Exchange(
        "chat",
        json.dumps({"model": "x", "messages": HELLO}).encode(),
        "x",
        "claude-x",
        False,
        "r",
        [],
        0,
    )
    response = await send(http, adapter.encode_request(unknown))
    error = adapter.decode_error(response.status_code, [], response.content)
    assert (error.status, error.code) == (404, "not_found")


async def test_models_through_the_fake(http: httpx.AsyncClient, fake: FakeAnthropic) -> None:
    adapter = AnthropicAdapter(api_key=fake.api_key)
    response = await send(http, adapter.models_request())
    assert adapter.decode_models(response.content) == list(DEFAULT_MODELS)


async def test_stream_through_the_fake(http: httpx.AsyncClient, fake: FakeAnthropic) -> None:
    adapter = AnthropicAdapter(api_key=fake.api_key)
    body = {
        "model": "alias",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    streamed = exchange(body, stream=True)
    response = await send(http, adapter.encode_request(streamed))
    translator = adapter.open_stream(streamed)
    assert translator is not None
    frames = translator.feed(response.content) + translator.end()
    chunks = spec.validate_sse_chunks("CreateChatCompletionStreamResponse", frames)
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == "echo: hello"
    assert chunks[-1]["usage"]["prompt_tokens"] == 1
    fake.script(StreamError(after_events=3))
    failing = await send(http, adapter.encode_request(streamed))
    translator = adapter.open_stream(streamed)
    assert translator is not None
    with pytest.raises(errors.UpstreamHTTPError) as caught:
        translator.feed(failing.content)
        translator.end()
    assert (caught.value.status, caught.value.code) == (503, "overloaded")
