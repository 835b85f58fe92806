"""The ``mock`` provider's upstream, as pure functions: request bytes in, reply frames out.

``respond`` answers what an OpenAI-compatible server answers on ``/chat/completions``,
``/completions``, ``/embeddings``, ``/models`` and ``/models/{id}`` (a ``/v1`` prefix is
accepted too), deterministically: the same request and ``created`` give the same bytes. Any model
name is accepted and echoed. The reply text is ``"mock reply:"`` plus the first words of the last
user message, or ``MockConfig.chunks`` words of lorem ipsum when ``chunks`` is set.

Token counts, the mock's documented rule:

- a word of the reply is one completion token, so ``max_tokens`` truncates to that many words
  (``finish_reason: "length"``) and ``completion_tokens`` never exceeds it;
- a chat message costs ``ceil(utf8_bytes(text) / 4) + 3`` prompt tokens, its text being the string
  content or its text and refusal parts joined by spaces; a prompt or embeddings input string
  costs ``ceil(utf8_bytes / 4)``, a token-id list its length.

Bad requests get OpenAI's error body with the offending ``param``; unknown paths get 404. Nothing
here raises for any input; errors come back as error replies.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from actorproxy import errors
from actorproxy.adapters import mock_stream as frames
from actorproxy.adapters.mock_rules import (
    UNSET_OR_NONE,
    Choice,
    check_range,
    decode,
    inputs,
    message_text,
    message_tokens,
    reply_words,
    text_tokens,
    truncate,
    unit_vector,
)
from actorproxy.config import MockConfig
from actorproxy.schema import openai

MODEL_IDS = ("mock",)
MODEL_CREATED = 1_700_000_000
MAX_N = 128
MAX_DIMENSIONS = 8192
LEGACY_MAX_TOKENS = 16  # what OpenAI's /completions applies when max_tokens is absent

Handler = Callable[[bytes, MockConfig, int], "Reply"]
_JSON = b"application/json"
_SSE = b"text/event-stream"
_PREFIX = re.compile(r"^(?:/v1)?(?=/)")


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: one frame holding the whole JSON body, or one frame per SSE event."""

    status: int
    frames: tuple[bytes, ...]
    stream: bool = False

    @property
    def content_type(self) -> bytes:
        return _SSE if self.stream else _JSON

    @property
    def body(self) -> bytes:
        return b"".join(self.frames)


def respond(method: bytes, target: str, body: bytes, *, config: MockConfig, created: int) -> Reply:
    """The reply to one request; ``created`` is the unix time to stamp on it."""
    try:
        return _route(method, target, body, config, created)
    except errors.ProxyError as error:
        return Reply(error.status, (errors.render(error),))


def _route(method: bytes, target: str, body: bytes, config: MockConfig, created: int) -> Reply:
    path = _PREFIX.sub("", target.partition("?")[0], count=1)
    if path == "/models" or path.startswith("/models/"):
        _require(method, b"GET", path)
        return _json(_models(path.removeprefix("/models").removeprefix("/")))
    handler = _POST_ROUTES.get(path)
    if handler is None:
        raise errors.NotFound(f"Unknown request URL: {method.decode(errors='replace')} {path}.")
    _require(method, b"POST", path)
    return handler(body, config, created)


def _require(method: bytes, allowed: bytes, path: str) -> None:
    if method.upper() != allowed:
        raise errors.MethodNotAllowed(f"{path} accepts {allowed.decode()} only.")


def _json(value: object) -> Reply:
    return Reply(200, (openai.encoder.encode(value),))


def _models(model_id: str) -> openai.Model | openai.ModelList:
    if model_id:
        return _model(model_id)
    return openai.ModelList(data=[_model(name) for name in MODEL_IDS])


def _model(model_id: str) -> openai.Model:
    return openai.Model(id=model_id, created=MODEL_CREATED, owned_by="actorproxy")


# --- chat completions -------------------------------------------------------------------------


def chat(body: bytes, config: MockConfig, created: int) -> Reply:
    """``POST /chat/completions``: ``n`` identical choices, streamed if asked."""
    request = decode(openai.chat_request_decoder, body)
    _check_chat(request)
    limit = _first_set(request.max_completion_tokens, request.max_tokens)
    choice = truncate(reply_words(_last_user_text(request.messages), config.chunks), limit)
    n = _n(request.n)
    prompt = sum(message_tokens(message) for message in request.messages)
    usage = frames.usage(prompt, n * len(choice.words), details=True)
    ident = "chatcmpl-mock-" + _digest(body)
    if request.stream:
        head = frames.Head(ident, created, request.model, _include_usage(request.stream_options))
        return Reply(200, frames.chat(head, [choice] * n, usage), stream=True)
    choices = [_chat_choice(index, choice) for index in range(n)]
    reply = openai.ChatCompletion(
        id=ident, created=created, model=request.model, choices=choices, usage=usage
    )
    return _json(reply)


