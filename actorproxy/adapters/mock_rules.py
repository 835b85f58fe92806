"""The mock's rules: request validation as OpenAI words it, token counts, reply words, vectors.

Pure and deterministic; ``actorproxy.adapters.mock`` documents the token rule users see.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from actorproxy import errors
from actorproxy.schema import openai

T = TypeVar("T")

ECHO_WORDS = 8
PER_MESSAGE_TOKENS = 3
_LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt"
LOREM = tuple(_LOREM.split())
UNSET_OR_NONE = (msgspec.UNSET, None)

# msgspec reports where a value failed only inside its message ("... - at `$.messages[0]`"), so
# this is the one place that reads an exception's text: to recover the path and the name of a
# missing field, which together make OpenAI's ``param``.
_NOT_JSON = (
    "We could not parse the JSON body of your request. The API expects a JSON payload, "
    "but what was sent was not valid JSON."
)


@dataclass(frozen=True, slots=True)
class Choice:
    """One reply: its words (each after the first keeps its leading space) and why it ended."""

    words: tuple[str, ...]
    finish: str


def decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """``body`` decoded, or ``errors.InvalidRequest`` naming the offending parameter."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as error:
        raise errors.invalid_body(error) from None
    except msgspec.DecodeError:
        raise errors.InvalidRequest(_NOT_JSON) from None


def check_range(param: str, value: object, low: int, high: int | None) -> None:
    """Reject an integer ``value`` outside ``[low, high]``; absent and ``null`` pass."""
    if not isinstance(value, int):
        return
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        message = f"Invalid '{param}': {value}. Expected a value {bound}."
        raise errors.InvalidRequest(message, param=param, code="invalid_value")


def inputs(param: str, value: openai.TextOrTokens) -> list[str | list[int]]:
    """A prompt or embeddings input as a list of strings or token-id lists, all of one kind."""
    if isinstance(value, str):
        return [value]
    kinds = {type(item) for item in value}
    if len(kinds) != 1:
        what = "an empty array" if not kinds else "an array mixing strings, integers and arrays"
        message = f"Invalid '{param}': got {what}. Expected a string or a non-empty array."
        raise errors.InvalidRequest(message, param=param, code="invalid_value")
    if kinds == {int}:
        return [[item for item in value if isinstance(item, int)]]
    return [item for item in value if not isinstance(item, int)]


def text_tokens(item: str | list[int]) -> int:
    """``ceil(utf8 bytes / 4)`` for a string, the length of a token-id list."""
    if isinstance(item, str):
        return -(-len(item.encode()) // 4)
    return len(item)


def message_tokens(message: openai.Message) -> int:
    return text_tokens(message_text(message)) + PER_MESSAGE_TOKENS


def message_text(message: openai.Message) -> str:
    """The string content, or the text and refusal parts joined by spaces."""
    content = message.content
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return " ".join(_part_text(part) for part in content)


def _part_text(part: object) -> str:
    if isinstance(part, openai.TextPart):
        return part.text
    if isinstance(part, openai.RefusalPart):
        return part.refusal
    return ""


def reply_words(prompt: str, chunks: int) -> tuple[str, ...]:
    """``chunks`` words of lorem ipsum if set, else ``mock reply:`` and the prompt's first words."""
    if chunks > 0:
        words = [LOREM[index % len(LOREM)] for index in range(chunks)]
    else:
        words = ["mock", "reply:", *prompt.split()[:ECHO_WORDS]]
    return (words[0], *(" " + word for word in words[1:]))


def truncate(words: tuple[str, ...], limit: int | None) -> Choice:
    if limit is not None and limit < len(words):
        return Choice(words[:limit], "length")
    return Choice(words, "stop")


def unit_vector(item: str | list[int], dims: int) -> bytes:
    """A unit vector of ``dims`` little-endian float32s from SHA-256 of ``item``, counter mode."""
    seed = b"s" + item.encode() if isinstance(item, str) else b"t" + str(item).encode()
    blocks = -(-dims * 4 // 32)
    stream = b"".join(
        hashlib.sha256(block.to_bytes(4, "little") + seed).digest() for block in range(blocks)
    )
    raw = struct.unpack(f"<{dims}i", stream[: dims * 4])
    norm = math.hypot(*raw)
    return struct.pack(f"<{dims}f", *(value / norm for value in raw))
