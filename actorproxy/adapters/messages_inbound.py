"""Anthropic's Messages API served over OpenAI chat completions, sans-IO.

Clients built on the Anthropic SDK call the proxy's ``POST /v1/messages``. ``decode_request``
turns their body into an OpenAI chat request, which the proxy routes like any other;
``encode_response`` turns the OpenAI answer back into an Anthropic ``Message``; ``encode_error``
and ``error_event`` render the proxy's errors in Anthropic's shape; ``count_tokens`` answers
``/v1/messages/count_tokens`` with an estimate. Streams are translated by `messages_stream`.

Thinking travels as the OpenAI-shape extension every Anthropic adapter shares: ``thinking`` on
the request, ``thinking_blocks`` on assistant messages, ``thinking_blocks`` and
``reasoning_content`` on answers. docs/providers/messages-inbound.md lists every mapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from actorproxy import errors
from actorproxy.adapters import messages_stream as answer
from actorproxy.adapters.messages_stream import encode_error, error_event
from actorproxy.schema import anthropic, openai

__all__ = [
    "InboundRequest",
    "count_tokens",
    "decode_request",
    "encode_error",
    "encode_response",
    "error_event",
]

T = TypeVar("T")

IMAGE_TOKENS = 1600  # count_tokens: Anthropic's cost of a ~1.15 megapixel image, the largest
DOCUMENT_TOKENS = 3000  # count_tokens: a PDF or URL document, whose pages we cannot see
MESSAGE_TOKENS = 4  # count_tokens: what each turn adds besides its content

NOT_JSON = "We could not parse the JSON body of your request. The body must be a JSON object."
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}

# --- the OpenAI request built here --------------------------------------------------------------


class AssistantMessage(msgspec.Struct, tag_field="role", tag="assistant"):
    content: str | None
    tool_calls: list[openai.ToolCall] | UnsetType = UNSET
    thinking_blocks: list[anthropic.ThinkingBlock | anthropic.RedactedThinkingBlock] | UnsetType = (
        UNSET
    )


Message = openai.SystemMessage | openai.UserMessage | AssistantMessage | openai.ToolMessage


class FunctionName(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    function: FunctionName
    type: str = "function"


class StreamOptions(msgspec.Struct):
    include_usage: bool = True


class ChatRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: list[Message]
    max_tokens: int
    stream: bool | UnsetType = UNSET
    stream_options: StreamOptions | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    stop: list[str] | UnsetType = UNSET
    tools: list[openai.Tool] | UnsetType = UNSET
    tool_choice: str | NamedToolChoice | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    thinking: anthropic.ThinkingConfig | UnsetType = UNSET
    user: str | UnsetType = UNSET


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """A ``/v1/messages`` request as the proxy routes it."""

    openai_body: bytes  # an OpenAI chat completions request
    model: str  # the model the client asked for, reported back in every answer
    stream: bool


class TokenCount(msgspec.Struct):
    input_tokens: int


encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(anthropic.MessagesRequest)
_count_decoder = msgspec.json.Decoder(anthropic.CountTokensRequest)
_object_decoder = msgspec.json.Decoder(dict[str, object])

# --- requests -----------------------------------------------------------------------------------


def decode_request(body: bytes) -> InboundRequest:
    """The OpenAI chat request for a ``/v1/messages`` body; ``errors.InvalidRequest`` (400, its
    ``CannotExpress`` subclass for what the OpenAI shape cannot carry) otherwise."""
    request = _decode(_request_decoder, body)
    tools = _tools(request.tools)
    tool_choice, parallel = _tool_choice(request.tool_choice) if tools else (UNSET, UNSET)
    stream = request.stream is True
    user = request.metadata.user_id if isinstance(request.metadata, anthropic.Metadata) else None
    chat = ChatRequest(
        model=request.model,
        messages=[*_system(request.system), *_messages(request.messages)],
        max_tokens=request.max_tokens,
        stream=True if stream else UNSET,
        stream_options=StreamOptions() if stream else UNSET,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop_sequences or UNSET,
        tools=tools or UNSET,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        thinking=request.thinking,
        user=user or UNSET,
    )
    return InboundRequest(openai_body=encoder.encode(chat), model=request.model, stream=stream)


def _decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise errors.invalid_body(exc) from None
    except msgspec.DecodeError:
        raise errors.InvalidRequest(NOT_JSON) from None


def _system(system: str | list[anthropic.TextBlock] | UnsetType) -> list[Message]:
    """One system message; text blocks are joined, since not every upstream takes a list here."""
    text = system if isinstance(system, str) else "\n\n".join(b.text for b in system or ())
    return [openai.SystemMessage(content=text)] if text else []


def _tools(tools: list[anthropic.Tool] | UnsetType) -> list[openai.Tool]:
    result = []
    for index, tool in enumerate(tools or ()):
        if tool.type not in (UNSET, "custom"):
            message = f"The server tool '{tool.type}' ({tool.name}) has no OpenAI equivalent."
            raise errors.CannotExpress(message, param=f"tools[{index}].type")
        function = openai.FunctionDef(tool.name, tool.description, tool.input_schema)
        result.append(openai.Tool(function=function))
    return result


def _tool_choice(
    choice: anthropic.ToolChoice | UnsetType,
) -> tuple[str | NamedToolChoice | UnsetType, bool | UnsetType]:
    """``tool_choice`` and ``parallel_tool_calls``."""
    if isinstance(choice, UnsetType):
        return UNSET, UNSET
    serial = False if choice.disable_parallel_tool_use is True else UNSET
    if choice.type != "tool":
        return _TOOL_CHOICES[choice.type], serial
    if not isinstance(choice.name, str):
        _invalid("A tool_choice of type 'tool' needs the tool's name.", "tool_choice.name")
    return NamedToolChoice(FunctionName(choice.name)), serial


def _messages(params: list[anthropic.MessageParam]) -> list[Message]:
    messages: list[Message] = []
    for index, param in enumerate(params):
        where = f"messages[{index}].content"
        if param.role == "user":
            messages.extend(_user_turn(param.content, where))
        else:
            messages.append(_assistant_turn(param.content, where))
    return messages


def _user_turn(content: str | list[anthropic.RequestBlock], where: str) -> list[Message]:
    """Tool results first, one ``tool`` message each, then the turn's other content."""
    if isinstance(content, str):
        return [openai.UserMessage(content=content)]
    results: list[Message] = []
    parts: list[openai.UserPart] = []
    for number, block in enumerate(content):
        at = f"{where}[{number}]"
        if isinstance(block, anthropic.ToolResultBlock):
            texts, images = _result_parts(block.content, f"{at}.content")
            results.append(openai.ToolMessage("\n".join(texts), block.tool_use_id))
            parts.extend(images)  # an OpenAI tool message carries text only
        elif isinstance(
            block, anthropic.TextBlock | anthropic.ImageBlock | anthropic.DocumentBlock
        ):
            parts.append(_user_part(block, at))
        else:
            _invalid(f"A user turn cannot hold '{_tag(block)}' blocks.", at)
    if parts or not results:
        results.append(openai.UserMessage(_user_content(parts)))
    return results


