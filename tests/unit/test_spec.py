"""tests.spec: known-good OpenAI bodies validate, broken ones fail with a readable message."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests import spec

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}

CHAT_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "hi there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": USAGE,
    "system_fingerprint": "fp_1",
}

CHAT_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "logprobs": None, "finish_reason": None}],
    "usage": None,
}

COMPLETION: dict[str, Any] = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1_700_000_000,
    "model": "gpt-3.5-turbo-instruct",
    "choices": [{"index": 0, "text": "hi", "logprobs": None, "finish_reason": "length"}],
    "usage": USAGE,
}


TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL_MESSAGE = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [TOOL_CALL]}
TOOL_CHOICE = {"index": 0, "message": TOOL_MESSAGE, "logprobs": None, "finish_reason": "tool_calls"}
TOOL_DELTA = {"tool_calls": [{"index": 0} | TOOL_CALL]}


def embeddings(vector: object) -> dict[str, Any]:
    return {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }


MODEL = {"id": "gpt-4o", "object": "model", "created": 1_700_000_000, "owned_by": "openai"}

ERROR = {
    "error": {
        "message": "Incorrect API key provided",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ("CreateChatCompletionResponse", CHAT_COMPLETION),
        ("CreateChatCompletionStreamResponse", CHAT_CHUNK),
        ("CreateChatCompletionStreamResponse", CHAT_CHUNK | {"choices": [], "usage": USAGE}),
        ("CreateChatCompletionResponse", CHAT_COMPLETION | {"choices": [TOOL_CHOICE]}),
        (
            "CreateChatCompletionStreamResponse",
            CHAT_CHUNK | {"choices": [{"index": 0, "delta": TOOL_DELTA, "finish_reason": None}]},
        ),
        ("CreateCompletionResponse", COMPLETION),
        ("CreateEmbeddingResponse", embeddings([0.25, -0.5, 1.0])),
        ("CreateEmbeddingResponse", embeddings("AACAPgAAAL8AAIA/")),
        ("ListModelsResponse", {"object": "list", "data": [MODEL]}),
        ("Model", MODEL),
        ("ErrorResponse", ERROR),
    ],
)
def test_known_good_bodies_validate(schema: str, instance: object) -> None:
    spec.validate(schema, instance)


def broken_chat(path: list[str | int], value: object) -> dict[str, Any]:
    broken = copy.deepcopy(CHAT_COMPLETION)
    node: Any = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ({k: v for k, v in CHAT_COMPLETION.items() if k != "choices"}, "'choices' is a required"),
        (broken_chat(["created"], "yesterday"), "$.created: 'yesterday' is not of type 'integer'"),
        (broken_chat(["choices", 0, "message", "content"], 42), "$.choices[0].message.content"),
        (broken_chat(["choices", 0, "finish_reason"], None), "$.choices[0].finish_reason"),
        (broken_chat(["object"], "chat.completion.chunk"), "$.object"),
        (broken_chat(["usage", "total_tokens"], "5"), "$.usage.total_tokens"),
    ],
)
def test_broken_chat_completion_fails_naming_the_path(instance: object, expected: str) -> None:
    with pytest.raises(AssertionError, match="CreateChatCompletionResponse") as info:
        spec.validate("CreateChatCompletionResponse", instance)
    assert expected in str(info.value)


def test_nullable_is_not_a_free_pass() -> None:
    with pytest.raises(AssertionError, match=r"\$\.usage"):
        spec.validate("CreateChatCompletionStreamResponse", CHAT_CHUNK | {"usage": "none"})
    with pytest.raises(AssertionError, match=r"finish_reason"):
        bad_choice = CHAT_CHUNK["choices"][0] | {"finish_reason": "tired"}
        spec.validate("CreateChatCompletionStreamResponse", CHAT_CHUNK | {"choices": [bad_choice]})


def test_tool_call_union_still_checks_its_branches() -> None:
    bad_call = TOOL_CALL | {"type": "telepathy"}
    bad_choice = TOOL_CHOICE | {"message": TOOL_MESSAGE | {"tool_calls": [bad_call]}}
    with pytest.raises(AssertionError, match=r"tool_calls\[0\]"):
        spec.validate("CreateChatCompletionResponse", CHAT_COMPLETION | {"choices": [bad_choice]})


def test_embedding_must_be_numbers_or_a_string() -> None:
    with pytest.raises(AssertionError, match=r"\$\.data\[0\]\.embedding"):
        spec.validate("CreateEmbeddingResponse", embeddings(["0.5"]))


def test_error_body_needs_all_four_fields() -> None:
    with pytest.raises(AssertionError, match="'code' is a required property"):
        spec.validate("ErrorResponse", {"error": {"message": "m", "type": "t", "param": None}})


def test_unknown_schema_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="NoSuchSchema"):
        spec.validate("NoSuchSchema", {})


def test_sse_body_chunks_are_decoded_and_validated() -> None:
    body = b"".join(spec_frame(chunk) for chunk in [CHAT_CHUNK, CHAT_CHUNK]) + b"data: [DONE]\n\n"
    assert spec.validate_sse_chunks("CreateChatCompletionStreamResponse", body) == [CHAT_CHUNK] * 2
    crlf = body.replace(b"\n", b"\r\n").decode()
    assert len(spec.validate_sse_chunks("CreateChatCompletionStreamResponse", crlf)) == 2


def test_sse_chunk_failure_names_the_chunk() -> None:
    chunks = [CHAT_CHUNK, CHAT_CHUNK | {"id": 7}]
    with pytest.raises(AssertionError, match=r"(?s)chunk 1: .*\$\.id"):
        spec.validate_sse_chunks("CreateChatCompletionStreamResponse", chunks)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'data: {"a": 1}\n\n', "does not end with data: \\[DONE\\]"),
        (b"data: [DONE]\n\ndata: [DONE]\n\n", "events after data: \\[DONE\\]"),
        (b"data: [DONE]", "ends inside an event"),
    ],
)
def test_malformed_sse_body_fails(body: bytes, expected: str) -> None:
    with pytest.raises(AssertionError, match=expected):
        spec.validate_sse_chunks("CreateChatCompletionStreamResponse", body)


def test_sse_data_skips_comments_and_other_fields() -> None:
    body = ': keep-alive\n\nevent: x\nid: 1\ndata: {"a":\ndata: 1}\n\ndata: [DONE]\n\n'
    assert spec.sse_data(body) == ['{"a":\n1}', "[DONE]"]


def test_completion_stream_chunk_schema_allows_null_finish_reason() -> None:
    chunk = COMPLETION | {"choices": [COMPLETION["choices"][0] | {"finish_reason": None}]}
    spec.validate("CreateCompletionStreamResponse", chunk | {"usage": None})
    with pytest.raises(AssertionError, match="finish_reason"):
        spec.validate("CreateCompletionResponse", chunk)


def spec_frame(chunk: object) -> bytes:
    return f"data: {json.dumps(chunk)}\n\n".encode()
