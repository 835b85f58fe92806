"""A fake Anthropic Messages API on a real loopback socket, for tests of the Anthropic adapter.

    async with open_fake_anthropic() as fake:
        fake.script(Respond(529, error_body("overloaded_error", "Overloaded")))
        client = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key=fake.api_key)
        ...
        assert fake.requests[-1].json()["max_tokens"] == 4096

What tests may assert on ("words" are ``text.split()``; ``seq`` is the request's index in
``fake.requests``):

- ``POST /v1/messages`` answers message ``msg_fake{seq}`` (header ``request-id: req_fake{seq}``).
  The text is ``"echo: " + <last user text>``: the text blocks of the last user turn joined by a
  space, or, when that turn holds only tool results, their contents. ``max_tokens`` keeps the
  first N words (``stop_reason: max_tokens``); a ``stop_sequences`` entry found in the text cuts
  it there (``stop_sequence``). With ``tools`` offered, a ``tool_choice`` of ``any``/``tool``, or
  ``auto`` and "weather" in the last user text, the answer is instead one ``tool_use`` block
  ``toolu_fake{seq}`` of the first (or the named) tool with input ``{"query": <text>}``. With
  ``thinking`` enabled a thinking block ``"The user said: <text>"`` comes first, signed with
  `signature` (``output_tokens_details.thinking_tokens`` = its words).
- Usage: ``input_tokens`` = words of ``system`` and of every text and tool-result text; with
  ``cache_control`` on a block, the words up to the end of the last such block (all of
  ``system`` when it is there) count as ``cache_read_input_tokens`` instead (else 0).
  ``output_tokens`` = words of the thinking, plus those of the text or 1 for a tool_use.
- ``stream: true``: message_start, ping, per block content_block_start / deltas (one per word
  piece; a tool's input JSON in three ``input_json_delta`` fragments; thinking then its
  ``signature_delta``) / content_block_stop, message_delta (stop reason, usage), message_stop.
- ``GET /v1/models``: the models, newest first, Anthropic's list shape.

Rejections, in Anthropic's words and shape (`error_body`): no or a wrong ``x-api-key`` (a bearer
token alone is not enough) 401 ``authentication_error``; no ``anthropic-version`` 400; a missing
``model``/``messages``/``max_tokens`` 400 ``<field>: Field required``; ``temperature`` > 1; a
``system`` or other role in ``messages``; empty content or blank text blocks; a thinking block
without (or with a wrong) signature; ``tool_result`` ids without a ``tool_use`` in the previous
assistant turn, and ``tool_use`` ids without results in the next turn; ``max_tokens`` not above
``thinking.budget_tokens``; an unknown model 404 ``not_found_error``. Consecutive turns of one
role are merged, as Anthropic does.

Faults are queued with `FakeAnthropic.script` and consumed by the next valid request: `Respond`
answers with any status, body and headers; `StreamError` streams some events, then an
``event: error``; `Cut` streams some events, then drops the connection (no chunked terminator).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from tests.fakes import server
from tests.fakes.server import RecordedRequest, Respond

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MODELS",
    "JSON",
    "Answer",
    "Cut",
    "FakeAnthropic",
    "Fault",
    "RecordedRequest",
    "Rejected",
    "Respond",
    "StreamError",
    "answer",
    "error_body",
    "open_fake_anthropic",
    "signature",
    "sse",
]

DEFAULT_API_KEY = "sk-ant-fake"
DEFAULT_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5")
JSON = "application/json"

_encoder = msgspec.json.Encoder()
Obj = dict[str, Any]


@dataclass(frozen=True)
class StreamError:
    """Stream the first ``after_events`` events, then an ``error`` event, then end the body."""

    after_events: int
    type: str = "overloaded_error"
    message: str = "Overloaded"


@dataclass(frozen=True)
class Cut:
    """Stream the first ``after_events`` events (or half a JSON body), then drop the connection."""

    after_events: int


Fault = Respond | StreamError | Cut


def error_body(type: str, message: str) -> Obj:
    """The JSON object Anthropic sends with an error status."""
    return {"type": "error", "error": {"type": type, "message": message}}


def signature(thinking: str) -> str:
    """The fake's signature of a thinking text; thinking blocks sent back must carry it."""
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()[:24]


