"""The OpenAI-compatible adapter: pass-through, model replacement, stream usage, our extensions
stripped, model lists."""

from __future__ import annotations

import json
from typing import Any

import httpx
import msgspec
import pytest
import trio
from hypothesis import assume, given
from hypothesis import strategies as st

from actorproxy import errors
from actorproxy.adapters.base import Endpoint, Exchange
from actorproxy.adapters.openai import OpenAIAdapter, replace_model
from actorproxy.adapters.sse_filter import StreamFilter
from tests import spec
from tests.fakes.openai_upstream import open_fake_openai

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}'
INSERTED = b',"stream_options":{"include_usage":true}}'


def exchange(
    body: bytes = CHAT,
    *,
    endpoint: Endpoint = "chat",
    upstream_model: str = "gpt-4o-mini",
    stream: bool = True,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Exchange:
    return Exchange(
        endpoint=endpoint,
        body=body,
        model="gpt-4o-mini",
        upstream_model=upstream_model,
        stream=stream,
        request_id="req-1",
        headers=headers or [],
    )


def json_body(**fields: Any) -> bytes:
    return msgspec.json.encode({"model": "gpt-4o-mini", "prompt": "hi", **fields})


# --- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [("chat", "/chat/completions"), ("completions", "/completions"), ("embeddings", "/embeddings")],
)
def test_paths(endpoint: Endpoint, path: str) -> None:
    request = OpenAIAdapter(api_key="sk").encode_request(exchange(endpoint=endpoint))
    assert (request.method, request.target) == (b"POST", path)


def test_headers_carry_the_key_and_the_tracing_headers_only() -> None:
    adapter = OpenAIAdapter(api_key="sk-up", headers={"X-Title": "lab"})
    client = [(b"traceparent", b"00-1-2-01"), (b"authorization", b"Bearer client"), (b"x", b"y")]
    request = adapter.encode_request(exchange(headers=client))
    assert request.headers == [
        (b"content-type", b"application/json"),
        (b"accept", b"*/*"),
        (b"authorization", b"Bearer sk-up"),
        (b"x-title", b"lab"),
        (b"x-request-id", b"req-1"),
        (b"traceparent", b"00-1-2-01"),
    ]


def test_the_body_is_the_clients_when_nothing_changes() -> None:
    ex = exchange()
    assert OpenAIAdapter(api_key=None).encode_request(ex).body is ex.body
    assert OpenAIAdapter(api_key=None).open_stream(ex) is None


def test_model_replacement_keeps_every_other_value() -> None:
    body = b'{"model": "gpt-4o-mini", "temperature": 1.50, "x": {"y": [1, 2]}}'
    request = OpenAIAdapter(api_key=None).encode_request(exchange(body, upstream_model="gpt-4o"))
    assert request.body == b'{"model":"gpt-4o","temperature":1.50,"x":{"y": [1, 2]}}'
    assert request.body == replace_model(body, "gpt-4o")


# --- stream usage -----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_stream_usage_is_injected_byte_exactly(endpoint: Endpoint) -> None:
    adapter = OpenAIAdapter(api_key=None, stream_usage=True)
    ex = exchange(endpoint=endpoint)
    assert adapter.encode_request(ex).body == CHAT[:-1] + INSERTED
    assert isinstance(adapter.open_stream(ex), StreamFilter)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (b"null", b'{"include_usage":true}'),
        (b'{"include_usage":false}', b'{"include_usage":true}'),
        (
            b'{"continuous_usage_stats":true}',
            b'{"continuous_usage_stats":true,"include_usage":true}',
        ),
    ],
)
def test_stream_options_keep_their_other_keys(options: bytes, expected: bytes) -> None:
    body = b'{"model":"gpt-4o-mini","stream":true,"stream_options":' + options + b',"n":2}'
    request = OpenAIAdapter(api_key=None, stream_usage=True).encode_request(exchange(body))
    assert (
        request.body
        == b'{"model":"gpt-4o-mini","stream":true,"stream_options":' + expected + b',"n":2}'
    )


def test_injection_and_model_replacement_together() -> None:
    adapter = OpenAIAdapter(api_key=None, stream_usage=True)
    request = adapter.encode_request(exchange(upstream_model="gpt-4o"))
    assert request.body == CHAT.replace(b"gpt-4o-mini", b"gpt-4o")[:-1] + INSERTED


