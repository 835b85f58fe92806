"""The Anthropic adapter: OpenAI chat requests to Anthropic's Messages API, and back.

The request is translated by ``anthropic_request``; this module holds the adapter, the reply
(``Message`` -> ``chat.completion``), the error map and the model list. Streams are translated by
``anthropic_stream``. The base URL is the API root (``https://api.anthropic.com``); every mapping
and policy is listed in docs/providers/anthropic.md.

OpenAI's shape is extended for thinking as other gateways do: an assistant message carries
``reasoning_content`` (the thinking text) and ``thinking_blocks`` (the blocks with their
signatures, to send back on the next turn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from actorproxy import errors
from actorproxy.adapters import anthropic_request as outbound
from actorproxy.adapters.base import Exchange, StreamTranslator
from actorproxy.net.base import Headers, UpstreamRequest
from actorproxy.schema import anthropic, openai, views

MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models?limit=1000"  # the largest page Anthropic serves
FORWARDED_REQUEST_HEADERS = frozenset({b"traceparent", b"tracestate"})
KEPT_ERROR_HEADERS = frozenset({b"retry-after", b"retry-after-ms"})
KEPT_ERROR_PREFIX = b"anthropic-ratelimit-"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic error type -> (OpenAI type, code); the status is the upstream's.
ERROR_TYPES: dict[str, tuple[str, str | None]] = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "permission_error": ("invalid_request_error", "permission_denied"),
    "not_found_error": ("invalid_request_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "billing_error": ("invalid_request_error", "billing_error"),
    "rate_limit_error": ("requests", "rate_limit_exceeded"),
    "api_error": ("server_error", None),
    "timeout_error": ("timeout", "upstream_timeout"),
    "overloaded_error": ("service_unavailable", "overloaded"),
}
OVERLOADED = 529  # Anthropic's own status; clients see 503, which they know to retry

T = TypeVar("T")


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(outbound.ChatRequest)
_message_decoder = msgspec.json.Decoder(anthropic.Message)
_error_decoder = msgspec.json.Decoder(anthropic.ErrorResponse)


class AnthropicAdapter:
    """Translator to Anthropic's Messages API; stateless, so it is safe to share between calls.

    ``unsupported`` says what happens to OpenAI parameters Anthropic has no equivalent for:
    ``"drop"`` leaves them out, ``"reject"`` answers 400 naming the parameter. Sans-IO: a
    cancelled call leaves nothing behind in it.
    """

    def __init__(
        self,
        *,
        api_key: str | None,
        version: str = "2023-06-01",
        default_max_tokens: int = 4096,
        unsupported: outbound.Policy = "drop",
        beta: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        fixed = {"content-type": "application/json", "anthropic-version": version}
        if api_key:
            fixed["x-api-key"] = api_key
        if beta:
            fixed["anthropic-beta"] = ",".join(beta)
        fixed |= {name.lower(): value for name, value in (headers or {}).items()}
        self._headers: Headers = [(name.encode(), value.encode()) for name, value in fixed.items()]
        self._default_max_tokens = default_max_tokens
        self._policy: outbound.Policy = unsupported

    def encode_request(self, exchange: Exchange) -> UpstreamRequest:
        if exchange.endpoint != "chat":
            message = f"Anthropic has no {exchange.endpoint} endpoint; use chat completions."
            raise errors.CannotExpress(message)
        request = outbound.encode_chat(
            errors.decode_json(_request_decoder, exchange.body),
            model=exchange.upstream_model,
            stream=exchange.stream,
            default_max_tokens=self._default_max_tokens,
            policy=self._policy,
        )
        headers = [*self._headers, (b"x-request-id", exchange.request_id.encode())]
        headers.extend(h for h in exchange.headers if h[0] in FORWARDED_REQUEST_HEADERS)
        return UpstreamRequest(b"POST", MESSAGES_PATH, headers, _encoder.encode(request))

    def decode_response(self, exchange: Exchange, body: bytes) -> bytes:
        try:
            message = _message_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise errors.CannotUnderstand(f"Anthropic sent an unreadable message: {exc}") from None
        return _encoder.encode(chat_completion(message, exchange.created))

    def open_stream(self, exchange: Exchange) -> StreamTranslator | None:
        # Imported here: anthropic_stream imports this module's reply mappings.
        from actorproxy.adapters.anthropic_stream import AnthropicStreamTranslator

        return AnthropicStreamTranslator(exchange, include_usage=include_usage(exchange.body))

    def decode_error(self, status: int, headers: Headers, body: bytes) -> errors.ProxyError:
        return decode_error(status, headers, body)

    def models_request(self) -> UpstreamRequest:
        """The request for the models the key can use (the first 1000)."""
        headers = [h for h in self._headers if h[0] != b"content-type"]
        return UpstreamRequest(b"GET", MODELS_PATH, headers, b"")

    def decode_models(self, body: bytes) -> list[str]:
        """The model ids in a ``GET /v1/models`` reply."""
        try:
            listing = _models_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise errors.CannotUnderstand(f"Anthropic sent an invalid model list: {exc}") from None
        return [model.id for model in listing.data]


def include_usage(body: bytes) -> bool:
    """Whether the client asked for a usage chunk (``stream_options.include_usage``)."""
    try:
        options = views.route_view.decode(body).stream_options
    except msgspec.DecodeError:
        return False
    return options is not None and options.include_usage is True


# --- the reply ----------------------------------------------------------------------------------


class ReplyMessage(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[openai.ToolCall] | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    thinking_blocks: list[outbound.ThinkingPart] | UnsetType = UNSET


class ReplyChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: ReplyMessage
    logprobs: None = None
    finish_reason: str


class Reply(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ReplyChoice]
    usage: openai.Usage


def chat_completion(message: anthropic.Message, created: int) -> Reply:
    """The ``chat.completion`` for an Anthropic ``Message``; unknown block types are skipped."""
    texts = [block.text for block in message.content if block.type == "text" and block.text]
    calls = [_tool_call(block) for block in message.content if block.type == "tool_use"]
    thinking = [t for block in message.content if (t := _thinking(block)) is not None]
    reasoning = "".join(b.thinking for b in thinking if isinstance(b, anthropic.ThinkingBlock))
    reply = ReplyMessage(
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls or UNSET,
        reasoning_content=reasoning if thinking else UNSET,
        thinking_blocks=thinking or UNSET,
    )
    choice = ReplyChoice(message=reply, finish_reason=finish_reason(message.stop_reason))
    return Reply(
        id="chatcmpl-" + message.id,
        created=created,
        model=message.model,
        choices=[choice],
        usage=openai_usage(message.usage),
    )


def finish_reason(stop_reason: str | None) -> str:
    """OpenAI's ``finish_reason`` for an Anthropic ``stop_reason`` (unknown ones: ``stop``)."""
    return FINISH_REASONS.get(stop_reason or "", "stop")


