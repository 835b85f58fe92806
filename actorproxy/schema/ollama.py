"""Ollama's native API (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags``).

Requests are what the adapter writes: optional fields default to ``UNSET`` and are left out, so
Ollama applies its own defaults (a model's Modelfile parameters) to everything the client did not
set. Replies are decoded leniently: unknown fields are ignored and every field has a default, since
Ollama leaves out zero values (``omitempty``) and one Struct serves both the streamed lines and the
whole reply. ``error`` is set on a line that reports a failure instead of a result.

The last section holds the OpenAI reply types with the extensions this adapter adds: llama.cpp's
``timings`` object (milliseconds) and ``reasoning_content`` for a thinking model's thoughts.
"""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from actorproxy.schema import openai, views

# --- requests ---------------------------------------------------------------------------------


class FunctionDef(msgspec.Struct, kw_only=True):
    name: str
    description: str | UnsetType = UNSET
    parameters: dict[str, object] | UnsetType = UNSET


class Tool(msgspec.Struct, kw_only=True):
    function: FunctionDef
    type: str = "function"


class ToolCallFunction(msgspec.Struct, kw_only=True):
    name: str
    arguments: dict[str, object]


class ToolCall(msgspec.Struct, kw_only=True):
    function: ToolCallFunction


class Message(msgspec.Struct, kw_only=True):
    role: str
    content: str
    images: list[str] | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_name: str | UnsetType = UNSET


class Options(msgspec.Struct, kw_only=True):
    num_predict: int | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    seed: int | UnsetType = UNSET
    stop: list[str] | UnsetType = UNSET
    frequency_penalty: float | UnsetType = UNSET
    presence_penalty: float | UnsetType = UNSET


# ``format``: "json", or a JSON schema the reply must match.
Format = str | dict[str, object] | UnsetType


class ChatRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: list[Message]
    stream: bool  # always written: Ollama streams when it is absent
    tools: list[Tool] | UnsetType = UNSET
    format: Format = UNSET
    options: Options | UnsetType = UNSET
    keep_alive: str | UnsetType = UNSET


class GenerateRequest(msgspec.Struct, kw_only=True):
    model: str
    prompt: str
    stream: bool
    suffix: str | UnsetType = UNSET
    options: Options | UnsetType = UNSET
    keep_alive: str | UnsetType = UNSET


class EmbedRequest(msgspec.Struct, kw_only=True):
    model: str
    input: str | list[str]
    dimensions: int | UnsetType = UNSET
    keep_alive: str | UnsetType = UNSET


# --- replies ----------------------------------------------------------------------------------


class Metrics(msgspec.Struct, kw_only=True):
    """Counts and durations (nanoseconds) that Ollama puts on a final line."""

    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ReplyFunction(msgspec.Struct, kw_only=True):
    name: str
    arguments: msgspec.Raw = msgspec.Raw()  # a JSON object, kept as Ollama wrote it


class ReplyToolCall(msgspec.Struct, kw_only=True):
    function: ReplyFunction


class ReplyMessage(msgspec.Struct, kw_only=True):
    role: str = "assistant"
    content: str | None = None
    thinking: str | None = None
    tool_calls: list[ReplyToolCall] | None = None


class ChatLine(Metrics, kw_only=True):
    """One ``/api/chat`` stream line, or the whole non-streamed reply."""

    model: str = ""
    message: ReplyMessage | None = None
    done: bool = False
    done_reason: str | None = None
    error: str | None = None


class GenerateLine(Metrics, kw_only=True):
    """One ``/api/generate`` stream line, or the whole non-streamed reply."""

    model: str = ""
    response: str | None = None
    done: bool = False
    done_reason: str | None = None
    error: str | None = None


class EmbedReply(Metrics, kw_only=True):
    model: str = ""
    embeddings: list[list[float]]


class TagModel(msgspec.Struct, kw_only=True):
    name: str = ""
    model: str = ""


class Tags(msgspec.Struct, kw_only=True):
    models: list[TagModel]


class ErrorReply(msgspec.Struct):
    error: str


# --- OpenAI replies, with what this adapter adds ------------------------------------------------


class Timings(msgspec.Struct, kw_only=True):
    """Ollama's durations in milliseconds, named as llama.cpp's server names them."""

    prompt_ms: float | UnsetType = UNSET
    predicted_ms: float | UnsetType = UNSET
    load_ms: float | UnsetType = UNSET
    total_ms: float | UnsetType = UNSET


class ChatMessage(openai.ChatCompletionMessage, kw_only=True):
    reasoning_content: str | UnsetType = UNSET


class ChatCompletion(openai.ChatCompletion, kw_only=True):
    timings: Timings | UnsetType = UNSET


class ChunkDelta(openai.ChunkDelta, kw_only=True):
    reasoning_content: str | UnsetType = UNSET


class ChatCompletionChunk(openai.ChatCompletionChunk, kw_only=True):
    timings: Timings | UnsetType = UNSET


class Completion(openai.Completion, kw_only=True):
    """A legacy completion or one of its chunks."""

    timings: Timings | UnsetType = UNSET


class FunctionName(msgspec.Struct):
    name: str


class ToolName(msgspec.Struct):
    function: FunctionName


class ReplyView(msgspec.Struct):
    """What translating a reply needs from the client's OpenAI request."""

    stream_options: views.StreamOptions | None = None
    tools: list[ToolName] | None = None
    tool_choice: object = None
    encoding_format: str | None = None


encoder = msgspec.json.Encoder()
chat_line_decoder = msgspec.json.Decoder(ChatLine)
generate_line_decoder = msgspec.json.Decoder(GenerateLine)
embed_reply_decoder = msgspec.json.Decoder(EmbedReply)
tags_decoder = msgspec.json.Decoder(Tags)
error_decoder = msgspec.json.Decoder(ErrorReply)
reply_view_decoder = msgspec.json.Decoder(ReplyView)
