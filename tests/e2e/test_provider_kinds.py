"""The same OpenAI calls through every provider kind, each against its own loopback fake.

Whichever provider serves the alias ``assistant``, the official ``openai`` SDK (``AsyncOpenAI``
on ``/v1`` and ``AsyncAzureOpenAI`` on Azure's paths) and the official ``anthropic`` SDK (on
``/v1/messages``) see the same OpenAI-side results: the fakes all answer ``"echo: <question>"``
and call the first offered tool with ``{"query": <question>}`` when the question says "weather".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import msgspec
import openai
import pyarrow.dataset as ds
import pytest
import trio

from actorproxy import config as cfg
from actorproxy import runtime
from tests import spec
from tests.fakes.anthropic_upstream import open_fake_anthropic
from tests.fakes.azure_upstream import open_fake_azure
from tests.fakes.ollama_upstream import open_fake_ollama
from tests.fakes.openai_upstream import open_fake_openai
from tests.harness import MASTER_KEY, UPSTREAM_KEY_ENV, environ, open_proxy, proxy_config

KINDS = ("openai", "azure", "anthropic", "ollama")
UPSTREAM_KEY = "sk-upstream-shared"
QUESTION = "What is the weather in Paris?"
TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a place.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


TARGETS = {
    "openai": "gpt-4o-mini",
    "azure": "gpt-4o-mini-prod",
    "anthropic": "claude-haiku-4-5",
    "ollama": "llama3.2:latest",
}


@asynccontextmanager
async def open_kind(kind: str) -> AsyncIterator[tuple[cfg.ProviderConfig, str]]:
    """A fake upstream of ``kind`` and the provider (and target model) that reaches it."""
    common: dict[str, Any] = {"name": kind, "kind": kind, "api_key_env": UPSTREAM_KEY_ENV}
    common |= {"request_timeout_s": 10.0, "list_models": kind != "azure", "stream_usage": True}
    async with AsyncExitStack() as stack:
        if kind == "openai":
            fake: Any = await stack.enter_async_context(open_fake_openai(UPSTREAM_KEY))
        elif kind == "azure":
            fake = await stack.enter_async_context(open_fake_azure(api_key=UPSTREAM_KEY))
        elif kind == "anthropic":
            fake = await stack.enter_async_context(open_fake_anthropic(UPSTREAM_KEY))
        else:
            fake = await stack.enter_async_context(open_fake_ollama())
        yield cfg.ProviderConfig(base_url=fake.base_url, **common), TARGETS[kind]


@pytest.fixture(params=KINDS)
async def proxy(request: pytest.FixtureRequest) -> AsyncIterator[runtime.Server]:
    async with open_kind(request.param) as (provider, model):
        alias = cfg.ModelConfig(name="assistant", targets=[f"{provider.name}/{model}"])
        config = proxy_config(provider, models=[alias])
        async with open_proxy(config, environ(UPSTREAM_KEY)) as server:
            yield server


@pytest.fixture
async def client(proxy: runtime.Server) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=proxy.urls[0] + "/v1", api_key=MASTER_KEY, max_retries=0
    ) as sdk:
        yield sdk


def dump(model: Any) -> Any:
    return model.model_dump(mode="json", exclude_unset=True)


async def test_chat(client: openai.AsyncOpenAI) -> None:
    with trio.fail_after(10):
        reply = await client.chat.completions.create(
            model="assistant",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ],
        )
    spec.validate("CreateChatCompletionResponse", dump(reply))
    assert reply.choices[0].message.content == "echo: hi"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens > 0


async def test_stream_matches_the_whole_answer(client: openai.AsyncOpenAI) -> None:
    messages: Any = [{"role": "user", "content": "tell me a story"}]
    with trio.fail_after(10):
        whole = await client.chat.completions.create(model="assistant", messages=messages)
        stream = await client.chat.completions.create(
            model="assistant",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        bare = await client.chat.completions.create(
            model="assistant", messages=messages, stream=True
        )
        bare_chunks = [chunk async for chunk in bare]
    for chunk in chunks:
        spec.validate("CreateChatCompletionStreamResponse", dump(chunk))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(chunk.choices for chunk in bare_chunks)  # no usage or filter chunk unasked


async def tool_round_trip(client: openai.AsyncOpenAI, *, stream: bool) -> dict[str, Any]:
    """Question -> tool call -> tool result -> answer, summarised provider-independently."""
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    if stream:
        chunks = await client.chat.completions.create(
            model="assistant", messages=messages, tools=[TOOL], stream=True
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in chunks:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for part in choice.delta.tool_calls or []:
                    call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] += part.id or ""
                    call["name"] += (part.function and part.function.name) or ""
                    call["arguments"] += (part.function and part.function.arguments) or ""
        call = calls[0]
    else:
        first = await client.chat.completions.create(
            model="assistant", messages=messages, tools=[TOOL]
        )
        spec.validate("CreateChatCompletionResponse", dump(first))
        finish = first.choices[0].finish_reason
        made = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        call = {"id": made.id, "name": made.function.name, "arguments": made.function.arguments}  # type: ignore[union-attr]
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"})
    answer = await client.chat.completions.create(
        model="assistant", messages=messages, tools=[TOOL]
    )
    return {
        "finish": finish,
        "name": call["name"],
        "arguments": json.loads(call["arguments"]),
        "id_given": bool(call["id"]),
        "answer_finish": answer.choices[0].finish_reason,
        "answer_is_text": isinstance(answer.choices[0].message.content, str),
    }


EXPECTED_ROUND_TRIP = {
    "finish": "tool_calls",
    "name": "get_weather",
    "arguments": {"query": QUESTION},
    "id_given": True,
    "answer_finish": "stop",
    "answer_is_text": True,
}


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_round_trip_is_the_same_for_every_kind(
    client: openai.AsyncOpenAI, stream: bool
) -> None:
    with trio.fail_after(10):
        assert await tool_round_trip(client, stream=stream) == EXPECTED_ROUND_TRIP


async def test_models_lists_aliases_and_upstream_models(
    proxy: runtime.Server, client: openai.AsyncOpenAI
) -> None:
    """Providers set ``list_models``; their models are listed as ``<provider>/<model>``."""
    (actor,) = proxy.actors.values()
    target = f"{actor.name}/{TARGETS[actor.name]}"
    with trio.fail_after(10):
        listed = [model.id async for model in client.models.list()]
    assert listed[0] == "assistant"
    if target.startswith("azure/"):  # a deployments-style Azure resource has no model list
        assert listed == ["assistant"]
    else:
        assert target in listed and len(listed) > 2


async def test_azure_client_on_azure_paths(proxy: runtime.Server) -> None:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=proxy.urls[0], api_key=MASTER_KEY, api_version="2024-10-21", max_retries=0
    ) as azure:
        with trio.fail_after(10):
            reply = await azure.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": "hi"}]
            )
            stream = await azure.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert reply.choices[0].message.content == text == "echo: hi"


async def test_anthropic_client_on_messages(proxy: runtime.Server) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=proxy.urls[0], api_key=MASTER_KEY, max_retries=0
    ) as claude:
        with trio.fail_after(10):
            message = await claude.messages.create(
                model="assistant",
                max_tokens=256,
                tools=[
                    {
                        "name": "get_weather",
                        "input_schema": {"type": "object"},
                        "description": "Current weather for a place.",
                    }
                ],
                messages=[{"role": "user", "content": QUESTION}],
            )
            async with claude.messages.stream(
                model="assistant", max_tokens=256, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                streamed = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    use = message.content[-1]
    assert isinstance(use, anthropic.types.ToolUseBlock)
    assert (use.name, use.input) == ("get_weather", {"query": QUESTION})
    assert streamed.content[0].type == "text"
    assert streamed.content[0].text == "echo: hi"
    assert streamed.stop_reason == "end_turn"


async def whole_then_bare_stream(server: runtime.Server) -> openai.types.chat.ChatCompletion:
    """Request ``w`` whole, then ``s`` streamed without asking for usage."""
    messages: Any = [{"role": "user", "content": "count my words please"}]
    async with openai.AsyncOpenAI(
        base_url=server.urls[0] + "/v1", api_key=MASTER_KEY, max_retries=0
    ) as client:
        whole = await client.chat.completions.create(
            model="assistant", messages=messages, extra_headers={"x-request-id": "w"}
        )
        stream = await client.chat.completions.create(
            model="assistant", messages=messages, stream=True, extra_headers={"x-request-id": "s"}
        )
        assert all([chunk.choices async for chunk in stream])
    return whole


@pytest.mark.parametrize("kind", KINDS)
async def test_the_dataset_gets_real_usage_the_client_did_not_ask_for(
    kind: str, tmp_path: Path
) -> None:
    async with open_kind(kind) as (provider, model):
        alias = cfg.ModelConfig(name="assistant", targets=[f"{provider.name}/{model}"])
        config = msgspec.structs.replace(
            proxy_config(provider, models=[alias]),
            dataset=cfg.DatasetConfig(dir=str(tmp_path), flush_interval_ms=20),
        )
        with trio.fail_after(20):
            async with open_proxy(config, environ(UPSTREAM_KEY)) as server:
                whole = await whole_then_bare_stream(server)
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    rows = {row["request_id"]: row for row in table.to_pylist()}
    assert whole.usage is not None
    assert rows["s"]["usage_estimated"] is False
    assert rows["s"]["completion_tokens"] == whole.usage.completion_tokens
    assert rows["s"]["prompt_tokens"] == whole.usage.prompt_tokens
    assert rows["s"]["response_body"] is not None
    assert json.loads(rows["s"]["response_body"])["choices"][0]["message"]["content"] == (
        whole.choices[0].message.content
    )
