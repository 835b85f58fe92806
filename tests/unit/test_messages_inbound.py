"""The inbound Anthropic Messages codec: requests as the official anthropic SDK sends them become
OpenAI chat requests that the official OpenAI spec accepts, and OpenAI answers and the proxy's
errors become bodies the anthropic SDK parses.

The spec is checked on the body the OpenAI adapter sends upstream, which strips our documented
extensions: top-level ``thinking``, the assistant messages' ``thinking_blocks`` and the text parts'
``cache_control`` (docs/providers/messages-inbound.md). The extensions themselves are checked by
sending the body on through the Anthropic adapter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message
from anthropic.types.shared.error_response import ErrorResponse

from actorproxy import errors
from actorproxy.adapters import messages_inbound as inbound
from actorproxy.adapters.anthropic import AnthropicAdapter
from actorproxy.adapters.base import Exchange
from actorproxy.adapters.openai import OpenAIAdapter
from tests import spec
from tests.unit.test_anthropic_request import check_contract

MODEL = "claude-latest"  # a proxy alias; the SDK warns about its deprecated model names
IMAGE = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
MINIMAL_REPLY: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}

Handler = Callable[[httpx2.Request], httpx2.Response]


def sdk_client(handler: Handler) -> anthropic.Anthropic:
    transport = httpx2.MockTransport(handler)
    return anthropic.Anthropic(
        api_key="test", base_url="http://proxy.test", http_client=httpx2.Client(transport=transport)
    )


def sdk_body(**params: Any) -> bytes:
    """The body the official SDK sends for ``messages.create(**params)``."""
    bodies: list[bytes] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        bodies.append(request.content)
        return httpx2.Response(200, json=MINIMAL_REPLY)

    sdk_client(handler).messages.create(**{"model": MODEL, "max_tokens": 1024, **params})
    return bodies[0]


def exchange(body: bytes) -> Exchange:
    """The exchange the proxy routes for a ``/v1/messages`` body."""
    request = inbound.decode_request(body)
    model, stream = request.model, request.stream
    return Exchange("chat", request.openai_body, model, model, stream, "req-1", [])


def openai_request(body: bytes) -> dict[str, Any]:
    """The OpenAI body for ``body``; what goes to an OpenAI upstream is checked against the spec."""
    routed = exchange(body)
    sent = OpenAIAdapter(api_key=None).encode_request(routed).body
    assert not any(name in sent for name in (b"thinking", b"cache_control"))
    spec.validate("CreateChatCompletionRequest", json.loads(sent))
    decoded: dict[str, Any] = json.loads(routed.body)
    return decoded


def anthropic_request(body: bytes) -> dict[str, Any]:
    """What the Anthropic adapter sends for the OpenAI body of ``body``, checked with the SDK."""
    sent: dict[str, Any] = json.loads(
        AnthropicAdapter(api_key="k").encode_request(exchange(body)).body
    )
    check_contract(sent)
    return sent


def raw(**fields: Any) -> bytes:
    return json.dumps({"model": MODEL, "max_tokens": 100, **fields}).encode()


def user(content: object) -> dict[str, object]:
    return {"role": "user", "content": content}


def assistant(content: object) -> dict[str, object]:
    return {"role": "assistant", "content": content}


def tool_result(tool_use_id: str, content: object = "", **extra: object) -> dict[str, object]:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": content, **extra}


# --- requests -----------------------------------------------------------------------------------


def test_an_agent_conversation_maps_to_an_openai_request() -> None:
    body = sdk_body(
        system=[
            {"type": "text", "text": "You are a coding agent."},
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            user("What is the weather in Paris?"),
            assistant(
                [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": "c2ln"},
                    {"type": "redacted_thinking", "data": "EmwKAhgB"},
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "get_weather",
                        "input": {"city": "Paris", "days": [1, 2]},
                    },
                ]
            ),
            user(
                [
                    tool_result("toolu_01", [{"type": "text", "text": "18 C"}]),
                    {
                        "type": "text",
                        "text": "And tomorrow?",
                        "cache_control": {"type": "ephemeral"},
                    },
                ]
            ),
        ],
        tools=[WEATHER],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 2048},
        metadata={"user_id": "user-7"},
        stop_sequences=["END"],
        # this SDK version no longer types these sampling parameters; older ones sent them so
        extra_body={"temperature": 1.0, "top_p": 0.9, "top_k": 40},
    )
    assert openai_request(body) == {
        "model": MODEL,
        "messages": [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "You are a coding agent."},
                    {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
                ],
            },
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "toolu_01",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"city":"Paris","days":[1,2]}',
                        },
                    }
                ],
                "thinking_blocks": [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": "c2ln"},
                    {"type": "redacted_thinking", "data": "EmwKAhgB"},
                ],
            },
            {"role": "tool", "content": "18 C", "tool_call_id": "toolu_01"},
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "And tomorrow?",
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ],
        "max_tokens": 1024,
        "temperature": 1.0,
        "top_p": 0.9,
        "stop": ["END"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather in a city.",
                    "parameters": WEATHER["input_schema"],
                },
            }
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "user": "user-7",
    }


def test_tool_results_become_tool_messages_before_the_rest_of_their_turn() -> None:
    body = sdk_body(
        messages=[
            user("Run both."),
            assistant(
                [
                    {"type": "tool_use", "id": "toolu_a", "name": "ls", "input": {}},
                    {"type": "tool_use", "id": "toolu_b", "name": "cat", "input": {"path": "x"}},
                ]
            ),
            user(
                [
                    {"type": "text", "text": "Here:"},
                    tool_result("toolu_a", "a.txt\nb.txt"),
                    tool_result(
                        "toolu_b",
                        [
                            {"type": "text", "text": "line 1"},
                            {"type": "image", "source": IMAGE},
                            {"type": "text", "text": "line 2"},
                        ],
                    ),
                    tool_result("toolu_c", "No such file", is_error=True),
                    tool_result("toolu_d"),
                ]
            ),
        ]
    )
    messages = openai_request(body)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "toolu_a", "type": "function", "function": {"name": "ls", "arguments": "{}"}},
            {
                "id": "toolu_b",
                "type": "function",
                "function": {"name": "cat", "arguments": '{"path":"x"}'},
            },
        ],
    }
    assert messages[2:] == [
        {"role": "tool", "content": "a.txt\nb.txt", "tool_call_id": "toolu_a"},
        {"role": "tool", "content": "line 1\nline 2", "tool_call_id": "toolu_b"},
        {"role": "tool", "content": "No such file", "tool_call_id": "toolu_c"},
        {"role": "tool", "content": "", "tool_call_id": "toolu_d"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Here:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
    ]


def test_images_and_text_documents_become_content_parts() -> None:
    body = sdk_body(
        messages=[
            user(
                [
                    {"type": "image", "source": IMAGE},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "Notes"},
                        "title": "notes.txt",
                    },
                    {"type": "text", "text": "Describe these."},
                ]
            )
        ]
    )
    assert openai_request(body)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                {"type": "text", "text": "Notes"},
                {"type": "text", "text": "Describe these."},
            ],
        }
    ]


def test_a_streamed_request_always_asks_for_usage() -> None:
    request = inbound.decode_request(raw(messages=[user("Hi")], stream=True))
    assert request.stream is True
    assert request.model == MODEL
    decoded = json.loads(request.openai_body)
    assert decoded["stream"] is True
    assert decoded["stream_options"] == {"include_usage": True}
    spec.validate("CreateChatCompletionRequest", decoded)
    plain = json.loads(inbound.decode_request(raw(messages=[user("Hi")])).openai_body)
    assert "stream" not in plain and "stream_options" not in plain


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"tool_choice": "required", "parallel_tool_calls": False},
        ),
        (
            {"type": "auto", "disable_parallel_tool_use": False},
            {"tool_choice": "auto"},
        ),
    ],
)
def test_tool_choice(choice: dict[str, object], expected: dict[str, object]) -> None:
    decoded = openai_request(sdk_body(messages=[user("Hi")], tools=[WEATHER], tool_choice=choice))
    picked = {k: v for k, v in decoded.items() if k in ("tool_choice", "parallel_tool_calls")}
    assert picked == expected


def test_tool_choice_without_tools_is_left_out() -> None:
    decoded = openai_request(raw(messages=[user("Hi")], tool_choice={"type": "none"}))
    assert "tool_choice" not in decoded and "tools" not in decoded


@pytest.mark.parametrize(
    "thinking",
    [{"type": "disabled"}, {"type": "adaptive"}, {"type": "enabled", "budget_tokens": 1024}],
)
def test_thinking_passes_through(thinking: dict[str, object]) -> None:
    assert openai_request(raw(messages=[user("Hi")], thinking=thinking))["thinking"] == thinking


def test_what_has_no_openai_equivalent_is_dropped() -> None:
    decoded = openai_request(
        raw(
            messages=[user([{"type": "text", "text": "Hi"}])],
            system="Be nice.",
            top_k=5,
            service_tier="auto",
            metadata={},
            tools=[{**WEATHER, "cache_control": {"type": "ephemeral"}}],
        )
    )
    assert set(decoded) == {"model", "messages", "max_tokens", "tools"}
    assert decoded["messages"] == [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "Hi"},
    ]
    assert "cache_control" not in json.dumps(decoded)


# --- prompt caching -----------------------------------------------------------------------------

CACHED = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}


def cached_text(text: str, marker: dict[str, str] = CACHED) -> dict[str, object]:
    return {"type": "text", "text": text, "cache_control": marker}


def test_cache_breakpoints_become_cache_control_on_text_parts() -> None:
    body = sdk_body(
        system=[{"type": "text", "text": "Rules."}, cached_text("Project notes.", HOUR)],
        messages=[
            user(
                [
                    {"type": "image", "source": IMAGE, "cache_control": CACHED},
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "Notes"},
                        "cache_control": CACHED,
                    },
                ]
            ),
            assistant(
                [
                    cached_text("Reading."),
                    {"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}},
                ]
            ),
            user([tool_result("toolu_1", "a.txt", cache_control=CACHED)]),
        ],
    )
    assert openai_request(body)["messages"] == [
        {
            "role": "system",
            "content": [{"type": "text", "text": "Rules."}, cached_text("Project notes.", HOUR)],
        },
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                cached_text("Notes"),
            ],
        },
        {
            "role": "assistant",
            "content": [cached_text("Reading.")],
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "content": [cached_text("a.txt")], "tool_call_id": "toolu_1"},
    ]


def test_cache_breakpoints_reach_an_anthropic_upstream_unchanged() -> None:
    """A Claude Code-like request through ``decode_request`` and the Anthropic adapter."""
    system = [{"type": "text", "text": "You are a coding agent."}, cached_text("CLAUDE.md", HOUR)]
    messages = [
        user([cached_text("Fix the bug.")]),
        assistant(
            [
                cached_text("Let me look."),
                {"type": "tool_use", "id": "toolu_1", "name": "cat", "input": {"path": "a.py"}},
            ]
        ),
        user(
            [
                tool_result("toolu_1", [{"type": "text", "text": "x = 1"}, cached_text("y = 2")]),
                cached_text("Go on."),
            ]
        ),
    ]
    body = sdk_body(system=system, messages=messages)
    sent = anthropic_request(body)
    assert (sent["system"], sent["messages"]) == (system, messages)


def test_a_breakpoint_on_a_tool_result_moves_to_its_last_text() -> None:
    body = sdk_body(
        messages=[
            user("List."),
            assistant([{"type": "tool_use", "id": "toolu_1", "name": "ls", "input": {}}]),
            user([tool_result("toolu_1", "a.txt", cache_control=CACHED)]),
        ]
    )
    result = anthropic_request(body)["messages"][2]["content"]
    assert result == [tool_result("toolu_1", [cached_text("a.txt")])]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search"}]},
            "tools[1].type",
        ),
        (
            {
                "messages": [
                    user(
                        [
                            {"type": "text", "text": "Read this"},
                            {
                                "type": "document",
                                "source": {
                                    "type": "base64",
                                    "media_type": "application/pdf",
                                    "data": "JVBERi0=",
                                },
                            },
                        ]
                    )
                ]
            },
            "messages[0].content[1].source.type",
        ),
        (
            {
                "messages": [
                    user([tool_result("t", [{"type": "document", "source": {"type": "url"}}])])
                ]
            },
            "messages[0].content[0].content[0].source.type",
        ),
    ],
)
def test_what_the_openai_shape_cannot_carry_is_refused(
    fields: dict[str, object], param: str
) -> None:
    body = raw(**{"messages": [user("Hi")], **fields})
    with pytest.raises(errors.CannotExpress) as caught:
        inbound.decode_request(body)
    assert caught.value.status == 400
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (json.dumps({"model": MODEL, "messages": []}).encode(), "max_tokens"),
        (raw(messages=[user([{"type": "video", "url": "x"}])]), "messages[0].content[0].type"),
        (raw(messages=[{"role": "system", "content": "x"}]), "messages[0].role"),
        (raw(messages=[user("Hi")], temperature="hot"), "temperature"),
        (
            raw(messages=[user([{"type": "tool_use", "id": "t", "name": "f", "input": {}}])]),
            "messages[0].content[0]",
        ),
        (
            raw(messages=[assistant([{"type": "image", "source": IMAGE}])]),
            "messages[0].content[0]",
        ),
        (
            raw(messages=[user([{"type": "image", "source": {"type": "base64", "data": "x"}}])]),
            "messages[0].content[0].source.media_type",
        ),
        (
            raw(messages=[user([{"type": "image", "source": {"type": "url"}}])]),
            "messages[0].content[0].source.url",
        ),
        (
            raw(messages=[user("Hi")], tools=[WEATHER], tool_choice={"type": "tool"}),
            "tool_choice.name",
        ),
        (b"not json", None),
        (b"[1, 2]", None),
    ],
)
def test_invalid_requests_are_400s_naming_the_parameter(body: bytes, param: str | None) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        inbound.decode_request(body)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert not isinstance(caught.value, errors.CannotExpress)


def test_an_empty_user_turn_stays_a_user_message() -> None:
    decoded = openai_request(raw(messages=[user([]), assistant([]), user("Hi")]))
    assert decoded["messages"] == [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Hi"},
    ]


# --- answers ------------------------------------------------------------------------------------


def completion(message: dict[str, object], **fields: object) -> bytes:
    body = {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
        **fields,
    }
    return json.dumps(body).encode()


def answer(message: dict[str, object], **fields: object) -> Message:
    encoded = inbound.encode_response(completion(message, **fields), model=MODEL)
    return Message.model_validate_json(encoded)


def test_an_answer_with_thinking_text_and_tool_calls() -> None:
    message = {
        "role": "assistant",
        "content": "Checking.",
        "reasoning_content": "I should look it up.",
        "thinking_blocks": [
            {"type": "thinking", "thinking": "I should look it up.", "signature": "c2ln"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
        ],
        "tool_calls": [
            {
                "id": "toolu_01",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    choices = [{"index": 0, "message": message, "finish_reason": "tool_calls", "logprobs": None}]
    usage = {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    encoded = inbound.encode_response(completion({}, choices=choices, usage=usage), model=MODEL)
    parsed = Message.model_validate_json(encoded)
    assert parsed.model_dump(exclude_none=True) == {
        "id": "msg_abc123",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [
            {"type": "thinking", "thinking": "I should look it up.", "signature": "c2ln"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "Checking."},
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 20,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 100,
            "output_tokens": 30,
        },
    }
    assert json.loads(encoded)["stop_sequence"] is None  # written out, as Anthropic does


def test_reasoning_without_blocks_becomes_a_thinking_block_without_signature() -> None:
    for field in ("reasoning_content", "reasoning"):
        parsed = answer({"role": "assistant", "content": "4", field: "2 + 2"})
        assert [block.model_dump() for block in parsed.content] == [
            {"type": "thinking", "thinking": "2 + 2", "signature": ""},
            {"type": "text", "text": "4", "citations": None},
        ]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": [1, {"b": null}]}', {"a": [1, {"b": None}]}),
        ("", {}),
        ("  ", {}),
        ('{"a": 1', {"_raw": '{"a": 1'}),
        ("[1, 2]", {"_raw": "[1, 2]"}),
        ('"text"', {"_raw": '"text"'}),
    ],
)
def test_tool_arguments_become_the_input_object(arguments: str, expected: object) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    parsed = answer({"role": "assistant", "content": None, "tool_calls": [call]})
    assert parsed.content[0].model_dump(exclude_none=True) == {
        "type": "tool_use",
        "id": "call_1",
        "name": "f",
        "input": expected,
    }


def test_a_tool_call_without_id_gets_one() -> None:
    calls = [{"function": {"name": "f", "arguments": "{}"}}, {"function": {"name": "g"}}]
    parsed = answer({"role": "assistant", "tool_calls": calls})
    assert [(block.type, getattr(block, "id", None)) for block in parsed.content] == [
        ("tool_use", "toolu_abc123_0"),
        ("tool_use", "toolu_abc123_1"),
    ]


@pytest.mark.parametrize(
    ("choice", "reason", "sequence"),
    [
        ({"finish_reason": "stop"}, "end_turn", None),
        ({"finish_reason": "length"}, "max_tokens", None),
        ({"finish_reason": "tool_calls"}, "tool_use", None),
        ({"finish_reason": "function_call"}, "tool_use", None),
        ({"finish_reason": "content_filter"}, "refusal", None),
        ({"finish_reason": "eos_token"}, "end_turn", None),
        ({"finish_reason": None}, "end_turn", None),
        ({"finish_reason": "stop", "stop_reason": "END"}, "stop_sequence", "END"),
        ({"finish_reason": "stop", "stop_reason": 128001}, "end_turn", None),
        ({"finish_reason": "length", "stop_reason": "END"}, "max_tokens", None),
    ],
)
def test_stop_reasons(choice: dict[str, object], reason: str, sequence: str | None) -> None:
    choices = [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, **choice}]
    parsed = answer({}, choices=choices)
    assert (parsed.stop_reason, parsed.stop_sequence) == (reason, sequence)


def test_tool_calls_finished_with_stop_are_tool_use() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    choices = [
        {
            "index": 0,
            "message": {"role": "assistant", "tool_calls": [call]},
            "finish_reason": "stop",
        }
    ]
    assert answer({}, choices=choices).stop_reason == "tool_use"


def test_a_refusal_becomes_text() -> None:
    choices = [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None, "refusal": "I can't help."},
            "finish_reason": "content_filter",
        }
    ]
    parsed = answer({}, choices=choices)
    assert parsed.stop_reason == "refusal"
    assert parsed.content[0].model_dump(exclude_none=True) == {
        "type": "text",
        "text": "I can't help.",
    }


def test_content_parts_are_joined_and_only_the_first_choice_counts() -> None:
    first = {
        "role": "assistant",
        "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
    }
    choices = [
        {"index": 1, "message": {"role": "assistant", "content": "other"}, "finish_reason": "stop"},
        {"index": 0, "message": first, "finish_reason": "stop"},
    ]
    parsed = answer({}, choices=choices)
    assert [block.model_dump(exclude_none=True) for block in parsed.content] == [
        {"type": "text", "text": "AB"}
    ]


def test_an_answer_without_usage_counts_zero() -> None:
    encoded = inbound.encode_response(
        json.dumps({"id": "x", "choices": [{"index": 0, "message": {"content": ""}}]}).encode(),
        model=MODEL,
    )
    parsed = Message.model_validate_json(encoded)
    assert parsed.content == []
    assert parsed.usage.model_dump(exclude_none=True) == {
        "input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
    }


@pytest.mark.parametrize(
    ("openai_id", "message_id"),
    [
        ("chatcmpl-abc", "msg_abc"),
        ("chatcmpl-msg_01XY", "msg_01XY"),
        ("gen-123", "msg_gen-123"),
        ("msg_01", "msg_01"),
    ],
)
def test_message_ids(openai_id: str, message_id: str) -> None:
    assert answer({"role": "assistant", "content": "x"}, id=openai_id).id == message_id


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"id": "x", "choices": []}',
        b'{"id": "x", "choices": [{"index": 0}]}',
        b'{"id": "x", "choices": [{"index": 0, "message": {"content": 5}}]}',
        b'{"error": {"message": "boom"}}',
    ],
)
def test_an_unusable_answer_is_cannot_understand(body: bytes) -> None:
    with pytest.raises(errors.CannotUnderstand) as caught:
        inbound.encode_response(body, model=MODEL)
    assert caught.value.status == 502


def test_the_sdk_round_trip() -> None:
    """The SDK's request through ``decode_request``, a fake OpenAI upstream, ``encode_response``."""
    seen: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        decoded = inbound.decode_request(request.content)
        seen.append(json.loads(decoded.openai_body))
        reply = completion({"role": "assistant", "content": "Bonjour !"}, model="upstream-model")
        return httpx2.Response(200, content=inbound.encode_response(reply, model=decoded.model))

    message = sdk_client(handler).messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Say hello in French."}]
    )
    assert seen[0]["messages"] == [{"role": "user", "content": "Say hello in French."}]
    assert message.model == MODEL
    assert message.content[0].type == "text" and message.content[0].text == "Bonjour !"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 7)


