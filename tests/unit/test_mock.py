"""The mock provider: its replies as an OpenAI client sees them, and MockUpstream's pacing."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import httpx2
import openai
import pytest
import trio
import trio.testing

from actorproxy import errors
from actorproxy.adapters import mock
from actorproxy.adapters.sse import SSEDecoder
from actorproxy.config import MockConfig
from actorproxy.net.base import UpstreamRequest, read_all
from actorproxy.net.mock import MockUpstream
from tests.spec import sse_data, validate, validate_sse_chunks

CREATED = 1_725_000_000
USER = {"role": "user", "content": "hello there general kenobi"}


def call(
    target: str, body: object = None, *, method: bytes = b"POST", config: MockConfig | None = None
) -> mock.Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return mock.respond(method, target, raw, config=config or MockConfig(), created=CREATED)


def ok_json(reply: mock.Reply, schema: str) -> Any:
    assert (reply.status, reply.content_type, reply.stream) == (200, b"application/json", False)
    value = json.loads(reply.body)
    validate(schema, value)
    return value


def stream_chunks(reply: mock.Reply, schema: str) -> list[Any]:
    assert (reply.status, reply.content_type, reply.stream) == (200, b"text/event-stream", True)
    assert all(frame.startswith(b"data: ") and frame.endswith(b"\n\n") for frame in reply.frames)
    return validate_sse_chunks(schema, reply.body)


def chat(**fields: object) -> dict[str, object]:
    return {"model": "gpt-test", "messages": [USER], **fields}


def content_of(chunks: list[Any], index: int = 0) -> str:
    return "".join(
        chunk["choices"][0]["delta"].get("content", "")
        for chunk in chunks
        if chunk["choices"] and chunk["choices"][0]["index"] == index
    )


# --- chat completions -------------------------------------------------------------------------


def test_chat_reply_echoes_the_last_user_message() -> None:
    body = chat(messages=[{"role": "system", "content": "be brief"}, USER])
    reply = ok_json(call("/chat/completions", body), "CreateChatCompletionResponse")
    assert reply["object"] == "chat.completion"
    assert reply["model"] == "gpt-test"
    assert reply["created"] == CREATED
    assert reply["id"].startswith("chatcmpl-mock-")
    [choice] = reply["choices"]
    assert choice == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": "mock reply: hello there general kenobi",
            "refusal": None,
        },
        "logprobs": None,
        "finish_reason": "stop",
    }


def test_chat_usage_follows_the_documented_rule() -> None:
    # ceil(8 bytes / 4) + 3 and ceil(26 bytes / 4) + 3; six words in the reply.
    body = chat(messages=[{"role": "system", "content": "be brief"}, USER])
    usage = ok_json(call("/chat/completions", body), "CreateChatCompletionResponse")["usage"]
    assert usage["prompt_tokens"] == (2 + 3) + (7 + 3)
    assert usage["completion_tokens"] == 6
    assert usage["total_tokens"] == 21
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


def test_chat_content_parts_are_read_as_text() -> None:
    parts = [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this picture"},
    ]
    body = chat(messages=[{"role": "user", "content": parts}])
    reply = ok_json(call("/chat/completions", body), "CreateChatCompletionResponse")
    assert reply["choices"][0]["message"]["content"] == "mock reply: describe this picture"


def test_chat_honours_n() -> None:
    reply = ok_json(call("/chat/completions", chat(n=3)), "CreateChatCompletionResponse")
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert reply["usage"]["completion_tokens"] == 3 * 6


@pytest.mark.parametrize(
    ("limits", "content"),
    [
        ({"max_tokens": 2}, "mock reply:"),
        ({"max_completion_tokens": 3}, "mock reply: hello"),
        ({"max_tokens": 5, "max_completion_tokens": 1}, "mock"),
    ],
)
def test_chat_max_tokens_truncates_words(limits: dict[str, int], content: str) -> None:
    reply = ok_json(call("/chat/completions", chat(**limits)), "CreateChatCompletionResponse")
    [choice] = reply["choices"]
    assert (choice["message"]["content"], choice["finish_reason"]) == (content, "length")
    assert reply["usage"]["completion_tokens"] == len(content.split())


def test_chat_max_tokens_above_the_reply_length_stops_normally() -> None:
    reply = ok_json(call("/chat/completions", chat(max_tokens=100)), "CreateChatCompletionResponse")
    assert reply["choices"][0]["finish_reason"] == "stop"


def test_chunks_config_gives_lorem_of_that_many_words() -> None:
    reply = call("/chat/completions", chat(), config=MockConfig(chunks=40))
    content = ok_json(reply, "CreateChatCompletionResponse")["choices"][0]["message"]["content"]
    assert content.startswith("lorem ipsum dolor")
    assert len(content.split()) == 40


def test_replies_are_deterministic() -> None:
    first = call("/chat/completions", chat(n=2, stream=True))
    assert first == call("/chat/completions", chat(n=2, stream=True))
    other = ok_json(
        call("/chat/completions", chat(temperature=0.5)), "CreateChatCompletionResponse"
    )
    mine = ok_json(call("/chat/completions", chat()), "CreateChatCompletionResponse")
    assert other["id"] != mine["id"]
    assert other["choices"] == mine["choices"]


# --- chat streaming ---------------------------------------------------------------------------


def test_chat_stream_shape() -> None:
    chunks = stream_chunks(
        call("/chat/completions", chat(stream=True)), "CreateChatCompletionStreamResponse"
    )
    whole = ok_json(call("/chat/completions", chat()), "CreateChatCompletionResponse")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert len(chunks) == 1 + 6 + 1  # role, one per word, finish
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert content_of(chunks) == whole["choices"][0]["message"]["content"]
    assert all("usage" not in chunk for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1


def test_chat_stream_with_include_usage() -> None:
    body = chat(stream=True, stream_options={"include_usage": True}, n=2, max_tokens=4)
    chunks = stream_chunks(call("/chat/completions", body), "CreateChatCompletionStreamResponse")
    *body_chunks, last = chunks
    assert all(chunk["usage"] is None and len(chunk["choices"]) == 1 for chunk in body_chunks)
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 2 * 4
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + 8
    assert content_of(chunks, 0) == content_of(chunks, 1) == "mock reply: hello there"
    finishes = [
        c["choices"][0]["finish_reason"] for c in body_chunks if c["choices"][0]["finish_reason"]
    ]
    assert finishes == ["length", "length"]


def test_chat_stream_has_one_content_chunk_per_configured_chunk() -> None:
    reply = call("/chat/completions", chat(stream=True), config=MockConfig(chunks=25))
    chunks = stream_chunks(reply, "CreateChatCompletionStreamResponse")
    assert len(chunks) == 1 + 25 + 1


def test_sse_decoder_reads_the_mock_stream() -> None:
    reply = call("/chat/completions", chat(stream=True))
    events = SSEDecoder().feed(reply.body)
    assert [event.data for event in events] == sse_data(reply.body)
    assert events[-1].data == "[DONE]"


# --- legacy completions -----------------------------------------------------------------------


def test_completion_with_one_prompt() -> None:
    body = {"model": "davinci", "prompt": "once upon a time"}
    reply = ok_json(call("/completions", body), "CreateCompletionResponse")
    assert reply["object"] == "text_completion"
    assert reply["choices"] == [
        {
            "text": "mock reply: once upon a time",
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert reply["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}


def test_completion_with_prompt_list_and_n() -> None:
    body = {"model": "davinci", "prompt": ["a", "b c"], "n": 2}
    reply = ok_json(call("/completions", body), "CreateCompletionResponse")
    texts = [(c["index"], c["text"]) for c in reply["choices"]]
    assert texts == [
        (0, "mock reply: a"),
        (1, "mock reply: a"),
        (2, "mock reply: b c"),
        (3, "mock reply: b c"),
    ]


def test_completion_with_token_prompts() -> None:
    body = {"model": "davinci", "prompt": [[1, 2, 3], [4]]}
    reply = ok_json(call("/completions", body), "CreateCompletionResponse")
    assert reply["usage"]["prompt_tokens"] == 4
    assert reply["choices"][0]["text"] == "mock reply: 3 tokens"


def test_completion_defaults_to_16_tokens_like_openai() -> None:
    body = {"model": "davinci", "prompt": "x"}
    reply = ok_json(
        call("/completions", body, config=MockConfig(chunks=20)), "CreateCompletionResponse"
    )
    assert len(reply["choices"][0]["text"].split()) == 16
    assert reply["choices"][0]["finish_reason"] == "length"


def test_completion_stream() -> None:
    body = {
        "model": "davinci",
        "prompt": "hi",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    reply = call("/completions", body)
    assert reply.stream
    chunks = [json.loads(data) for data in sse_data(reply.body)[:-1]]
    *parts, finish, last = chunks
    assert "".join(c["choices"][0]["text"] for c in parts) == "mock reply: hi"
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None and c["object"] == "text_completion" for c in [*parts, finish])
    assert last["choices"] == []
    validate("CompletionUsage", last["usage"])
    validate("CreateCompletionResponse", last)


# --- embeddings -------------------------------------------------------------------------------


def embed(**fields: object) -> Any:
    body = {"model": "text-embedding-3-small", "input": "hello", **fields}
    return ok_json(call("/embeddings", body), "CreateEmbeddingResponse")


def test_embeddings_are_unit_vectors_of_the_configured_size() -> None:
    reply = embed(input=["a", "bb", "a"])
    vectors = [item["embedding"] for item in reply["data"]]
    assert [item["index"] for item in reply["data"]] == [0, 1, 2]
    assert all(len(vector) == MockConfig().embedding_dims for vector in vectors)
    assert all(math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-6) for vector in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert reply["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_embeddings_honour_dimensions_and_config() -> None:
    assert len(embed(dimensions=256)["data"][0]["embedding"]) == 256
    config = MockConfig(embedding_dims=3)
    reply = call("/embeddings", {"model": "m", "input": "x"}, config=config)
    assert len(ok_json(reply, "CreateEmbeddingResponse")["data"][0]["embedding"]) == 3


def test_base64_embeddings_decode_to_the_float_values() -> None:
    floats = embed(input=["x", "y"])["data"]
    encoded = embed(input=["x", "y"], encoding_format="base64")["data"]
    for as_float, as_base64 in zip(floats, encoded, strict=True):
        raw = base64.b64decode(as_base64["embedding"])
        decoded = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        assert decoded == as_float["embedding"]
        assert math.isclose(math.hypot(*decoded), 1.0, rel_tol=1e-6)


def test_embeddings_of_token_ids() -> None:
    assert embed(input=[1, 2, 3])["usage"]["prompt_tokens"] == 3
    reply = embed(input=[[1, 2], [3]])
    assert len(reply["data"]) == 2
    assert reply["usage"]["prompt_tokens"] == 3


# --- models and routing -----------------------------------------------------------------------


def test_models() -> None:
    listing = ok_json(call("/models", method=b"GET"), "ListModelsResponse")
    assert [model["id"] for model in listing["data"]] == list(mock.MODEL_IDS)
    model = ok_json(call("/models/org/some-model", method=b"GET"), "Model")
    assert (model["id"], model["object"]) == ("org/some-model", "model")


def test_v1_prefix_and_query_are_accepted() -> None:
    assert call("/v1/chat/completions?api-version=1", chat()).status == 200


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        (b"POST", "/chat/completion", 404),
        (b"POST", "/v2/chat/completions", 404),
        (b"GET", "/chat/completions", 405),
        (b"POST", "/models", 405),
    ],
)
def test_unknown_routes(method: bytes, target: str, status: int) -> None:
    reply = call(target, chat(), method=method)
    assert reply.status == status
    validate("ErrorResponse", json.loads(reply.body))


# --- validation -------------------------------------------------------------------------------


CHAT = "/chat/completions"
MISSING = "missing_required_parameter"
BAD = "invalid_value"
TEXT_PART_INT = [USER, {"role": "user", "content": [{"type": "text", "text": 1}]}]


@pytest.mark.parametrize(
    ("target", "body", "param", "code"),
    [
        (CHAT, b'{"model": "m", ', None, None),
        (CHAT, b"[]", None, BAD),
        (CHAT, {"messages": [USER]}, "model", MISSING),
        (CHAT, {"model": "m"}, "messages", MISSING),
        (CHAT, {"model": 4, "messages": [USER]}, "model", BAD),
        (CHAT, chat(messages=[]), "messages", "empty_array"),
        (CHAT, chat(messages=[{"content": "x"}]), "messages[0].role", MISSING),
        (CHAT, chat(messages=[{"role": "bot", "content": "x"}]), "messages[0].role", BAD),
        (CHAT, chat(messages=[{"role": "user", "content": 5}]), "messages[0].content", BAD),
        (CHAT, chat(messages=TEXT_PART_INT), "messages[1].content[0].text", BAD),
        (CHAT, chat(n=0), "n", BAD),
        (CHAT, chat(max_tokens=0), "max_tokens", BAD),
        (CHAT, chat(temperature="hot"), "temperature", BAD),
        (CHAT, chat(stream_options={"include_usage": True}), "stream_options", BAD),
        ("/completions", {"model": "m"}, "prompt", MISSING),
        ("/completions", {"model": "m", "prompt": ["a", 1]}, "prompt", BAD),
        ("/embeddings", {"model": "m", "input": []}, "input", BAD),
        ("/embeddings", {"model": "m", "input": "x", "dimensions": 0}, "dimensions", BAD),
        (
            "/embeddings",
            {"model": "m", "input": "x", "encoding_format": "hex"},
            "encoding_format",
            BAD,
        ),
    ],
)
def test_bad_requests_name_the_param(
    target: str, body: object, param: str | None, code: str | None
) -> None:
    reply = call(target, body)
    assert (reply.status, reply.content_type) == (400, b"application/json")
    error = json.loads(reply.body)
    validate("ErrorResponse", error)
    assert error["error"]["type"] == "invalid_request_error"
    assert (error["error"]["param"], error["error"]["code"]) == (param, code)
    if param is not None:
        assert f"'{param}'" in error["error"]["message"]


def test_null_optional_fields_are_accepted() -> None:
    body = chat(n=None, stream=None, max_tokens=None, temperature=None, stream_options=None)
    assert call("/chat/completions", body).status == 200


def test_the_openai_sdk_reads_every_endpoint() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        target = request.url.raw_path.decode()
        reply = mock.respond(
            request.method.encode(), target, request.content, config=MockConfig(), created=CREATED
        )
        return httpx2.Response(
            reply.status, headers={"content-type": reply.content_type.decode()}, content=reply.body
        )

    with httpx2.Client(transport=httpx2.MockTransport(handler)) as http:
        client = openai.OpenAI(api_key="unused", base_url="http://mock/v1", http_client=http)
        messages: list[Any] = [USER]
        completion = client.chat.completions.create(model="m", messages=messages)
        assert completion.choices[0].message.content == "mock reply: hello there general kenobi"
        stream = client.chat.completions.create(
            model="m", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        *chunks, last = list(stream)
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks)
            == completion.choices[0].message.content
        )
        assert last.usage == completion.usage
        embedding = client.embeddings.create(model="m", input="hello")  # the SDK asks for base64
        assert embedding.data[0].embedding == embed()["data"][0]["embedding"]
        assert client.completions.create(model="m", prompt="hi").choices[0].text == "mock reply: hi"
        assert [model.id for model in client.models.list()] == list(mock.MODEL_IDS)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="m", messages=[])
        assert caught.value.param == "messages"


# --- MockUpstream -----------------------------------------------------------------------------


def request(target: str, body: object, method: bytes = b"POST") -> UpstreamRequest:
    return UpstreamRequest(
        method, target, [(b"content-type", b"application/json")], json.dumps(body).encode()
    )


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    [value] = [v for n, v in headers if n == name]
    return value


async def test_upstream_waits_latency_before_a_json_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = MockUpstream(MockConfig(latency_ms=250, ttft_ms=999), clock=lambda: CREATED + 0.9)
    start = trio.current_time()
    response = await upstream.send(request("/chat/completions", chat()))
    assert trio.current_time() - start == pytest.approx(0.25)
    assert response.status == 200
    assert header(response.headers, b"content-type") == b"application/json"
    body = await read_all(response)
    assert trio.current_time() - start == pytest.approx(0.25)
    assert header(response.headers, b"content-length") == str(len(body)).encode()
    assert body == call("/chat/completions", chat()).body  # created comes from the clock
    await upstream.aclose()


async def test_upstream_paces_a_stream(autojump_clock: trio.testing.MockClock) -> None:
    config = MockConfig(latency_ms=999, ttft_ms=100, chunk_interval_ms=10, chunks=5)
    upstream = MockUpstream(config, clock=lambda: CREATED)
    start = trio.current_time()
    response = await upstream.send(request("/chat/completions", chat(stream=True)))
    assert trio.current_time() - start == pytest.approx(0.1)
    assert header(response.headers, b"content-type") == b"text/event-stream"
    frames = []
    while frame := await response.receive_some():
        frames.append(frame)
    expected = call("/chat/completions", chat(stream=True), config=config).frames
    assert tuple(frames) == expected
    assert len(frames) == 1 + 5 + 1 + 1
    assert trio.current_time() - start == pytest.approx(0.1 + 0.01 * (len(frames) - 1))
    await response.aclose()


async def test_upstream_errors_are_replies_with_ids(autojump_clock: trio.testing.MockClock) -> None:
    upstream = MockUpstream(MockConfig())
    first = await upstream.send(request("/chat/completions", {"model": "m"}))
    second = await upstream.send(request("/nowhere", {}))
    assert (first.status, second.status) == (400, 404)
    assert header(first.headers, b"x-request-id") != header(second.headers, b"x-request-id")
    assert json.loads(await read_all(first))["error"]["param"] == "messages"
    await second.aclose()


async def test_upstream_cancellation_just_stops(autojump_clock: trio.testing.MockClock) -> None:
    upstream = MockUpstream(MockConfig(latency_ms=1000, chunk_interval_ms=500))
    with trio.move_on_after(0.3) as scope:
        await upstream.send(request("/embeddings", {"model": "m", "input": "x"}))
    assert scope.cancelled_caught
    response = await upstream.send(request("/chat/completions", chat(stream=True)))
    assert (await response.receive_some()).startswith(b"data: ")
    with trio.move_on_after(0.1) as scope:
        await response.receive_some()
    assert scope.cancelled_caught
    assert (await response.receive_some()).startswith(b"data: ")


async def test_upstream_close(autojump_clock: trio.testing.MockClock) -> None:
    upstream = MockUpstream(MockConfig())
    response = await upstream.send(request("/models", None, method=b"GET"))
    await response.aclose()
    await response.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await response.receive_some()
    await upstream.aclose()
    await upstream.aclose()
    with pytest.raises(errors.UpstreamConnectFailed):
        await upstream.send(request("/models", None, method=b"GET"))
