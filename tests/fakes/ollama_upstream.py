"""A fake Ollama server (native API) on a real loopback socket, for tests of the Ollama adapter.

    async with open_fake_ollama() as fake:
        fake.script(ErrorLine(after_lines=2, message="out of memory"))
        async with httpx.AsyncClient(base_url=fake.base_url) as client:
            ...
        assert fake.requests[-1].json()["model"] == "llama3.2"

What tests may assert on ("words" are ``text.split()``):

- ``POST /api/chat``: the reply says ``"echo: " + <last user message>``, streamed (the default,
  as on Ollama) as one NDJSON line per word (``"echo:"``, ``" hello"``, ...) and a last line with
  ``done: true``, ``done_reason`` and the metrics. ``options.num_predict`` N keeps the first N words
  (``done_reason: "length"``). With ``tools``, when the last message is the user's and says
  "weather", the reply is one call of the first offered tool with ``{"query": <that message>}``.
  ``format`` makes the content ``{"echo": <text>}``; ``think: true`` adds ``thinking`` first.
  ``prompt_eval_count`` = words of all messages, ``eval_count`` = words of the reply (1 for a call).
- ``POST /api/generate``: the same for ``prompt``, in ``response``.
- ``POST /api/embed``: `DIMENSIONS` (or ``dimensions``) floats per input, from SHA-256 of the text;
  ``prompt_eval_count`` = words of all inputs.
- ``GET /api/tags``: the models, names with their tag (``llama3.2`` is ``llama3.2:latest``).
- Durations are `DURATIONS` (nanoseconds) on every final line.

Rejections, as Ollama words them: an unknown model is 404 ``model "x" not found, try pulling it
first``; a missing model or messages, a bad role, tool-call arguments that are not an object, a
prompt or input of the wrong type are 400 ``{"error": ...}``. Unknown paths are 404
``404 page not found`` in plain text.

Faults are queued with `FakeOllama.script` and consumed by the next valid request: `Respond`
answers with any status and body, `ErrorLine` streams some lines then ``{"error": ...}``, `Cut`
streams some lines then drops the connection (no chunked terminator).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from tests.fakes import server
from tests.fakes.server import RecordedRequest, Respond

__all__ = [
    "CREATED_AT",
    "DEFAULT_MODELS",
    "DIMENSIONS",
    "DURATIONS",
    "NDJSON",
    "ROLES",
    "Answer",
    "Cut",
    "ErrorLine",
    "FakeOllama",
    "Fault",
    "RecordedRequest",
    "Rejected",
    "Respond",
    "answer",
    "embedding_vector",
    "open_fake_ollama",
]

DEFAULT_MODELS = ("llama3.2:latest", "qwen3:8b", "nomic-embed-text:latest")
CREATED_AT = "2024-01-01T00:00:00Z"
DIMENSIONS = 8
DURATIONS = {
    "total_duration": 5_000_000,
    "load_duration": 1_000_000,
    "prompt_eval_duration": 2_000_000,
    "eval_duration": 3_000_000,
}
ROLES = frozenset({"system", "user", "assistant", "tool"})
NDJSON = "application/x-ndjson"

_JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class ErrorLine:
    """Stream the first ``after_lines`` lines, then ``{"error": message}``, then end normally."""

    after_lines: int
    message: str = "an error was encountered while running the model"


@dataclass(frozen=True)
class Cut:
    """Stream the first ``after_lines`` lines, then drop the connection."""

    after_lines: int


Fault = Respond | ErrorLine | Cut


class Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Answer:
    status: int
    lines: tuple[bytes, ...]  # one JSON body, or the NDJSON lines of a stream
    stream: bool = False


# --- what the server answers (sans-IO) ----------------------------------------------------------


def answer(method: str, path: str, body: bytes, models: Collection[str]) -> Answer | None:
    """The answer to one request; ``None`` for an unknown path."""
    try:
        if path == "/api/tags" and method == "GET":
            return _json(200, {"models": [_tag(name) for name in models]})
        handler = _ROUTES.get(path)
        if handler is None or method != "POST":
            return None
        request = _object(body)
        _check_model(request, models)
        return handler(request)
    except Rejected as rejected:
        return _json(rejected.status, {"error": rejected.message})


def _object(body: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise Rejected(400, "invalid character looking for beginning of value") from None
    if not isinstance(value, dict):
        raise Rejected(400, "json: cannot unmarshal array into Go value of type api.Request")
    return value


def _check_model(request: dict[str, Any], models: Collection[str]) -> None:
    name = request.get("model")
    if not isinstance(name, str) or not name:
        raise Rejected(400, "model is required")
    if _full_name(name) not in {_full_name(known) for known in models}:
        raise Rejected(404, f'model "{name}" not found, try pulling it first')


def _full_name(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _chat(request: dict[str, Any]) -> Answer:
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise Rejected(400, "messages is required")
    for message in messages:
        _check_message(message)
    texts = [m.get("content", "") for m in messages]
    last = next((m.get("content", "") for m in reversed(messages) if m["role"] == "user"), "")
    tools = request.get("tools") or []
    if tools and messages and messages[-1]["role"] == "user" and "weather" in last.lower():
        call = {"function": {"name": tools[0]["function"]["name"], "arguments": {"query": last}}}
        pieces = [{"role": "assistant", "content": "", "tool_calls": [call]}]
        return _reply(request, texts, pieces, ("stop", 1), "message")
    words, reason = _words(request, last)
    pieces = [{"role": "assistant", "content": word} for word in words]
    if request.get("think") is True:
        pieces.insert(0, {"role": "assistant", "content": "", "thinking": f"thinking: {last}"})
    return _reply(request, texts, pieces, (reason, len(words)), "message")


def _check_message(message: object) -> None:
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        role = message.get("role") if isinstance(message, dict) else message
        raise Rejected(400, f"invalid role: {role!r}")
    if not isinstance(message.get("content", ""), str):
        raise Rejected(400, "json: cannot unmarshal array into Go struct field .content")
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("arguments"), dict):
            raise Rejected(
                400,
                "json: cannot unmarshal string into Go struct field "
                "ToolCallFunction.messages.tool_calls.function.arguments of type "
                "api.ToolCallFunctionArguments",
            )


def _generate(request: dict[str, Any]) -> Answer:
    prompt = request.get("prompt", "")
    if not isinstance(prompt, str):
        raise Rejected(400, "json: cannot unmarshal array into Go struct field .prompt")
    words, reason = _words(request, prompt)
    return _reply(request, [prompt], list(words), (reason, len(words)), "response")


def _words(request: dict[str, Any], text: str) -> tuple[list[str], str]:
    reply = f"echo: {text}".strip()
    if request.get("format") is not None:
        return [msgspec.json.encode({"echo": text}).decode()], "stop"
    words = [word if i == 0 else " " + word for i, word in enumerate(reply.split())]
    limit = (request.get("options") or {}).get("num_predict")
    if isinstance(limit, int) and 0 <= limit < len(words):
        return words[:limit], "length"
    return words, "stop"


def _reply(
    request: dict[str, Any],
    prompt_texts: list[str],
    pieces: list[Any],
    end: tuple[str, int],
    key: str,
) -> Answer:
    """Stream ``pieces`` under ``key`` line by line, or the whole reply in one object."""
    model = request["model"]
    reason, eval_count = end
    prompt_count = sum(len(text.split()) for text in prompt_texts)
    last: dict[str, Any] = {"model": model, "created_at": CREATED_AT, "done": True}
    last |= {"done_reason": reason, "prompt_eval_count": prompt_count, "eval_count": eval_count}
    last |= DURATIONS
    if request.get("stream", True) is False:
        return _json(200, {**last, key: _merged(pieces)})
    empty: Any = {"role": "assistant", "content": ""} if key == "message" else ""
    lines = [
        {"model": model, "created_at": CREATED_AT, key: piece, "done": False} for piece in pieces
    ]
    lines.append({**last, key: empty})
    return Answer(200, tuple(msgspec.json.encode(line) + b"\n" for line in lines), stream=True)


def _merged(pieces: list[Any]) -> Any:
    if not pieces or isinstance(pieces[0], str):
        return "".join(pieces)
    merged: dict[str, Any] = {"role": "assistant", "content": ""}
    for piece in pieces:
        merged["content"] += piece["content"]
        for extra in ("thinking", "tool_calls"):
            if extra in piece:
                merged[extra] = piece[extra]
    return merged


def _embed(request: dict[str, Any]) -> Answer:
    given = request.get("input")
    inputs = [given] if isinstance(given, str) else given
    if not isinstance(inputs, list) or not all(isinstance(item, str) for item in inputs):
        raise Rejected(400, "invalid input type")
    dims = request.get("dimensions") or DIMENSIONS
    body = {
        "model": request["model"],
        "embeddings": [embedding_vector(text, dims) for text in inputs],
        "prompt_eval_count": sum(len(text.split()) for text in inputs),
        "total_duration": DURATIONS["total_duration"],
        "load_duration": DURATIONS["load_duration"],
    }
    return _json(200, body)


def embedding_vector(text: str, dims: int) -> list[float]:
    """Deterministic floats in [-1, 1), exact in float32, from SHA-256 of ``text``."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = (seed * (dims // 16 + 1))[: dims * 2]
    return [value / 32768 for value in struct.unpack(f"<{dims}h", raw)]