# --- errors -------------------------------------------------------------------------------------


def upstream(status: int, kind: str = "server_error") -> errors.ProxyError:
    return errors.UpstreamHTTPError(
        status, errors.ErrorBody(message="upstream says no", type=kind), []
    )


ERROR_TABLE = [
    (errors.InvalidRequest("Bad."), 400, "invalid_request_error"),
    (errors.CannotExpress("No."), 400, "invalid_request_error"),
    (errors.AuthenticationFailed("Who?"), 401, "authentication_error"),
    (errors.PermissionDenied("Not yours."), 403, "permission_error"),
    (errors.ModelNotFound("No model."), 404, "not_found_error"),
    (errors.MethodNotAllowed("POST."), 405, "invalid_request_error"),
    (errors.BodyTooLarge("Too big."), 413, "request_too_large"),
    (errors.RateLimited("Slow down.", retry_after_s=2), 429, "rate_limit_error"),
    (errors.ProxyError("Bug."), 500, "api_error"),
    (errors.UpstreamFailed("Broken."), 502, "api_error"),
    (errors.CannotUnderstand("Garbage."), 502, "api_error"),
    (errors.ActorFailed("Crashed."), 529, "overloaded_error"),
    (errors.Unavailable("Nobody home."), 529, "overloaded_error"),
    (errors.UpstreamTimeout("Slow."), 504, "timeout_error"),
    (upstream(409), 409, "invalid_request_error"),
    (upstream(422), 422, "invalid_request_error"),
    (upstream(500), 500, "api_error"),
    (upstream(503, "service_unavailable"), 529, "overloaded_error"),
    (upstream(529), 529, "overloaded_error"),
    (upstream(501), 501, "api_error"),
    (upstream(302), 500, "api_error"),
]


