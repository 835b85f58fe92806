"""OpenAI wire types: chat completions, legacy completions, embeddings, models.

Requests are decoded leniently (unknown fields ignored, ``null`` accepted wherever the spec allows
it) and strictly typed where a value matters. Responses encode only what was set: optional fields
default to ``UNSET`` and are left out, while fields the spec requires even when empty (a choice's
``logprobs``, a message's ``refusal``) default to ``None`` and are written as ``null``, as the
real API does. Message roles and content parts are tagged unions. Usage and the response types
live in ``openai_reply``, re-exported here so callers write ``openai.ChatCompletion``.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from actorproxy.schema.openai_reply import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChunkChoice,
    ChunkDelta,
    Completion,
    CompletionChoice,
    CompletionTokensDetails,
    Embedding,
    EmbeddingResponse,
    EmbeddingUsage,
    Model,
    ModelList,
    PromptTokensDetails,
    Usage,
    chat_completion_decoder,
    chunk_decoder,
    completion_decoder,
    embedding_response_decoder,
    encoder,
)

__all__ = [
    "ChatCompletion",
    "ChatCompletionChoice",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionRequest",
    "ChunkChoice",
    "ChunkDelta",
    "Completion",
    "CompletionChoice",
    "CompletionRequest",
    "CompletionTokensDetails",
    "Embedding",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "EmbeddingUsage",
    "Message",
    "Model",
    "ModelList",
    "PromptTokensDetails",
    "Usage",
    "chat_completion_decoder",
    "chat_request_decoder",
    "chunk_decoder",
    "completion_decoder",
    "completion_request_decoder",
    "embedding_request_decoder",
    "embedding_response_decoder",
    "encoder",
]

# --- content parts (tagged by "type") ---------------------------------------------------------


class TextPart(msgspec.Struct, tag_field="type", tag="text"):
    text: str


class ImageURL(msgspec.Struct):
    url: str
    detail: str | UnsetType = UNSET


class ImagePart(msgspec.Struct, tag_field="type", tag="image_url"):
    image_url: ImageURL


class InputAudio(msgspec.Struct):
    data: str
    format: str


class AudioPart(msgspec.Struct, tag_field="type", tag="input_audio"):
    input_audio: InputAudio


class FileRef(msgspec.Struct):
    file_data: str | UnsetType = UNSET
    file_id: str | UnsetType = UNSET
    filename: str | UnsetType = UNSET


class FilePart(msgspec.Struct, tag_field="type", tag="file"):
    file: FileRef


class RefusalPart(msgspec.Struct, tag_field="type", tag="refusal"):
    refusal: str


UserPart = TextPart | ImagePart | AudioPart | FilePart
AssistantPart = TextPart | RefusalPart

# --- messages (tagged by "role") --------------------------------------------------------------


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str


class ToolCall(msgspec.Struct):
    id: str
    function: FunctionCall
    type: str = "function"


class SystemMessage(msgspec.Struct, tag_field="role", tag="system"):
    content: str | list[TextPart]
    name: str | UnsetType = UNSET


class DeveloperMessage(msgspec.Struct, tag_field="role", tag="developer"):
    content: str | list[TextPart]
    name: str | UnsetType = UNSET


class UserMessage(msgspec.Struct, tag_field="role", tag="user"):
    content: str | list[UserPart]
    name: str | UnsetType = UNSET


class AssistantMessage(msgspec.Struct, tag_field="role", tag="assistant"):
    content: str | list[AssistantPart] | UnsetType | None = UNSET
    refusal: str | UnsetType | None = UNSET
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    function_call: FunctionCall | UnsetType | None = UNSET


class ToolMessage(msgspec.Struct, tag_field="role", tag="tool"):
    content: str | list[TextPart]
    tool_call_id: str


class FunctionMessage(msgspec.Struct, tag_field="role", tag="function"):
    content: str | None
    name: str


Message = (
    SystemMessage
    | DeveloperMessage
    | UserMessage
    | AssistantMessage
    | ToolMessage
    | FunctionMessage
)

# --- requests ---------------------------------------------------------------------------------


class StreamOptions(msgspec.Struct):
    include_usage: bool | UnsetType | None = UNSET
    include_obfuscation: bool | UnsetType | None = UNSET


class FunctionDef(msgspec.Struct):
    name: str
    description: str | UnsetType = UNSET
    parameters: dict[str, object] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class Tool(msgspec.Struct):
    function: FunctionDef
    type: str = "function"


Stop = str | list[str] | None | UnsetType


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: list[Message]
    n: int | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    max_tokens: int | UnsetType | None = UNSET
    max_completion_tokens: int | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    stop: Stop = UNSET
    seed: int | UnsetType | None = UNSET
    presence_penalty: float | UnsetType | None = UNSET
    frequency_penalty: float | UnsetType | None = UNSET
    logit_bias: dict[str, float] | UnsetType | None = UNSET
    logprobs: bool | UnsetType | None = UNSET
    top_logprobs: int | UnsetType | None = UNSET
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: str | dict[str, object] | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    response_format: dict[str, object] | UnsetType = UNSET
    reasoning_effort: str | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET
    user: str | UnsetType = UNSET
    metadata: dict[str, str] | UnsetType | None = UNSET


# A prompt or embeddings input: a string, or a list of strings, token ids or token-id lists.
# msgspec allows one array type per union, so the list's items are a union; a list that mixes
# kinds passes decoding and is rejected by the consumer.
TextOrTokens = str | list[str | int | list[int]]


class CompletionRequest(msgspec.Struct, kw_only=True):
    model: str
    prompt: TextOrTokens | None
    n: int | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    max_tokens: int | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    stop: Stop = UNSET
    seed: int | UnsetType | None = UNSET
    echo: bool | UnsetType | None = UNSET
    suffix: str | UnsetType | None = UNSET
    best_of: int | UnsetType | None = UNSET
    logprobs: int | UnsetType | None = UNSET
    user: str | UnsetType = UNSET


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    model: str
    input: TextOrTokens
    encoding_format: Literal["float", "base64"] | UnsetType = UNSET
    dimensions: int | UnsetType = UNSET
    user: str | UnsetType = UNSET


chat_request_decoder = msgspec.json.Decoder(ChatCompletionRequest)
completion_request_decoder = msgspec.json.Decoder(CompletionRequest)
embedding_request_decoder = msgspec.json.Decoder(EmbeddingRequest)
