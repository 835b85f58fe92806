"""OpenAI chat requests translated to Anthropic Messages requests, sans-IO.

Every body the adapter produces here is also checked against the official SDK's request types
(`check_contract`), so a mapping cannot drift from what the API accepts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from anthropic import types as sdk
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from pydantic import TypeAdapter

from actorproxy import errors
from actorproxy.adapters.anthropic import AnthropicAdapter
from actorproxy.adapters.anthropic_request import NEUTRAL
from actorproxy.adapters.base import Endpoint, Exchange

UPSTREAM = "claude-sonnet-4-6"
HELLO = [{"role": "user", "content": "hello"}]
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
SIGNED = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
PNG = "iVBORw0KGgo="

# --- the SDK contract ---------------------------------------------------------------------------

_PARAMS: dict[bool, TypeAdapter[Any]] = {
    False: TypeAdapter(MessageCreateParamsNonStreaming),
    True: TypeAdapter(MessageCreateParamsStreaming),
}
_BLOCKS: dict[str, Any] = {
    "text": sdk.TextBlockParam,
    "image": sdk.ImageBlockParam,
    "document": sdk.DocumentBlockParam,
    "tool_use": sdk.ToolUseBlockParam,
    "tool_result": sdk.ToolResultBlockParam,
    "thinking": sdk.ThinkingBlockParam,
    "redacted_thinking": sdk.RedactedThinkingBlockParam,
}


# This SDK has dropped the sampling parameters: newer models refuse them, while the API version
# the adapter sends (2023-06-01) still takes them for the models that do.
SAMPLING = frozenset({"temperature", "top_p", "top_k"})


def check_contract(body: dict[str, Any]) -> None:
    """``body`` validates as the SDK's ``MessageCreateParams``, and names no field it lacks.

    pydantic validates the SDK's ``Iterable`` fields lazily and ignores unknown keys, so the
    result is drained and the keys are compared with the TypedDicts by hand.
    """
    _drain(_PARAMS[bool(body.get("stream"))].validate_python(body))
    _known({k: v for k, v in body.items() if k not in SAMPLING}, MessageCreateParamsNonStreaming)
    for message in body["messages"]:
        assert set(message) == {"role", "content"}
        for block in message["content"] if isinstance(message["content"], list) else ():
            _known(block, _BLOCKS[block["type"]])
    for tool in body.get("tools", ()):
        _known(tool, sdk.ToolParam)


def _drain(value: object) -> None:
    if isinstance(value, Mapping):
        for item in value.values():
            _drain(item)
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
        for item in value:
            _drain(item)


def _known(fields: Mapping[str, Any], typed: Any) -> None:
    keys = set(typed.__required_keys__ | typed.__optional_keys__)
    assert set(fields) <= keys, f"{set(fields) - keys} not in {typed.__name__}"


# --- helpers ------------------------------------------------------------------------------------


def exchange(body: Any, *, stream: bool = False, endpoint: Endpoint = "chat") -> Exchange:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Exchange(endpoint, raw, "alias", UPSTREAM, stream, "req_1", [], 1_700_000_000)


def sent(body: dict[str, Any], *, stream: bool = False, **options: Any) -> Any:
    """The JSON body the adapter sends to Anthropic for ``body``, checked against the SDK."""
    adapter = AnthropicAdapter(api_key="k", **options)
    result = json.loads(adapter.encode_request(exchange(body, stream=stream)).body)
    check_contract(result)
    return result


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "alias", "messages": HELLO, **fields}


def refused(body: dict[str, Any], **options: Any) -> errors.CannotExpress:
    with pytest.raises(errors.CannotExpress) as caught:
        sent(body, **options)
    assert caught.value.status == 400
    return caught.value


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def user(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


# --- basics -------------------------------------------------------------------------------------


def test_minimal_request() -> None:
    assert sent(chat()) == {
        "model": UPSTREAM,
        "messages": [user(text("hello"))],
        "max_tokens": 4096,
    }


def test_stream_is_sent_only_for_streams() -> None:
    assert sent(chat(stream=True), stream=True)["stream"] is True
    assert "stream" not in sent(chat(stream=False))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_completion_tokens": 10, "max_tokens": 20}, 10),
        ({"max_tokens": 20}, 20),
        ({"max_completion_tokens": None, "max_tokens": None}, 4096),
    ],
)
def test_max_tokens(fields: dict[str, Any], expected: int) -> None:
    assert sent(chat(**fields))["max_tokens"] == expected


def test_default_max_tokens_is_configurable() -> None:
    assert sent(chat(), default_max_tokens=123)["max_tokens"] == 123


def test_sampling_stop_and_user() -> None:
    body = sent(chat(temperature=0.5, top_p=0.9, stop="END", user="u-1"))
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (0.5, 0.9, ["END"])
    assert body["metadata"] == {"user_id": "u-1"}
    assert sent(chat(stop=["a", "b"]))["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in sent(chat(stop=None, temperature=None, user=None))


def test_temperature_above_one_is_clamped_or_refused() -> None:
    assert sent(chat(temperature=1.7))["temperature"] == 1.0
    assert refused(chat(temperature=1.7), unsupported="reject").param == "temperature"
    assert sent(chat(temperature=1), unsupported="reject")["temperature"] == 1


def test_only_chat_can_be_expressed() -> None:
    adapter = AnthropicAdapter(api_key="k")
    for endpoint in ("completions", "embeddings"):
        with pytest.raises(errors.CannotExpress):
            adapter.encode_request(exchange({"model": "m", "prompt": "x"}, endpoint=endpoint))


def test_malformed_bodies_are_invalid_requests() -> None:
    adapter = AnthropicAdapter(api_key="k")
    with pytest.raises(errors.InvalidRequest) as not_json:
        adapter.encode_request(exchange(b"{"))
    with pytest.raises(errors.InvalidRequest) as no_messages:
        adapter.encode_request(exchange({"model": "m"}))
    with pytest.raises(errors.InvalidRequest) as function_role:
        adapter.encode_request(exchange(chat(messages=[{"role": "function", "name": "f"}])))
    assert not isinstance(not_json.value, errors.CannotExpress)
    assert no_messages.value.param == "messages"
    assert function_role.value.param == "messages[0].role"


# --- system, user content -----------------------------------------------------------------------


def test_system_and_developer_messages_anywhere_become_system_blocks() -> None:
    cached = {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}
    messages = [
        {"role": "system", "content": "one"},
        *HELLO,
        {"role": "developer", "content": [cached, text(" ")]},
        {"role": "system", "content": ""},
    ]
    body = sent(chat(messages=messages))
    assert body["system"] == [text("one"), cached]
    assert body["messages"] == [user(text("hello"))]


def test_user_parts() -> None:
    parts = [
        text("look"),
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
        },
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "image_url", "image_url": {"url": "data:image/gif,GIF89a%01"}},
        {"type": "image_url", "image_url": {"url": "data:application/pdf;base64,JVBERi0="}},
    ]
    content = sent(chat(messages=[{"role": "user", "content": parts}]))["messages"][0]["content"]
    assert content == [
        text("look"),
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/gif", "data": "R0lGODlhAQ=="},
        },
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        },
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "file", "file": {"file_id": "file-1"}}, "messages[0].content[1]"),
        (
            {"type": "input_audio", "input_audio": {"data": "AAA=", "format": "wav"}},
            "messages[0].content[1]",
        ),
        (
            {"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}},
            "messages[0].content[1].image_url.url",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:;base64,AAAA"}},
            "messages[0].content[1].image_url.url",
        ),
    ],
)
def test_user_parts_anthropic_cannot_take(part: dict[str, Any], param: str) -> None:
    message = {"role": "user", "content": [text("x"), part]}
    assert refused(chat(messages=[message])).param == param


# --- assistant turns, tools results, merging ----------------------------------------------------


def test_assistant_tool_calls_become_tool_use_blocks() -> None:
    call = CALL | {"function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assistant = {"role": "assistant", "content": "Checking.", "tool_calls": [call, CALL]}
    result = {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
    body = sent(chat(messages=[*HELLO, assistant, result, result], tools=[WEATHER]))
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather"}
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [text("Checking."), use | {"input": {"city": "Paris"}}, use | {"input": {}}],
    }


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"'])
def test_tool_call_arguments_must_be_a_json_object(arguments: str) -> None:
    call = CALL | {"function": {"name": "f", "arguments": arguments}}
    messages = [*HELLO, {"role": "assistant", "tool_calls": [call]}]
    assert refused(chat(messages=messages)).param == "messages[1].tool_calls[0].function.arguments"


def test_tool_results_group_into_one_user_turn_with_the_next_user_message() -> None:
    assistant = {"role": "assistant", "content": None, "tool_calls": [CALL, CALL | {"id": "t2"}]}
    messages = [
        *HELLO,
        assistant,
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "t2", "content": [text("rain"), text("cold")]},
        {"role": "user", "content": "thanks"},
    ]
    turns = sent(chat(messages=messages, tools=[WEATHER]))["messages"]
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "t2", "content": [text("rain"), text("cold")]},
        text("thanks"),
    ]


def test_empty_tool_result_has_no_content() -> None:
    messages = [
        *HELLO,
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": ""},
    ]
    turns = sent(chat(messages=messages, tools=[WEATHER]))["messages"]
    assert turns[2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_1"}]


def test_same_role_turns_merge_and_empty_turns_vanish() -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": [text("b")]},
        {"role": "assistant", "content": [text("c"), {"type": "refusal", "refusal": "no"}]},
        {"role": "assistant", "content": "d"},
        {"role": "user", "content": "e"},
    ]
    assert sent(chat(messages=messages))["messages"] == [
        user(text("a"), text("b")),
        {"role": "assistant", "content": [text("c"), text("no"), text("d")]},
        user(text("e")),
    ]


def test_prefill_loses_trailing_whitespace() -> None:
    messages = [*HELLO, {"role": "assistant", "content": "The answer is "}]
    last = sent(chat(messages=messages))["messages"][-1]
    assert last == {"role": "assistant", "content": [text("The answer is")]}


# --- tools --------------------------------------------------------------------------------------


def test_tools() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    untyped = {"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}
    assert sent(chat(tools=[WEATHER, bare, untyped]))["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "now", "input_schema": {"type": "object"}},
        {"name": "f", "input_schema": {"type": "object", "properties": {}}},
    ]


def test_only_function_tools() -> None:
    custom = {"type": "custom", "custom": {"name": "grammar"}}
    assert refused(chat(tools=[WEATHER, custom])).param == "tools[1]"


def test_strict_tools_are_relaxed_or_refused() -> None:
    strict = {"type": "function", "function": WEATHER["function"] | {"strict": True}}
    assert sent(chat(tools=[strict]))["tools"][0]["name"] == "get_weather"
    param = refused(chat(tools=[strict]), unsupported="reject").param
    assert param == "tools[0].function.strict"


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, True, None),
        (None, None, None),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: Any) -> None:
    body = sent(chat(tools=[WEATHER], tool_choice=choice, parallel_tool_calls=parallel))
    assert body.get("tool_choice") == expected


def test_tool_choice_without_tools_is_left_out() -> None:
    assert "tool_choice" not in sent(chat(tool_choice="required", parallel_tool_calls=False))


@pytest.mark.parametrize("choice", ["sometimes", {"type": "allowed_tools", "allowed_tools": {}}])
def test_tool_choice_anthropic_cannot_express(choice: Any) -> None:
    assert refused(chat(tools=[WEATHER], tool_choice=choice)).param == "tool_choice"


# --- thinking -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("effort", "budget"), [("low", 1024), ("medium", 4096), ("high", 16384)])
def test_reasoning_effort_becomes_a_thinking_budget(effort: str, budget: int) -> None:
    body = sent(chat(reasoning_effort=effort))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] == max(4096, budget + 1024)
    raised = sent(chat(reasoning_effort=effort, max_completion_tokens=budget))["max_tokens"]
    assert raised == budget + 1024
    roomy = sent(chat(reasoning_effort=effort, max_tokens=budget + 1))["max_tokens"]
    assert roomy == budget + 1


@pytest.mark.parametrize("effort", ["minimal", "none", None])
def test_no_thinking(effort: str | None) -> None:
    assert "thinking" not in sent(chat(reasoning_effort=effort))


def test_unknown_reasoning_effort_is_refused() -> None:
    assert refused(chat(reasoning_effort="extreme")).param == "reasoning_effort"


def test_thinking_object_passes_through_and_wins() -> None:
    thinking = {"type": "enabled", "budget_tokens": 2000}
    body = sent(chat(thinking=thinking, reasoning_effort="high", max_tokens=1000))
    assert body["thinking"] == thinking
    assert body["max_tokens"] == 3024
    disabled = sent(chat(thinking={"type": "disabled"}, reasoning_effort="high"))
    assert disabled["thinking"] == {"type": "disabled"}


def test_thinking_blocks_lead_the_assistant_turn_unchanged() -> None:
    redacted = {"type": "redacted_thinking", "data": "opaque"}
    assistant = {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [CALL],
        "thinking_blocks": [SIGNED, redacted],
        "reasoning_content": "hmm",
    }
    result = {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
    body = sent(chat(messages=[*HELLO, assistant, result], tools=[WEATHER], reasoning_effort="low"))
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    assert body["messages"][1]["content"] == [SIGNED, redacted, text("Let me look."), use]


def test_thinking_blocks_need_a_signature() -> None:
    unsigned = {"type": "thinking", "thinking": "hmm"}
    assistant = {"role": "assistant", "content": "x", "thinking_blocks": [unsigned]}
    adapter = AnthropicAdapter(api_key="k")
    with pytest.raises(errors.InvalidRequest) as caught:
        adapter.encode_request(exchange(chat(messages=[*HELLO, assistant])))
    assert caught.value.param == "messages[1].thinking_blocks[0].signature"


# --- what Anthropic has no equivalent for ---------------------------------------------------------

UNSUPPORTED: dict[str, Any] = {
    "n": 2,
    "logprobs": True,
    "top_logprobs": 3,
    "frequency_penalty": 0.5,
    "presence_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "seed": 7,
    "service_tier": "flex",
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "x"},
    "functions": [{"name": "f"}],
    "function_call": "auto",
}
NEUTRAL_VALUES: dict[str, Any] = {
    "n": 1,
    "logprobs": False,
    "top_logprobs": 0,
    "frequency_penalty": 0,
    "presence_penalty": 0.0,
    "logit_bias": {},
    "service_tier": "auto",
    "modalities": ["text"],
}


def test_the_unsupported_list_is_complete() -> None:
    assert set(UNSUPPORTED) == set(NEUTRAL)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_params_are_dropped_or_refused(name: str) -> None:
    body = chat(**{name: UNSUPPORTED[name]})
    assert sent(body) == sent(chat())
    caught = refused(body, unsupported="reject")
    assert caught.param == name and caught.code == "unsupported_parameter"


def test_neutral_and_null_values_pass_under_reject() -> None:
    nulls = dict.fromkeys(UNSUPPORTED)
    assert sent(chat(**NEUTRAL_VALUES), unsupported="reject") == sent(chat())
    assert sent(chat(**nulls), unsupported="reject") == sent(chat())


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    ],
)
def test_response_format_is_dropped_or_refused(response_format: dict[str, Any]) -> None:
    assert sent(chat(response_format=response_format)) == sent(chat())
    caught = refused(chat(response_format=response_format), unsupported="reject")
    assert caught.param == "response_format"
    text_format = chat(response_format={"type": "text"})
    assert sent(text_format, unsupported="reject") == sent(chat())