@pytest.mark.parametrize(("error", "status", "kind"), ERROR_TABLE)
def test_error_bodies(error: errors.ProxyError, status: int, kind: str) -> None:
    got_status, body = inbound.encode_error(error)
    assert got_status == status
    decoded = json.loads(body)
    assert decoded == {"type": "error", "error": {"type": kind, "message": error.message}}
    if kind != "request_too_large":  # Anthropic documents it; the SDK's error models lack it
        ErrorResponse.model_validate_json(body)


@pytest.mark.parametrize(
    ("error", "exception"),
    [
        (errors.InvalidRequest("Bad."), anthropic.BadRequestError),
        (errors.AuthenticationFailed("Who?"), anthropic.AuthenticationError),
        (errors.PermissionDenied("No."), anthropic.PermissionDeniedError),
        (errors.ModelNotFound("No model."), anthropic.NotFoundError),
        (errors.RateLimited("Slow down.", retry_after_s=2), anthropic.RateLimitError),
        (errors.Unavailable("Nobody home."), anthropic.OverloadedError),
        (errors.UpstreamTimeout("Slow."), anthropic.InternalServerError),
    ],
)
def test_the_sdk_raises_its_own_exception_for_each_error(
    error: errors.ProxyError, exception: type[anthropic.APIStatusError]
) -> None:
    status, body = inbound.encode_error(error)
    client = sdk_client(lambda request: httpx2.Response(status, content=body)).with_options(
        max_retries=0
    )
    with pytest.raises(exception) as caught:
        client.messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
        )
    assert caught.value.api_message == error.message


