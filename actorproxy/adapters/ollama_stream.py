"""Ollama's replies in OpenAI's shape: whole bodies, errors, and NDJSON streams as SSE frames.

Ollama streams one JSON object per line, the last with ``done: true``. A chat stream becomes a
``role`` chunk, one chunk per piece of thinking (``reasoning_content``), text or tool calls, a
chunk with ``finish_reason`` and ``timings``, the usage chunk (``choices: []``; sent only when the
client asked with ``stream_options.include_usage``, else returned by ``withheld()``), then
``data: [DONE]``. A generate stream is the same in ``text_completion`` chunks, without the role
chunk. Tool calls get ids ``call_<request id>_0``, ``_1``, ... in arrival order.
docs/providers/ollama.md has the full mapping.

An ``{"error": ...}`` line raises ``errors.UpstreamFailed``, an unparseable one
``errors.CannotUnderstand``, each once the frames of the lines before it have been returned; a
body that ends before ``done: true`` makes ``end()`` raise ``errors.UpstreamProtocolError``.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from actorproxy import errors
from actorproxy.adapters.openai import KEPT_ERROR_HEADERS
from actorproxy.adapters.tool_repair import RepairedCall, StreamHold, parse_tool_calls
from actorproxy.net.base import Headers
from actorproxy.schema import ollama, openai

DONE = b"data: [DONE]\n\n"
_FINISH = {"length": "length"}
_NS_PER_MS = 1_000_000

Line = TypeVar("Line", ollama.ChatLine, ollama.GenerateLine)
Choice = TypeVar("Choice", openai.ChunkChoice, openai.CompletionChoice)
_Usage = openai.Usage | UnsetType | None


@dataclass(frozen=True, slots=True)
class Head:
    """What a reply repeats: its id, time and model, and what the client's request asked for."""

    id: str
    created: int
    model: str  # until Ollama names the model it used
    include_usage: bool = False
    tool_names: frozenset[str] = frozenset()  # offered tools, when repair is on


def decode_line(decoder: msgspec.json.Decoder[Line], raw: bytes) -> Line:
    """One reply object; an error object raises ``UpstreamFailed``, garbage ``CannotUnderstand``."""
    try:
        line = decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise errors.CannotUnderstand(f"Ollama sent an invalid reply line: {exc}") from None
    if line.error is not None:
        raise errors.UpstreamFailed(f"Ollama reported an error: {line.error}")
    return line


def finish_reason(done_reason: str | None) -> str:
    return _FINISH.get(done_reason or "", "stop")


def usage(metrics: ollama.Metrics) -> openai.Usage:
    prompt, completion = metrics.prompt_eval_count or 0, metrics.eval_count or 0
    return openai.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def timings(metrics: ollama.Metrics) -> ollama.Timings | UnsetType:
    """Ollama's nanosecond durations in milliseconds; ``UNSET`` when it sent none."""
    result = ollama.Timings(
        prompt_ms=_ms(metrics.prompt_eval_duration),
        predicted_ms=_ms(metrics.eval_duration),
        load_ms=_ms(metrics.load_duration),
        total_ms=_ms(metrics.total_duration),
    )
    return UNSET if result == ollama.Timings() else result


def _ms(nanoseconds: int | None) -> float | UnsetType:
    return UNSET if nanoseconds is None else nanoseconds / _NS_PER_MS


def tool_call(reply_id: str, number: int, call: RepairedCall) -> dict[str, object]:
    """A call with an id unique across replies (clients keep ids over many turns)."""
    function = {"name": call.name, "arguments": call.arguments}
    unique = reply_id.partition("-")[2] or reply_id
    return {"id": f"call_{unique}_{number}", "type": "function", "function": function}


def native_calls(message: ollama.ReplyMessage) -> list[RepairedCall]:
    """Ollama's own tool calls, their arguments as JSON text."""
    return [
        RepairedCall(call.function.name, _arguments_text(call.function.arguments))
        for call in message.tool_calls or ()
    ]


def _arguments_text(raw: msgspec.Raw) -> str:
    text = bytes(raw).decode()
    return "{}" if text in ("", "null") else text


# --- whole replies ----------------------------------------------------------------------------


