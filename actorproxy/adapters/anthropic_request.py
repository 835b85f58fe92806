"""OpenAI chat request -> Anthropic Messages request (``POST /v1/messages``), sans-IO.

The client's body is decoded into the Structs below (the OpenAI chat request as this translation
reads it, with the ``thinking_blocks`` and ``thinking`` extensions) and rebuilt as an
``anthropic.MessagesRequest``. System and developer messages become the top-level ``system``;
tool results become ``tool_result`` blocks of a user turn; turns of the same role are merged, since
Anthropic wants them to alternate. Parameters Anthropic has no equivalent for are dropped or
refused, as the ``unsupported`` policy says. docs/providers/anthropic.md lists every mapping.
"""

from __future__ import annotations

import base64
from typing import Any, Literal, NoReturn, TypeVar
from urllib.parse import unquote_to_bytes

import msgspec
from msgspec import UNSET, UnsetType

from actorproxy import errors
from actorproxy.schema import anthropic, openai

T = TypeVar("T")
Policy = Literal["drop", "reject"]

BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}  # reasoning_effort -> budget_tokens
NO_THINKING = frozenset({"minimal", "none"})
THINKING_HEADROOM = 1024  # max_tokens must exceed the budget; this much is left for the answer

# Parameters without an Anthropic equivalent, with the values that ask for nothing.
NEUTRAL: dict[str, tuple[object, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logit_bias": ({},),
    "seed": (),
    "service_tier": ("auto", "default"),
    "modalities": (["text"],),
    "audio": (),
    "prediction": (),
    "functions": (),  # legacy function calling: send tools
    "function_call": (),
}
_TOOL_CHOICES: dict[str, Literal["auto", "any", "none"]] = {
    "auto": "auto",
    "required": "any",
    "none": "none",
}

# --- the OpenAI request, as read here -------------------------------------------------------


class TextPart(msgspec.Struct, tag_field="type", tag="text"):
    text: str
    cache_control: anthropic.CacheControl | UnsetType | None = UNSET  # passed through


UserPart = TextPart | openai.ImagePart | openai.AudioPart | openai.FilePart
ThinkingPart = anthropic.ThinkingBlock | anthropic.RedactedThinkingBlock


class SystemMessage(msgspec.Struct, tag_field="role", tag="system"):
    content: str | list[TextPart]


class DeveloperMessage(msgspec.Struct, tag_field="role", tag="developer"):
    content: str | list[TextPart]


class UserMessage(msgspec.Struct, tag_field="role", tag="user"):
    content: str | list[UserPart]


class AssistantMessage(msgspec.Struct, tag_field="role", tag="assistant"):
    content: str | list[TextPart | openai.RefusalPart] | UnsetType | None = UNSET
    tool_calls: list[openai.ToolCall] | UnsetType | None = UNSET
    thinking_blocks: list[ThinkingPart] | UnsetType | None = UNSET


class ToolMessage(msgspec.Struct, tag_field="role", tag="tool"):
    content: str | list[TextPart]
    tool_call_id: str


Message = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage


class Tool(msgspec.Struct):
    type: str = "function"
    function: openai.FunctionDef | UnsetType = UNSET


class FunctionName(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    type: str
    function: FunctionName | UnsetType = UNSET


class ResponseFormat(msgspec.Struct):
    type: str


class ChatRequest(msgspec.Struct, kw_only=True):
    messages: list[Message]
    max_tokens: int | UnsetType | None = UNSET
    max_completion_tokens: int | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    stop: openai.Stop = UNSET
    user: str | UnsetType | None = UNSET
    tools: list[Tool] | UnsetType | None = UNSET
    tool_choice: str | NamedToolChoice | UnsetType | None = UNSET
    parallel_tool_calls: bool | UnsetType | None = UNSET
    response_format: ResponseFormat | UnsetType | None = UNSET
    reasoning_effort: str | UnsetType | None = UNSET
    thinking: anthropic.ThinkingConfig | UnsetType | None = UNSET
    # without an Anthropic equivalent (NEUTRAL)
    n: int | UnsetType | None = UNSET
    logprobs: bool | UnsetType | None = UNSET
    top_logprobs: int | UnsetType | None = UNSET
    frequency_penalty: float | UnsetType | None = UNSET
    presence_penalty: float | UnsetType | None = UNSET
    logit_bias: dict[str, float] | UnsetType | None = UNSET
    seed: int | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET
    modalities: list[str] | UnsetType | None = UNSET
    audio: dict[str, Any] | UnsetType | None = UNSET
    prediction: dict[str, Any] | UnsetType | None = UNSET
    functions: list[Any] | UnsetType | None = UNSET
    function_call: str | dict[str, Any] | UnsetType | None = UNSET


_any_decoder = msgspec.json.Decoder()

# --- the request --------------------------------------------------------------------------------


def encode_chat(
    request: ChatRequest, *, model: str, stream: bool, default_max_tokens: int, policy: Policy
) -> anthropic.MessagesRequest:
    """The Messages request for ``request``; ``errors.CannotExpress`` for what cannot go."""
    _check_params(request, policy)
    system, messages = encode_messages(request.messages)
    thinking = _thinking(request)
    tools = _tools(request.tools, policy)
    return anthropic.MessagesRequest(
        model=model,
        messages=messages,
        max_tokens=_max_tokens(request, default_max_tokens, thinking),
        system=system or UNSET,
        stop_sequences=_stop(request.stop),
        stream=True if stream else UNSET,
        temperature=_temperature(request.temperature, policy),
        top_p=_given(request.top_p),
        tools=tools or UNSET,
        tool_choice=_tool_choice(request) if tools else UNSET,
        thinking=thinking,
        metadata=anthropic.Metadata(user_id=request.user) if request.user else UNSET,
    )


def unsupported(request: ChatRequest) -> list[str]:
    """The parameters set to something Anthropic cannot do, in ``NEUTRAL`` order."""
    values = {name: getattr(request, name) for name in NEUTRAL}
    return [name for name, value in values.items() if value not in (UNSET, None, *NEUTRAL[name])]


def _check_params(request: ChatRequest, policy: Policy) -> None:
    if policy == "drop":
        return
    for name in unsupported(request):
        _cannot(f"Anthropic has no equivalent of '{name}'.", name)
    fmt = request.response_format
    if isinstance(fmt, ResponseFormat) and fmt.type != "text":
        _cannot(f"Anthropic cannot enforce response_format '{fmt.type}'.", "response_format")


def _max_tokens(
    request: ChatRequest, default: int, thinking: anthropic.ThinkingConfig | UnsetType
) -> int:
    chosen = _first(request.max_completion_tokens, request.max_tokens) or default
    budget = thinking.budget_tokens if isinstance(thinking, anthropic.ThinkingConfig) else UNSET
    if isinstance(budget, int) and chosen <= budget:
        return budget + THINKING_HEADROOM
    return chosen


def _thinking(request: ChatRequest) -> anthropic.ThinkingConfig | UnsetType:
    if isinstance(request.thinking, anthropic.ThinkingConfig):
        return request.thinking
    effort = request.reasoning_effort
    if not isinstance(effort, str) or effort in NO_THINKING:
        return UNSET
    if effort not in BUDGETS:
        message = f"reasoning_effort '{effort}' has no Anthropic thinking budget."
        _cannot(message + " Use low, medium, high, minimal or none.", "reasoning_effort")
    return anthropic.ThinkingConfig(type="enabled", budget_tokens=BUDGETS[effort])


def _temperature(value: float | UnsetType | None, policy: Policy) -> float | UnsetType:
    if value is None or value is UNSET or 0 <= value <= 1:
        return _given(value)
    if policy == "reject":
        _cannot(f"Anthropic's temperature ranges from 0 to 1, not {value}.", "temperature")
    return min(max(value, 0.0), 1.0)


def _stop(stop: openai.Stop) -> list[str] | UnsetType:
    if isinstance(stop, str):
        return [stop]
    return stop or UNSET


# --- tools ------------------------------------------------------------------------------------


def _tools(tools: list[Tool] | UnsetType | None, policy: Policy) -> list[anthropic.Tool]:
    return [_tool(index, tool, policy) for index, tool in enumerate(tools or ())]


def _tool(index: int, tool: Tool, policy: Policy) -> anthropic.Tool:
    function = tool.function
    if tool.type != "function" or isinstance(function, UnsetType):
        _cannot(f"Anthropic takes function tools only, not '{tool.type}'.", f"tools[{index}]")
    if function.strict is True and policy == "reject":
        _cannot("Anthropic cannot enforce strict tool schemas.", f"tools[{index}].function.strict")
    parameters = function.parameters if isinstance(function.parameters, dict) else {}
    return anthropic.Tool(
        name=function.name,
        description=function.description,
        input_schema={"type": "object", **parameters},
    )


def _tool_choice(request: ChatRequest) -> anthropic.ToolChoice | UnsetType:
    choice = request.tool_choice
    serial = True if request.parallel_tool_calls is False else UNSET
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            _cannot(f"tool_choice '{choice}' has no Anthropic equivalent.", "tool_choice")
        kind = _TOOL_CHOICES[choice]
        serial = UNSET if kind == "none" else serial  # "none" takes no such flag
        return anthropic.ToolChoice(type=kind, disable_parallel_tool_use=serial)
    if isinstance(choice, NamedToolChoice):
        if choice.type != "function" or isinstance(choice.function, UnsetType):
            _cannot(f"tool_choice '{choice.type}' has no Anthropic equivalent.", "tool_choice")
        name = choice.function.name
        return anthropic.ToolChoice(type="tool", name=name, disable_parallel_tool_use=serial)
    if serial is UNSET:
        return UNSET
    return anthropic.ToolChoice(type="auto", disable_parallel_tool_use=True)


# --- messages ---------------------------------------------------------------------------------

Turn = tuple[anthropic.Role, list[anthropic.RequestBlock]]
ResultBlock = anthropic.TextBlock | anthropic.ImageBlock | anthropic.DocumentBlock


def encode_messages(
    messages: list[Message],
) -> tuple[list[anthropic.TextBlock], list[anthropic.MessageParam]]:
    """The ``system`` blocks and the alternating turns for an OpenAI message list."""
    system: list[anthropic.TextBlock] = []
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        if isinstance(message, SystemMessage | DeveloperMessage):
            system.extend(_text_blocks(message.content))
        else:
            _append(turns, _turn(index, message))
    _trim_prefill(turns)
    return system, [anthropic.MessageParam(role=role, content=blocks) for role, blocks in turns]


def _append(turns: list[Turn], turn: Turn) -> None:
    """Add ``turn``, merged into the last one when it has the same role; empty turns vanish."""
    role, blocks = turn
    if not blocks:
        return
    if not turns or turns[-1][0] != role:
        turns.append(turn)
        return
    merged = [*turns[-1][1], *blocks]
    if role == "user":  # Anthropic wants the tool results before anything else in the turn
        merged.sort(key=lambda block: not isinstance(block, anthropic.ToolResultBlock))
    turns[-1] = (role, merged)


def _trim_prefill(turns: list[Turn]) -> None:
    """Anthropic refuses a final assistant turn (a prefill) ending in whitespace."""
    if not turns or turns[-1][0] != "assistant":
        return
    blocks = turns[-1][1]
    last = blocks[-1]
    if isinstance(last, anthropic.TextBlock):
        last.text = last.text.rstrip()


def _turn(index: int, message: UserMessage | AssistantMessage | ToolMessage) -> Turn:
    if isinstance(message, UserMessage):
        return "user", _user_blocks(index, message.content)
    if isinstance(message, AssistantMessage):
        return "assistant", _assistant_blocks(index, message)
    content = _tool_content(message.content)
    return "user", [anthropic.ToolResultBlock(message.tool_call_id, content=content)]


def _text_blocks(content: str | list[TextPart]) -> list[anthropic.TextBlock]:
    """Text as blocks; blank text is left out, since Anthropic refuses blank text blocks."""
    parts = [TextPart(content)] if isinstance(content, str) else content
    return [
        anthropic.TextBlock(text=part.text, cache_control=part.cache_control)
        for part in parts
        if part.text.strip()
    ]


def _user_blocks(index: int, content: str | list[UserPart]) -> list[anthropic.RequestBlock]:
    if isinstance(content, str):
        return list(_text_blocks(content))
    blocks: list[anthropic.RequestBlock] = []
    for number, part in enumerate(content):
        where = f"messages[{index}].content[{number}]"
        if isinstance(part, TextPart):
            blocks.extend(_text_blocks([part]))
        elif isinstance(part, openai.ImagePart):
            blocks.append(_image(part.image_url.url, f"{where}.image_url.url"))
        else:
            _cannot(f"Anthropic cannot take '{part.__struct_config__.tag}' content parts.", where)
    return blocks


def _image(url: str, param: str) -> anthropic.ImageBlock | anthropic.DocumentBlock:
    scheme, _, rest = url.partition(":")
    if scheme.lower() in ("http", "https"):
        return anthropic.ImageBlock(source=anthropic.ImageSource(type="url", url=url))
    header, comma, data = rest.partition(",")
    media_type, *flags = header.split(";")
    if scheme.lower() != "data" or not comma or not media_type:
        _cannot("Images must be http(s) URLs or data: URLs with a media type.", param)
    if "base64" not in flags:
        data = base64.b64encode(unquote_to_bytes(data)).decode("ascii")
    if media_type == "application/pdf":
        source = anthropic.DocumentSource(type="base64", media_type=media_type, data=data)
        return anthropic.DocumentBlock(source=source)
    image = anthropic.ImageSource(type="base64", media_type=media_type, data=data)
    return anthropic.ImageBlock(source=image)


def _assistant_blocks(index: int, message: AssistantMessage) -> list[anthropic.RequestBlock]:
    blocks: list[anthropic.RequestBlock] = [*(message.thinking_blocks or ())]
    content = message.content or []
    if isinstance(content, str):
        blocks.extend(_text_blocks(content))
    for part in content if isinstance(content, list) else ():
        text = part.text if isinstance(part, TextPart) else part.refusal
        cache = part.cache_control if isinstance(part, TextPart) else UNSET
        blocks.extend(_text_blocks([TextPart(text, cache)]))
    for number, call in enumerate(message.tool_calls or ()):
        blocks.append(_tool_use(call, f"messages[{index}].tool_calls[{number}]"))
    return blocks


def _tool_use(call: openai.ToolCall, where: str) -> anthropic.ToolUseBlock:
    if call.type != "function":
        _cannot(f"Only function tool calls can be sent to Anthropic, not '{call.type}'.", where)
    param = f"{where}.function.arguments"
    text = call.function.arguments
    try:
        arguments = _any_decoder.decode(text) if text.strip() else {}
    except msgspec.DecodeError:
        _cannot("Tool call arguments must be valid JSON; Anthropic takes them as an object.", param)
    if not isinstance(arguments, dict):
        _cannot("Tool call arguments must be a JSON object for Anthropic.", param)
    return anthropic.ToolUseBlock(id=call.id, name=call.function.name, input=arguments)


def _tool_content(content: str | list[TextPart]) -> str | list[ResultBlock] | UnsetType:
    if isinstance(content, str):
        return content if content.strip() else UNSET
    return [*_text_blocks(content)] or UNSET


# --- small helpers ----------------------------------------------------------------------------


def _cannot(message: str, param: str) -> NoReturn:
    raise errors.CannotExpress(message, param=param)


def _given(value: T | UnsetType | None) -> T | UnsetType:
    return UNSET if value is None else value


def _first(*values: int | UnsetType | None) -> int | None:
    return next((value for value in values if isinstance(value, int)), None)