@pytest.mark.parametrize(
    "ex",
    [
        exchange(b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'),
        exchange(b'{"model":"m","stream":true,"stream_options":"bad"}'),
        exchange(b"not json"),
        exchange(stream=False),
        exchange(endpoint="embeddings"),
    ],
    ids=["client asked", "invalid options", "not json", "not streamed", "embeddings"],
)
def test_no_injection(ex: Exchange) -> None:
    adapter = OpenAIAdapter(api_key=None, stream_usage=True)
    assert adapter.encode_request(ex).body is ex.body
    assert adapter.open_stream(ex) is None


def test_without_stream_usage_nothing_is_injected() -> None:
    ex = exchange()
    adapter = OpenAIAdapter(api_key=None)
    assert adapter.encode_request(ex).body is ex.body
    assert adapter.open_stream(ex) is None


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=6))
def test_injection_changes_nothing_else(extra: dict[str, Any]) -> None:
    fields = {k: v for k, v in extra.items() if k not in ("model", "stream", "stream_options")}
    body = msgspec.json.encode({"model": "gpt-4o-mini", **fields, "stream": True})
    ex = exchange(body)
    adapter = OpenAIAdapter(api_key=None, stream_usage=True, strip_extensions=False)
    assert adapter.encode_request(ex).body == body[:-1] + INSERTED


def test_the_filter_withholds_the_injected_usage_chunk() -> None:
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"a"}}],"usage":null}\n\n'
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n'
    stream = OpenAIAdapter(api_key=None, stream_usage=True).open_stream(exchange())
    assert stream is not None
    out = stream.feed(chunk + usage + b"data: [DONE]\n\n") + stream.end()
    assert (out, stream.withheld()) == (chunk + b"data: [DONE]\n\n", usage)


async def test_injected_usage_against_the_fake_upstream() -> None:
    adapter = OpenAIAdapter(api_key="sk-upstream-test", stream_usage=True)
    body = json_body(stream=True)
    ex = exchange(body, endpoint="completions")
    async with open_fake_openai() as fake, httpx.AsyncClient(base_url=fake.base_url) as http:
        request = adapter.encode_request(ex)
        stream = adapter.open_stream(ex)
        assert stream is not None
        with trio.fail_after(10):
            async with http.stream(
                "POST", request.target, headers=request.headers, content=request.body
            ) as response:
                assert response.status_code == 200
                out = b"".join([stream.feed(piece) async for piece in response.aiter_raw()])
        out += stream.end()
    assert fake.requests[0].json()["stream_options"] == {"include_usage": True}
    assert b'"choices":[]' not in out
    assert out.endswith(b"data: [DONE]\n\n")
    withheld = msgspec.json.decode(stream.withheld().removeprefix(b"data: "))
    assert withheld["choices"] == []
    assert withheld["usage"]["completion_tokens"] == 2


# --- models and errors ------------------------------------------------------------------------


def test_models_request_and_list() -> None:
    adapter = OpenAIAdapter(api_key="sk", headers={"X-Title": "lab"})
    request = adapter.models_request()
    assert (request.method, request.target, request.body) == (b"GET", "/models", b"")
    assert (b"authorization", b"Bearer sk") in request.headers
    assert (b"x-title", b"lab") in request.headers
    body = b'{"object":"list","data":[{"id":"a","object":"model","owned_by":"x"},{"id":"b"}]}'
    assert adapter.decode_models(body) == ["a", "b"]


@pytest.mark.parametrize("body", [b"<html>", b'{"data":[{"name":"a"}]}', b"[]"])
def test_a_bad_model_list_cannot_be_understood(body: bytes) -> None:
    with pytest.raises(errors.CannotUnderstand):
        OpenAIAdapter(api_key=None).decode_models(body)


def test_errors_keep_status_body_and_retry_headers() -> None:
    body = b'{"error":{"message":"slow","type":"requests","param":null,"code":"rate_limit"}}'
    headers = [(b"retry-after", b"2"), (b"retry-after-ms", b"1500"), (b"x-other", b"1")]
    error = OpenAIAdapter(api_key=None).decode_error(429, headers, body)
    assert (error.status, error.type, error.code, error.retryable) == (
        429,
        "requests",
        "rate_limit",
        True,
    )
    assert error.headers == headers[:2]
    assert errors.render(error) == body


