"""The mock's streamed replies, frame by frame, as OpenAI sends them.

A chat stream is one role chunk per choice, then one chunk per word per choice, then one finish
chunk per choice; a legacy stream the same without the role chunks. With
``stream_options.include_usage`` every chunk carries ``"usage": null`` and one more chunk with
``"choices": []`` carries the usage. ``data: [DONE]`` ends every stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from msgspec import UNSET, UnsetType

from actorproxy.adapters.mock_rules import Choice
from actorproxy.schema import openai

DONE = b"data: [DONE]\n\n"

_Usage = openai.Usage | None | UnsetType


@dataclass(frozen=True, slots=True)
class Head:
    """What every chunk of one stream repeats."""

    id: str
    created: int
    model: str
    include_usage: bool


def usage(prompt: int, completion: int, *, details: bool) -> openai.Usage:
    """The usage block; chat replies carry the zeroed details the real API sends."""
    if not details:
        return openai.Usage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
        )
    return openai.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=openai.PromptTokensDetails(cached_tokens=0, audio_tokens=0),
        completion_tokens_details=openai.CompletionTokensDetails(
            reasoning_tokens=0,
            audio_tokens=0,
            accepted_prediction_tokens=0,
            rejected_prediction_tokens=0,
        ),
    )


def chat(head: Head, choices: list[Choice], total: openai.Usage) -> tuple[bytes, ...]:
    """Every SSE frame of a streamed chat completion."""
    role = openai.ChunkDelta(role="assistant", content="", refusal=None)
    out = [
        _chat_frame(head, [openai.ChunkChoice(index=i, delta=role)]) for i in range(len(choices))
    ]
    for index, word in _interleave(choices):
        delta = openai.ChunkDelta(content=word)
        out.append(_chat_frame(head, [openai.ChunkChoice(index=index, delta=delta)]))
    for index, choice in enumerate(choices):
        end = openai.ChunkChoice(
            index=index, delta=openai.ChunkDelta(), finish_reason=choice.finish
        )
        out.append(_chat_frame(head, [end]))
    if head.include_usage:
        out.append(_frame(_chunk(head, [], total)))
    out.append(DONE)
    return tuple(out)


def legacy(head: Head, choices: list[Choice], total: openai.Usage) -> tuple[bytes, ...]:
    """Every SSE frame of a streamed legacy completion."""
    out = [_legacy_frame(head, index, word, None) for index, word in _interleave(choices)]
    out.extend(_legacy_frame(head, i, "", choice.finish) for i, choice in enumerate(choices))
    if head.include_usage:
        out.append(_frame(_completion(head, [], total)))
    out.append(DONE)
    return tuple(out)


def legacy_completion(head: Head, choices: list[Choice], total: openai.Usage) -> openai.Completion:
    """The whole legacy completion, when not streamed."""
    parts = [
        openai.CompletionChoice(text="".join(c.words), index=i, finish_reason=c.finish)
        for i, c in enumerate(choices)
    ]
    return _completion(head, parts, total)


def _interleave(choices: list[Choice]) -> Iterator[tuple[int, str]]:
    longest = max((len(choice.words) for choice in choices), default=0)
    for position in range(longest):
        for index, choice in enumerate(choices):
            if position < len(choice.words):
                yield index, choice.words[position]


def _chat_frame(head: Head, choices: list[openai.ChunkChoice]) -> bytes:
    return _frame(_chunk(head, choices, None if head.include_usage else UNSET))


def _chunk(
    head: Head, choices: list[openai.ChunkChoice], usage: _Usage
) -> openai.ChatCompletionChunk:
    return openai.ChatCompletionChunk(
        id=head.id, created=head.created, model=head.model, choices=choices, usage=usage
    )


def _legacy_frame(head: Head, index: int, text: str, finish: str | None) -> bytes:
    choice = openai.CompletionChoice(text=text, index=index, finish_reason=finish)
    return _frame(_completion(head, [choice], None if head.include_usage else UNSET))


def _completion(
    head: Head, choices: list[openai.CompletionChoice], usage: _Usage
) -> openai.Completion:
    return openai.Completion(
        id=head.id, created=head.created, model=head.model, choices=choices, usage=usage
    )


def _frame(value: object) -> bytes:
    return b"data: " + openai.encoder.encode(value) + b"\n\n"
