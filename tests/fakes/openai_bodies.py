"""Routing and deterministic response bodies of the fake OpenAI API (sans-IO).

What tests may assert on ("words" means ``len(text.split())``; a token-id array counts its length):

- ids are ``chatcmpl-{seq}`` / ``cmpl-{seq}`` and ``x-request-id`` is ``req_{seq}``, where ``seq``
  is the request's 0-based index in ``FakeOpenAI.requests``; ``created`` is always `CREATED`.
- Chat: each of the ``n`` choices says ``"echo: " + <last user message>`` (string content, or its
  text parts joined by one space; ``""`` if there is no user message). ``max_completion_tokens``
  or ``max_tokens`` cuts the reply to its first N words joined by single spaces, with
  ``finish_reason: "length"``; otherwise ``"stop"``. ``usage.prompt_tokens`` = words over the text
  of all messages, ``completion_tokens`` = n * words(reply), ``total_tokens`` = their sum.
- Chat stream: per choice a role chunk (``{"role": "assistant", "content": "", "refusal": null}``),
  one chunk per word with its leading whitespace (``"echo:"``, ``" hello"``, ...), then ``{}`` with
  the finish_reason; choices interleave in index order at each step. With
  ``stream_options.include_usage`` every chunk carries ``"usage": null`` and a last chunk has
  ``"choices": []`` and the usage. Then ``data: [DONE]``.
- Legacy completions: the prompt (string, strings, token ids, token-id arrays) gives P prompts;
  choice ``p * n + j`` says ``"echo: " + prompt p`` (token ids joined by spaces). ``max_tokens``
  truncates as for chat (the real API's default of 16 is not applied). Streams like chat, with
  ``text`` pieces and a last ``text: ""`` chunk per choice carrying the finish_reason.
- Tools: when the request offers ``tools``, its last message is the user's and says "weather",
  the reply calls the first offered tool (id ``call_{seq}_0``) with arguments
  ``{"query": <that message>}`` and ``finish_reason: "tool_calls"``; streamed, the arguments
  arrive in two fragments. Tool messages must answer the calls of the assistant turn just before.
- Embeddings: `DIMENSIONS` (or ``dimensions``) values per input, see `embedding_vector`;
  ``prompt_tokens`` = ``total_tokens`` = words over all inputs.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

import msgspec

from tests.fakes import openai_checks as checks
from tests.fakes.server import RecordedRequest as RecordedRequest  # re-exported

CREATED = 1_700_000_000
DIMENSIONS = 8
FINGERPRINT = "fp_fake"
SSE_DONE = b"data: [DONE]\n\n"

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class JsonReply:
    status: int
    body: bytes


@dataclass(frozen=True)
class SseReply:
    """A 200 ``text/event-stream``; each event is one whole ``data: ...\\n\\n`` frame."""

    events: tuple[bytes, ...]


Reply = JsonReply | SseReply


def reply(request: RecordedRequest, *, api_key: str, models: Collection[str], seq: int) -> Reply:
    """What the real API would answer, an `ApiError` rendered as its OpenAI error body."""
    try:
        return _route(request, api_key=api_key, models=models, seq=seq)
    except checks.ApiError as error:
        return JsonReply(error.status, error.body())


def embedding_vector(item: str | list[int], dimensions: int = DIMENSIONS) -> list[float]:
    """The fake's embedding of one input: value k is ``(b_k - 128) / 128`` for the bytes ``b`` of
    SHA-256 over the UTF-8 text (token ids: joined by ``,``), then over it + counter 1, 2, ...
    Every value is exactly representable in float32, so base64 and float outputs agree."""
    seed = item.encode() if isinstance(item, str) else ",".join(map(str, item)).encode()
    stream = b"".join(
        hashlib.sha256(seed + (str(block).encode() if block else b"")).digest()
        for block in range(-(-dimensions // 32))
    )
    return [(byte - 128) / 128 for byte in stream[:dimensions]]


def model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": CREATED, "owned_by": "openai"}


def sse(obj: object) -> bytes:
    return b"data: " + _encoder.encode(obj) + b"\n\n"


def _route(request: RecordedRequest, *, api_key: str, models: Collection[str], seq: int) -> Reply:
    method, path = request.method, request.path
    handler = _POST_ROUTES.get(path) if method == "POST" else None
    is_models = method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/"))
    if handler is None and not is_models:
        raise checks.ApiError(404, f"Invalid URL ({method} {path})")
    checks.check_auth(request.headers, api_key)
    if handler is None:
        return _models(path.removeprefix("/v1/models").removeprefix("/"), models)
    decoded = checks.decode_object(request.body)
    checks.require(decoded, "model")
    checks.check_type(decoded, "model", "string", nullable=False)
    return handler(decoded, models, seq)


def _models(model: str, models: Collection[str]) -> Reply:
    if not model:
        listing = {"object": "list", "data": [model_object(name) for name in models]}
        return JsonReply(200, _encoder.encode(listing))
    if model not in models:
        raise checks.not_found(model)
    return JsonReply(200, _encoder.encode(model_object(model)))


def _chat(request: dict[str, Any], models: Collection[str], seq: int) -> Reply:
    checks.check_chat(request)
    checks.check_model(request, models)
    messages: list[dict[str, Any]] = request["messages"]
    last_user = [_text(m.get("content")) for m in messages if m["role"] == "user"][-1:]
    n = request.get("n") or 1
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    text, finish = _truncate("echo: " + "".join(last_user), limit)
    usage = _chat_usage(sum(_words(_text(m.get("content"))) for m in messages), n * _words(text))
    base = {"id": f"chatcmpl-{seq}", "created": CREATED, "model": request["model"]}
    base |= {"system_fingerprint": FINGERPRINT, "service_tier": "default"}
    if (call := _tool_call(request, seq)) is not None:
        return _tool_reply(request, base, call, usage)
    if request.get("stream"):
        first = {"role": "assistant", "content": "", "refusal": None}
        deltas = [first, *({"content": piece} for piece in _pieces(text))]
        steps = [[_chat_delta(i, delta, None) for i in range(n)] for delta in deltas]
        steps.append([_chat_delta(i, {}, finish) for i in range(n)])
        chunk = base | {"object": "chat.completion.chunk"}
        return _stream(chunk, steps, usage, _include_usage(request))
    message: dict[str, object] = {
        "role": "assistant",
        "content": text,
        "refusal": None,
        "annotations": [],
    }
    choice = {"message": message, "logprobs": None, "finish_reason": finish}
    choices = [{"index": i} | choice for i in range(n)]
    completion = base | {"object": "chat.completion", "choices": choices, "usage": usage}
    return JsonReply(200, _encoder.encode(completion))


def _tool_call(request: dict[str, Any], seq: int) -> dict[str, Any] | None:
    tools, last = request.get("tools"), request["messages"][-1]
    if not tools or last["role"] != "user" or "weather" not in _text(last["content"]).lower():
        return None
    arguments = _encoder.encode({"query": _text(last["content"])}).decode()
    function = {"name": tools[0]["function"]["name"], "arguments": arguments}
    return {"id": f"call_{seq}_0", "type": "function", "function": function}


def _tool_reply(
    request: dict[str, Any], base: dict[str, Any], call: dict[str, Any], usage: dict[str, Any]
) -> Reply:
    if request.get("stream"):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        opening = {"index": 0, **call, "function": {"name": call["function"]["name"]}}
        opening["function"]["arguments"] = ""
        deltas: list[dict[str, Any]] = [
            {"role": "assistant", "content": None, "refusal": None},
            {"tool_calls": [opening]},
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]},
        ]
        steps = [[_chat_delta(0, delta, None)] for delta in deltas]
        steps.append([_chat_delta(0, {}, "tool_calls")])
        chunk = base | {"object": "chat.completion.chunk"}
        return _stream(chunk, steps, usage, _include_usage(request))
    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
    completion = base | {"object": "chat.completion", "choices": [choice], "usage": usage}
    return JsonReply(200, _encoder.encode(completion))


def _completions(request: dict[str, Any], models: Collection[str], seq: int) -> Reply:
    checks.check_completion(request)
    checks.check_model(request, models)
    prompts = list(_inputs(request["prompt"]))
    n = request.get("n") or 1
    texts = [_truncate("echo: " + prompt, request.get("max_tokens")) for prompt, _ in prompts]
    completion_tokens = n * sum(_words(text) for text, _ in texts)
    usage = _usage(sum(count for _, count in prompts), completion_tokens)
    base = {"id": f"cmpl-{seq}", "object": "text_completion", "created": CREATED}
    base |= {"model": request["model"], "system_fingerprint": FINGERPRINT}
    outputs = [
        (p * n + j, text, finish) for p, (text, finish) in enumerate(texts) for j in range(n)
    ]
    if request.get("stream"):
        pieces = [
            [_text_choice(index, p, None) for p in _pieces(text)] for index, text, _ in outputs
        ]
        steps = [[choice for choice in step if choice] for step in zip_longest(*pieces)]
        steps.append([_text_choice(index, "", finish) for index, _, finish in outputs])
        return _stream(base, steps, usage, _include_usage(request))
    choices = [_text_choice(index, text, finish) for index, text, finish in outputs]
    return JsonReply(200, _encoder.encode(base | {"choices": choices, "usage": usage}))


def _embeddings(request: dict[str, Any], models: Collection[str], seq: int) -> Reply:
    checks.check_embedding(request)
    checks.check_model(request, models)
    items = _items(request["input"])
    dimensions = request.get("dimensions") or DIMENSIONS
    encode = _base64 if request.get("encoding_format") == "base64" else list
    data = [
        {"object": "embedding", "index": i, "embedding": encode(embedding_vector(item, dimensions))}
        for i, item in enumerate(items)
    ]
    tokens = sum(count for _, count in _inputs(request["input"]))
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    body = {"object": "list", "data": data, "model": request["model"], "usage": usage}
    return JsonReply(200, _encoder.encode(body))


_POST_ROUTES: dict[str, Callable[[dict[str, Any], Collection[str], int], Reply]] = {
    "/v1/chat/completions": _chat,
    "/v1/completions": _completions,
    "/v1/embeddings": _embeddings,
}


def _stream(
    base: dict[str, Any], steps: list[list[dict[str, Any]]], usage: object, include_usage: bool
) -> SseReply:
    extra = {"usage": None} if include_usage else {}
    events = [sse(base | {"choices": [choice]} | extra) for step in steps for choice in step]
    if include_usage:
        events.append(sse(base | {"choices": [], "usage": usage}))
    return SseReply((*events, SSE_DONE))


def _chat_delta(index: int, delta: object, finish: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _text_choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


def _include_usage(request: Mapping[str, Any]) -> bool:
    return bool((request.get("stream_options") or {}).get("include_usage"))


def _chat_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return _usage(prompt_tokens, completion_tokens) | {
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _items(value: object) -> list[Any]:
    """A string or a token-id array is one prompt/input; other arrays are lists of them."""
    return value if isinstance(value, list) and not isinstance(value[0], int) else [value]


def _inputs(value: object) -> Iterator[tuple[str, int]]:
    """Each prompt/input as (text, token count); token ids render as space-joined numbers."""
    for item in _items(value):
        if isinstance(item, str):
            yield item, _words(item)
        else:
            yield " ".join(map(str, item)), len(item)


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return " ".join(part for part in parts if isinstance(part, str))
    return ""


def _truncate(text: str, limit: int | None) -> tuple[str, str]:
    if limit is not None and _words(text) > limit:
        return " ".join(text.split()[:limit]), "length"
    return text, "stop"


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+|\s+$", text)


def _words(text: str) -> int:
    return len(text.split())


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