def _user_content(parts: list[openai.UserPart]) -> str | list[openai.UserPart]:
    """A lone text part as a plain string, which every upstream takes."""
    if not parts:
        return ""
    first = parts[0]
    return first.text if len(parts) == 1 and isinstance(first, openai.TextPart) else parts


def _user_part(
    block: anthropic.TextBlock | anthropic.ImageBlock | anthropic.DocumentBlock, at: str
) -> openai.TextPart | openai.ImagePart:
    if isinstance(block, anthropic.TextBlock):
        return openai.TextPart(block.text)
    if isinstance(block, anthropic.ImageBlock):
        return openai.ImagePart(openai.ImageURL(_image_url(block.source, f"{at}.source")))
    if block.source.type == "text" and isinstance(block.source.data, str):
        return openai.TextPart(block.source.data)
    message = f"A '{block.source.type}' document has no OpenAI chat equivalent; send it as text."
    raise errors.CannotExpress(message, param=f"{at}.source.type")


def _image_url(source: anthropic.ImageSource, at: str) -> str:
    if source.type == "url" and isinstance(source.url, str):
        return source.url
    if source.type == "base64" and isinstance(source.data, str):
        if not isinstance(source.media_type, str):
            _invalid("A base64 image needs its media_type.", f"{at}.media_type")
        return f"data:{source.media_type};base64,{source.data}"
    field = "url" if source.type == "url" else "data"
    _invalid(f"An image with a '{source.type}' source needs its {field}.", f"{at}.{field}")


