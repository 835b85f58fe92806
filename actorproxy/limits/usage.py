"""The real token usage of a finished response, for reconciling a token reservation: pure.

Only the ``usage`` object is decoded (a small msgspec view; msgspec skips everything else), once
per response, when it ends:

* a whole OpenAI body (chat, completions, embeddings): ``usage.total_tokens``;
* an OpenAI event stream: the last ``data:`` frame that carries a non-null ``usage``. A stream
  only has one when the client (or ``stream_usage``) asked for it, in the last chunk before
  ``[DONE]``, so ``StreamTail`` keeps references to the last few pieces only: no copy per chunk.

``None`` means "unknown": the caller keeps the reservation charged in full (the safe side).
``total_tokens`` absent falls back to ``prompt_tokens + completion_tokens``.
"""

from __future__ import annotations

from collections import deque

import msgspec

#: Pieces of a stream kept for its usage chunk: the chunk may be split across pieces, and
#: ``data: [DONE]`` may arrive with it or on its own.
TAIL_PIECES = 4


class Usage(msgspec.Struct):
    total_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def total(self) -> int | None:
        if self.total_tokens is not None:
            return max(0, self.total_tokens)
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return max(0, (self.prompt_tokens or 0) + (self.completion_tokens or 0))


class _UsageView(msgspec.Struct):
    usage: Usage | None = None


_decoder = msgspec.json.Decoder(_UsageView)


def from_body(body: bytes) -> int | None:
    """``usage`` of a whole JSON response body; ``None`` if absent or unreadable."""
    try:
        usage = _decoder.decode(body).usage
    except msgspec.DecodeError:  # ValidationError is a DecodeError
        return None
    return None if usage is None else usage.total()


def from_frames(data: bytes) -> int | None:
    """``usage`` of the last SSE frame in ``data`` that has one; ``None`` if none does."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    for frame in reversed(data.split(b"\n\n")):
        start = frame.find(b"data:")
        if start < 0 or b'"usage"' not in frame:
            continue
        total = from_body(frame[start + 5 :].strip())
        if total is not None:
            return total
    return None


class StreamTail:
    """The last ``TAIL_PIECES`` pieces of a stream (references only) and what they say."""

    __slots__ = ("_pieces",)

    def __init__(self) -> None:
        self._pieces: deque[bytes] = deque(maxlen=TAIL_PIECES)

    def feed(self, piece: bytes) -> None:
        self._pieces.append(piece)

    def total(self, withheld: bytes = b"") -> int | None:
        """The stream's usage; ``withheld`` frames (kept from the client) are read first."""
        if withheld and (total := from_frames(withheld)) is not None:
            return total
        return from_frames(b"".join(self._pieces))