def decode_chat(head: Head, body: bytes) -> bytes:
    """The ``chat.completion`` for a non-streamed ``/api/chat`` reply."""
    line = decode_line(ollama.chat_line_decoder, body)
    message = line.message or ollama.ReplyMessage()
    calls, content = native_calls(message), message.content
    if repaired := parse_tool_calls(content or "", head.tool_names):
        calls, content = [*calls, *repaired], None
    reply = ollama.ChatMessage(
        content=(content or None) if calls else (content or ""),
        tool_calls=[tool_call(head.id, n, call) for n, call in enumerate(calls)] or UNSET,
        reasoning_content=message.thinking or UNSET,
    )
    reason = "tool_calls" if calls else finish_reason(line.done_reason)
    choice = openai.ChatCompletionChoice(index=0, message=reply, finish_reason=reason)
    h, model, total, timing = head, line.model or head.model, usage(line), timings(line)
    completion = ollama.ChatCompletion(
        id=h.id, created=h.created, model=model, choices=[choice], usage=total, timings=timing
    )
    return ollama.encoder.encode(completion)


def decode_generate(head: Head, body: bytes) -> bytes:
    """The ``text_completion`` for a non-streamed ``/api/generate`` reply."""
    line = decode_line(ollama.generate_line_decoder, body)
    reason = finish_reason(line.done_reason)
    choice = openai.CompletionChoice(text=line.response or "", index=0, finish_reason=reason)
    h, model, total, timing = head, line.model or head.model, usage(line), timings(line)
    completion = ollama.Completion(
        id=h.id, created=h.created, model=model, choices=[choice], usage=total, timings=timing
    )
    return ollama.encoder.encode(completion)


def decode_embeddings(head: Head, body: bytes, *, as_base64: bool) -> bytes:
    """The OpenAI embedding list for an ``/api/embed`` reply."""
    try:
        reply = ollama.embed_reply_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise errors.CannotUnderstand(f"Ollama sent an invalid embedding reply: {exc}") from None
    data = [
        openai.Embedding(index=index, embedding=_vector(vector, as_base64))
        for index, vector in enumerate(reply.embeddings)
    ]
    tokens = reply.prompt_eval_count or 0
    total = openai.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    model = reply.model or head.model
    return ollama.encoder.encode(openai.EmbeddingResponse(data=data, model=model, usage=total))


