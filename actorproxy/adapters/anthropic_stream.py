"""Anthropic's Messages event stream as OpenAI ``chat.completion.chunk`` frames.

Each SSE event's ``data`` is decoded twice: first only its ``type``, so that event types this
proxy does not know are skipped, then as a typed ``anthropic.Event``. The translation:

- ``message_start`` -> the role chunk (``{"role": "assistant", "content": ""}``); its id, model
  and input usage are kept. The chunk id is ``chatcmpl-`` + the Anthropic message id.
- ``text`` blocks -> ``delta.content``, one chunk per ``text_delta``.
- ``tool_use`` blocks -> a chunk opening the call (``id`` = the ``toolu_...`` id, ``name``,
  ``arguments: ""``), then one chunk per ``input_json_delta`` fragment, forwarded as it came.
  Calls are numbered from 0 in order of appearance, not by Anthropic's block index. A call that
  streamed no arguments gets ``"{}"`` when its block stops, since OpenAI clients parse them.
- ``thinking`` blocks -> one ``delta.reasoning_content`` chunk per ``thinking_delta``, and when
  the block stops a ``delta.thinking_blocks`` chunk with the whole block and its signature;
  ``redacted_thinking`` blocks -> a ``delta.thinking_blocks`` chunk when they stop.
- Other blocks (server tools, their results) and other deltas (``citations_delta``) are skipped.
- ``message_delta`` with a ``stop_reason`` -> an empty-delta chunk with the mapped
  ``finish_reason``; its usage numbers replace those of ``message_start`` where present.
- ``message_stop`` -> the usage chunk (``choices: []``; sent only when the client asked with
  ``stream_options.include_usage``, else returned by ``withheld()``), then ``data: [DONE]``.
  Later bytes are ignored.
- ``ping`` -> nothing; ``error`` -> the mapped ``errors.UpstreamHTTPError`` (as for an error
  status; ``overloaded_error`` becomes a retryable 503).

A failure is raised once the frames of the events before it have been returned. Data that is
not an event, or content before ``message_start``, raises ``errors.CannotUnderstand``; a body
that ends before ``message_stop`` makes ``end()`` raise ``errors.UpstreamProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from actorproxy import errors
from actorproxy.adapters.anthropic import decode_error, finish_reason, openai_usage
from actorproxy.adapters.base import Exchange
from actorproxy.adapters.sse import ServerSentEvent, SSEDecoder
from actorproxy.schema import anthropic, openai

DONE = b"data: [DONE]\n\n"
# The HTTP status each Anthropic error type comes with, for an error event inside a stream.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
UNKNOWN_ERROR_STATUS = 502
_BEFORE_START = frozenset({"message_start", "ping", "error"})

ThinkingPart = anthropic.ThinkingBlock | anthropic.RedactedThinkingBlock


# --- the chunks ---------------------------------------------------------------------------------


class FunctionDelta(msgspec.Struct, kw_only=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCallDelta(msgspec.Struct, kw_only=True):
    index: int
    id: str | UnsetType = UNSET
    type: Literal["function"] | UnsetType = UNSET
    function: FunctionDelta


class Delta(msgspec.Struct, kw_only=True):
    role: Literal["assistant"] | UnsetType = UNSET
    content: str | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    thinking_blocks: list[ThinkingPart] | UnsetType = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET


class Choice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: str | None = None


class Chunk(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[Choice]
    usage: openai.Usage | UnsetType | None = UNSET


_encoder = msgspec.json.Encoder()
_type_decoder = msgspec.json.Decoder(anthropic.EventType)
_event_decoder = msgspec.json.Decoder(anthropic.Event)


# --- open content blocks ------------------------------------------------------------------------


@dataclass(slots=True)
class _ToolUse:
    number: int  # the OpenAI tool call index
    has_arguments: bool


@dataclass(slots=True)
class _Thinking:
    parts: list[str] = field(default_factory=list)
    signature: str = ""


_Open = _ToolUse | _Thinking | anthropic.RedactedThinkingBlock


class AnthropicStreamTranslator:
    """Messages SSE in, ``chat.completion.chunk`` frames out (see the module docstring).

    Sans-IO: a cancelled reader just stops feeding it; nothing is in flight inside.
    """

    def __init__(self, exchange: Exchange, *, include_usage: bool) -> None:
        self._created = exchange.created
        self._request_id = exchange.request_id
        self._id = "chatcmpl-" + exchange.request_id  # until message_start names the message
        self._model = exchange.upstream_model  # until message_start names the model
        self._include_usage = include_usage
        self._sse = SSEDecoder()
        self._started = False
        self._finished = False  # a finish_reason went out
        self._done = False  # message_stop arrived
        self._failure: errors.ProxyError | None = None
        self._usage = anthropic.Usage()
        self._blocks: dict[int, _Open] = {}
        self._calls = 0
        self._withheld = b""

    def feed(self, data: bytes) -> bytes:
        self._raise_failure()
        if self._done:
            return b""
        return self._translate(self._sse.feed(data))

    def end(self) -> bytes:
        self._raise_failure()
        if self._done:
            return b""  # data: [DONE] went out with message_stop
        frames = self._translate(self._sse.flush())
        self._raise_failure()
        if not self._done:
            raise errors.UpstreamProtocolError(
                "the upstream stream ended early: Anthropic sent no message_stop."
            )
        return frames

    def withheld(self) -> bytes:
        return self._withheld

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _translate(self, events: list[ServerSentEvent]) -> bytes:
        """The frames of whole events; a failure is raised once the frames before it are out."""
        frames: list[bytes] = []
        for event in events:
            try:
                frames.extend(self._event(event.data))
            except errors.ProxyError as failure:
                self._failure = failure
                break
            if self._done:
                break
        if self._failure is not None and not frames:
            raise self._failure
        return b"".join(frames)

    def _event(self, data: str) -> list[bytes]:
        try:
            kind = _type_decoder.decode(data).type
            if kind not in anthropic.KNOWN_EVENTS:
                return []
            event = _event_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise errors.CannotUnderstand(
                f"Anthropic sent an invalid stream event: {exc}"
            ) from None
        if not self._started and kind not in _BEFORE_START:
            raise errors.CannotUnderstand(f"Anthropic sent {kind} before message_start.")
        return self._dispatch(event, data)

    def _dispatch(self, event: anthropic.Event, data: str) -> list[bytes]:
        match event:
            case anthropic.MessageStart():
                return self._message_start(event.message)
            case anthropic.ContentBlockStart():
                return self._block_start(event.index, event.content_block)
            case anthropic.ContentBlockDelta():
                return self._block_delta(event.index, event.delta)
            case anthropic.ContentBlockStop():
                return self._block_stop(event.index)
            case anthropic.MessageDelta():
                return self._message_delta(event)
            case anthropic.MessageStop():
                return self._message_stop()
            case anthropic.ErrorEvent():
                raise stream_error(event.error, data)
        return []  # ping

    # --- events ---------------------------------------------------------------------------------

    def _message_start(self, message: anthropic.Message) -> list[bytes]:
        self._started = True
        self._id = "chatcmpl-" + (message.id or self._request_id)
        self._model = message.model or self._model
        self._usage = message.usage
        return [self._chunk(Delta(role="assistant", content=""))]

    def _block_start(self, index: int, block: anthropic.Block) -> list[bytes]:
        if block.type == "tool_use":
            return [self._tool_start(index, block)]
        if block.type == "thinking":
            self._blocks[index] = _Thinking([block.thinking or ""], block.signature or "")
            return self._reasoning(block.thinking or "")
        if block.type == "redacted_thinking":
            self._blocks[index] = anthropic.RedactedThinkingBlock(data=block.data or "")
        elif block.type == "text" and block.text:
            return [self._chunk(Delta(content=block.text))]
        return []

    def _tool_start(self, index: int, block: anthropic.Block) -> bytes:
        number, self._calls = self._calls, self._calls + 1
        arguments = _encoder.encode(block.input).decode() if block.input else ""
        self._blocks[index] = _ToolUse(number, has_arguments=bool(arguments))
        function = FunctionDelta(name=block.name or "", arguments=arguments)
        call = ToolCallDelta(index=number, id=block.id or "", type="function", function=function)
        return self._chunk(Delta(tool_calls=[call]))

    def _block_delta(self, index: int, delta: anthropic.Delta) -> list[bytes]:
        block = self._blocks.get(index)
        if delta.type == "text_delta" and delta.text:
            return [self._chunk(Delta(content=delta.text))]
        if delta.type == "input_json_delta" and isinstance(block, _ToolUse) and delta.partial_json:
            block.has_arguments = True
            return [self._arguments(block.number, delta.partial_json)]
        if isinstance(block, _Thinking):
            if delta.type == "thinking_delta" and delta.thinking:
                block.parts.append(delta.thinking)
                return self._reasoning(delta.thinking)
            if delta.type == "signature_delta" and delta.signature:
                block.signature += delta.signature
        return []

    def _block_stop(self, index: int) -> list[bytes]:
        block = self._blocks.pop(index, None)
        if isinstance(block, _ToolUse) and not block.has_arguments:
            return [self._arguments(block.number, "{}")]
        if isinstance(block, _Thinking):
            whole = anthropic.ThinkingBlock(
                thinking="".join(block.parts), signature=block.signature
            )
            return [self._chunk(Delta(thinking_blocks=[whole]))]
        if isinstance(block, anthropic.RedactedThinkingBlock):
            return [self._chunk(Delta(thinking_blocks=[block]))]
        return []

    def _message_delta(self, event: anthropic.MessageDelta) -> list[bytes]:
        self._usage = merge_usage(self._usage, event.usage)
        if event.delta.stop_reason is None:
            return []  # a usage update only
        self._finished = True
        return [self._chunk(Delta(), finish_reason(event.delta.stop_reason))]

    def _message_stop(self) -> list[bytes]:
        self._done = True
        frames = [] if self._finished else [self._chunk(Delta(), finish_reason(None))]
        total = Chunk(
            id=self._id,
            created=self._created,
            model=self._model,
            choices=[],
            usage=openai_usage(self._usage),
        )
        if self._include_usage:
            frames.append(frame(total))
        else:
            self._withheld = frame(total)
        return [*frames, DONE]

    # --- chunks ---------------------------------------------------------------------------------

    def _reasoning(self, text: str) -> list[bytes]:
        return [self._chunk(Delta(reasoning_content=text))] if text else []

    def _arguments(self, number: int, arguments: str) -> bytes:
        call = ToolCallDelta(index=number, function=FunctionDelta(arguments=arguments))
        return self._chunk(Delta(tool_calls=[call]))

    def _chunk(self, delta: Delta, reason: str | None = None) -> bytes:
        return frame(
            Chunk(
                id=self._id,
                created=self._created,
                model=self._model,
                choices=[Choice(delta=delta, finish_reason=reason)],
                usage=None if self._include_usage else UNSET,
            )
        )


def frame(chunk: Chunk) -> bytes:
    return b"data: " + _encoder.encode(chunk) + b"\n\n"


def merge_usage(start: anthropic.Usage, update: anthropic.Usage) -> anthropic.Usage:
    """``message_start``'s usage with ``message_delta``'s numbers where it has them."""
    return anthropic.Usage(
        input_tokens=_prefer(update.input_tokens, start.input_tokens),
        output_tokens=_prefer(update.output_tokens, start.output_tokens),
        cache_creation_input_tokens=_prefer(
            update.cache_creation_input_tokens, start.cache_creation_input_tokens
        ),
        cache_read_input_tokens=_prefer(
            update.cache_read_input_tokens, start.cache_read_input_tokens
        ),
        output_tokens_details=update.output_tokens_details or start.output_tokens_details,
    )


def _prefer(new: int | None, old: int | None) -> int | None:
    return old if new is None else new


def stream_error(error: anthropic.ErrorObject, data: str) -> errors.UpstreamHTTPError:
    """An ``error`` event as the error its type would come with as an HTTP status."""
    status = ERROR_STATUS.get(error.type, UNKNOWN_ERROR_STATUS)
    return decode_error(status, [], data.encode())
