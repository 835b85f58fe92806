"""What the proxy answers Anthropic clients: OpenAI answers mapped back, errors, token counts.

An OpenAI answer (a ``chat.completion`` or one stream chunk) is read through lenient views and
mapped piece by piece (thinking, text and tool_use blocks, ``stop_reason``, ``usage``, ids) by
``encode_response`` and `messages_stream` alike. `messages_inbound` re-exports the public names.
docs/providers/messages-inbound.md lists every mapping.
"""

from __future__ import annotations

import math

import msgspec

from actorproxy import errors
from actorproxy.schema import anthropic

BYTES_PER_TOKEN = 4  # the token estimate of a text: its UTF-8 bytes / 4
IMAGE_TOKENS = 1600  # count_tokens: Anthropic's cost of a ~1.15 megapixel image, the largest
DOCUMENT_TOKENS = 3000  # count_tokens: a PDF or URL document, whose pages we cannot see
MESSAGE_TOKENS = 4  # count_tokens: what each turn adds besides its content
OVERLOADED = 529  # what Anthropic answers when it is overloaded; the proxy's 503s become it
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
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

# --- the OpenAI answer, as read here (also each stream chunk) -------------------------------------


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


# --- the Anthropic answer (nulls written out, as Anthropic does) ----------------------------------


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


class ErrorDetail(msgspec.Struct):
    type: str
    message: str


class ErrorReply(msgspec.Struct, kw_only=True):
    type: str = "error"
    error: ErrorDetail


class TokenCount(msgspec.Struct):
    input_tokens: int


encoder = msgspec.json.Encoder()
reply_decoder = msgspec.json.Decoder(ReplyView)
_object_decoder = msgspec.json.Decoder(dict[str, object])
_count_decoder = msgspec.json.Decoder(anthropic.CountTokensRequest)

# --- whole answers --------------------------------------------------------------------------------


def encode_response(openai_body: bytes, *, model: str) -> bytes:
    """The Anthropic ``Message`` for an OpenAI ``chat.completion``; only ``choices[0]`` is used.

    ``errors.CannotUnderstand`` (502) when the body is not a chat completion.
    """
    try:
        view = reply_decoder.decode(openai_body)
    except msgspec.DecodeError as exc:
        raise errors.CannotUnderstand(f"The upstream sent an invalid reply: {exc}") from None
    choice = first_choice(view.choices)
    if choice is None or choice.message is None:
        raise errors.CannotUnderstand("The upstream sent a chat completion without a message.")
    message, identifier = choice.message, message_id(view.id)
    calls = [_tool_use(call, identifier, n) for n, call in enumerate(message.tool_calls or ())]
    text = message_text(message) or message.refusal
    reason, sequence = stop_reason(choice.finish_reason, choice.stop_reason, tools=bool(calls))
    reply = Reply(
        id=identifier,
        model=model,
        content=[*_thinking_blocks(message), *_text_block(text), *calls],
        stop_reason=reason,
        stop_sequence=sequence,
        usage=usage(view.usage),
    )
    return encoder.encode(reply)


def _text_block(text: str | None) -> list[anthropic.Block]:
    return [anthropic.Block(type="text", text=text)] if text else []


def _thinking_blocks(message: MessageView) -> list[anthropic.Block]:
    """The ``thinking_blocks``, else the reasoning text as one block with an empty signature."""
    if message.thinking_blocks:
        blocks = (thinking_block(view) for view in message.thinking_blocks)
        return [block for block in blocks if block is not None]
    text = message.reasoning_content or message.reasoning
    return [anthropic.Block(type="thinking", thinking=text, signature="")] if text else []


def _tool_use(call: ToolCallView, message: str, number: int) -> anthropic.Block:
    function = call.function or FunctionView()
    return anthropic.Block(
        type="tool_use",
        id=call.id or tool_id(message, number),
        name=function.name or "",
        input=_tool_input(function.arguments or ""),
    )


def _tool_input(arguments: str) -> dict[str, object]:
    """The arguments as an object: ``{}`` when blank, ``{"_raw": text}`` when not a JSON object."""
    if not arguments.strip():
        return {}
    try:
        return _object_decoder.decode(arguments)
    except msgspec.DecodeError:
        return {"_raw": arguments}


# --- the pieces -----------------------------------------------------------------------------------


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


# --- errors ---------------------------------------------------------------------------------------


def error_status(status: int) -> tuple[int, str]:
    """The Anthropic status and error type for one of the proxy's statuses."""
    if status == 503:
        status = OVERLOADED
    if status in ERROR_TYPES:
        return status, ERROR_TYPES[status]
    if 400 <= status < 500:
        return status, "invalid_request_error"
    return (status, "api_error") if 500 <= status < 600 else (500, "api_error")


def encode_error(error: errors.ProxyError) -> tuple[int, bytes]:
    """The status and Anthropic error body for ``error``; its ``headers`` still apply."""
    status, kind = error_status(error.status)
    detail = ErrorDetail(type=kind, message=error.message or f"HTTP {error.status}")
    return status, encoder.encode(ErrorReply(error=detail))


def error_event(error: errors.ProxyError) -> bytes:
    """The ``error`` event that ends a stream which has already started."""
    return b"event: error\ndata: " + encode_error(error)[1] + b"\n\n"


# --- count_tokens (and the request decoding messages_inbound shares) ------------------------------


def count_tokens(body: bytes) -> bytes:
    """``{"input_tokens": N}`` for a ``/v1/messages/count_tokens`` body: an estimate (UTF-8
    bytes / 4 over the text, plus fixed costs), the same for the same body."""
    request = errors.decode_json(_count_decoder, body)
    system = request.system
    texts = [system] if isinstance(system, str) else [block.text for block in system or ()]
    fixed = MESSAGE_TOKENS * len(request.messages)
    for tool in request.tools or ():
        schema = encoder.encode(tool.input_schema).decode() if tool.input_schema else ""
        texts.extend((tool.name, tool.description or "", schema))
    for message in request.messages:
        if isinstance(message.content, str):
            texts.append(message.content)
        else:
            fixed += sum(_block_cost(block, texts) for block in message.content)
    size = sum(len(text.encode()) for text in texts)
    return encoder.encode(TokenCount(fixed + math.ceil(size / BYTES_PER_TOKEN)))


def _block_cost(block: anthropic.RequestBlock, texts: list[str]) -> int:
    """The fixed cost of ``block``; its text goes to ``texts``."""
    if isinstance(block, anthropic.TextBlock):
        texts.append(block.text)
    elif isinstance(block, anthropic.ImageBlock):
        return IMAGE_TOKENS
    elif isinstance(block, anthropic.DocumentBlock):
        if block.source.type != "text":
            return DOCUMENT_TOKENS
        texts.append(block.source.data or "")
    elif isinstance(block, anthropic.ToolUseBlock):
        texts.extend((block.name, encoder.encode(block.input).decode()))
    elif isinstance(block, anthropic.ToolResultBlock):
        if isinstance(block.content, str):
            texts.append(block.content)
            return 0
        return sum(_block_cost(part, texts) for part in block.content or ())
    elif isinstance(block, anthropic.ThinkingBlock):
        texts.append(block.thinking)
    return 0
