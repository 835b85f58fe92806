"""What one ``/v1`` request has done so far (``Flight``) and the record it becomes.

The handler fills a ``Flight`` as the request goes (auth, routing, attempts, chunks); when the
request ends, ``exchange_record`` turns it into the ``Exchange`` the logger actor receives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from actorproxy import asgi, errors
from actorproxy.adapters.base import Endpoint
from actorproxy.auth import Principal
from actorproxy.dialects import OPENAI, Dialect, StreamEncoder
from actorproxy.limits.usage import TokenUsage
from actorproxy.routing import Target
from actorproxy.schema.records import Attempt
from actorproxy.schema.records import Exchange as ExchangeRecord
from actorproxy.tracing import TraceContext

CLIENT_CLOSED = 499  # nginx's code for "client closed request", used in records only
NO_USAGE = TokenUsage(0, 0)


@dataclass(slots=True)
class Flight:
    """What one request has done so far; becomes its dataset record."""

    request_id: str
    endpoint: Endpoint
    started: float
    wall_start: float
    principal: Principal | None = None
    model: str | None = None
    stream: bool = False
    status: int = 0
    error: errors.ProxyError | None = None
    response_started: bool = False
    finished: bool = False  # the last part of the response is being handed to the server
    upstream_s: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    target: Target | None = None
    trace_id: str | None = None
    trace: TraceContext | None = None  # W3C context; the upstream's traceparent comes from it
    body: bytes = b""
    response_body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)
    chunk_offsets_ms: list[float] = field(default_factory=list)
    queue_s: float | None = None
    dialect: Dialect = OPENAI
    encoder: StreamEncoder | None = None  # the dialect's, for a stream it re-encodes
    rate_headers: asgi.Headers = field(default_factory=list)  # the key's x-ratelimit-*
    usage: TokenUsage | None = None  # what the upstream reported (the actor's reply)

    def headers(self) -> asgi.Headers:
        return [(b"x-request-id", self.request_id.encode()), *self.rate_headers]

    def overhead_header(self, upstream_s: float) -> tuple[bytes, bytes]:
        overhead_ms = max(0.0, (trio.current_time() - self.started - upstream_s) * 1000)
        return (b"x-actorproxy-overhead-ms", f"{overhead_ms:.3f}".encode())


def attempt_record(
    target: Target, status: int, error_type: str | None, offset: float, flight: Flight
) -> Attempt:
    now = trio.current_time()
    first_chunk = flight.chunk_offsets_ms[0] if flight.chunk_offsets_ms else None
    return Attempt(
        provider=target.provider,
        upstream_model=target.model,
        status_code=status or CLIENT_CLOSED,
        error_type=error_type,
        start_offset_ms=(offset - flight.started) * 1000,
        latency_ms=(now - offset) * 1000,
        ttft_ms=None if first_chunk is None else first_chunk - (offset - flight.started) * 1000,
    )


def exchange_record(flight: Flight, replica: str) -> ExchangeRecord:
    now = trio.current_time()
    target, principal = flight.target, flight.principal
    ms = 1000.0
    return ExchangeRecord(
        request_id=flight.request_id,
        trace_id=flight.trace_id,
        ts_start=flight.wall_start,
        ts_end=flight.wall_start + (now - flight.started),
        replica=replica,
        endpoint=flight.endpoint,
        api_key_id=principal.key_id if principal else "unauthenticated",
        log_bodies=principal.log_bodies if principal else True,
        model_requested=flight.model,
        provider=target.provider if target else None,
        upstream_model=target.model if target else None,
        stream=flight.stream,
        status_code=flight.status,
        error_type=flight.error.type if flight.error else None,
        latency_ms=(now - flight.started) * ms,
        upstream_ms=None if flight.upstream_s is None else flight.upstream_s * ms,
        queue_ms=None if flight.queue_s is None else flight.queue_s * ms,
        ttft_ms=flight.chunk_offsets_ms[0] if flight.chunk_offsets_ms else None,
        request_body=flight.body,
        response_body=flight.response_body,
        chunks=flight.chunks,
        chunk_offsets_ms=flight.chunk_offsets_ms,
        attempts=flight.attempts,
    )


def real_usage(flight: Flight) -> TokenUsage | None:
    """The request's real usage from the response it got; ``None`` when it cannot be known.

    A request that got only errors, none of them a timeout, cost nothing: upstreams do not bill
    an error answer. A timeout, a client that left, or a cut stream may have been billed.
    """
    if 200 <= flight.status < 300:
        return flight.usage
    if flight.response_started or flight.status == CLIENT_CLOSED:
        return None
    if any(attempt.status_code == errors.UpstreamTimeout.status for attempt in flight.attempts):
        return None
    return NO_USAGE
