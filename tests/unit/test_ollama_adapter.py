"""The Ollama adapter, sans-IO: requests out, whole replies and errors back (streams elsewhere)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorproxy import errors
from actorproxy.adapters.base import Endpoint, Exchange
from actorproxy.adapters.ollama import OllamaAdapter
from actorproxy.adapters.tool_repair import parse_tool_calls
from tests import spec

CREATED = 1_700_000_000
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}
HELLO = [{"role": "user", "content": "hello"}]


def exchange(
    endpoint: Endpoint, body: dict[str, Any], *, stream: bool = False, headers: Any = ()
) -> Exchange:
    return Exchange(
        endpoint=endpoint,
        body=json.dumps(body).encode(),
        model="alias",
        upstream_model="llama3.2",
        stream=stream,
        request_id="req_1",
        headers=list(headers),
        created=CREATED,
    )


def sent(body: dict[str, Any], endpoint: Endpoint = "chat", **options: Any) -> Any:
    """The JSON body the adapter sends to Ollama for ``body``."""
    adapter = OllamaAdapter(**options)
    return json.loads(adapter.encode_request(exchange(endpoint, body)).body)


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "alias", "messages": HELLO, **fields}


def refused(body: dict[str, Any], endpoint: Endpoint = "chat") -> errors.CannotExpress:
    with pytest.raises(errors.CannotExpress) as caught:
        sent(body, endpoint)
    assert caught.value.status == 400
    return caught.value


# --- chat requests ----------------------------------------------------------------------------


def test_chat_request_line_and_headers() -> None:
    adapter = OllamaAdapter(headers={"Authorization": "Bearer k", "X-Extra": "1"})
    incoming = [(b"traceparent", b"00-abc-def-01"), (b"cookie", b"secret")]
    request = adapter.encode_request(exchange("chat", chat(), headers=incoming))
    assert (request.method, request.target) == (b"POST", "/api/chat")
    headers = dict(request.headers)
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"authorization"] == b"Bearer k"
    assert headers[b"x-extra"] == b"1"
    assert headers[b"x-request-id"] == b"req_1"
    assert headers[b"traceparent"] == b"00-abc-def-01"
    assert b"cookie" not in headers


def test_minimal_chat_sends_only_what_was_asked() -> None:
    assert sent(chat()) == {"model": "llama3.2", "messages": HELLO, "stream": False}


def test_stream_flag_and_keep_alive() -> None:
    adapter = OllamaAdapter(keep_alive="10m")
    body = json.loads(adapter.encode_request(exchange("chat", chat(), stream=True)).body)
    assert body["stream"] is True
    assert body["keep_alive"] == "10m"


def test_messages_of_every_role() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "developer",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        },
        {"role": "user", "content": "weather?", "name": "ann"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {"id": "c2", "type": "function", "function": {"name": "now", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "tool", "tool_call_id": "unknown", "content": "?"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "It is"}, {"type": "refusal", "refusal": "no"}],
        },
        {"role": "assistant", "content": None, "function_call": {"name": "now", "arguments": "{}"}},
        {"role": "function", "name": "now", "content": "noon"},
    ]
    assert sent(chat(messages=messages))["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "system", "content": "a\nb"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "now", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        {"role": "tool", "content": "noon", "tool_name": "now"},
        {"role": "tool", "content": "?"},
        {"role": "assistant", "content": "It is\nno"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "now", "arguments": {}}}],
        },
        {"role": "tool", "content": "noon", "tool_name": "now"},
    ]


def test_a_reused_call_id_names_the_latest_call() -> None:
    def turn(name: str) -> list[dict[str, Any]]:
        call = {"id": "call_0", "type": "function", "function": {"name": name, "arguments": "{}"}}
        return [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0", "content": name},
        ]

    messages = sent(chat(messages=[*HELLO, *turn("first"), *turn("second")]))["messages"]
    assert [m.get("tool_name") for m in messages if m["role"] == "tool"] == ["first", "second"]


def test_user_parts_become_text_and_images() -> None:
    parts = [
        {"type": "text", "text": "what is"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "this?"},
        {"type": "image_url", "image_url": {"url": "data:text/plain,hi%21", "detail": "low"}},
    ]
    message = sent(chat(messages=[{"role": "user", "content": parts}]))["messages"][0]
    assert message == {
        "role": "user",
        "content": "what is\nthis?",
        "images": ["iVBORw0KGgo=", base64.b64encode(b"hi!").decode()],
    }


@pytest.mark.parametrize(
    ("part", "param"),
    [
        (
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            "messages[0].content[1].image_url.url",
        ),
        (
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            "messages[0].content[1]",
        ),
        ({"type": "file", "file": {"file_id": "file-1"}}, "messages[0].content[1]"),
    ],
)
def test_parts_ollama_cannot_take(part: dict[str, Any], param: str) -> None:
    content = [{"type": "text", "text": "look"}, part]
    assert refused(chat(messages=[{"role": "user", "content": content}])).param == param


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"', " "])
def test_tool_call_arguments_must_be_an_object(arguments: str) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
    messages = [*HELLO, {"role": "assistant", "content": None, "tool_calls": [call]}]
    error = refused(chat(messages=messages))
    assert error.param == "messages[1].tool_calls[0].function.arguments"


def test_tools_keep_name_description_and_parameters() -> None:
    function = WEATHER_TOOL["function"]
    assert isinstance(function, dict)
    assert sent(chat(tools=[WEATHER_TOOL]))["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": function["parameters"],
            },
        }
    ]


def test_tool_choice() -> None:
    assert "tools" in sent(chat(tools=[WEATHER_TOOL], tool_choice="auto"))
    assert "tools" not in sent(chat(tools=[WEATHER_TOOL], tool_choice="none"))
    assert refused(chat(tools=[WEATHER_TOOL], tool_choice="required")).param == "tool_choice"
    forced = {"type": "function", "function": {"name": "get_weather"}}
    assert refused(chat(tools=[WEATHER_TOOL], tool_choice=forced)).param == "tool_choice"
    assert refused(chat(tools=[{**WEATHER_TOOL, "type": "custom"}])).param == "tools[0].type"


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            {"type": "object"},
        ),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "json"),
    ],
)
def test_response_format(response_format: dict[str, Any], expected: object) -> None:
    assert sent(chat(response_format=response_format)).get("format") == expected


def test_unknown_response_format_is_refused() -> None:
    error = refused(chat(response_format={"type": "grammar", "grammar": "x"}))
    assert error.param == "response_format.type"


def test_sampling_options() -> None:
    body = chat(
        max_tokens=50,
        temperature=0.5,
        top_p=0.9,
        seed=7,
        stop="END",
        frequency_penalty=0.1,
        presence_penalty=0.2,
        user="u",
        metadata={"k": "v"},
        parallel_tool_calls=False,
    )
    assert sent(body)["options"] == {
        "num_predict": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["END"],
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
    }


def test_max_completion_tokens_wins_and_nulls_are_left_out() -> None:
    body = chat(max_tokens=50, max_completion_tokens=20, stop=["a", "b"], temperature=None)
    assert sent(body)["options"] == {"num_predict": 20, "stop": ["a", "b"]}
    assert "options" not in sent(chat(temperature=None, stop=None, seed=None))


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ],
)
def test_parameters_ollama_cannot_honour(fields: dict[str, Any], param: str) -> None:
    assert refused(chat(**fields)).param == param


def test_harmless_values_of_those_parameters_pass() -> None:
    assert "options" not in sent(chat(n=1, logprobs=False, logit_bias={}, top_logprobs=0))


def test_unknown_request_fields_are_ignored() -> None:
    assert sent(chat(some_new_field={"x": 1}, store=True)) == sent(chat())


def test_invalid_bodies_are_400() -> None:
    adapter = OllamaAdapter()
    bad = Exchange("chat", b"{nope", "m", "m", False, "r", [])
    with pytest.raises(errors.InvalidRequest):
        adapter.encode_request(bad)
    with pytest.raises(errors.InvalidRequest) as caught:
        sent({"model": "m"})
    assert caught.value.param == "messages"


# --- completions and embeddings requests ------------------------------------------------------


def test_completion_request() -> None:
    adapter = OllamaAdapter(keep_alive="1h")
    body = {"model": "alias", "prompt": "Once", "suffix": "end", "max_tokens": 5, "stop": "\n"}
    request = adapter.encode_request(exchange("completions", body, stream=True))
    assert request.target == "/api/generate"
    assert json.loads(request.body) == {
        "model": "llama3.2",
        "prompt": "Once",
        "stream": True,
        "suffix": "end",
        "options": {"num_predict": 5, "stop": ["\n"]},
        "keep_alive": "1h",
    }


@pytest.mark.parametrize(("prompt", "expected"), [(["only"], "only"), (None, "")])
def test_completion_prompt_forms(prompt: object, expected: str) -> None:
    assert sent({"model": "m", "prompt": prompt}, "completions")["prompt"] == expected


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [[1, 2]]}, "prompt"),
        ({"prompt": "x", "n": 2}, "n"),
        ({"prompt": "x", "best_of": 3}, "best_of"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "logprobs": 1}, "logprobs"),
    ],
)
def test_completions_ollama_cannot_express(fields: dict[str, Any], param: str) -> None:
    assert refused({"model": "m", **fields}, "completions").param == param


def test_embedding_request() -> None:
    adapter = OllamaAdapter()
    body = {"model": "alias", "input": ["a", "b"], "dimensions": 4, "encoding_format": "base64"}
    request = adapter.encode_request(exchange("embeddings", body))
    assert request.target == "/api/embed"
    assert json.loads(request.body) == {"model": "llama3.2", "input": ["a", "b"], "dimensions": 4}
    assert sent({"model": "m", "input": "one"}, "embeddings")["input"] == "one"


@pytest.mark.parametrize("tokens", [[1, 2, 3], [[1, 2], [3]], ["a", 1]])
def test_token_inputs_cannot_be_embedded(tokens: object) -> None:
    assert refused({"model": "m", "input": tokens}, "embeddings").param == "input"


# --- whole replies ----------------------------------------------------------------------------

OLLAMA_CHAT = {
    "model": "llama3.2:latest",
    "created_at": "2024-01-01T00:00:00Z",
    "message": {"role": "assistant", "content": "Hello there", "images": None},
    "done": True,
    "done_reason": "stop",
    "total_duration": 5_043_500_667,
    "load_duration": 5_025_959,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 325_953_000,
    "eval_count": 290,
    "eval_duration": 4_709_213_000,
    "context": [1, 2, 3],
    "some_future_field": {"x": 1},
}


def reply(
    endpoint: Endpoint,
    upstream: dict[str, Any],
    request: dict[str, Any] | None = None,
    **options: Any,
) -> Any:
    adapter = OllamaAdapter(**options)
    body = adapter.decode_response(
        exchange(endpoint, request or chat()), json.dumps(upstream).encode()
    )
    return json.loads(body)


def test_chat_reply() -> None:
    body = reply("chat", OLLAMA_CHAT)
    spec.validate("CreateChatCompletionResponse", body)
    assert body == {
        "id": "chatcmpl-req_1",
        "object": "chat.completion",
        "created": CREATED,
        "model": "llama3.2:latest",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 26, "completion_tokens": 290, "total_tokens": 316},
        "timings": {
            "prompt_ms": 325.953,
            "predicted_ms": 4709.213,
            "load_ms": 5.025959,
            "total_ms": 5043.500667,
        },
    }


def test_chat_reply_without_metrics() -> None:
    body = reply("chat", {"model": "m", "message": {"content": "hi"}, "done": True})
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert "timings" not in body
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("done_reason", "finish"),
    [("length", "length"), ("stop", "stop"), ("load", "stop"), (None, "stop")],
)
def test_finish_reasons(done_reason: str | None, finish: str) -> None:
    upstream = {**OLLAMA_CHAT, "done_reason": done_reason}
    assert reply("chat", upstream)["choices"][0]["finish_reason"] == finish


def test_tool_calls_reply() -> None:
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}},
        {"function": {"index": 1, "name": "now", "arguments": {}}},
    ]
    message = {"role": "assistant", "content": "", "tool_calls": calls}
    body = reply("chat", {**OLLAMA_CHAT, "message": message}, chat(tools=[WEATHER_TOOL]))
    spec.validate("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_req_1_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
        },
        {"id": "call_req_1_1", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]


def test_thinking_becomes_reasoning_content() -> None:
    message = {"role": "assistant", "content": "4", "thinking": "2 + 2 is 4"}
    body = reply("chat", {**OLLAMA_CHAT, "message": message})
    spec.validate("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["reasoning_content"] == "2 + 2 is 4"
    assert body["choices"][0]["message"]["content"] == "4"


TEXT_CALL = '```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```'


def test_repair_turns_text_into_a_tool_call() -> None:
    upstream = {**OLLAMA_CHAT, "message": {"role": "assistant", "content": TEXT_CALL}}
    body = reply("chat", upstream, chat(tools=[WEATHER_TOOL]), repair_tool_calls=True)
    spec.validate("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_req_1_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        }
    ]


@pytest.mark.parametrize(
    ("request_fields", "repair"),
    [
        ({"tools": [WEATHER_TOOL]}, False),
        ({}, True),
        ({"tools": [WEATHER_TOOL], "tool_choice": "none"}, True),
    ],
)
def test_repair_only_when_on_and_tools_offered(
    request_fields: dict[str, Any], repair: bool
) -> None:
    upstream = {**OLLAMA_CHAT, "message": {"role": "assistant", "content": TEXT_CALL}}
    body = reply("chat", upstream, chat(**request_fields), repair_tool_calls=repair)
    assert body["choices"][0]["message"]["content"] == TEXT_CALL
    assert body["choices"][0]["finish_reason"] == "stop"


def test_repair_leaves_calls_to_other_tools_as_text() -> None:
    content = '{"name": "delete_everything", "arguments": {}}'
    upstream = {**OLLAMA_CHAT, "message": {"role": "assistant", "content": content}}
    body = reply("chat", upstream, chat(tools=[WEATHER_TOOL]), repair_tool_calls=True)
    assert body["choices"][0]["message"]["content"] == content


@pytest.mark.parametrize(
    ("upstream", "error"),
    [
        (b"not json", errors.CannotUnderstand),
        (b'{"message": {"content": 5}, "done": true}', errors.CannotUnderstand),
        (b"[1, 2]", errors.CannotUnderstand),
        (b'{"error": "model crashed"}', errors.UpstreamFailed),
    ],
)
def test_unusable_chat_replies(upstream: bytes, error: type[errors.ProxyError]) -> None:
    with pytest.raises(error) as caught:
        OllamaAdapter().decode_response(exchange("chat", chat()), upstream)
    assert caught.value.status == 502


def test_completion_reply() -> None:
    upstream = {**OLLAMA_CHAT, "response": "upon a time", "done_reason": "length"}
    del upstream["message"]
    body = reply("completions", upstream, {"model": "alias", "prompt": "Once"})
    spec.validate("CreateCompletionResponse", body)
    assert body["id"] == "cmpl-req_1"
    assert body["object"] == "text_completion"
    assert body["choices"] == [
        {"text": "upon a time", "index": 0, "logprobs": None, "finish_reason": "length"}
    ]
    assert body["usage"]["total_tokens"] == 316
    assert body["timings"]["total_ms"] == 5043.500667


EMBED = {
    "model": "nomic-embed-text",
    "embeddings": [[0.5, -0.25, 1.0], [0.0, 0.125, -1.0]],
    "total_duration": 14_143_917,
    "load_duration": 1_019_500,
    "prompt_eval_count": 8,
}


def test_embedding_reply() -> None:
    body = reply("embeddings", EMBED, {"model": "alias", "input": ["a", "b"]})
    spec.validate("CreateEmbeddingResponse", body)
    assert body == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 1.0]},
            {"object": "embedding", "index": 1, "embedding": [0.0, 0.125, -1.0]},
        ],
        "model": "nomic-embed-text",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }


def test_embedding_reply_in_base64() -> None:
    request = {"model": "alias", "input": ["a", "b"], "encoding_format": "base64"}
    body = reply("embeddings", EMBED, request)
    spec.validate("CreateEmbeddingResponse", body)
    vectors = [
        list(struct.unpack("<3f", base64.b64decode(item["embedding"]))) for item in body["data"]
    ]
    assert vectors == EMBED["embeddings"]


def test_unusable_embedding_reply() -> None:
    with pytest.raises(errors.CannotUnderstand):
        OllamaAdapter().decode_response(exchange("embeddings", {"model": "m", "input": "a"}), b"{}")


# --- errors and models ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "code", "retryable"),
    [
        (404, "invalid_request_error", "model_not_found", False),
        (400, "invalid_request_error", None, False),
        (429, "requests", "rate_limit_exceeded", True),
        (500, "server_error", None, True),
        (503, "server_error", None, True),
    ],
)
def test_errors_keep_status_and_message(
    status: int, kind: str, code: str | None, retryable: bool
) -> None:
    body = b'{"error":"model \\"x\\" not found, try pulling it first"}'
    error = OllamaAdapter().decode_error(status, [], body)
    assert isinstance(error, errors.UpstreamHTTPError)
    assert (error.status, error.type, error.code, error.retryable) == (
        status,
        kind,
        code,
        retryable,
    )
    assert error.message == 'model "x" not found, try pulling it first'
    spec.validate("ErrorResponse", json.loads(errors.render(error)))


def test_error_keeps_retry_after_only() -> None:
    headers = [(b"retry-after", b"3"), (b"content-type", b"application/json")]
    error = OllamaAdapter().decode_error(503, headers, b'{"error": "server busy"}')
    assert error.headers == [(b"retry-after", b"3")]


def test_error_without_a_json_body() -> None:
    error = OllamaAdapter().decode_error(404, [], b"404 page not found")
    assert error.status == 404
    assert "404" in error.message


def test_models() -> None:
    adapter = OllamaAdapter(headers={"authorization": "Bearer k"})
    request = adapter.models_request()
    assert (request.method, request.target, request.body) == (b"GET", "/api/tags", b"")
    assert (b"authorization", b"Bearer k") in request.headers
    tags = {"models": [{"name": "llama3.2:latest", "size": 1}, {"model": "qwen3:8b"}]}
    assert adapter.decode_models(json.dumps(tags).encode()) == ["llama3.2:latest", "qwen3:8b"]
    with pytest.raises(errors.CannotUnderstand):
        adapter.decode_models(b'{"models": 3}')


@given(st.text())
def test_repair_never_changes_ordinary_text(text: str) -> None:
    upstream = {**OLLAMA_CHAT, "message": {"role": "assistant", "content": text}}
    body = reply("chat", upstream, chat(tools=[WEATHER_TOOL]), repair_tool_calls=True)
    if parse_tool_calls(text, {"get_weather"}) is None:
        assert body["choices"][0]["message"]["content"] == text
        assert "tool_calls" not in body["choices"][0]["message"]
