"""The real token usage of a response the proxy already holds: its JSON body or its stream.

Only keys with a ``tpm`` or a budget need it, so the hot path of other keys never decodes a
response. A stream's usage is in its last event with a ``usage`` object (OpenAI sends it only when
``stream_options.include_usage`` is set, by the client or by ``stream_usage = true``); only the
stream's tail is searched. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from actorproxy.limits.keys import TokenUsage

TAIL_BYTES = 16 * 1024  # the usage event is the last or next to last: a few hundred bytes


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
    """The usage of a whole JSON response, ``None`` when it has none or is not JSON."""
    try:
        usage = _decoder.decode(body).usage
    except msgspec.DecodeError:
        return None
    return None if usage is None else _tokens(usage)


def from_stream(chunks: Sequence[bytes]) -> TokenUsage | None:
    """The usage in the last event of an OpenAI event stream that carries one, else ``None``."""
    tail: list[bytes] = []
    size = 0
    for chunk in reversed(chunks):
        tail.append(chunk)
        size += len(chunk)
        if size >= TAIL_BYTES:
            break
    text = b"".join(reversed(tail))
    for line in reversed(text.splitlines()):
        if line.startswith(b"data:") and b'"usage"' in line:
            found = from_body(line[5:].strip())
            if found is not None:
                return found
    return None


def _tokens(usage: _Usage) -> TokenUsage:
    prompt = usage.prompt_tokens or 0
    completion = usage.completion_tokens
    if completion is None:  # embeddings report prompt and total only
        completion = max(0, (usage.total_tokens or prompt) - prompt)
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details is not None else 0
    return TokenUsage(prompt, completion, cached)
