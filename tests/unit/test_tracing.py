"""W3C traceparent parsing and the context each request gets (pure)."""

from __future__ import annotations

import pytest

from actorproxy import tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-{SPAN}-01", (TRACE, SPAN, 1)),
        (f"00-{TRACE}-{SPAN}-00", (TRACE, SPAN, 0)),
        (f" 00-{TRACE}-{SPAN}-01 ", (TRACE, SPAN, 1)),
        (f"01-{TRACE}-{SPAN}-01-future", (TRACE, SPAN, 1)),  # later versions may add fields
        (f"00-{TRACE}-{SPAN}-01-extra", None),
        (f"ff-{TRACE}-{SPAN}-01", None),
        (f"00-{'0' * 32}-{SPAN}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE.upper()}-{SPAN}-01", None),
        (f"00-{TRACE[:-1]}-{SPAN}-01", None),
        ("00-abc-def-01", None),
        ("", None),
    ],
)
def test_parse(header: str, expected: tuple[str, str, int] | None) -> None:
    assert tracing.parse(header.encode()) == expected


def test_a_valid_context_keeps_the_trace_and_gets_a_span_of_its_own() -> None:
    headers = [(b"traceparent", f"00-{TRACE}-{SPAN}-01".encode()), (b"tracestate", b"a=1")]
    context = tracing.from_headers(headers)
    assert (context.trace_id, context.parent_id, context.sampled) == (TRACE, SPAN, True)
    assert len(context.span_id) == 16 and context.span_id != SPAN
    assert context.upstream_headers() == [
        (b"traceparent", f"00-{TRACE}-{context.span_id}-01".encode()),
        (b"tracestate", b"a=1"),
    ]


def test_no_or_an_invalid_context_starts_a_sampled_trace() -> None:
    for headers in ([], [(b"traceparent", b"garbage"), (b"tracestate", b"a=1")]):
        context = tracing.from_headers(headers)
        assert len(context.trace_id) == 32 and context.parent_id is None and context.sampled
        assert context.tracestate is None
        assert tracing.parse(context.traceparent()) == (context.trace_id, context.span_id, 1)