def _vector(values: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return values
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def decode_error(status: int, headers: Headers, body: bytes) -> errors.UpstreamHTTPError:
    """Ollama's ``{"error": "..."}`` as an OpenAI error with the same status."""
    kept = [(name, value) for name, value in headers if name in KEPT_ERROR_HEADERS]
    try:
        message = ollama.error_decoder.decode(body).error
    except msgspec.DecodeError:
        message = f"Ollama answered HTTP {status} without an error message."
    if status >= 500:
        kind, code = "server_error", None
    elif status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    else:
        kind, code = "invalid_request_error", "model_not_found" if status == 404 else None
    return errors.UpstreamHTTPError(status, errors.ErrorBody(message, kind, code=code), kept)


# --- streams ----------------------------------------------------------------------------------


class LineSplitter:
    """NDJSON framing: bytes split anywhere in, whole non-blank lines out."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._pending += data
        if b"\n" not in data:
            return []
        *lines, self._pending = self._pending.split(b"\n")
        return [bytes(line) for line in lines if line.strip()]

    def flush(self) -> bytes:
        """The unterminated last line, if any."""
        rest, self._pending = bytes(self._pending).strip(), bytearray()
        return rest


class _Stream(Generic[Choice]):
    """What both translators share: framing, chunk envelopes, the end, the usage chunk.

    No I/O: a cancelled reader just stops feeding it, and the bytes it buffers are dropped.
    """

    def __init__(self, head: Head) -> None:
        self._head = head
        self._model = head.model
        self._lines = LineSplitter()
        self._done = False
        self._withheld = b""
        self._failure: errors.ProxyError | None = None

    def feed(self, data: bytes) -> bytes:
        return self._lines_to_frames(self._lines.feed(data))

    def end(self) -> bytes:
        tail = self._lines.flush()
        frames = self._lines_to_frames([tail] if tail else [])
        if self._failure is not None:
            raise self._failure
        if not self._done:
            raise errors.UpstreamProtocolError("Ollama's stream ended before its final line.")
        return frames + DONE

    def withheld(self) -> bytes:
        return self._withheld

    def _lines_to_frames(self, lines: list[bytes]) -> bytes:
        """The frames of whole lines; a failure is raised once the frames before it are out."""
        if self._failure is not None:
            raise self._failure
        frames: list[bytes] = []
        for raw in lines:
            if self._done:
                break
            try:
                frames.extend(self._frames(raw))
            except errors.ProxyError as failure:
                self._failure = failure
                break
        if self._failure is not None and not frames:
            raise self._failure
        return b"".join(frames)

    def _frames(self, raw: bytes) -> list[bytes]:
        raise NotImplementedError  # the frames for one whole line

    def _envelope(
        self, choices: list[Choice], total: _Usage, timing: ollama.Timings | UnsetType
    ) -> msgspec.Struct:
        raise NotImplementedError

    def _frame(self, choice: Choice, timing: ollama.Timings | UnsetType = UNSET) -> bytes:
        total = None if self._head.include_usage else UNSET
        return frame(self._envelope([choice], total, timing))

    def _finish(self, metrics: ollama.Metrics) -> list[bytes]:
        """The usage chunk, sent or withheld; the stream is over."""
        self._done = True
        chunk = frame(self._envelope([], usage(metrics), UNSET))
        if self._head.include_usage:
            return [chunk]
        self._withheld = chunk
        return []


class ChatStream(_Stream[openai.ChunkChoice]):
    """``/api/chat`` NDJSON in, ``chat.completion.chunk`` frames out."""

    def __init__(self, head: Head) -> None:
        super().__init__(head)
        self._started = False
        self._calls = 0
        self._hold = StreamHold(head.tool_names) if head.tool_names else None

    def _frames(self, raw: bytes) -> list[bytes]:
        line = decode_line(ollama.chat_line_decoder, raw)
        self._model = line.model or self._model
        frames: list[bytes] = []
        if not self._started:
            self._started = True
            frames.append(self._delta(ollama.ChunkDelta(role="assistant", content="")))
        if line.message is not None:
            frames.extend(self._message(line.message))
        if line.done:
            frames.extend(self._end_of_message(line))
        return frames

    def _message(self, message: ollama.ReplyMessage) -> list[bytes]:
        frames: list[bytes] = []
        if message.thinking:
            frames.append(self._delta(ollama.ChunkDelta(reasoning_content=message.thinking)))
        text = message.content or ""
        if text and self._hold is not None:
            text = self._hold.feed(text)
        if text:
            frames.append(self._delta(ollama.ChunkDelta(content=text)))
        return frames + self._tool_calls(native_calls(message))

    def _end_of_message(self, line: ollama.ChatLine) -> list[bytes]:
        frames: list[bytes] = []
        if self._hold is not None:
            text, calls = self._hold.finish()
            if text:
                frames.append(self._delta(ollama.ChunkDelta(content=text)))
            frames.extend(self._tool_calls(calls))
        reason = "tool_calls" if self._calls else finish_reason(line.done_reason)
        frames.append(self._delta(ollama.ChunkDelta(), reason, timings(line)))
        return frames + self._finish(line)

    def _tool_calls(self, calls: list[RepairedCall]) -> list[bytes]:
        if not calls:
            return []
        deltas: list[dict[str, object]] = []
        for call in calls:
            number, self._calls = self._calls, self._calls + 1
            deltas.append({"index": number, **tool_call(self._head.id, number, call)})
        return [self._delta(ollama.ChunkDelta(tool_calls=deltas))]

    def _delta(
        self,
        delta: ollama.ChunkDelta,
        reason: str | None = None,
        timing: ollama.Timings | UnsetType = UNSET,
    ) -> bytes:
        return self._frame(openai.ChunkChoice(index=0, delta=delta, finish_reason=reason), timing)

    def _envelope(
        self, choices: list[openai.ChunkChoice], total: _Usage, timing: ollama.Timings | UnsetType
    ) -> ollama.ChatCompletionChunk:
        h, model = self._head, self._model
        return ollama.ChatCompletionChunk(
            id=h.id, created=h.created, model=model, choices=choices, usage=total, timings=timing
        )


class GenerateStream(_Stream[openai.CompletionChoice]):
    """``/api/generate`` NDJSON in, ``text_completion`` chunk frames out."""

    def _frames(self, raw: bytes) -> list[bytes]:
        line = decode_line(ollama.generate_line_decoder, raw)
        self._model = line.model or self._model
        frames: list[bytes] = []
        if line.response:
            frames.append(self._frame(openai.CompletionChoice(text=line.response, index=0)))
        if line.done:
            reason = finish_reason(line.done_reason)
            last = openai.CompletionChoice(text="", index=0, finish_reason=reason)
            frames.append(self._frame(last, timings(line)))
            frames.extend(self._finish(line))
        return frames

    def _envelope(
        self,
        choices: list[openai.CompletionChoice],
        total: _Usage,
        timing: ollama.Timings | UnsetType,
    ) -> ollama.Completion:
        h, model = self._head, self._model
        return ollama.Completion(
            id=h.id, created=h.created, model=model, choices=choices, usage=total, timings=timing
        )


def frame(value: msgspec.Struct) -> bytes:
    return b"data: " + ollama.encoder.encode(value) + b"\n\n"