def sse(event: str, data: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _encoder.encode(data) + b"\n\n"


class Rejected(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.body = _encoder.encode(error_body(type, message))


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    events: tuple[bytes, ...] | None = None  # the SSE frames of a stream


# --- what the server answers (sans-IO) ----------------------------------------------------------


def answer(request: RecordedRequest, *, api_key: str, models: Collection[str], seq: int) -> Answer:
    try:
        return _route(request, api_key, models, seq)
    except Rejected as rejected:
        return Answer(rejected.status, rejected.body)


def _route(request: RecordedRequest, api_key: str, models: Collection[str], seq: int) -> Answer:
    route = (request.method, request.path)
    if route not in {("POST", "/v1/messages"), ("GET", "/v1/models")}:
        raise Rejected(404, f"Not found: {request.method} {request.path}", "not_found_error")
    key = request.headers.get("x-api-key")
    if key is None or key != api_key:
        problem = "x-api-key header is required" if key is None else "invalid x-api-key"
        raise Rejected(401, problem, "authentication_error")
    if "anthropic-version" not in request.headers:
        raise Rejected(400, "anthropic-version: header is required")
    if request.method == "GET":
        data = [{"type": "model", "id": m, "display_name": m, "created_at": _AT} for m in models]
        listing = {"data": data, "has_more": False, "first_id": None, "last_id": None}
        return Answer(200, _encoder.encode(listing))
    body = _checked(request.body, models)
    message = _message(body, _turns(body["messages"]), seq)
    if body.get("stream"):
        return Answer(200, events=tuple(_events(message)))
    return Answer(200, _encoder.encode(message))


_AT = "2025-01-01T00:00:00Z"


def _checked(raw: bytes, models: Collection[str]) -> Obj:
    try:
        body: Obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise Rejected(400, "There was an issue with the JSON body of your request.") from None
    for name in ("model", "messages", "max_tokens"):
        if name not in body:
            raise Rejected(400, f"{name}: Field required")
    if body.get("temperature", 0) > 1:
        raise Rejected(400, "temperature: Input should be less than or equal to 1")
    budget = (body.get("thinking") or {}).get("budget_tokens")
    if budget is not None and body["max_tokens"] <= budget:
        raise Rejected(400, "`max_tokens` must be greater than `thinking.budget_tokens`.")
    if body["model"] not in models:
        raise Rejected(404, f"model: {body['model']}", "not_found_error")
    return body


def _turns(messages: list[Obj]) -> list[tuple[str, list[Obj]]]:
    """Each message checked, consecutive same-role messages merged into one turn."""
    turns: list[tuple[str, list[Obj]]] = []
    for index, message in enumerate(messages):
        role, blocks = _checked_message(index, message, last=index == len(messages) - 1)
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    for index, (role, blocks) in enumerate(turns):
        if role == "assistant":
            _check_results(index, _ids(blocks, "tool_use", "id"), turns[index + 1 :])
    return turns


def _checked_message(index: int, message: Obj, *, last: bool) -> tuple[str, list[Obj]]:
    role, content = message.get("role"), message.get("content")
    if role == "system":
        raise Rejected(
            400,
            'messages: Unexpected role "system". The Messages API accepts a top-level `system`'
            ' parameter, not "system" as an input message role.',
        )
    if role not in ("user", "assistant"):
        raise Rejected(400, f"messages.{index}.role: Input should be 'user' or 'assistant'")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not blocks or blocks == [{"type": "text", "text": ""}]:
        if not (last and role == "assistant"):
            raise Rejected(
                400,
                f"messages.{index}: all messages must have non-empty content except for the"
                " optional final assistant message",
            )
        return role, []
    for number, block in enumerate(blocks):
        _check_block(f"messages.{index}.content.{number}", block)
    return role, list(blocks)


def _check_block(where: str, block: Obj) -> None:
    if block.get("type") == "text" and not block.get("text", "").strip():
        raise Rejected(400, "messages: text content blocks must contain non-whitespace text")
    if block.get("type") == "thinking":
        if "signature" not in block:
            raise Rejected(400, f"{where}.thinking.signature: Field required")
        if block["signature"] != signature(block.get("thinking", "")):
            raise Rejected(400, f"{where}: Invalid `signature` in `thinking` block")


def _check_results(index: int, used: list[str], after: list[tuple[str, list[Obj]]]) -> None:
    answered = _ids(after[0][1], "tool_result", "tool_use_id") if after else []
    if after and (stray := [i for i in answered if i not in used]):
        raise Rejected(
            400,
            f"messages.{index + 1}: unexpected `tool_use_id` found in `tool_result` blocks:"
            f" {stray[0]}. Each `tool_result` block must have a corresponding `tool_use` block"
            " in the previous message.",
        )
    if after and (missing := [i for i in used if i not in answered]):
        raise Rejected(
            400,
            f"messages.{index}: `tool_use` ids were found without `tool_result` blocks"
            f" immediately after: {', '.join(missing)}. Each `tool_use` block must have a"
            " corresponding `tool_result` block in the next message.",
        )


def _ids(blocks: list[Obj], kind: str, key: str) -> list[str]:
    return [block[key] for block in blocks if block.get("type") == kind]


def _message(body: Obj, turns: list[tuple[str, list[Obj]]], seq: int) -> Obj:
    said = _last_user_text(turns)
    blocks: list[Obj] = []
    if (body.get("thinking") or {}).get("type") in ("enabled", "adaptive"):
        thought = "The user said: " + said
        blocks.append({"type": "thinking", "thinking": thought, "signature": signature(thought)})
    tool = _chosen_tool(body, said)
    stop, stop_sequence = "tool_use", None
    if tool is not None:
        use = {"type": "tool_use", "id": f"toolu_fake{seq}", "name": tool, "input": {"query": said}}
        blocks.append(use)
    else:
        text, stop, stop_sequence = _cut("echo: " + said, body)
        blocks.append({"type": "text", "text": text})
    return {
        "id": f"msg_fake{seq}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": stop_sequence,
        "usage": _usage(body, blocks),
    }


def _last_user_text(turns: list[tuple[str, list[Obj]]]) -> str:
    users = [blocks for role, blocks in turns if role == "user"]
    blocks = users[-1] if users else []
    texts = [b["text"] for b in blocks if b.get("type") == "text"]
    results = [_text(b.get("content")) for b in blocks if b.get("type") == "tool_result"]
    return " ".join(texts or results)


def _text(content: object) -> str:
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if b.get("type") == "text")
    return content if isinstance(content, str) else ""


def _chosen_tool(body: Obj, said: str) -> str | None:
    tools, choice = body.get("tools") or [], body.get("tool_choice") or {"type": "auto"}
    if not tools or choice["type"] == "none":
        return None
    if choice["type"] == "tool":
        return str(choice["name"])
    wanted = choice["type"] == "any" or "weather" in said.lower()
    return str(tools[0]["name"]) if wanted else None


def _cut(text: str, body: Obj) -> tuple[str, str, str | None]:
    for stop in body.get("stop_sequences") or ():
        if stop in text:
            return text[: text.index(stop)], "stop_sequence", stop
    words = text.split()
    if len(words) > body["max_tokens"]:
        return " ".join(words[: body["max_tokens"]]), "max_tokens", None
    return text, "end_turn", None


def _usage(body: Obj, blocks: list[Obj]) -> Obj:
    total = cached = _words(_text(body.get("system")))
    cached = cached if _cached(body.get("system")) else 0
    for message in body["messages"]:
        content = message["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts:
            total += _words(part.get("text") or _text(part.get("content")))
            cached = total if "cache_control" in part else cached
    thinking = sum(_words(b["thinking"]) for b in blocks if b["type"] == "thinking")
    output = thinking + sum(
        _words(b.get("text", "")) or 1 for b in blocks if b["type"] != "thinking"
    )
    usage: Obj = {"input_tokens": total - cached, "output_tokens": output}
    usage |= {"cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}
    if thinking:
        usage["output_tokens_details"] = {"thinking_tokens": thinking}
    return usage


def _cached(system: object) -> bool:
    return isinstance(system, list) and any("cache_control" in block for block in system)


def _words(text: str) -> int:
    return len(text.split())


def _events(message: Obj) -> list[bytes]:
    usage, blocks = message["usage"], message["content"]
    head = message | {"content": [], "stop_reason": None, "stop_sequence": None}
    head["usage"] = usage | {"output_tokens": 1}
    events = [sse("message_start", {"type": "message_start", "message": head})]
    events.append(sse("ping", {"type": "ping"}))
    for index, block in enumerate(blocks):
        events.extend(_block_events(index, block))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    events.append(sse("message_stop", {"type": "message_stop"}))
    return events


def _block_events(index: int, block: Obj) -> list[bytes]:
    kind = block["type"]
    if kind == "thinking":
        start: Obj = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "tool_use":
        start = block | {"input": {}}
        raw = _encoder.encode(block["input"]).decode()
        cuts = [0, len(raw) // 3, 2 * len(raw) // 3, len(raw)]
        fragments = [raw[a:b] for a, b in itertools.pairwise(cuts)]
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
    else:
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
    frames: list[Obj] = [{"type": "content_block_start", "index": index, "content_block": start}]
    frames += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
    frames.append({"type": "content_block_stop", "index": index})
    return [sse(frame["type"], frame) for frame in frames]


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+|\s+$", text)


# --- the server -------------------------------------------------------------------------------


class FakeAnthropic(server.FakeServer[Fault]):
    """The ASGI app and what tests observe: ``requests``.

    ``script(*faults)`` queues faults for the next valid ``POST /v1/messages`` requests, in order.
    """

    def __init__(self, api_key: str, models: Collection[str]) -> None:
        super().__init__()
        self.api_key = api_key
        self.models = models

    async def handle(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        request, seq = self.record(scope, await server.read_body(receive) or b"")
        reply = answer(request, api_key=self.api_key, models=self.models, seq=seq)
        valid = reply.status < 400 and request.method == "POST"
        fault = self.take_fault(request.path) if valid else None
        await _perform(send, reply, fault, {"request-id": f"req_fake{seq}"})


async def _perform(
    send: ASGISendCallable, reply: Answer, fault: Fault | None, headers: dict[str, str]
) -> None:
    streamed = reply.events is not None
    frames = list(reply.events or ()) if streamed else [reply.body]
    headers = headers | {"content-type": "text/event-stream; charset=utf-8" if streamed else JSON}
    match fault:
        case Respond(status=status, headers=extra):
            fields = headers | {"content-type": JSON} | dict(extra)
            await server.send_response(send, status, fields, [fault.raw_body()])
        case StreamError(after_events=after, type=kind, message=message) if streamed:
            error = sse("error", error_body(kind, message))  # the event has the body's shape
            await server.send_response(send, 200, headers, [*frames[:after], error])
        case Cut(after_events=after):
            kept = frames[:after] if streamed else [reply.body[: len(reply.body) // 2]]
            await server.send_response(send, reply.status, headers, kept, cut=True)
        case _:
            await server.send_response(send, reply.status, headers, frames)


@asynccontextmanager
async def open_fake_anthropic(
    api_key: str = DEFAULT_API_KEY, *, models: Collection[str] = DEFAULT_MODELS
) -> AsyncIterator[FakeAnthropic]:
    """Serve a `FakeAnthropic` on 127.0.0.1 (random port) until the block exits."""
    fake = FakeAnthropic(api_key, models)
    async with server.open_loopback_server(fake) as base_url:
        fake.base_url = base_url
        yield fake
