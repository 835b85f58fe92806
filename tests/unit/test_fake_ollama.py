"""The fake Ollama server over real sockets: its answers, its rejections, its faults, and the
Ollama adapter driven against it (request encoded, sent, reply translated, checked by the spec)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from actorproxy import errors
from actorproxy.adapters.base import Endpoint, Exchange
from actorproxy.adapters.ollama import OllamaAdapter
from tests import spec
from tests.fakes.ollama_upstream import (
    DIMENSIONS,
    DURATIONS,
    Cut,
    ErrorLine,
    FakeOllama,
    Respond,
    embedding_vector,
    open_fake_ollama,
)

USER = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello big world"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    with trio.fail_after(10):
        async with open_fake_ollama() as server:
            yield server


@pytest.fixture
async def http(fake: FakeOllama) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        yield client


def lines(response: httpx.Response) -> list[Any]:
    return [json.loads(line) for line in response.text.splitlines()]


# --- the fake on its own ----------------------------------------------------------------------


async def test_chat_whole(http: httpx.AsyncClient, fake: FakeOllama) -> None:
    response = await http.post(
        "/api/chat", json={"model": "llama3.2", "messages": USER, "stream": False}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == {"role": "assistant", "content": "echo: hello big world"}
    assert (body["done"], body["done_reason"]) == (True, "stop")
    assert (body["prompt_eval_count"], body["eval_count"]) == (5, 4)
    assert body["total_duration"] == DURATIONS["total_duration"]
    assert fake.requests[-1].json()["model"] == "llama3.2"


async def test_chat_streams_by_default(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/chat", json={"model": "llama3.2", "messages": USER})
    assert response.headers["content-type"] == "application/x-ndjson"
    parts = lines(response)
    assert [p["message"]["content"] for p in parts] == ["echo:", " hello", " big", " world", ""]
    assert [p["done"] for p in parts] == [False] * 4 + [True]


async def test_chat_tool_call_and_limits(http: httpx.AsyncClient) -> None:
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    body = {"model": "llama3.2", "messages": ask, "tools": [TOOL], "stream": False}
    message = (await http.post("/api/chat", json=body)).json()["message"]
    assert message["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"query": "Weather in Paris?"}}}
    ]
    short = {"model": "llama3.2", "messages": USER, "options": {"num_predict": 2}, "stream": False}
    reply = (await http.post("/api/chat", json=short)).json()
    assert (reply["message"]["content"], reply["done_reason"]) == ("echo: hello", "length")


async def test_generate_embed_and_tags(http: httpx.AsyncClient) -> None:
    generated = await http.post(
        "/api/generate", json={"model": "qwen3:8b", "prompt": "hi", "stream": False}
    )
    assert generated.json()["response"] == "echo: hi"
    embedded = (
        await http.post("/api/embed", json={"model": "nomic-embed-text", "input": ["a b", "c"]})
    ).json()
    assert embedded["embeddings"] == [
        embedding_vector("a b", DIMENSIONS),
        embedding_vector("c", DIMENSIONS),
    ]
    assert embedded["prompt_eval_count"] == 3
    tags = (await http.get("/api/tags")).json()
    assert [model["name"] for model in tags["models"]] == [
        "llama3.2:latest",
        "qwen3:8b",
        "nomic-embed-text:latest",
    ]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"model": "mystery", "messages": USER},
            404,
            'model "mystery" not found, try pulling it first',
        ),
        ({"messages": USER}, 400, "model is required"),
        ({"model": "llama3.2"}, 400, "messages is required"),
        (
            {"model": "llama3.2", "messages": [{"role": "wizard", "content": "x"}]},
            400,
            "invalid role: 'wizard'",
        ),
    ],
)
async def test_rejections(
    http: httpx.AsyncClient, body: dict[str, Any], status: int, message: str
) -> None:
    response = await http.post("/api/chat", json=body)
    assert (response.status_code, response.json()) == (status, {"error": message})


async def test_string_tool_arguments_are_rejected(http: httpx.AsyncClient) -> None:
    call = {"function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    messages = [*USER, {"role": "assistant", "content": "", "tool_calls": [call]}]
    response = await http.post("/api/chat", json={"model": "llama3.2", "messages": messages})
    assert response.status_code == 400
    assert "cannot unmarshal string" in response.json()["error"]


async def test_unknown_path(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json={})
    assert (response.status_code, response.text) == (404, "404 page not found")


async def test_faults(http: httpx.AsyncClient, fake: FakeOllama) -> None:
    fake.script(Respond(503, {"error": "busy"}, {"retry-after": "2"}), ErrorLine(2, "boom"), Cut(1))
    body = {"model": "llama3.2", "messages": USER}
    busy = await http.post("/api/chat", json=body)
    assert (busy.status_code, busy.json(), busy.headers["retry-after"]) == (
        503,
        {"error": "busy"},
        "2",
    )
    broken = lines(await http.post("/api/chat", json=body))
    assert broken[-1] == {"error": "boom"}
    assert len(broken) == 3
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post("/api/chat", json=body)
    assert fake.unused_faults == []


# --- the adapter against the fake ------------------------------------------------------------


async def call_adapter(
    http: httpx.AsyncClient,
    endpoint: Endpoint,
    body: dict[str, Any],
    *,
    stream: bool = False,
    adapter: OllamaAdapter | None = None,
) -> bytes:
    """One exchange through the adapter: what the client would receive."""
    adapter = adapter or OllamaAdapter(keep_alive="5m")
    exchange = Exchange(
        endpoint, json.dumps(body).encode(), "alias", body["model"], stream, "r1", [], 1
    )
    request = adapter.encode_request(exchange)
    response = await http.request(
        request.method.decode(), request.target, content=request.body, headers=request.headers
    )
    if response.status_code >= 400:
        raise adapter.decode_error(
            response.status_code, list(response.headers.raw), response.content
        )
    translator = adapter.open_stream(exchange) if stream else None
    if translator is None:
        return adapter.decode_response(exchange, response.content)
    return b"".join(translator.feed(part) for part in response.iter_bytes(7)) + translator.end()


async def test_adapter_chat(http: httpx.AsyncClient) -> None:
    body = {"model": "llama3.2", "messages": USER, "max_tokens": 3}
    reply = json.loads(await call_adapter(http, "chat", body))
    spec.validate("CreateChatCompletionResponse", reply)
    assert reply["choices"][0]["message"]["content"] == "echo: hello big"
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    streamed = await call_adapter(
        http, "chat", {**body, "stream_options": {"include_usage": True}}, stream=True
    )
    chunks = spec.validate_sse_chunks("CreateChatCompletionStreamResponse", streamed)
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        == "echo: hello big"
    )
    assert chunks[-1]["usage"]["total_tokens"] == 8


async def test_adapter_tool_round_trip(http: httpx.AsyncClient) -> None:
    ask = {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [TOOL],
    }
    reply = json.loads(await call_adapter(http, "chat", ask))
    message = reply["choices"][0]["message"]
    assert reply["choices"][0]["finish_reason"] == "tool_calls"
    answer = {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "sunny"}
    follow_up = {**ask, "messages": [*ask["messages"], message, answer]}
    final = json.loads(await call_adapter(http, "chat", follow_up))
    assert final["choices"][0]["message"]["content"] == "echo: weather?"


async def test_adapter_completions_and_embeddings(http: httpx.AsyncClient) -> None:
    prompt = {"model": "llama3.2", "prompt": "once upon"}
    streamed = await call_adapter(http, "completions", prompt, stream=True)
    chunks = spec.validate_sse_chunks("CreateCompletionStreamResponse", streamed)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "echo: once upon"
    request = {"model": "nomic-embed-text", "input": ["a"], "dimensions": 4}
    embedded = json.loads(await call_adapter(http, "embeddings", request))
    spec.validate("CreateEmbeddingResponse", embedded)
    assert embedded["data"][0]["embedding"] == embedding_vector("a", 4)


async def test_adapter_errors_and_models(http: httpx.AsyncClient, fake: FakeOllama) -> None:
    with pytest.raises(errors.UpstreamHTTPError) as caught:
        await call_adapter(http, "chat", {"model": "mystery", "messages": USER})
    assert (caught.value.status, caught.value.code) == (404, "model_not_found")
    fake.script(ErrorLine(2))
    with pytest.raises(errors.UpstreamFailed):
        await call_adapter(http, "chat", {"model": "llama3.2", "messages": USER}, stream=True)
    adapter = OllamaAdapter()
    request = adapter.models_request()
    response = await http.request(request.method.decode(), request.target, headers=request.headers)
    assert adapter.decode_models(response.content) == [
        "llama3.2:latest",
        "qwen3:8b",
        "nomic-embed-text:latest",
    ]
