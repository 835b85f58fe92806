"""An OpenAI chat-completion event stream as Anthropic's ``/v1/messages`` event stream.

``MessagesStreamEncoder`` reads each OpenAI chunk through `messages_reply`'s views and maps it
with the pieces whole answers use too (thinking, text, tool_use, ``stop_reason``, ``usage``,
errors). docs/providers/messages-inbound.md lists every mapping.
"""

from __future__ import annotations

import math

import msgspec

from actorproxy import errors
from actorproxy.adapters.messages_reply import (
    BYTES_PER_TOKEN,
    ERROR_TYPES,
    ChoiceView,
    ErrorView,
    FunctionView,
    MessageView,
    Reply,
    ThinkingView,
    ToolCallView,
    Usage,
    UsageView,
    encoder,
    error_event,
    first_choice,
    message_id,
    message_text,
    reply_decoder,
    stop_reason,
    thinking_block,
    tool_id,
    usage,
)
from actorproxy.adapters.sse import ServerSentEvent, SSEDecoder
from actorproxy.schema import anthropic

# The status an ``{"error": ...}`` frame in a stream stands for, by its OpenAI or Anthropic type.
_FRAME_TYPES = {
    **{kind: status for status, kind in ERROR_TYPES.items()},
    "requests": 429,
    "server_error": 500,
    "upstream_error": 502,
    "service_unavailable": 503,
    "timeout": 504,
}


# --- the Anthropic events written here ------------------------------------------------------------


class MessageStart(msgspec.Struct, tag="message_start"):
    message: Reply


class StopBody(msgspec.Struct):
    stop_reason: str
    stop_sequence: str | None = None


class DeltaUsage(msgspec.Struct):
    """``message_delta`` usage when the upstream sent none: an output estimate, no input, so the
    SDK keeps message_start's numbers."""

    output_tokens: int


class MessageDelta(msgspec.Struct, tag="message_delta"):
    delta: StopBody
    usage: Usage | DeltaUsage


Key = int | str  # a tool call's OpenAI index, else its id
_THINKING = anthropic.Block(type="thinking", thinking="", signature="")  # an opening block


