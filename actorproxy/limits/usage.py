"""The real token usage of a finished response: pure, decoded once per response.

The provider actor reads it as the response ends and hands it on with its reply (``Head.usage``,
``Done.usage``): the actor reconciles its own token reservation with it, the proxy its key's
reservation and budget, and metrics count it. Nothing else decodes a response for its usage.

Only the ``usage`` object is decoded (a small msgspec view; msgspec skips everything else):

* a whole OpenAI body (chat, completions, embeddings);
* an OpenAI event stream: the last ``data:`` frame that carries a non-null ``usage``. A stream
  only has one when the client (or ``stream_usage``) asked for it, in the last chunk before
  ``[DONE]``, so ``StreamTail`` keeps references to the pieces of the last ``TAIL_BYTES`` only:
  no copy per chunk, however finely the stream was split.

``None`` means "unknown": callers keep a reservation charged in full (the safe side).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import msgspec

#: How much of a stream's end is kept for its usage chunk (a few hundred bytes, split across
#: any number of pieces; ``data: [DONE]`` may arrive with it or on its own).
TAIL_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """A response's real usage, as the upstream reported it (``cached``: of the prompt)."""

    prompt: int
    completion: int
    cached: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None


class _WithUsage(msgspec.Struct):
    usage: _Usage | None = None


_decoder = msgspec.json.Decoder(_WithUsage)


def from_body(body: bytes) -> TokenUsage | None:
    """``usage`` of a whole JSON response body; ``None`` if absent, empty or unreadable."""
    try:
        found = _decoder.decode(body).usage
    except msgspec.DecodeError:  # ValidationError is a DecodeError
        return None
    return None if found is None else _tokens(found)


def from_frames(data: bytes) -> TokenUsage | None:
    """``usage`` of the last SSE frame in ``data`` that has one; ``None`` if none does."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    for frame in reversed(data.split(b"\n\n")):
        start = frame.find(b"data:")
        if start < 0 or b'"usage"' not in frame:
            continue
        found = from_body(frame[start + 5 :].strip())
        if found is not None:
            return found
    return None


class StreamTail:
    """The pieces holding a stream's last ``TAIL_BYTES`` (references only) and what they say."""

    __slots__ = ("_pieces", "_size")

    def __init__(self) -> None:
        self._pieces: deque[bytes] = deque()
        self._size = 0

    def feed(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._size += len(piece)
        while self._size - len(self._pieces[0]) >= TAIL_BYTES:
            self._size -= len(self._pieces.popleft())

    def usage(self, withheld: bytes = b"") -> TokenUsage | None:
        """The stream's usage; ``withheld`` frames (kept from the client) are read first."""
        if withheld and (found := from_frames(withheld)) is not None:
            return found
        return from_frames(b"".join(self._pieces))


def _tokens(usage: _Usage) -> TokenUsage | None:
    if (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (None, None, None):
        return None
    prompt = max(0, usage.prompt_tokens or 0)
    completion = usage.completion_tokens
    if completion is None:  # embeddings report prompt and total only
        completion = (usage.total_tokens or prompt) - prompt
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    return TokenUsage(prompt, max(0, completion), max(0, cached))
