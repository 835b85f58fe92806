"""The fake Anthropic upstream, driven with the official ``anthropic`` SDK and raw httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import pytest
import trio
from anthropic.types import MessageParam, ToolParam

from actorproxy.adapters.sse import SSEDecoder
from tests.fakes.anthropic_upstream import (
    DEFAULT_API_KEY,
    DEFAULT_MODELS,
    Cut,
    FakeAnthropic,
    Respond,
    StreamError,
    error_body,
    open_fake_anthropic,
    signature,
)

MODEL = DEFAULT_MODELS[0]
HEADERS = {"x-api-key": DEFAULT_API_KEY, "anthropic-version": "2023-06-01"}
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}
HELLO: list[MessageParam] = [{"role": "user", "content": "hello  world"}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with open_fake_anthropic() as fake:
        yield fake


@pytest.fixture
async def sdk(fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    # This SDK build sends ``api_key`` as ``Authorization: Bearer``; Anthropic's API (and the
    # fake) authenticate API keys by ``x-api-key``, so the header is added explicitly.
    async with anthropic.AsyncAnthropic(
        base_url=fake.base_url,
        api_key=fake.api_key,
        default_headers={"x-api-key": fake.api_key},
        max_retries=0,
    ) as client:
        yield client


@pytest.fixture
async def http(fake: FakeAnthropic) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        yield client


async def post(http: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    with trio.fail_after(10):
        return await http.post("/v1/messages", json=body, headers=HEADERS | headers)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 100, "messages": HELLO} | fields


def rejected(response: httpx.Response, status: int, kind: str = "invalid_request_error") -> str:
    assert response.status_code == status, response.text
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == kind
    return str(error["error"]["message"])


# --- answers ----------------------------------------------------------------------------------


async def test_create_echoes_the_last_user_text(
    fake: FakeAnthropic, sdk: anthropic.AsyncAnthropic
) -> None:
    with trio.fail_after(10):
        message = await sdk.messages.create(
            model=MODEL, max_tokens=100, system="be brief", messages=HELLO
        )
    assert message.id == "msg_fake0" and message.model == MODEL
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello  world"
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 3)
    assert message.usage.cache_read_input_tokens == 0
    sent = fake.requests[0]
    assert sent.headers["x-api-key"] == DEFAULT_API_KEY and "anthropic-version" in sent.headers
    assert sent.json()["system"] == "be brief"


async def test_max_tokens_and_stop_sequences_cut_the_text(sdk: anthropic.AsyncAnthropic) -> None:
    with trio.fail_after(10):
        short = await sdk.messages.create(model=MODEL, max_tokens=2, messages=HELLO)
        stopped = await sdk.messages.create(
            model=MODEL, max_tokens=100, messages=HELLO, stop_sequences=["wor", "zzz"]
        )
    assert short.content[0].type == "text" and short.content[0].text == "echo: hello"
    assert short.stop_reason == "max_tokens"
    assert stopped.content[0].type == "text" and stopped.content[0].text == "echo: hello  "
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "wor")


async def test_cache_control_moves_words_to_cache_reads(sdk: anthropic.AsyncAnthropic) -> None:
    system: Any = [{"type": "text", "text": "a b c", "cache_control": {"type": "ephemeral"}}]
    with trio.fail_after(10):
        message = await sdk.messages.create(
            model=MODEL, max_tokens=100, system=system, messages=HELLO
        )
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (2, 3)


async def test_tool_use_round_trip(sdk: anthropic.AsyncAnthropic) -> None:
    asked: list[MessageParam] = [{"role": "user", "content": "weather in Paris?"}]
    with trio.fail_after(10):
        call = await sdk.messages.create(
            model=MODEL, max_tokens=100, messages=asked, tools=[WEATHER]
        )
        use = call.content[0]
        assert use.type == "tool_use" and call.stop_reason == "tool_use"
        assert (use.id, use.name, use.input) == (
            "toolu_fake0",
            "get_weather",
            {"query": "weather in Paris?"},
        )
        result: MessageParam = {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
        }
        history: list[MessageParam] = [
            *asked,
            {"role": "assistant", "content": call.content},
            result,
        ]
        answer = await sdk.messages.create(
            model=MODEL, max_tokens=100, messages=history, tools=[WEATHER]
        )
    assert answer.content[0].type == "text" and answer.content[0].text == "echo: sunny"
    assert answer.stop_reason == "end_turn"


async def test_tool_choice_forces_or_forbids_the_tool(sdk: anthropic.AsyncAnthropic) -> None:
    with trio.fail_after(10):
        forced = await sdk.messages.create(
            model=MODEL, max_tokens=9, messages=HELLO, tools=[WEATHER], tool_choice={"type": "any"}
        )
        weather: list[MessageParam] = [{"role": "user", "content": "weather?"}]
        none = await sdk.messages.create(
            model=MODEL,
            max_tokens=9,
            messages=weather,
            tools=[WEATHER],
            tool_choice={"type": "none"},
        )
    assert forced.content[0].type == "tool_use"
    assert none.content[0].type == "text"


async def test_thinking_is_signed_and_accepted_back(sdk: anthropic.AsyncAnthropic) -> None:
    with trio.fail_after(10):
        first = await sdk.messages.create(
            model=MODEL,
            max_tokens=2048,
            messages=HELLO,
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
        thought = first.content[0]
        assert thought.type == "thinking"
        assert thought.thinking == "The user said: hello  world"
        assert thought.signature == signature(thought.thinking)
        history: list[MessageParam] = [
            *HELLO,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": "again"},
        ]
        await sdk.messages.create(model=MODEL, max_tokens=100, messages=history)
    assert first.usage.output_tokens == 8


async def test_models_list(sdk: anthropic.AsyncAnthropic) -> None:
    with trio.fail_after(10):
        page = await sdk.models.list()
    assert [model.id for model in page.data] == list(DEFAULT_MODELS)


# --- streams ----------------------------------------------------------------------------------


async def test_stream_of_text(sdk: anthropic.AsyncAnthropic, http: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        async with sdk.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        raw = await post(http, body(stream=True))
    assert pieces == ["echo:", " hello", "  world"]
    assert final.content[0].type == "text" and final.content[0].text == "echo: hello  world"
    assert (final.stop_reason, final.usage.output_tokens) == ("end_turn", 3)
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = SSEDecoder().feed(raw.content)
    assert [e.event for e in events] == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def test_stream_of_thinking_and_tool_use(sdk: anthropic.AsyncAnthropic) -> None:
    asked: list[MessageParam] = [{"role": "user", "content": "weather in Paris?"}]
    with trio.fail_after(10):
        async with sdk.messages.stream(
            model=MODEL,
            max_tokens=2048,
            messages=asked,
            tools=[WEATHER],
            thinking={"type": "enabled", "budget_tokens": 1024},
        ) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
    assert kinds.count("input_json") == 3  # the input arrives in three fragments
    assert "signature" in kinds and "thinking" in kinds
    thought, use = final.content
    assert thought.type == "thinking" and thought.signature == signature(thought.thinking)
    assert use.type == "tool_use" and use.input == {"query": "weather in Paris?"}
    assert final.stop_reason == "tool_use"


# --- rejections -------------------------------------------------------------------------------


async def test_auth_needs_x_api_key(fake: FakeAnthropic, http: httpx.AsyncClient) -> None:
    bearer = {"authorization": f"Bearer {DEFAULT_API_KEY}", "anthropic-version": "2023-06-01"}
    with trio.fail_after(10):
        only_bearer = await http.post("/v1/messages", json=body(), headers=bearer)
        wrong = await post(http, body(), **{"x-api-key": "nope"})
    assert rejected(only_bearer, 401, "authentication_error") == "x-api-key header is required"
    assert rejected(wrong, 401, "authentication_error") == "invalid x-api-key"
    async with anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key="nope", max_retries=0
    ) as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model=MODEL, max_tokens=1, messages=HELLO)


async def test_malformed_requests_are_refused(http: httpx.AsyncClient) -> None:
    no_version = await http.post(
        "/v1/messages", json=body(), headers={"x-api-key": DEFAULT_API_KEY}
    )
    assert "anthropic-version" in rejected(no_version, 400)
    without = {k: v for k, v in body().items() if k != "max_tokens"}
    assert rejected(await post(http, without), 400) == "max_tokens: Field required"
    system = [{"role": "system", "content": "x"}, *HELLO]
    assert "Unexpected role" in rejected(await post(http, body(messages=system)), 400)
    empty = [{"role": "user", "content": ""}]
    assert "non-empty content" in rejected(await post(http, body(messages=empty)), 400)
    blank = [{"role": "user", "content": [{"type": "text", "text": " "}]}]
    assert "non-whitespace" in rejected(await post(http, body(messages=blank)), 400)
    assert "temperature" in rejected(await post(http, body(temperature=1.5)), 400)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    low = body(max_tokens=1024, thinking=thinking)
    assert "budget_tokens" in rejected(await post(http, low), 400)
    unknown = await post(http, body(model="claude-nonexistent"))
    assert rejected(unknown, 404, "not_found_error") == "model: claude-nonexistent"


async def test_same_role_turns_merge_but_tool_ids_must_match(http: httpx.AsyncClient) -> None:
    twice = [*HELLO, {"role": "user", "content": "again"}]
    merged = await post(http, body(messages=twice))
    assert merged.json()["content"][0]["text"] == "echo: hello  world again"
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    stray = {"type": "tool_result", "tool_use_id": "toolu_2", "content": "x"}
    good = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}
    turns = [*HELLO, {"role": "assistant", "content": [use]}]
    wrong = await post(http, body(messages=[*turns, {"role": "user", "content": [stray]}]))
    assert "unexpected `tool_use_id`" in rejected(wrong, 400)
    unanswered = await post(http, body(messages=[*turns, {"role": "user", "content": "hm"}]))
    assert "without `tool_result`" in rejected(unanswered, 400)
    fine = await post(http, body(messages=[*turns, {"role": "user", "content": [good]}]))
    assert fine.status_code == 200, fine.text


async def test_thinking_blocks_need_their_signature(http: httpx.AsyncClient) -> None:
    unsigned = {"type": "thinking", "thinking": "hmm"}
    forged = unsigned | {"signature": "sig-forged"}
    for block, expected in ((unsigned, "signature: Field required"), (forged, "Invalid")):
        turns = [*HELLO, {"role": "assistant", "content": [block, {"type": "text", "text": "x"}]}]
        response = await post(http, body(messages=[*turns, {"role": "user", "content": "y"}]))
        assert expected in rejected(response, 400)


# --- faults -----------------------------------------------------------------------------------


async def test_scripted_error_statuses(fake: FakeAnthropic, sdk: anthropic.AsyncAnthropic) -> None:
    fake.script(
        Respond(529, error_body("overloaded_error", "Overloaded")),
        Respond(429, error_body("rate_limit_error", "slow down"), {"retry-after": "7"}),
    )
    with trio.fail_after(10):
        with pytest.raises(anthropic.APIStatusError) as overloaded:
            await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
        with pytest.raises(anthropic.RateLimitError) as limited:
            await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
        fine = await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
    assert overloaded.value.status_code == 529
    assert limited.value.response.headers["retry-after"] == "7"
    assert fine.stop_reason == "end_turn" and fake.unused_faults == []


async def test_error_event_mid_stream(fake: FakeAnthropic, sdk: anthropic.AsyncAnthropic) -> None:
    fake.script(StreamError(after_events=4))
    with trio.fail_after(10), pytest.raises(anthropic.APIStatusError) as caught:
        async with sdk.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
            async for _ in stream:
                pass
    assert caught.value.body == error_body("overloaded_error", "Overloaded")


async def test_cut_stream_drops_the_connection(
    fake: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    fake.script(Cut(after_events=3))
    with trio.fail_after(10), pytest.raises(httpx.RemoteProtocolError):
        await post(http, body(stream=True))