def _tag(name: str) -> dict[str, Any]:
    digest = hashlib.sha256(name.encode()).hexdigest()
    details = {"format": "gguf", "family": "llama", "parameter_size": "1B"}
    fields = {"name": name, "model": name, "modified_at": CREATED_AT, "size": 1}
    return {**fields, "digest": digest, "details": details}


def _json(status: int, value: object) -> Answer:
    return Answer(status, (msgspec.json.encode(value),))


_ROUTES = {"/api/chat": _chat, "/api/generate": _generate, "/api/embed": _embed}


# --- the server (I/O) -------------------------------------------------------------------------


class FakeOllama(server.FakeServer[Fault]):
    """The ASGI app, and what tests observe: ``requests`` and ``unused_faults``.

    ``script(*faults)`` queues faults for the next valid requests, first in first out.
    """

    def __init__(self, models: Collection[str]) -> None:
        super().__init__()
        self.models = models

    async def handle(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        request, _ = self.record(scope, await server.read_body(receive) or b"")
        reply = answer(request.method, request.path, request.body, self.models)
        if reply is None:
            plain = {"content-type": "text/plain; charset=utf-8"}
            await server.send_response(send, 404, plain, [b"404 page not found"])
            return
        fault = self.take_fault(request.path) if reply.status < 400 else None
        await _perform(send, reply, fault)


async def _perform(send: ASGISendCallable, reply: Answer, fault: Fault | None) -> None:
    ndjson = {"content-type": NDJSON}
    match fault:
        case Respond(status=status, headers=headers):
            fields = {"content-type": _JSON, **headers}
            await server.send_response(send, status, fields, [fault.raw_body()])
        case ErrorLine(after_lines=count, message=message):
            error = msgspec.json.encode({"error": message}) + b"\n"
            await server.send_response(send, 200, ndjson, [*reply.lines[:count], error])
        case Cut(after_lines=count):
            await server.send_response(send, 200, ndjson, reply.lines[:count], cut=True)
        case None:
            kind = NDJSON if reply.stream else _JSON
            await server.send_response(send, reply.status, {"content-type": kind}, reply.lines)


@asynccontextmanager
async def open_fake_ollama(models: Collection[str] = DEFAULT_MODELS) -> AsyncIterator[FakeOllama]:
    """Serve a `FakeOllama` on 127.0.0.1 (random port) until the block exits."""
    fake = FakeOllama(models)
    async with server.open_loopback_server(fake) as base_url:
        fake.base_url = base_url
        yield fake