def openai_usage(usage: anthropic.Usage) -> openai.Usage:
    """OpenAI counts cached input as prompt tokens; Anthropic counts it apart."""
    cached = usage.cache_read_input_tokens
    prompt = (usage.input_tokens or 0) + (cached or 0) + (usage.cache_creation_input_tokens or 0)
    completion = usage.output_tokens or 0
    details = usage.output_tokens_details
    thinking = details.thinking_tokens if details is not None else None
    return openai.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=_given(cached, openai.PromptTokensDetails(cached_tokens=cached)),
        completion_tokens_details=_given(
            thinking, openai.CompletionTokensDetails(reasoning_tokens=thinking)
        ),
    )


def _given(count: int | None, details: T) -> T | UnsetType:
    return UNSET if count is None else details


def _tool_call(block: anthropic.Block) -> openai.ToolCall:
    arguments = _encoder.encode(block.input or {}).decode()
    function = openai.FunctionCall(name=block.name or "", arguments=arguments)
    return openai.ToolCall(id=block.id or "", function=function)


def _thinking(block: anthropic.Block) -> outbound.ThinkingPart | None:
    if block.type == "thinking":
        return anthropic.ThinkingBlock(
            thinking=block.thinking or "", signature=block.signature or ""
        )
    if block.type == "redacted_thinking":
        return anthropic.RedactedThinkingBlock(data=block.data or "")
    return None


# --- errors and models --------------------------------------------------------------------------


def decode_error(status: int, headers: Headers, body: bytes) -> errors.UpstreamHTTPError:
    """Anthropic's ``{"type": "error", "error": {...}}`` as an OpenAI error (see ERROR_TYPES)."""
    kept = [h for h in headers if h[0] in KEPT_ERROR_HEADERS or h[0].startswith(KEPT_ERROR_PREFIX)]
    try:
        error = _error_decoder.decode(body).error
    except msgspec.DecodeError:
        message = f"Anthropic answered HTTP {status} without an error body."
        error = anthropic.ErrorObject(type="", message=message)
    kind, code = ERROR_TYPES.get(error.type, ("upstream_error", error.type or None))
    if status == OVERLOADED or error.type == "overloaded_error":
        status, kind, code = 503, "service_unavailable", "overloaded"
    body_ = errors.ErrorBody(message=error.message, type=kind, code=code)
    return errors.UpstreamHTTPError(status, body_, kept)


class ModelInfo(msgspec.Struct):
    id: str


class ModelList(msgspec.Struct):
    data: list[ModelInfo]
    has_more: bool = False


_models_decoder = msgspec.json.Decoder(ModelList)