def test_a_non_openai_error_body() -> None:
    error = OpenAIAdapter(api_key=None).decode_error(502, [], b"<html>bad gateway</html>")
    assert (error.status, error.type) == (502, "upstream_error")


# --- our extensions ---------------------------------------------------------------------------

CACHE = {"type": "ephemeral"}
THINKING_BLOCK = {"type": "thinking", "thinking": "Hm.", "signature": "c2ln"}
EXTENDED = (
    b'{"model": "gpt-4o-mini", "temperature": 1.50,'
    b' "thinking": {"type": "enabled", "budget_tokens": 1024},'
    b' "messages": [{"role": "system", "content": "Be brief."},'
    b' {"role": "user", "content": [{"type": "text", "text": "a",'
    b' "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "b"}]},'
    b' {"role": "assistant", "content": "ok", "reasoning_content": "Hm.", "thinking_blocks":'
    b' [{"type": "thinking", "thinking": "Hm.", "signature": "c2ln"}]}],'
    b' "x": {"y": [1, 2]}}'
)
STRIPPED = (
    b'{"model":"gpt-4o-mini","temperature":1.50,'
    b'"messages":[{"role": "system", "content": "Be brief."},'
    b'{"role":"user","content":[{"type":"text","text":"a"},{"type": "text", "text": "b"}]},'
    b'{"role":"assistant","content":"ok"}],'
    b'"x":{"y": [1, 2]}}'
)


def test_extensions_are_stripped_and_every_other_value_kept_byte_for_byte() -> None:
    assert OpenAIAdapter(api_key=None).encode_request(exchange(EXTENDED)).body == STRIPPED


def test_stripping_with_model_replacement_and_usage_injection() -> None:
    adapter = OpenAIAdapter(api_key=None, stream_usage=True)
    body = adapter.encode_request(exchange(EXTENDED, upstream_model="gpt-4o")).body
    expected = STRIPPED.replace(b"gpt-4o-mini", b"gpt-4o")[:-1] + INSERTED
    assert body == expected


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m","messages":[{"role":"user","content":"say \\"thinking\\""}]}',
        b'{"model":"m","messages":[{"role":"user","content":"\\"cache_control\\": 1"}]}',
        b'{"model":"m","metadata":{"thinking":"x"},"messages":[]}',
        b'{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x",'
        b'"extra":{"cache_control":{}}}]}]}',
    ],
    ids=["in a string", "in a string, quoted", "nested elsewhere", "nested in a part"],
)
def test_names_that_are_not_our_extensions_leave_the_body_untouched(body: bytes) -> None:
    ex = exchange(body, stream=False)
    assert OpenAIAdapter(api_key=None).encode_request(ex).body is ex.body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"model":"m","thinking":null,"messages":"thinking"}',
            b'{"model":"m","messages":"thinking"}',
        ),
        (
            b'{"model":"m","thinking":{},"messages":[1,"x",{"content":"\\"cache_control\\""}]}',
            b'{"model":"m","messages":[1,"x",{"content":"\\"cache_control\\""}]}',
        ),
        (
            b'{"model":"m","messages":[{"content":[1,{"cache_control":{},'
            b'"":[{"cache_control":1}]}],"thinking_blocks":7}]}',
            b'{"model":"m","messages":[{"content":[1,{"":[{"cache_control":1}]}]}]}',
        ),
    ],
    ids=["messages not an array", "messages not objects", "odd content"],
)
def test_odd_shapes_are_left_for_the_upstream_to_answer(body: bytes, expected: bytes) -> None:
    ex = exchange(body, stream=False)
    assert OpenAIAdapter(api_key=None).encode_request(ex).body == expected


@pytest.mark.parametrize(
    ("adapter", "ex"),
    [
        (OpenAIAdapter(api_key=None, strip_extensions=False), exchange(EXTENDED)),
        (OpenAIAdapter(api_key=None), exchange(EXTENDED, endpoint="completions")),
        (OpenAIAdapter(api_key=None), exchange(EXTENDED, endpoint="embeddings")),
    ],
    ids=["strip_extensions=False", "completions", "embeddings"],
)
def test_extensions_pass_when_not_stripped(adapter: OpenAIAdapter, ex: Exchange) -> None:
    assert adapter.encode_request(ex).body is ex.body


