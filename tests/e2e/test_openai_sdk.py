"""The official openai SDK, sync and async, through the real proxy to a real fake upstream."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import trio
from openai.types.chat import ChatCompletionMessageParam

from actorproxy import runtime
from tests import spec
from tests.e2e.conftest import base_url
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import MASTER_KEY

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there proxy"}]
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


async def test_chat_async_validates_against_spec(client: openai.AsyncOpenAI) -> None:
    with trio.fail_after(10):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=HI,
        )
    spec.validate("CreateChatCompletionResponse", json.loads(raw.content))
    completion = raw.parse()
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content
    assert raw.headers["x-request-id"].startswith("req_")
    assert float(raw.headers["x-actorproxy-overhead-ms"]) >= 0


async def test_chat_sync_client(sync_client: openai.OpenAI) -> None:
    with trio.fail_after(10):
        completion = await trio.to_thread.run_sync(
            lambda: sync_client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        )
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_chat_stream_with_include_usage(client: openai.AsyncOpenAI) -> None:
    with trio.fail_after(10):
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=HI,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


async def test_chat_stream_sync_client(sync_client: openai.OpenAI) -> None:
    def run() -> list[Any]:
        stream = sync_client.chat.completions.create(
            model="gpt-4o-mini",
            messages=HI,
            stream=True,
        )
        return list(stream)

    with trio.fail_after(10):
        chunks = await trio.to_thread.run_sync(run)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_stream_frames_validate_against_spec(proxy: runtime.Server) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": HI,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{base_url(proxy)}/chat/completions", json=body, headers=AUTH
            )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.rstrip().endswith("data: [DONE]")
    chunks = spec.validate_sse_chunks("CreateChatCompletionStreamResponse", response.content)
    assert len(chunks) >= 3


async def test_legacy_completions_plain_and_stream(client: openai.AsyncOpenAI) -> None:
    with trio.fail_after(10):
        raw = await client.completions.with_raw_response.create(
            model="gpt-3.5-turbo-instruct", prompt="Say this"
        )
        stream = await client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say this", stream=True
        )
        pieces = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    spec.validate("CreateCompletionResponse", json.loads(raw.content))
    assert raw.parse().choices[0].text
    assert "".join(pieces)


async def test_embeddings_float_and_base64(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    with trio.fail_after(10):
        as_base64 = await client.embeddings.with_raw_response.create(
            model="text-embedding-3-small", input=["one", "two"]
        )
        as_float = await client.embeddings.with_raw_response.create(
            model="text-embedding-3-small", input=[[1, 2, 3]], encoding_format="float"
        )
        single = await client.embeddings.create(model="text-embedding-3-small", input="one")
    assert json.loads(fake.requests[0].body)["encoding_format"] == "base64"
    for raw in (as_base64, as_float):
        spec.validate("CreateEmbeddingResponse", json.loads(raw.content))
    decoded = as_base64.parse().data
    assert len(decoded) == 2 and isinstance(decoded[0].embedding[0], float)
    assert single.data[0].embedding == decoded[0].embedding


async def test_models_list_and_retrieve(client: openai.AsyncOpenAI) -> None:
    with trio.fail_after(10):
        raw = await client.models.with_raw_response.list()
        one = await client.models.with_raw_response.retrieve("renamed")
    spec.validate("ListModelsResponse", json.loads(raw.content))
    spec.validate("Model", json.loads(one.content))
    ids = {model.id for model in raw.parse().data}
    assert ids == {"gpt-4o-mini", "renamed", "text-embedding-3-small", "gpt-3.5-turbo-instruct"}


async def test_unknown_fields_pass_through_byte_for_byte(
    proxy: runtime.Server, fake: FakeOpenAI
) -> None:
    body = (
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],'
        b' "x_vendor": {"nested": [1, 2.50, "\\u00e9"]}, "temperature":0.7}'
    )
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{base_url(proxy)}/chat/completions", content=body, headers=AUTH
            )
    assert response.status_code == 200
    assert fake.requests[-1].body == body


async def test_alias_maps_only_the_model(proxy: runtime.Server, fake: FakeOpenAI) -> None:
    body = b'{"model":"renamed","messages":[{"role":"user","content":"x"}],"x_extra":[1,2.50]}'
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{base_url(proxy)}/chat/completions", content=body, headers=AUTH
            )
    assert response.status_code == 200
    sent = fake.requests[-1].body
    assert (
        sent == b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"x_extra":[1,2.50]}'
    )


async def test_direct_provider_addressing(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    with trio.fail_after(10):
        completion = await client.chat.completions.create(
            model="openai/gpt-4o",
            messages=HI,
        )
    assert json.loads(fake.requests[-1].body)["model"] == "gpt-4o"
    assert completion.choices


async def test_request_id_is_echoed(proxy: runtime.Server) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{base_url(proxy)}/chat/completions",
                json={"model": "gpt-4o-mini", "messages": HI},
                headers={**AUTH, "x-request-id": "client-chosen-42"},
            )
    assert response.headers["x-request-id"] == "client-chosen-42"


async def test_upstream_gets_its_own_key_never_the_clients(
    client: openai.AsyncOpenAI, fake: FakeOpenAI
) -> None:
    with trio.fail_after(10):
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    sent = fake.requests[-1].headers
    assert sent["authorization"] == f"Bearer {fake.api_key}"
    assert MASTER_KEY not in json.dumps(sent)