def _result_parts(
    content: str
    | list[anthropic.TextBlock | anthropic.ImageBlock | anthropic.DocumentBlock]
    | UnsetType,
    where: str,
) -> tuple[list[str], list[openai.ImagePart]]:
    """A tool result's texts, and its images (which go to the user message after it)."""
    if isinstance(content, str):
        return [content], []
    texts, images = [], []
    for number, block in enumerate(content or ()):
        part = _user_part(block, f"{where}[{number}]")
        if isinstance(part, openai.TextPart):
            texts.append(part.text)
        else:
            images.append(part)
    return texts, images


def _assistant_turn(content: str | list[anthropic.RequestBlock], where: str) -> AssistantMessage:
    if isinstance(content, str):
        return AssistantMessage(content)
    texts: list[str] = []
    calls: list[openai.ToolCall] = []
    thinking: list[anthropic.ThinkingBlock | anthropic.RedactedThinkingBlock] = []
    for number, block in enumerate(content):
        if isinstance(block, anthropic.TextBlock):
            texts.append(block.text)
        elif isinstance(block, anthropic.ToolUseBlock):
            arguments = encoder.encode(block.input).decode()
            calls.append(openai.ToolCall(block.id, openai.FunctionCall(block.name, arguments)))
        elif isinstance(block, anthropic.ThinkingBlock | anthropic.RedactedThinkingBlock):
            thinking.append(block)
        else:
            _invalid(f"An assistant turn cannot hold '{_tag(block)}' blocks.", f"{where}[{number}]")
    text = "".join(texts)
    return AssistantMessage(
        content=text if text or not calls else None,
        tool_calls=calls or UNSET,
        thinking_blocks=thinking or UNSET,
    )


def _tag(block: msgspec.Struct) -> str:
    return str(block.__struct_config__.tag)


def _invalid(message: str, param: str) -> NoReturn:
    raise errors.InvalidRequest(message, param=param)


# --- answers ------------------------------------------------------------------------------------


def encode_response(openai_body: bytes, *, model: str) -> bytes:
    """The Anthropic ``Message`` for an OpenAI ``chat.completion``; only ``choices[0]`` is used.

    ``errors.CannotUnderstand`` (502) when the body is not a chat completion.
    """
    try:
        view = answer.reply_decoder.decode(openai_body)
    except msgspec.DecodeError as exc:
        raise errors.CannotUnderstand(f"The upstream sent an invalid reply: {exc}") from None
    choice = answer.first_choice(view.choices)
    if choice is None or choice.message is None:
        raise errors.CannotUnderstand("The upstream sent a chat completion without a message.")
    message, identifier = choice.message, answer.message_id(view.id)
    calls = [_tool_use(call, identifier, n) for n, call in enumerate(message.tool_calls or ())]
    text = answer.message_text(message) or message.refusal
    finish, matched = choice.finish_reason, choice.stop_reason
    reason, sequence = answer.stop_reason(finish, matched, tools=bool(calls))
    reply = answer.Reply(
        id=identifier,
        model=model,
        content=[*_thinking_blocks(message), *_text_block(text), *calls],
        stop_reason=reason,
        stop_sequence=sequence,
        usage=answer.usage(view.usage),
    )
    return encoder.encode(reply)


def _text_block(text: str | None) -> list[anthropic.Block]:
    return [anthropic.Block(type="text", text=text)] if text else []


def _thinking_blocks(message: answer.MessageView) -> list[anthropic.Block]:
    """The ``thinking_blocks``, else the reasoning text as one block with an empty signature."""
    if message.thinking_blocks:
        blocks = (answer.thinking_block(view) for view in message.thinking_blocks)
        return [block for block in blocks if block is not None]
    text = message.reasoning_content or message.reasoning
    return [anthropic.Block(type="thinking", thinking=text, signature="")] if text else []


def _tool_use(call: answer.ToolCallView, message: str, number: int) -> anthropic.Block:
    function = call.function or answer.FunctionView()
    return anthropic.Block(
        type="tool_use",
        id=call.id or answer.tool_id(message, number),
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


# --- count_tokens -------------------------------------------------------------------------------


def count_tokens(body: bytes) -> bytes:
    """``{"input_tokens": N}`` for a ``/v1/messages/count_tokens`` body: an estimate (UTF-8
    bytes / 4 over the text, plus fixed costs), the same for the same body."""
    request = _decode(_count_decoder, body)
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
    return encoder.encode(TokenCount(fixed + math.ceil(size / answer.BYTES_PER_TOKEN)))


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
