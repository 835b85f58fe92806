"""Turn raw ``Exchange``s (bytes and timings from the hot path) into dataset ``RequestRecord``s.

Runs in the logger actor's worker thread, never on the event loop. Pure: no I/O, no clock.
It reads the sampling parameters from the request, the usage and finish reason from the response
(for a stream: from its SSE events, which it also assembles into one final completion object),
estimates usage when the upstream left it out (``usage_estimated``), and redacts both bodies.

``derive_all`` works on a batch so that redaction can be prefiltered for all of its bodies at
once (``prefilter``: one RE2 pass without the GIL); only bodies that may hold something a
detector looks for are scanned in Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import attrgetter
from typing import Protocol

import msgspec

from actorproxy.adapters.sse import SSEDecoder
from actorproxy.schema.records import Exchange, RequestFacts, RequestRecord, Sampling, Usage
from actorproxy.storage import assemble
from actorproxy.storage.prefilter import Prefilter


class Redactor(Protocol):
    @property
    def gates(self) -> Sequence[str | None]: ...

    def redact_json(self, body: bytes, candidates: int = ...) -> tuple[str | None, int]: ...


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
_FACTS = RequestFacts.__struct_fields__
_facts = attrgetter(*_FACTS)


class _Parsed(msgspec.Struct):
    """A record's response side: chunk offsets, the body to store, what it says."""

    offsets: list[float]
    response: bytes
    finish_reason: str | None
    usage: Usage


def derive(exchange: Exchange, redactor: Redactor | None) -> RequestRecord:
    """The dataset row for ``exchange``; bodies are redacted by ``redactor`` when given."""
    return derive_all([exchange], redactor)[0]


def derive_all(exchanges: Sequence[Exchange], redactor: Redactor | None) -> list[RequestRecord]:
    """The dataset rows for ``exchanges``, in order; bodies are redacted by ``redactor``."""
    parsed = [_parse(exchange) for exchange in exchanges]
    bodies = _bodies(exchanges, parsed, redactor)
    return [
        _record(exchange, part, body)
        for exchange, part, body in zip(exchanges, parsed, bodies, strict=True)
    ]


def _parse(exchange: Exchange) -> _Parsed:
    ok = 200 <= exchange.status_code < 300
    if exchange.stream and exchange.chunks:
        offsets, events = _events(exchange.chunks, exchange.chunk_offsets_ms)
        view = assemble.from_stream(events, exchange.endpoint) if ok else None
        response = _encoder.encode(view) if view is not None else b"".join(exchange.chunks)
    else:
        offsets, response = [], exchange.response_body
        view = _decode_response(response) if ok else None
    return _Parsed(offsets, response, assemble.finish_reason(view), _usage(exchange, view, ok))


def _record(
    exchange: Exchange, parsed: _Parsed, bodies: tuple[str | None, str | None, int]
) -> RequestRecord:
    request_text, response_text, redactions = bodies
    return RequestRecord(
        **dict(zip(_FACTS, _facts(exchange), strict=True)),
        finish_reason=parsed.finish_reason,
        chunk_offsets_ms=parsed.offsets,
        usage=parsed.usage,
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


def _reported(reported: assemble.UsageView) -> Usage:
    prompt, completion = reported.prompt_tokens_details, reported.completion_tokens_details
    return Usage(
        prompt_tokens=reported.prompt_tokens,
        completion_tokens=reported.completion_tokens,
        total_tokens=reported.total_tokens,
        cached_tokens=prompt.cached_tokens if prompt else None,
        reasoning_tokens=completion.reasoning_tokens if completion else None,
    )


def _usage(exchange: Exchange, view: assemble.ResponseView | None, ok: bool) -> Usage:
    if view is not None and view.usage is not None:
        return _reported(view.usage)
    if not ok or view is None:
        return Usage()
    prompt = _estimate(len(exchange.request_body))
    completion = _estimate(len(assemble.text(view).encode()))
    return Usage(prompt, completion, prompt + completion, estimated=True)


def _estimate(size: int) -> int:
    """Roughly four bytes a token, the rule of thumb for English BPE vocabularies."""
    return math.ceil(size / 4)


_NO_BODIES: tuple[None, None, int] = (None, None, 0)


def _bodies(
    exchanges: Sequence[Exchange], parsed: Sequence[_Parsed], redactor: Redactor | None
) -> list[tuple[str | None, str | None, int]]:
    """Per record: request text, response text, redactions (prefiltered for the whole batch)."""
    kept = [
        (x.request_body, p.response) if x.log_bodies else None
        for x, p in zip(exchanges, parsed, strict=True)
    ]
    if redactor is None:
        return [(_text(pair[0]), _text(pair[1]), 0) if pair else _NO_BODIES for pair in kept]
    flat = [body for pair in kept if pair for body in pair]
    masks = iter(Prefilter(redactor.gates).candidates(flat))
    results: list[tuple[str | None, str | None, int]] = []
    for pair in kept:
        if pair is None:
            results.append(_NO_BODIES)
            continue
        request_text, request_count = redactor.redact_json(pair[0], next(masks))
        response_text, response_count = redactor.redact_json(pair[1], next(masks))
        results.append((request_text, response_text, request_count + response_count))
    return results


def _text(body: bytes) -> str | None:
    return body.decode("utf-8", "replace") if body else None
