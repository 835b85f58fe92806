"""Anthropic's Messages API served over OpenAI chat completions, sans-IO.

Clients built on the Anthropic SDK call the proxy's ``POST /v1/messages``. ``decode_request``
turns their body into an OpenAI chat request, which the proxy routes like any other;
``encode_response`` turns the OpenAI answer back into an Anthropic ``Message``; ``encode_error``
and ``error_event`` render the proxy's errors in Anthropic's shape; ``count_tokens`` answers
``/v1/messages/count_tokens`` with an estimate. Answers and errors are mapped by
`messages_reply`, streams by `messages_stream`.

Thinking and prompt caching travel as the OpenAI-shape extensions every Anthropic adapter shares:
``thinking`` on the request, ``thinking_blocks`` on assistant messages, ``cache_control`` on text
parts. docs/providers/messages-inbound.md lists every mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import msgspec
from msgspec import UNSET, UnsetType

from actorproxy import errors
from actorproxy.adapters.messages_reply import (
    IMAGE_TOKENS,
    count_tokens,
    encode_error,
    encode_response,
    encoder,
    error_event,
)
from actorproxy.schema import anthropic, openai

__all__ = [
    "IMAGE_TOKENS",
    "InboundRequest",
    "count_tokens",
    "decode_request",
    "encode_error",
    "encode_response",
    "error_event",
]

_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}

# --- the OpenAI request built here ----------------------------------------------------------------


class CacheControl(msgspec.Struct, kw_only=True):
    """A prompt-caching breakpoint on a text part (our extension); ``type`` is always written."""

    type: str
    ttl: str | UnsetType = UNSET


class TextPart(msgspec.Struct, tag_field="type", tag="text"):
    text: str
    cache_control: CacheControl | UnsetType = UNSET


UserPart = TextPart | openai.ImagePart
Cache = CacheControl | UnsetType
Content = str | list[TextPart]


class SystemMessage(msgspec.Struct, tag_field="role", tag="system"):
    content: Content


class UserMessage(msgspec.Struct, tag_field="role", tag="user"):
    content: str | list[UserPart]


class ToolMessage(msgspec.Struct, tag_field="role", tag="tool"):
    content: Content
    tool_call_id: str


class AssistantMessage(msgspec.Struct, tag_field="role", tag="assistant"):
    content: Content | None
    tool_calls: list[openai.ToolCall] | UnsetType = UNSET
    thinking_blocks: list[anthropic.ThinkingBlock | anthropic.RedactedThinkingBlock] | UnsetType = (
        UNSET
    )


Message = SystemMessage | UserMessage | AssistantMessage | ToolMessage


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


_request_decoder = msgspec.json.Decoder(anthropic.MessagesRequest)

# --- requests -------------------------------------------------------------------------------------


def decode_request(body: bytes) -> InboundRequest:
    """The OpenAI chat request for a ``/v1/messages`` body; ``errors.InvalidRequest`` (400, its
    ``CannotExpress`` subclass for what the OpenAI shape cannot carry) otherwise."""
    request = errors.decode_json(_request_decoder, body)
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


def _system(system: str | list[anthropic.TextBlock] | UnsetType) -> list[Message]:
    """One system message, its blocks joined unless one is a cache breakpoint."""
    if isinstance(system, str):
        content: Content = system
    else:
        content = _joined([_text_part(block) for block in system or ()], "\n\n")
    return [SystemMessage(content)] if content else []


def _text_part(block: anthropic.TextBlock) -> TextPart:
    return TextPart(block.text, _cache(block.cache_control))


def _cache(marker: anthropic.CacheControl | UnsetType | None) -> Cache:
    if isinstance(marker, anthropic.CacheControl):
        return CacheControl(type=marker.type, ttl=marker.ttl)
    return UNSET


def _joined(parts: list[TextPart], separator: str) -> Content:
    """The texts as one string, which every upstream takes; the parts when one has a cache
    breakpoint, since a string cannot carry it."""
    if any(part.cache_control is not UNSET for part in parts):
        return parts
    return separator.join(part.text for part in parts)


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
        return [UserMessage(content)]
    results: list[Message] = []
    parts: list[UserPart] = []
    for number, block in enumerate(content):
        at = f"{where}[{number}]"
        if isinstance(block, anthropic.ToolResultBlock):
            texts, images = _result_parts(block.content, f"{at}.content")
            marker = _cache(block.cache_control)
            if texts and marker:  # a breakpoint after the result goes on its last text
                texts[-1].cache_control = marker
            results.append(ToolMessage(_joined(texts, "\n"), block.tool_use_id))
            parts.extend(images)  # an OpenAI tool message carries text only
        elif isinstance(
            block, anthropic.TextBlock | anthropic.ImageBlock | anthropic.DocumentBlock
        ):
            parts.append(_user_part(block, at))
        else:
            _invalid(f"A user turn cannot hold '{_tag(block)}' blocks.", at)
    if parts or not results:
        results.append(UserMessage(_user_content(parts)))
    return results


def _user_content(parts: list[UserPart]) -> str | list[UserPart]:
    """A lone text part as a plain string, which every upstream takes, unless it is cached."""
    if not parts:
        return ""
    first = parts[0]
    if len(parts) == 1 and isinstance(first, TextPart) and first.cache_control is UNSET:
        return first.text
    return parts


def _user_part(
    block: anthropic.TextBlock | anthropic.ImageBlock | anthropic.DocumentBlock, at: str
) -> UserPart:
    """The part for ``block``; an image's cache breakpoint has no place in an ``image_url``."""
    if isinstance(block, anthropic.TextBlock):
        return _text_part(block)
    if isinstance(block, anthropic.ImageBlock):
        return openai.ImagePart(openai.ImageURL(_image_url(block.source, f"{at}.source")))
    if block.source.type == "text" and isinstance(block.source.data, str):
        return TextPart(block.source.data, _cache(block.cache_control))
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
) -> tuple[list[TextPart], list[openai.ImagePart]]:
    """A tool result's texts, and its images (which go to the user message after it)."""
    if isinstance(content, str):
        return [TextPart(content)], []
    texts, images = [], []
    for number, block in enumerate(content or ()):
        part = _user_part(block, f"{where}[{number}]")
        if isinstance(part, TextPart):
            texts.append(part)
        else:
            images.append(part)
    return texts, images


def _assistant_turn(content: str | list[anthropic.RequestBlock], where: str) -> AssistantMessage:
    if isinstance(content, str):
        return AssistantMessage(content)
    texts: list[TextPart] = []
    calls: list[openai.ToolCall] = []
    thinking: list[anthropic.ThinkingBlock | anthropic.RedactedThinkingBlock] = []
    for number, block in enumerate(content):
        if isinstance(block, anthropic.TextBlock):
            texts.append(_text_part(block))
        elif isinstance(block, anthropic.ToolUseBlock):
            arguments = encoder.encode(block.input).decode()
            calls.append(openai.ToolCall(block.id, openai.FunctionCall(block.name, arguments)))
        elif isinstance(block, anthropic.ThinkingBlock | anthropic.RedactedThinkingBlock):
            thinking.append(block)
        else:
            _invalid(f"An assistant turn cannot hold '{_tag(block)}' blocks.", f"{where}[{number}]")
    text = _joined(texts, "")
    return AssistantMessage(
        content=text if text or not calls else None,
        tool_calls=calls or UNSET,
        thinking_blocks=thinking or UNSET,
    )


def _tag(block: msgspec.Struct) -> str:
    return str(block.__struct_config__.tag)


def _invalid(message: str, param: str) -> NoReturn:
    raise errors.InvalidRequest(message, param=param)
