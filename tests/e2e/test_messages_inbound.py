"""Anthropic's SDK talks to the proxy's ``/v1/messages``, whichever provider serves the call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import openai
import pytest
import trio

from actorproxy import config as cfg
from actorproxy import runtime
from tests.harness import MASTER_KEY, environ, open_proxy, proxy_config

MOCK = cfg.ProviderConfig(name="mock", kind="mock", max_concurrency=8)
MODELS = [cfg.ModelConfig(name="claude-mock", targets=["mock/mock"])]
QUESTION = "Name three colours of the rainbow."


@pytest.fixture
async def proxy() -> AsyncIterator[runtime.Server]:
    async with open_proxy(proxy_config(MOCK, models=MODELS), environ("unused")) as server:
        yield server


@pytest.fixture
async def claude(proxy: runtime.Server) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=proxy.urls[0], api_key=MASTER_KEY, max_retries=0
    ) as client:
        yield client


async def openai_answer(proxy: runtime.Server) -> openai.types.chat.ChatCompletion:
    async with openai.AsyncOpenAI(
        base_url=proxy.urls[0] + "/v1", api_key=MASTER_KEY, max_retries=0
    ) as client:
        return await client.chat.completions.create(
            model="claude-mock",
            max_tokens=64,
            messages=[{"role": "user", "content": QUESTION}],
        )


async def test_a_message_matches_what_an_openai_client_gets(
    proxy: runtime.Server, claude: anthropic.AsyncAnthropic
) -> None:
    with trio.fail_after(10):
        message = await claude.messages.create(
            model="claude-mock",
            max_tokens=64,
            system="Be brief.",
            messages=[{"role": "user", "content": QUESTION}],
        )
        expected = await openai_answer(proxy)
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "claude-mock"
    assert [block.type for block in message.content] == ["text"]
    text = message.content[0]
    assert isinstance(text, anthropic.types.TextBlock)
    assert text.text == expected.choices[0].message.content
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == expected.usage.completion_tokens  # type: ignore[union-attr]


async def test_a_streamed_message_accumulates_to_the_same_answer(
    claude: anthropic.AsyncAnthropic,
) -> None:
    request = {
        "model": "claude-mock",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": QUESTION}],
    }
    with trio.fail_after(10):
        whole = await claude.messages.create(**request)  # type: ignore[call-overload]
        async with claude.messages.stream(**request) as stream:  # type: ignore[arg-type]
            kinds = [event.type async for event in stream]
            streamed = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds
    assert [(b.type, getattr(b, "text", None)) for b in streamed.content] == [
        (b.type, getattr(b, "text", None)) for b in whole.content
    ]
    assert streamed.stop_reason == "end_turn"
    assert streamed.usage.output_tokens == whole.usage.output_tokens


async def test_count_tokens_answers_an_estimate(claude: anthropic.AsyncAnthropic) -> None:
    with trio.fail_after(10):
        short = await claude.messages.count_tokens(
            model="claude-mock", messages=[{"role": "user", "content": "hi"}]
        )
        long = await claude.messages.count_tokens(
            model="claude-mock", messages=[{"role": "user", "content": QUESTION * 20}]
        )
    assert 0 < short.input_tokens < long.input_tokens


async def test_errors_arrive_in_anthropics_shape(proxy: runtime.Server) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=proxy.urls[0], api_key="sk-wrong", max_retries=0
    ) as stranger:
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await stranger.messages.create(
                model="claude-mock", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert denied.value.response.headers["x-should-retry"] == "false"
    async with anthropic.AsyncAnthropic(
        base_url=proxy.urls[0], api_key=MASTER_KEY, max_retries=0
    ) as client:
        with pytest.raises(anthropic.NotFoundError) as missing:
            await client.messages.create(
                model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as invalid:
            await client.messages.create(
                model="claude-mock",
                max_tokens=8,
                messages=[{"role": "system", "content": "x"}],
            )
        assert invalid.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
