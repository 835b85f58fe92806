"""Views of OpenAI responses for the dataset, and the assembly of a stream into one completion.

Tolerant by design: a field of an unexpected shape, an error frame or a vendor's extra event is
skipped, never fatal, because this runs on whatever an upstream sent. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class UsageView(msgspec.Struct, omit_defaults=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class FunctionCall(msgspec.Struct):
    name: str | None = None
    arguments: str = ""


class ToolCall(msgspec.Struct, omit_defaults=True):
    id: str | None = None
    type: str = "function"
    function: FunctionCall = msgspec.field(default_factory=FunctionCall)


class Message(msgspec.Struct, omit_defaults=True):
    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(msgspec.Struct, omit_defaults=True):
    index: int = 0
    message: Message | None = None
    text: str | None = None
    finish_reason: str | None = None


class ResponseView(msgspec.Struct, omit_defaults=True):
    id: str | None = None
    object: str | None = None
    created: int | None = None
    model: str | None = None
    choices: list[Choice] = []
    usage: UsageView | None = None


class _DeltaFunction(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _DeltaToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _DeltaFunction | None = None


class _Delta(msgspec.Struct):
    role: str | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_DeltaToolCall] | None = None


class _ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    text: str | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    id: str | None = None
    created: int | None = None
    model: str | None = None
    choices: list[_ChunkChoice] = []
    usage: UsageView | None = None


_chunk = msgspec.json.Decoder(_Chunk)


def from_stream(events: Iterable[str], endpoint: str) -> ResponseView:
    """One completion object assembled from a stream's data payloads."""
    result = ResponseView(
        object="text_completion" if endpoint == "completions" else "chat.completion"
    )
    choices: dict[int, Choice] = {}
    for data in events:
        try:
            chunk = _chunk.decode(data)
        except msgspec.DecodeError:
            continue
        result.id = result.id or chunk.id
        result.created = result.created or chunk.created
        result.model = result.model or chunk.model
        result.usage = chunk.usage or result.usage
        for part in chunk.choices:
            _merge(choices.setdefault(part.index, _empty(part.index, endpoint)), part)
    result.choices = [choices[index] for index in sorted(choices)]
    return result


def _empty(index: int, endpoint: str) -> Choice:
    if endpoint == "completions":
        return Choice(index=index, text="")
    return Choice(index=index, message=Message())


def _merge(choice: Choice, part: _ChunkChoice) -> None:
    choice.finish_reason = part.finish_reason or choice.finish_reason
    if part.text is not None:
        choice.text = (choice.text or "") + part.text
    delta, message = part.delta, choice.message
    if delta is None or message is None:
        return
    message.role = delta.role or message.role
    if delta.content is not None:
        message.content = (message.content or "") + delta.content
    if delta.refusal is not None:
        message.refusal = (message.refusal or "") + delta.refusal
    for call in delta.tool_calls or ():
        _merge_tool_call(message, call)


def _merge_tool_call(message: Message, part: _DeltaToolCall) -> None:
    calls = message.tool_calls if message.tool_calls is not None else []
    message.tool_calls = calls
    while len(calls) <= part.index:
        calls.append(ToolCall())
    call = calls[part.index]
    call.id = part.id or call.id
    if part.function is not None:
        call.function.name = part.function.name or call.function.name
        call.function.arguments += part.function.arguments or ""


def finish_reason(view: ResponseView | None) -> str | None:
    if view is None or not view.choices:
        return None
    return view.choices[0].finish_reason


def text(view: ResponseView) -> str:
    """Everything the model generated, for estimating usage when the upstream did not report it."""
    parts: list[str] = []
    for choice in view.choices:
        parts.append(choice.text or "")
        if choice.message is not None:
            parts.append(choice.message.content or "")
            parts.extend(call.function.arguments for call in choice.message.tool_calls or ())
    return "".join(parts)
