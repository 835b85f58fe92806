"""W3C trace context (``traceparent``/``tracestate``): accept it, make one, pass it upstream.

Pure: no I/O, no clock. Each request gets a ``TraceContext``: the client's trace id (or a new
one when the client sent none or an invalid one), the client's span as our parent, and a new span
id for the proxy's own request span. The upstream receives a ``traceparent`` naming that span as
its parent, and the client's ``tracestate`` unchanged. The optional OTel exporter (``otel.py``)
exports the request span under exactly these ids, so the client's trace, ours and the upstream's
join up.

    traceparent: 00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

_TRACEPARENT = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
SAMPLED = 0x01


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    span_id: str  # the proxy's request span
    parent_id: str | None  # the client's span, when it sent one
    flags: int = SAMPLED
    tracestate: bytes | None = None

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def traceparent(self) -> bytes:
        """The header the upstream gets: our request span is its parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}".encode()

    def upstream_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"traceparent", self.traceparent())]
        if self.tracestate is not None:
            headers.append((b"tracestate", self.tracestate))
        return headers


def new_span_id() -> str:
    return secrets.token_hex(8)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def parse(traceparent: bytes | None) -> tuple[str, str, int] | None:
    """``(trace_id, parent_span_id, flags)`` of a valid header, else None (W3C level 1 rules)."""
    if traceparent is None:
        return None
    match = _TRACEPARENT.match(traceparent.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = (
        part.decode() if part is not None else None for part in match.groups()
    )
    assert version is not None and trace_id and parent_id and flags is not None
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, int(flags, 16)


def from_headers(headers: Iterable[tuple[bytes, bytes]]) -> TraceContext:
    """The request's context from its (ASGI, lowercased) headers; a new trace when none is valid.

    An invalid ``traceparent`` starts a new trace and drops the ``tracestate`` that came with it,
    as the W3C recommendation says.
    """
    traceparent = tracestate = None
    for name, value in headers:
        if name == b"traceparent":
            traceparent = value
        elif name == b"tracestate":
            tracestate = value
    parsed = parse(traceparent)
    if parsed is None:
        return TraceContext(new_trace_id(), new_span_id(), None)
    trace_id, parent_id, flags = parsed
    return TraceContext(trace_id, new_span_id(), parent_id, flags, tracestate)