_text = st.text(st.characters(codec="utf-8"), max_size=6)
_part = st.fixed_dictionaries(
    {"type": st.just("text"), "text": _text},
    optional={"cache_control": st.just(CACHE), "detail": _json_values},
)
_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool"]),
        "content": st.none() | _text | st.lists(_part, max_size=3),
    },
    optional={
        "reasoning_content": _text,
        "thinking_blocks": st.lists(st.just(THINKING_BLOCK), max_size=2),
        "name": _text,
    },
)
_body = st.fixed_dictionaries(
    {"model": st.just("gpt-4o-mini"), "messages": st.lists(_message, max_size=4)},
    optional={
        "thinking": st.just({"type": "enabled", "budget_tokens": 1024}),
        "temperature": st.integers(0, 2),
        "tools": st.lists(_json_values, max_size=2),
        "metadata": st.dictionaries(_text, _text, max_size=2),
    },
)
_MARKERS = ('"thinking', '"reasoning_content"', '"cache_control"')


def spaced(value: object) -> bytes:
    """JSON with spaces after separators, so that a value re-encoded would not match its bytes."""
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False).encode()


def without_extensions(body: dict[str, Any]) -> dict[str, Any]:
    messages = [
        {
            **{k: v for k, v in m.items() if k not in ("reasoning_content", "thinking_blocks")},
            "content": [
                {k: v for k, v in part.items() if k != "cache_control"} for part in m["content"]
            ]
            if isinstance(m["content"], list)
            else m["content"],
        }
        for m in body["messages"]
    ]
    return {**{k: v for k, v in body.items() if k != "thinking"}, "messages": messages}


def assert_kept(sent: bytes, original: Any, stripped: Any) -> None:
    """``sent`` is ``original``'s bytes where stripping changed nothing in it; where it changed
    something, the same holds for each member."""
    if original == stripped:
        assert sent == spaced(original)
    elif isinstance(original, dict):
        fields = msgspec.json.decode(sent, type=dict[str, msgspec.Raw])
        assert list(fields) == list(stripped)
        for name, raw in fields.items():
            assert_kept(bytes(raw), original[name], stripped[name])
    else:
        items = msgspec.json.decode(sent, type=list[msgspec.Raw])
        for raw, item, kept in zip(items, original, stripped, strict=True):
            assert_kept(bytes(raw), item, kept)


@given(_body)
def test_stripping_keeps_every_untouched_value_byte_for_byte(body: dict[str, Any]) -> None:
    ex = exchange(spaced(body), stream=False)
    sent = OpenAIAdapter(api_key=None).encode_request(ex).body
    expected = without_extensions(body)
    assert json.loads(sent) == expected
    assert_kept(sent, body, expected)
    if not any(marker in ex.body.decode() for marker in _MARKERS):
        assert sent is ex.body


@given(_body)
def test_bodies_without_our_names_go_out_untouched(body: dict[str, Any]) -> None:
    ex = exchange(spaced(without_extensions(body)), stream=False)
    assume(not any(marker in ex.body.decode() for marker in _MARKERS))
    assert OpenAIAdapter(api_key=None).encode_request(ex).body is ex.body


async def test_the_fake_upstream_accepts_a_stripped_body() -> None:
    body = msgspec.json.encode(
        {
            "model": "gpt-4o-mini",
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "Rules.", "cache_control": CACHE}],
                },
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "Hm.",
                    "thinking_blocks": [THINKING_BLOCK],
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": "{}"},
                        }
                    ],
                },
                {
                    "role": "tool",
                    "content": [{"type": "text", "text": "18 C", "cache_control": CACHE}],
                    "tool_call_id": "toolu_1",
                },
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Thanks!", "cache_control": CACHE}],
                },
            ],
        }
    )
    request = OpenAIAdapter(api_key="sk-upstream-test").encode_request(exchange(body, stream=False))
    async with open_fake_openai() as fake, httpx.AsyncClient(base_url=fake.base_url) as http:
        with trio.fail_after(10):
            response = await http.post(
                request.target, headers=request.headers, content=request.body
            )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "echo: Thanks!"
    received = fake.requests[0]
    assert received.body == request.body
    assert not any(name in received.body for name in (b"thinking", b"reasoning", b"cache"))
    spec.validate("CreateChatCompletionRequest", received.json())