def _check_chat(request: openai.ChatCompletionRequest) -> None:
    if not request.messages:
        raise errors.InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    check_range("n", request.n, 1, MAX_N)
    check_range("max_tokens", request.max_tokens, 1, None)
    check_range("max_completion_tokens", request.max_completion_tokens, 1, None)
    _check_stream_options(request.stream, request.stream_options)


def _chat_choice(index: int, choice: Choice) -> openai.ChatCompletionChoice:
    message = openai.ChatCompletionMessage(content="".join(choice.words))
    return openai.ChatCompletionChoice(index=index, message=message, finish_reason=choice.finish)


def _last_user_text(messages: list[openai.Message]) -> str:
    for message in reversed(messages):
        if isinstance(message, openai.UserMessage):
            return message_text(message)
    return ""


# --- legacy completions -----------------------------------------------------------------------


def completions(body: bytes, config: MockConfig, created: int) -> Reply:
    """``POST /completions``: ``n`` choices per prompt, in prompt order, streamed if asked."""
    request = decode(openai.completion_request_decoder, body)
    check_range("n", request.n, 1, MAX_N)
    check_range("max_tokens", request.max_tokens, 1, None)
    _check_stream_options(request.stream, request.stream_options)
    prompts = inputs("prompt", "<|endoftext|>" if request.prompt is None else request.prompt)
    limit = _first_set(request.max_tokens) or LEGACY_MAX_TOKENS
    n = _n(request.n)
    choices = [truncate(reply_words(_prompt_text(p), config.chunks), limit) for p in prompts]
    choices = [choice for choice in choices for _ in range(n)]
    prompt_tokens = sum(text_tokens(p) for p in prompts)
    usage = frames.usage(prompt_tokens, sum(len(c.words) for c in choices), details=False)
    include_usage = _include_usage(request.stream_options)
    head = frames.Head("cmpl-mock-" + _digest(body), created, request.model, include_usage)
    if request.stream:
        return Reply(200, frames.legacy(head, choices, usage), stream=True)
    return _json(frames.legacy_completion(head, choices, usage))


def _prompt_text(prompt: str | list[int]) -> str:
    return prompt if isinstance(prompt, str) else f"{len(prompt)} tokens"


# --- embeddings -------------------------------------------------------------------------------


def embeddings(body: bytes, config: MockConfig, created: int) -> Reply:
    """Unit vectors from SHA-256 of each input; ``created`` is unused (embeddings carry none)."""
    del created
    request = decode(openai.embedding_request_decoder, body)
    items = inputs("input", request.input)
    check_range("dimensions", request.dimensions, 1, MAX_DIMENSIONS)
    dims = request.dimensions if isinstance(request.dimensions, int) else config.embedding_dims
    as_base64 = request.encoding_format == "base64"
    data = [
        openai.Embedding(index=index, embedding=_vector(unit_vector(item, dims), as_base64))
        for index, item in enumerate(items)
    ]
    tokens = sum(text_tokens(item) for item in items)
    usage = openai.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    return _json(openai.EmbeddingResponse(data=data, model=request.model, usage=usage))


def _vector(packed: bytes, as_base64: bool) -> list[float] | str:
    if as_base64:
        return base64.b64encode(packed).decode("ascii")
    return list(struct.unpack(f"<{len(packed) // 4}f", packed))


# --- shared -----------------------------------------------------------------------------------


def _check_stream_options(stream: object, options: object) -> None:
    if stream is not True and options not in UNSET_OR_NONE:
        raise errors.InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )


def _include_usage(options: openai.StreamOptions | msgspec.UnsetType | None) -> bool:
    return isinstance(options, openai.StreamOptions) and options.include_usage is True


def _n(n: int | msgspec.UnsetType | None) -> int:
    return n if isinstance(n, int) else 1


def _first_set(*values: int | msgspec.UnsetType | None) -> int | None:
    for value in values:
        if isinstance(value, int):
            return value
    return None


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


_POST_ROUTES: dict[str, Handler] = {
    "/chat/completions": chat,
    "/completions": completions,
    "/embeddings": embeddings,
}
