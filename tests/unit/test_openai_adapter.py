"""The OpenAI-compatible adapter: pass-through, model replacement, stream usage, model lists."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from actorproxy import errors
from actorproxy.adapters.base import Endpoint, Exchange
from actorproxy.adapters.openai import OpenAIAdapter, replace_model
from actorproxy.adapters.sse_filter import StreamFilter
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
    out = OpenAIAdapter(api_key=None, stream_usage=True).encode_request(ex).body
    assert out == body[:-1] + INSERTED


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