def test_an_error_event_ends_a_stream() -> None:
    frame = inbound.error_event(errors.Unavailable("Nobody home."))
    assert frame == (
        b"event: error\n"
        b'data: {"type":"error","error":{"type":"overloaded_error","message":"Nobody home."}}\n\n'
    )


# --- count_tokens -------------------------------------------------------------------------------


def count(**fields: object) -> int:
    body = json.dumps({"model": MODEL, **fields}).encode()
    result: int = json.loads(inbound.count_tokens(body))["input_tokens"]
    return result


def test_count_tokens_estimates_from_utf8_bytes() -> None:
    assert count(messages=[user("a" * 40)]) == 4 + 10
    assert count(messages=[user("é" * 20)]) == 4 + 10  # 40 UTF-8 bytes
    assert count(messages=[user("abc")], system="abcde") == 4 + 2  # ceil(8 / 4)
    system = [{"type": "text", "text": "a" * 8}, {"type": "text", "text": "b" * 8}]
    assert count(messages=[user("")], system=system) == 4 + 4


def test_count_tokens_covers_blocks_tools_and_images() -> None:
    tool_use = {"type": "tool_use", "id": "t", "name": "abcd", "input": {"k": 1}}  # 4 + 7 bytes
    messages = [
        user([{"type": "text", "text": "a" * 12}, {"type": "image", "source": IMAGE}]),
        assistant([{"type": "thinking", "thinking": "b" * 4, "signature": "s"}, tool_use]),
        user(
            [
                tool_result(
                    "t", [{"type": "text", "text": "c" * 5}, {"type": "image", "source": IMAGE}]
                )
            ]
        ),
    ]
    tool = {"name": "abcd", "description": "ab", "input_schema": {"type": "object"}}  # 4+2+17
    text_bytes = 12 + 4 + 4 + 7 + 5 + 4 + 2 + 17
    expected = 3 * 4 + 2 * inbound.IMAGE_TOKENS + -(-text_bytes // 4)
    assert count(messages=messages, tools=[tool]) == expected
    assert count(messages=messages, tools=[tool]) == expected  # the same every time


def test_count_tokens_rejects_invalid_bodies() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        inbound.count_tokens(json.dumps({"model": MODEL}).encode())
    assert caught.value.param == "messages"
    with pytest.raises(errors.InvalidRequest):
        inbound.count_tokens(b"{")
