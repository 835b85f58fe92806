"""Turn a raw ``Exchange`` (bytes and timings from the hot path) into a dataset ``RequestRecord``.

Runs in the logger actor's worker thread, never on the event loop. Pure: no I/O, no clock.
It reads the sampling parameters from the request, the usage and finish reason from the response
(for a stream: from its SSE events, which it also assembles into one final completion object),
estimates usage when the upstream left it out (``usage_estimated``), and redacts both bodies.
"""

from __future__ import annotations

import math
from typing import Protocol

import msgspec

from actorproxy.adapters.sse import SSEDecoder
from actorproxy.schema.records import Exchange, RequestFacts, RequestRecord, Sampling, Usage
from actorproxy.storage import assemble


class Redactor(Protocol):
    def redact_json(self, body: bytes) -> tuple[str | None, int]: ...


class _Format(msgspec.Struct):
    type: str | None = None


class _SamplingView(msgspec.Struct):
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    seed: int | None = None
    tools: list[msgspec.Raw] | None = None
    response_format: _Format | None = None


_sampling = msgspec.json.Decoder(_SamplingView)
_response = msgspec.json.Decoder(assemble.ResponseView)
_encoder = msgspec.json.Encoder()


def derive(exchange: Exchange, redactor: Redactor | None) -> RequestRecord:
    """The dataset row for ``exchange``; bodies are redacted by ``redactor`` when given."""
    ok = 200 <= exchange.status_code < 300
    if exchange.stream and exchange.chunks:
        offsets, events = _events(exchange.chunks, exchange.chunk_offsets_ms)
        view = assemble.from_stream(events, exchange.endpoint) if ok else None
        response = _encoder.encode(view) if view is not None else b"".join(exchange.chunks)
    else:
        offsets, response = [], exchange.response_body
        view = _decode_response(response) if ok else None
    usage = _usage(exchange, view, ok)
    request_text, response_text, redactions = _bodies(exchange, response, redactor)
    facts = {name: getattr(exchange, name) for name in RequestFacts.__struct_fields__}
    return RequestRecord(
        **facts,
        finish_reason=assemble.finish_reason(view),
        chunk_offsets_ms=offsets,
        usage=usage,
        sampling=sampling(exchange.request_body),
        request_body=request_text,
        response_body=response_text,
        redactions=redactions,
    )


def sampling(body: bytes) -> Sampling:
    try:
        view = _sampling.decode(body)
    except msgspec.DecodeError:
        return Sampling()
    return Sampling(
        temperature=view.temperature,
        top_p=view.top_p,
        max_tokens=view.max_completion_tokens or view.max_tokens,
        n=view.n,
        seed=view.seed,
        tool_count=None if view.tools is None else len(view.tools),
        response_format=view.response_format.type if view.response_format else None,
    )


def _events(chunks: list[bytes], arrived: list[float]) -> tuple[list[float], list[str]]:
    """Each SSE data payload (``[DONE]`` excluded), and when the chunk that completed it arrived."""
    decoder = SSEDecoder()
    offsets: list[float] = []
    events: list[str] = []
    for chunk, at in zip(chunks, arrived, strict=False):
        for event in decoder.feed(chunk):
            if event.data and event.data != "[DONE]":
                events.append(event.data)
                offsets.append(at)
    return offsets, events


def _decode_response(body: bytes) -> assemble.ResponseView | None:
    try:
        return _response.decode(body)
    except msgspec.DecodeError:
        return None


def _usage(exchange: Exchange, view: assemble.ResponseView | None, ok: bool) -> Usage:
    reported = view.usage if view is not None else None
    if reported is not None:
        return Usage(
            prompt_tokens=reported.prompt_tokens,
            completion_tokens=reported.completion_tokens,
            total_tokens=reported.total_tokens,
            cached_tokens=reported.prompt_tokens_details.cached_tokens
            if reported.prompt_tokens_details
            else None,
            reasoning_tokens=reported.completion_tokens_details.reasoning_tokens
            if reported.completion_tokens_details
            else None,
        )
    if not ok or view is None:
        return Usage()
    prompt = _estimate(len(exchange.request_body))
    completion = _estimate(len(assemble.text(view).encode()))
    return Usage(prompt, completion, prompt + completion, estimated=True)


def _estimate(size: int) -> int:
    """Roughly four bytes a token, the rule of thumb for English BPE vocabularies."""
    return math.ceil(size / 4)


def _bodies(
    exchange: Exchange, response: bytes, redactor: Redactor | None
) -> tuple[str | None, str | None, int]:
    if not exchange.log_bodies:
        return None, None, 0
    if redactor is None:
        return _text(exchange.request_body), _text(response), 0
    request_text, request_count = redactor.redact_json(exchange.request_body)
    response_text, response_count = redactor.redact_json(response)
    return request_text, response_text, request_count + response_count


def _text(body: bytes) -> str | None:
    return body.decode("utf-8", "replace") if body else None