class MessagesStreamEncoder:
    """OpenAI chat-completion SSE bytes in, Anthropic ``/v1/messages`` SSE bytes out.

    ``feed`` and ``end`` never raise: an error frame, an unparseable chunk or a stream cut short
    becomes an ``error`` event, ``error`` keeps it, and later input is ignored. Holds no I/O; a
    cancelled reader just stops feeding it, and the client's stream ends without message_stop.
    """

    def __init__(self, model: str) -> None:
        self.error: errors.ProxyError | None = None  # what the error event reported, if any
        self._model = model  # the model the client asked for
        self._sse = SSEDecoder()
        self._out: list[bytes] = []
        self._id = ""  # the message id, once message_start is out
        self._next = 0  # the index of the next content block
        self._open: str | None = None  # the kind of the open block (always index _next - 1)
        self._tools: dict[Key, int] = {}  # tool call -> its block index
        self._tool: Key | None = None  # the tool call fed last
        self._finish: str | None = None
        self._matched: str | int | None = None
        self._usage: UsageView | None = None
        self._bytes = 0  # UTF-8 bytes generated, for the output estimate
        self._done = False

    def feed(self, data: bytes) -> bytes:
        """The Anthropic events completed by the upstream bytes ``data`` (split anywhere)."""
        return self._run(self._sse.feed(data))

    def end(self) -> bytes:
        """The last events once the upstream body is complete."""
        self._run(self._sse.flush())
        if self._done:
            return self._take()
        if self._finish is not None:
            self._stop()
        else:
            message = "The upstream stream ended before the answer was complete."
            self._fail(errors.UpstreamProtocolError(message))
        return self._take()

    def _run(self, events: list[ServerSentEvent]) -> bytes:
        for event in events:
            if not self._done:
                self._event(event.data)
        return self._take()

    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _event(self, data: str) -> None:
        if data == "[DONE]":
            if self._id:
                self._stop()
            else:
                self._fail(errors.CannotUnderstand("The upstream stream ended without a chunk."))
            return
        try:
            chunk = reply_decoder.decode(data)
        except msgspec.DecodeError as exc:
            self._fail(errors.CannotUnderstand(f"The upstream sent an invalid chunk: {exc}"))
            return
        if chunk.error is not None:
            self._fail(frame_error(chunk.error))
            return
        self._begin(chunk.id)
        self._usage = chunk.usage or self._usage
        choice = first_choice(chunk.choices)
        if choice is not None:
            self._choice(choice)
        elif not chunk.choices and chunk.usage is not None and self._finish is not None:
            self._stop()  # the usage chunk that include_usage asks for

    def _begin(self, chunk_id: str) -> None:
        if self._id:
            return
        self._id = message_id(chunk_id)
        start = Reply(
            id=self._id, model=self._model, content=[], usage=Usage(input_tokens=0, output_tokens=0)
        )
        self._emit(MessageStart(start))
        self._emit(anthropic.Ping())

    def _choice(self, choice: ChoiceView) -> None:
        delta = choice.delta or MessageView()
        reasoning = delta.reasoning_content or delta.reasoning
        if reasoning:
            self._thinking(reasoning)
        for view in delta.thinking_blocks or ():
            self._thinking_block(view)
        text = message_text(delta) or delta.refusal
        if text:
            self._text(text)
        for number, call in enumerate(delta.tool_calls or ()):
            self._tool_call(call, number)
        if choice.finish_reason is not None:
            self._finish, self._matched = choice.finish_reason, choice.stop_reason

    def _thinking(self, text: str) -> None:
        if self._open != "thinking":
            self._start("thinking", _THINKING)
        self._delta(anthropic.Delta(type="thinking_delta", thinking=text))
        self._bytes += len(text.encode())

    def _thinking_block(self, view: ThinkingView) -> None:
        """A complete block: it ends the open thinking block with its signature, or stands alone."""
        block = thinking_block(view)
        if block is None:
            return
        if block.type == "redacted_thinking":
            self._start("redacted_thinking", block)
        elif self._open != "thinking" and view.thinking:
            self._thinking(view.thinking)
        elif self._open != "thinking":
            self._start("thinking", _THINKING)
        if view.signature and block.type == "thinking":
            self._delta(anthropic.Delta(type="signature_delta", signature=view.signature))
        self._close()

    def _text(self, text: str) -> None:
        if self._open != "text":
            self._start("text", anthropic.Block(type="text", text=""))
        self._delta(anthropic.Delta(type="text_delta", text=text))
        self._bytes += len(text.encode())

    def _tool_call(self, call: ToolCallView, number: int) -> None:
        """A tool call's first piece opens its block; later pieces go to that block."""
        key = _key(call, self._tool, number)
        function = call.function or FunctionView()
        index = self._tools.get(key)
        if index is None:
            identifier = call.id or tool_id(self._id, len(self._tools))
            block = anthropic.Block(
                type="tool_use", id=identifier, name=function.name or "", input={}
            )
            index = self._tools[key] = self._start("tool_use", block)
        self._tool = key
        if function.arguments:
            json_delta = anthropic.Delta(type="input_json_delta", partial_json=function.arguments)
            self._delta(json_delta, index)
            self._bytes += len(function.arguments.encode())

    def _start(self, kind: str, block: anthropic.Block) -> int:
        self._close()
        index, self._next, self._open = self._next, self._next + 1, kind
        self._emit(anthropic.ContentBlockStart(index=index, content_block=block))
        return index

    def _delta(self, delta: anthropic.Delta, index: int | None = None) -> None:
        self._emit(
            anthropic.ContentBlockDelta(
                index=self._next - 1 if index is None else index, delta=delta
            )
        )

    def _close(self) -> None:
        if self._open is not None:
            self._emit(anthropic.ContentBlockStop(index=self._next - 1))
            self._open = None

    def _stop(self) -> None:
        self._close()
        reason, sequence = stop_reason(self._finish, self._matched, tools=bool(self._tools))
        estimate = DeltaUsage(output_tokens=math.ceil(self._bytes / BYTES_PER_TOKEN))
        counted = estimate if self._usage is None else usage(self._usage)
        self._emit(MessageDelta(StopBody(reason, sequence), counted))
        self._emit(anthropic.MessageStop())
        self._done = True

    def _fail(self, error: errors.ProxyError) -> None:
        self.error = error
        self._out.append(error_event(error))
        self._done = True

    def _emit(self, event: msgspec.Struct) -> None:
        name = str(event.__struct_config__.tag).encode()
        self._out.append(b"event: " + name + b"\ndata: " + encoder.encode(event) + b"\n\n")


def _key(call: ToolCallView, last: Key | None, number: int) -> Key:
    """Which call a piece belongs to: its index, else its id, else the call fed last."""
    if call.index is not None:
        return call.index
    if call.id:
        return call.id
    return number if last is None else last


def frame_error(view: ErrorView) -> errors.ProxyError:
    """The error an ``{"error": ...}`` frame in the stream stands for (the proxy's own, or one
    an upstream sent mid-stream)."""
    kind = view.type or "server_error"
    message = view.message or "The upstream failed during the stream."
    body = errors.ErrorBody(message=message, type=kind, param=view.param, code=view.code)
    return errors.UpstreamHTTPError(_FRAME_TYPES.get(kind, 500), body, [])
