"""OpenAI chat answers as Anthropic ones: the shared mapping, errors, and the stream encoder.

An OpenAI answer (a ``chat.completion`` or one stream chunk) is read through lenient views and
mapped piece by piece: thinking, text and tool_use blocks, ``stop_reason``, ``usage``, errors.
`messages_inbound.encode_response` builds whole ``Message`` bodies from these pieces;
``MessagesStreamEncoder`` turns an OpenAI SSE chunk stream into Anthropic's event stream.
docs/providers/messages-inbound.md lists every mapping.
"""

from __future__ import annotations

import math

import msgspec

from actorproxy import errors
from actorproxy.adapters.sse import ServerSentEvent, SSEDecoder
from actorproxy.schema import anthropic

BYTES_PER_TOKEN = 4  # the output_tokens estimate when the upstream reported no usage
OVERLOADED = 529  # what Anthropic answers when it is overloaded; the proxy's 503s become it
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# The status an ``{"error": ...}`` frame in a stream stands for, by its OpenAI or Anthropic type.
_FRAME_TYPES = {
    **{kind: status for status, kind in _ERROR_TYPES.items()},
    "requests": 429,
    "server_error": 500,
    "upstream_error": 502,
    "service_unavailable": 503,
    "timeout": 504,
}

# --- the OpenAI answer, as read here (also each stream chunk) -----------------------------------


class FunctionView(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCallView(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: FunctionView | None = None


class ThinkingView(msgspec.Struct):
    type: str = "thinking"
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None


class PartView(msgspec.Struct):
    type: str = "text"
    text: str | None = None


class MessageView(msgspec.Struct):
    """A message, or a stream chunk's delta; ``reasoning`` is what vLLM and OpenRouter send."""

    content: str | list[PartView] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    thinking_blocks: list[ThinkingView] | None = None
    tool_calls: list[ToolCallView] | None = None


class ChoiceView(msgspec.Struct):
    index: int = 0
    message: MessageView | None = None
    delta: MessageView | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # vLLM: the stop string (or token id) that ended it


class DetailsView(msgspec.Struct):
    cached_tokens: int | None = None


class UsageView(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: DetailsView | None = None


class ErrorView(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class ReplyView(msgspec.Struct):
    id: str = ""
    choices: list[ChoiceView] = msgspec.field(default_factory=list)
    usage: UsageView | None = None
    error: ErrorView | None = None


# --- the Anthropic answer (nulls written out, as Anthropic does) ---------------------------------


class Usage(msgspec.Struct, kw_only=True):
    input_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int


class Reply(msgspec.Struct, kw_only=True):
    id: str
    type: str = "message"
    role: str = "assistant"
    model: str
    content: list[anthropic.Block]
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage


def first_choice(choices: list[ChoiceView]) -> ChoiceView | None:
    return next((choice for choice in choices if choice.index == 0), None)


def message_id(openai_id: str) -> str:
    """``msg_`` + the OpenAI id without ``chatcmpl-``; an id already ``msg_...`` is kept."""
    bare = openai_id.removeprefix("chatcmpl-")
    return bare if bare.startswith("msg_") else "msg_" + bare


def message_text(message: MessageView) -> str:
    if isinstance(message.content, list):
        return "".join(part.text or "" for part in message.content if part.type == "text")
    return message.content or ""


def thinking_block(view: ThinkingView) -> anthropic.Block | None:
    if view.type == "redacted_thinking":
        return anthropic.Block(type="redacted_thinking", data=view.data or "")
    if view.type == "thinking":
        thinking, signature = view.thinking or "", view.signature or ""
        return anthropic.Block(type="thinking", thinking=thinking, signature=signature)
    return None


def tool_id(message: str, number: int) -> str:
    """An id for a tool call the upstream sent without one, unique across the conversation."""
    return f"toolu_{message.removeprefix('msg_')}_{number}"


def stop_reason(
    finish: str | None, matched: str | int | None, *, tools: bool
) -> tuple[str, str | None]:
    """``stop_reason`` and ``stop_sequence`` for an OpenAI ``finish_reason``."""
    reason = _STOP_REASONS.get(finish or "stop", "end_turn")
    if reason == "end_turn" and tools:
        return "tool_use", None
    if reason == "end_turn" and isinstance(matched, str):
        return "stop_sequence", matched
    return reason, None


def usage(view: UsageView | None) -> Usage:
    view = view or UsageView()
    cached = (view.prompt_tokens_details or DetailsView()).cached_tokens or 0
    return Usage(
        input_tokens=max((view.prompt_tokens or 0) - cached, 0),
        cache_read_input_tokens=cached,
        output_tokens=view.completion_tokens or 0,
    )


# --- errors -------------------------------------------------------------------------------------


class ErrorDetail(msgspec.Struct):
    type: str
    message: str


class ErrorReply(msgspec.Struct, kw_only=True):
    type: str = "error"
    error: ErrorDetail


def error_status(status: int) -> tuple[int, str]:
    """The Anthropic status and error type for one of the proxy's statuses."""
    if status == 503:
        status = OVERLOADED
    if status in _ERROR_TYPES:
        return status, _ERROR_TYPES[status]
    if 400 <= status < 500:
        return status, "invalid_request_error"
    return (status, "api_error") if 500 <= status < 600 else (500, "api_error")


def encode_error(error: errors.ProxyError) -> tuple[int, bytes]:
    """The status and Anthropic error body for ``error``; its ``headers`` still apply."""
    status, kind = error_status(error.status)
    detail = ErrorDetail(type=kind, message=error.message or f"HTTP {error.status}")
    return status, _encoder.encode(ErrorReply(error=detail))


def error_event(error: errors.ProxyError) -> bytes:
    """The ``error`` event that ends a stream which has already started."""
    return b"event: error\ndata: " + encode_error(error)[1] + b"\n\n"


def frame_error(view: ErrorView) -> errors.ProxyError:
    """The error an ``{"error": ...}`` frame in the stream stands for (the proxy's own, or one
    an upstream sent mid-stream)."""
    kind = view.type or "server_error"
    message = view.message or "The upstream failed during the stream."
    body = errors.ErrorBody(message=message, type=kind, param=view.param, code=view.code)
    return errors.UpstreamHTTPError(_FRAME_TYPES.get(kind, 500), body, [])


# --- the stream ---------------------------------------------------------------------------------


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

_encoder = msgspec.json.Encoder()
reply_decoder = msgspec.json.Decoder(ReplyView)


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
            self._start("thinking", anthropic.Block(type="thinking", thinking="", signature=""))
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
            self._start("thinking", anthropic.Block(type="thinking", thinking="", signature=""))
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
        self._out.append(b"event: " + name + b"\ndata: " + _encoder.encode(event) + b"\n\n")


def _key(call: ToolCallView, last: Key | None, number: int) -> Key:
    """Which call a piece belongs to: its index, else its id, else the call fed last."""
    if call.index is not None:
        return call.index
    if call.id:
        return call.id
    return number if last is None else last
