"""The fake OpenAI upstream, driven with the official SDK and raw httpx over real sockets.

Fault scripts are covered in test_fake_upstream_faults.py.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import trio
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionStreamOptionsParam

from tests import spec
from tests.fakes.openai_bodies import CREATED, DIMENSIONS, embedding_vector
from tests.fakes.openai_upstream import DEFAULT_API_KEY, FakeOpenAI, open_fake_openai

AUTH = {"authorization": f"Bearer {DEFAULT_API_KEY}"}
# The SDK leaves its SSE async generators suspended after [DONE] (it `break`s out of them); trio's
# asyncgen finalizer then warns. An SDK wart under trio, not the fake's: ignore just that.
SDK_STREAM = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|httpx2|httpcore2)\.:ResourceWarning"
)
HELLO: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello  world"},
]
USAGE: ChatCompletionStreamOptionsParam = {"include_usage": True}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with open_fake_openai() as fake:
        yield fake


@pytest.fixture
async def http(fake: FakeOpenAI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, headers=AUTH) as client:
        yield client


@pytest.fixture
async def sdk(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=fake.base_url, api_key=DEFAULT_API_KEY, max_retries=0
    ) as client:
        yield client


async def post_json(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    response = await http.post(path, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


async def test_chat_completion_echoes_last_user_message(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    with trio.fail_after(10):
        completion = await sdk.chat.completions.create(model="gpt-4o-mini", messages=HELLO, n=3)
        raw = await post_json(http, "/chat/completions", {"model": "gpt-4o", "messages": HELLO})
    assert [c.message.content for c in completion.choices] == ["echo: hello  world"] * 3
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.id, completion.created, completion.model) == (
        "chatcmpl-0",
        CREATED,
        "gpt-4o-mini",
    )
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (4, 9)
    assert completion.usage.total_tokens == 13
    spec.validate("CreateChatCompletionResponse", raw)
    assert raw["id"] == "chatcmpl-1"
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"] * 2


async def test_chat_text_parts_and_max_tokens(http: httpx.AsyncClient) -> None:
    parts = [{"type": "text", "text": "one two"}, {"type": "image_url", "image_url": {"url": "x"}}]
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": "three"}]}]
    with trio.fail_after(10):
        body = {"model": "gpt-4o", "messages": messages, "max_completion_tokens": 2}
        raw = await post_json(http, "/chat/completions", body)
    spec.validate("CreateChatCompletionResponse", raw)
    assert raw["choices"][0]["message"]["content"] == "echo: one"
    assert raw["choices"][0]["finish_reason"] == "length"
    assert raw["usage"]["prompt_tokens"] == 3
    assert raw["usage"]["completion_tokens"] == 2


@SDK_STREAM
async def test_chat_stream_with_usage(sdk: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        stream = await sdk.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True, stream_options=USAGE, n=2
        )
        chunks = [chunk async for chunk in stream]
        body = {"model": "gpt-4o", "messages": HELLO, "stream": True, "stream_options": USAGE}
        response = await http.post("/chat/completions", json=body)
    text = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        assert chunk.usage is None
        (choice,) = chunk.choices
        text[choice.index] += choice.delta.content or ""
    assert text == {0: "echo: hello  world", 1: "echo: hello  world"}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 4 + 2 * 3
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    raw = spec.validate_sse_chunks("CreateChatCompletionStreamResponse", response.content)
    assert [c["choices"][0]["delta"] for c in raw[:5]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "echo:"},
        {"content": " hello"},
        {"content": "  world"},
        {},
    ]
    assert raw[4]["choices"][0]["finish_reason"] == "stop"
    assert raw[5]["choices"] == []
    assert raw[5]["usage"]["total_tokens"] == 7


async def test_chat_stream_without_usage_has_no_usage_key(http: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
        response = await http.post("/chat/completions", json=body)
    chunks = spec.validate_sse_chunks("CreateChatCompletionStreamResponse", response.content)
    assert len(chunks) == 5
    assert all("usage" not in chunk for chunk in chunks)


async def test_legacy_completions(sdk: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    model = "gpt-3.5-turbo-instruct"
    with trio.fail_after(10):
        completion = await sdk.completions.create(model=model, prompt=["a b", "c"], n=2)
        raw = await post_json(http, "/completions", {"model": model, "prompt": [[1, 2, 3]]})
    assert [(c.index, c.text) for c in completion.choices] == [
        (0, "echo: a b"),
        (1, "echo: a b"),
        (2, "echo: c"),
        (3, "echo: c"),
    ]
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 10)
    spec.validate("CreateCompletionResponse", raw)
    assert raw["choices"][0]["text"] == "echo: 1 2 3"
    assert raw["usage"]["prompt_tokens"] == 3


@SDK_STREAM
async def test_legacy_completion_stream(sdk: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    model = "gpt-3.5-turbo-instruct"
    with trio.fail_after(10):
        stream = await sdk.completions.create(
            model=model, prompt="x y", stream=True, stream_options=USAGE, max_tokens=2
        )
        chunks = [chunk async for chunk in stream]
        body = {"model": model, "prompt": ["p", "q r"], "stream": True, "stream_options": USAGE}
        response = await http.post("/completions", json=body)
    assert "".join(chunk.choices[0].text for chunk in chunks[:-1]) == "echo: x"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2
    raw = spec.validate_sse_chunks("CreateCompletionStreamResponse", response.content)
    texts = [(c["choices"][0]["index"], c["choices"][0]["text"]) for c in raw[:-1]]
    assert texts == [(0, "echo:"), (1, "echo:"), (0, " p"), (1, " q"), (1, " r"), (0, ""), (1, "")]


async def test_embeddings_float_and_base64(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    model = "text-embedding-3-small"
    with trio.fail_after(10):
        via_sdk = await sdk.embeddings.create(model=model, input=["a b", "c"])
        floats = await post_json(http, "/embeddings", {"model": model, "input": "a b"})
        packed = await post_json(
            http, "/embeddings", {"model": model, "input": [[5, 6]], "encoding_format": "base64"}
        )
        wide = await post_json(
            http, "/embeddings", {"model": model, "input": "a", "dimensions": 40}
        )
    for body in (floats, packed, wide):
        spec.validate("CreateEmbeddingResponse", body)
    assert [e.embedding for e in via_sdk.data] == [embedding_vector("a b"), embedding_vector("c")]
    assert via_sdk.usage.prompt_tokens == via_sdk.usage.total_tokens == 3
    assert floats["data"][0]["embedding"] == embedding_vector("a b")
    assert len(floats["data"][0]["embedding"]) == DIMENSIONS
    decoded = struct.unpack(f"<{DIMENSIONS}f", base64.b64decode(packed["data"][0]["embedding"]))
    assert list(decoded) == embedding_vector([5, 6])
    assert packed["usage"]["prompt_tokens"] == 2
    assert wide["data"][0]["embedding"] == embedding_vector("a", 40)
    assert len(wide["data"][0]["embedding"]) == 40
    # The SDK asks for base64 unless told otherwise, and decoded it to the same floats.
    assert fake.requests[0].json()["encoding_format"] == "base64"


async def test_models(sdk: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        listed = [model.id async for model in sdk.models.list()]
        one = await sdk.models.retrieve("gpt-4o")
        raw_list = (await http.get("/models")).json()
        raw_one = (await http.get("/models/gpt-4o")).json()
        with pytest.raises(openai.NotFoundError) as missing:
            await sdk.models.retrieve("gpt-9")
    assert listed == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "gpt-3.5-turbo-instruct"]
    assert (one.id, one.object, one.created) == ("gpt-4o", "model", CREATED)
    spec.validate("ListModelsResponse", raw_list)
    spec.validate("Model", raw_one)
    assert missing.value.code == "model_not_found"


async def test_configured_models() -> None:
    with trio.fail_after(10):
        async with open_fake_openai("sk-other", models=["m1"]) as fake:
            auth = {"authorization": "Bearer sk-other"}
            async with httpx.AsyncClient(base_url=fake.base_url, headers=auth) as http:
                listing = (await http.get("/models")).json()
                body = {"model": "gpt-4o", "messages": HELLO}
                refused = await http.post("/chat/completions", json=body)
    assert [m["id"] for m in listing["data"]] == ["m1"]
    assert refused.status_code == 404


async def test_unknown_fields_arrive_untouched(fake: FakeOpenAI, http: httpx.AsyncClient) -> None:
    raw = b'{"model":"gpt-4o" ,"messages":[{"role":"user","content":"hi"}],"x_vendor":{"k":[1,2]}}'
    with trio.fail_after(10):
        response = await http.post(
            "/chat/completions?api-version=1",
            content=raw,
            headers={"content-type": "application/json", "X-Trace": "abc"},
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req_0"
    (recorded,) = fake.requests
    assert (recorded.method, recorded.path, recorded.query) == (
        "POST",
        "/v1/chat/completions",
        "api-version=1",
    )
    assert recorded.body == raw
    assert recorded.json()["x_vendor"] == {"k": [1, 2]}
    assert recorded.headers["x-trace"] == "abc"
    assert recorded.headers["authorization"] == AUTH["authorization"]
    assert fake.disconnects == 0
    assert fake.in_flight == 0


CHAT = {"model": "gpt-4o", "messages": HELLO}


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "code"),
    [
        ("/chat/completions", b"{not json", 400, None, None),
        ("/chat/completions", b"[1, 2]", 400, None, "invalid_type"),
        ("/chat/completions", {"messages": HELLO}, 400, "model", "missing_required_parameter"),
        ("/chat/completions", CHAT | {"model": 4}, 400, "model", "invalid_type"),
        ("/chat/completions", {"model": "gpt-4o"}, 400, "messages", "missing_required_parameter"),
        ("/chat/completions", CHAT | {"messages": "hi"}, 400, "messages", "invalid_type"),
        ("/chat/completions", CHAT | {"messages": []}, 400, "messages", "empty_array"),
        (
            "/chat/completions",
            CHAT | {"messages": [{"content": "x"}]},
            400,
            "messages[0].role",
            "invalid_value",
        ),
        ("/chat/completions", CHAT | {"stream": "yes"}, 400, "stream", "invalid_type"),
        ("/chat/completions", CHAT | {"n": "2"}, 400, "n", "invalid_type"),
        ("/chat/completions", CHAT | {"n": True}, 400, "n", "invalid_type"),
        ("/chat/completions", CHAT | {"n": 0}, 400, "n", "invalid_value"),
        ("/chat/completions", CHAT | {"temperature": "hot"}, 400, "temperature", "invalid_type"),
        ("/chat/completions", CHAT | {"temperature": 2.5}, 400, "temperature", "invalid_value"),
        (
            "/chat/completions",
            CHAT | {"stream_options": {"include_usage": True}},
            400,
            "stream_options",
            "invalid_value",
        ),
        ("/chat/completions", CHAT | {"model": "gpt-9"}, 404, None, "model_not_found"),
        ("/completions", {"model": "gpt-4o"}, 400, "prompt", "missing_required_parameter"),
        ("/completions", {"model": "gpt-4o", "prompt": 7}, 400, "prompt", "invalid_value"),
        ("/embeddings", {"model": "gpt-4o"}, 400, "input", "missing_required_parameter"),
        ("/embeddings", {"model": "gpt-4o", "input": ""}, 400, "input", "invalid_value"),
        ("/embeddings", {"model": "gpt-4o", "input": []}, 400, "input", "invalid_value"),
        ("/embeddings", {"model": "gpt-4o", "input": [1, "a"]}, 400, "input", "invalid_value"),
        ("/embeddings", {"model": "gpt-4o", "input": [[1], []]}, 400, "input", "invalid_value"),
        ("/embeddings", {"model": "gpt-4o", "input": {"text": "a"}}, 400, "input", "invalid_value"),
        ("/embeddings", {"model": "gpt-4o", "input": [1.5]}, 400, "input", "invalid_value"),
        (
            "/embeddings",
            {"model": "gpt-4o", "input": "a", "encoding_format": "hex"},
            400,
            "encoding_format",
            "invalid_value",
        ),
        ("/embeddings", {"model": "nope", "input": "a"}, 404, None, "model_not_found"),
        ("/images/generations", {"model": "gpt-4o"}, 404, None, None),
    ],
)
async def test_rejections(  # noqa: PLR0913 - one parametrized case
    fake: FakeOpenAI,
    http: httpx.AsyncClient,
    path: str,
    body: bytes | dict[str, Any],
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    with trio.fail_after(10):
        if isinstance(body, bytes):
            response = await http.post(path, content=body)
        else:
            response = await http.post(path, json=body)
    assert response.status_code == status
    error = response.json()
    spec.validate("ErrorResponse", error)
    assert (error["error"]["param"], error["error"]["code"]) == (param, code)
    assert error["error"]["type"] == "invalid_request_error"
    assert fake.requests[0].path == "/v1" + path


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "You didn't provide an API key"),
        (
            {"authorization": "Bearer sk-wrong-key-123"},
            "Incorrect API key provided: sk-*********-123.",
        ),
        ({"authorization": "Basic c2stdXBzdHJlYW0tdGVzdA=="}, "You didn't provide an API key"),
    ],
)
async def test_auth_rejections(fake: FakeOpenAI, headers: dict[str, str], message: str) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=fake.base_url, headers=headers) as http:
            chat = await http.post("/chat/completions", json=CHAT)
            models = await http.get("/models")
    for response in (chat, models):
        assert response.status_code == 401
        spec.validate("ErrorResponse", response.json())
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert message in response.json()["error"]["message"]


async def test_sdk_raises_typed_errors(fake: FakeOpenAI, sdk: openai.AsyncOpenAI) -> None:
    with trio.fail_after(10):
        async with openai.AsyncOpenAI(
            base_url=fake.base_url, api_key="sk-wrong", max_retries=0
        ) as wrong_key:
            with pytest.raises(openai.AuthenticationError):
                await wrong_key.models.list()
        with pytest.raises(openai.BadRequestError) as bad:
            await sdk.chat.completions.create(model="gpt-4o", messages=HELLO, temperature=9)
        with pytest.raises(openai.NotFoundError) as missing:
            await sdk.embeddings.create(model="gpt-9", input="a")
    assert bad.value.param == "temperature"
    assert missing.value.code == "model_not_found"


WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


async def test_tool_call_round_trip(sdk: openai.AsyncOpenAI) -> None:
    question: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the weather in Paris?"}
    ]
    first = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=question, tools=[WEATHER_TOOL]
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert call.function.arguments == '{"query":"What is the weather in Paris?"}'  # type: ignore[union-attr]
    spec.validate("CreateChatCompletionResponse", first.model_dump(mode="json", exclude_unset=True))
    answered: list[ChatCompletionMessageParam] = [
        *question,
        first.choices[0].message.model_dump(exclude_unset=True),  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    final = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=answered, tools=[WEATHER_TOOL]
    )
    assert final.choices[0].finish_reason == "stop"


async def test_streamed_tool_call_and_tool_turn_checks(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    fragments = [
        chunk.choices[0].delta.tool_calls[0].function.arguments  # type: ignore[union-attr]
        async for chunk in stream
        if chunk.choices and chunk.choices[0].delta.tool_calls
    ]
    assert "".join(f or "" for f in fragments) == '{"query":"weather?"}'
    with pytest.raises(openai.BadRequestError, match="must be a response to a preceeding"):
        await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_x", "content": "sunny"},
            ],
        )
