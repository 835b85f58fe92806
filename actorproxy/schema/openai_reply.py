"""OpenAI response wire types: usage, chat completions and chunks, completions, embeddings, models.

Import them through ``actorproxy.schema.openai``. Optional fields default to ``UNSET`` and are
left out when encoding; fields the spec requires even when empty default to ``None`` and are
written as ``null``. ``finish_reason`` is a plain ``str`` so that decoding a third-party upstream
that invents its own reasons does not fail.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

Logprobs = dict[str, object] | None


class PromptTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int | UnsetType | None = UNSET
    audio_tokens: int | UnsetType | None = UNSET


class CompletionTokensDetails(msgspec.Struct, kw_only=True):
    reasoning_tokens: int | UnsetType | None = UNSET
    audio_tokens: int | UnsetType | None = UNSET
    accepted_prediction_tokens: int | UnsetType | None = UNSET
    rejected_prediction_tokens: int | UnsetType | None = UNSET


class Usage(msgspec.Struct, kw_only=True):
    """``CompletionUsage``: the three counts are always written, the details only when set."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | UnsetType | None = UNSET
    completion_tokens_details: CompletionTokensDetails | UnsetType | None = UNSET


class ChatCompletionMessage(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, object]] | UnsetType = UNSET
    annotations: list[dict[str, object]] | UnsetType = UNSET


class ChatCompletionChoice(msgspec.Struct, kw_only=True):
    index: int
    message: ChatCompletionMessage
    logprobs: Logprobs = None
    finish_reason: str | None = None


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage | UnsetType = UNSET
    service_tier: str | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET


class ChunkDelta(msgspec.Struct, kw_only=True):
    role: str | UnsetType = UNSET
    content: str | UnsetType | None = UNSET
    refusal: str | UnsetType | None = UNSET
    tool_calls: list[dict[str, object]] | UnsetType = UNSET


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: ChunkDelta
    logprobs: Logprobs = None
    finish_reason: str | None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    """One streamed chunk; ``usage`` is ``null`` on each chunk when usage was asked for."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET


class CompletionChoice(msgspec.Struct, kw_only=True):
    text: str
    index: int
    logprobs: Logprobs = None
    finish_reason: str | None = None


class Completion(msgspec.Struct, kw_only=True):
    """A legacy completion, and also each of its streamed chunks."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | UnsetType | None = UNSET
    system_fingerprint: str | UnsetType | None = UNSET


class Embedding(msgspec.Struct, kw_only=True):
    """One vector: floats, or base64 of little-endian float32 with ``encoding_format=base64``."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Model(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Model]


encoder = msgspec.json.Encoder()
chat_completion_decoder = msgspec.json.Decoder(ChatCompletion)
chunk_decoder = msgspec.json.Decoder(ChatCompletionChunk)
completion_decoder = msgspec.json.Decoder(Completion)
embedding_response_decoder = msgspec.json.Decoder(EmbeddingResponse)
