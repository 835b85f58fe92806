"""Anthropic Messages API wire types (``POST /v1/messages``), both directions.

Requests are strict: content blocks are a tagged union, so an inbound ``/v1/messages`` body with a
malformed block fails to decode with a path, and an outbound body can only hold what the API
accepts. Responses and stream events are lenient: a ``Block`` or ``Delta`` of a type this module
does not know still decodes (its ``type`` says what it is), because Anthropic adds block types
(server tools, citations) faster than any gateway ships.

``UNSET`` keeps "absent" distinct from ``null`` in both directions; encoders omit unset fields.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

Role = Literal["user", "assistant"]
StopReason = str  # end_turn, max_tokens, stop_sequence, tool_use, pause_turn, refusal, ...


class _Wire(msgspec.Struct, omit_defaults=True, kw_only=True):
    pass


class CacheControl(_Wire):
    type: str  # "ephemeral"; required, so an encoded marker always says what it is
    ttl: str | UnsetType = UNSET


# --- request content blocks (tagged by "type") ---------------------------------------------


class ImageSource(_Wire):
    type: Literal["base64", "url"]
    media_type: str | UnsetType = UNSET
    data: str | UnsetType = UNSET
    url: str | UnsetType = UNSET


class DocumentSource(_Wire):
    type: Literal["base64", "url", "text"]
    media_type: str | UnsetType = UNSET
    data: str | UnsetType = UNSET
    url: str | UnsetType = UNSET


class TextBlock(_Wire, tag="text"):
    text: str
    cache_control: CacheControl | UnsetType | None = UNSET


class ImageBlock(_Wire, tag="image"):
    source: ImageSource
    cache_control: CacheControl | UnsetType | None = UNSET


class DocumentBlock(_Wire, tag="document"):
    source: DocumentSource
    title: str | UnsetType | None = UNSET
    cache_control: CacheControl | UnsetType | None = UNSET


class ToolUseBlock(_Wire, tag="tool_use"):
    id: str
    name: str
    input: dict[str, object]
    cache_control: CacheControl | UnsetType | None = UNSET


class ToolResultBlock(_Wire, tag="tool_result"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock | DocumentBlock] | UnsetType = UNSET
    is_error: bool | UnsetType = UNSET
    cache_control: CacheControl | UnsetType | None = UNSET


class ThinkingBlock(_Wire, tag="thinking"):
    thinking: str
    signature: str


class RedactedThinkingBlock(_Wire, tag="redacted_thinking"):
    data: str


RequestBlock = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
)


class MessageParam(_Wire):
    role: Role
    content: str | list[RequestBlock]


# --- request ---------------------------------------------------------------------------------


class Tool(_Wire):
    name: str
    input_schema: dict[str, object] | UnsetType = UNSET
    description: str | UnsetType = UNSET
    type: str | UnsetType = UNSET  # absent for custom tools; set for Anthropic's server tools
    cache_control: CacheControl | UnsetType | None = UNSET


class ToolChoice(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | UnsetType = UNSET
    disable_parallel_tool_use: bool | UnsetType = UNSET


class ThinkingConfig(_Wire):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | UnsetType = UNSET


class Metadata(_Wire):
    user_id: str | UnsetType | None = UNSET


class MessagesRequest(_Wire):
    model: str
    messages: list[MessageParam]
    max_tokens: int
    system: str | list[TextBlock] | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    top_k: int | UnsetType = UNSET
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    thinking: ThinkingConfig | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    service_tier: str | UnsetType = UNSET


class CountTokensRequest(_Wire):
    """``POST /v1/messages/count_tokens``: a messages request without ``max_tokens``."""

    model: str
    messages: list[MessageParam]
    system: str | list[TextBlock] | UnsetType = UNSET
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    thinking: ThinkingConfig | UnsetType = UNSET


# --- response (lenient) ----------------------------------------------------------------------


class Block(_Wire):
    """Any response content block; fields beyond ``type`` depend on it."""

    type: str
    text: str | UnsetType = UNSET
    id: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    input: dict[str, object] | UnsetType = UNSET
    thinking: str | UnsetType = UNSET
    signature: str | UnsetType = UNSET
    data: str | UnsetType = UNSET


class CacheCreation(_Wire):
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0


class OutputTokensDetails(_Wire):
    thinking_tokens: int | None = None


class Usage(_Wire):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: OutputTokensDetails | None = None
    service_tier: str | UnsetType | None = UNSET


class Message(_Wire):
    id: str
    model: str
    content: list[Block]
    role: Role = "assistant"
    type: str = "message"
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage = msgspec.field(default_factory=Usage)


# --- stream events (lenient) -----------------------------------------------------------------


class Delta(_Wire):
    """A ``content_block_delta`` payload: text_delta, input_json_delta, thinking_delta,
    signature_delta, citations_delta, or one this module does not know."""

    type: str
    text: str | UnsetType = UNSET
    partial_json: str | UnsetType = UNSET
    thinking: str | UnsetType = UNSET
    signature: str | UnsetType = UNSET


class MessageDeltaBody(_Wire):
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None


class ErrorObject(_Wire):
    type: str
    message: str = ""


class ErrorResponse(_Wire):
    """Anthropic's error body: ``{"type": "error", "error": {"type": ..., "message": ...}}``."""

    error: ErrorObject
    type: str = "error"


class MessageStart(_Wire, tag="message_start"):
    message: Message


class ContentBlockStart(_Wire, tag="content_block_start"):
    index: int
    content_block: Block


class ContentBlockDelta(_Wire, tag="content_block_delta"):
    index: int
    delta: Delta


class ContentBlockStop(_Wire, tag="content_block_stop"):
    index: int


class MessageDelta(_Wire, tag="message_delta"):
    delta: MessageDeltaBody
    usage: Usage = msgspec.field(default_factory=Usage)


class MessageStop(_Wire, tag="message_stop"):
    pass


class Ping(_Wire, tag="ping"):
    pass


class ErrorEvent(_Wire, tag="error"):
    error: ErrorObject


Event = (
    MessageStart
    | ContentBlockStart
    | ContentBlockDelta
    | ContentBlockStop
    | MessageDelta
    | MessageStop
    | Ping
    | ErrorEvent
)


class EventType(msgspec.Struct):
    """The one field read first, so unknown event types can be skipped instead of failing."""

    type: str


KNOWN_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }
)
