"""OpenTelemetry span export over OTLP/HTTP (the ``otel`` extra).

Imported only when ``[tracing] otlp_endpoint`` is set (``ops.span_export``); without the extra
nothing in the proxy imports OpenTelemetry. Spans are built after the fact, once per finished
request, from its ``Flight``, under the ids ``tracing.TraceContext`` chose, so the span the
upstream saw as its parent (``traceparent``) is the request span exported here:

    <client span>                       (from the client's traceparent, when it sent one)
    └── request  "chat gpt-4o-mini"     SERVER, the whole request
        ├── queue wait                  INTERNAL, the last attempt's wait for a provider slot
        ├── attempt  "chat gpt-4o-mini" CLIENT, one per upstream attempt (fallbacks too)
        └── ...

Attributes follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``). Export happens in
the SDK's ``BatchSpanProcessor`` thread: the event loop only queues finished spans.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import trio
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from actorproxy import __version__
from actorproxy.config import TracingConfig
from actorproxy.flight import Flight
from actorproxy.schema.records import Attempt
from actorproxy.telemetry import usage_of
from actorproxy.tracing import TraceContext, new_span_id

OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
Attributes = dict[str, str | int | float]
Clock = Callable[[float], int]  # seconds after the request started -> Unix nanoseconds


class SpanExport:
    """Turns finished flights into spans and hands them to a batch processor (own thread)."""

    def __init__(self, config: TracingConfig, kinds: Mapping[str, str]) -> None:
        exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint)
        self._processor = BatchSpanProcessor(
            exporter, schedule_delay_millis=config.export_interval_ms
        )
        self._resource = Resource.create({"service.name": config.service_name})
        self._scope = InstrumentationScope("actorproxy", __version__)
        self._kinds = kinds  # provider name -> kind, for gen_ai.provider.name

    def observe(self, flight: Flight) -> None:
        if flight.trace is None or not flight.trace.sampled:
            return
        for span in self._spans(flight, flight.trace, trio.current_time()):
            self._processor.on_end(span)

    def shutdown(self) -> None:
        """Export what is queued, then stop the processor's thread (blocking: run in a thread)."""
        self._processor.shutdown()  # type: ignore[no-untyped-call]

    def _spans(self, flight: Flight, trace: TraceContext, now: float) -> Iterator[ReadableSpan]:
        def at(offset_s: float) -> int:
            return int((flight.wall_start + offset_s) * 1e9)

        operation = OPERATIONS.get(flight.endpoint, flight.endpoint)
        request = _context(trace, trace.span_id)
        parent = None
        if trace.parent_id is not None:
            parent = _context(trace, trace.parent_id, remote=True)
        attributes: Attributes = {
            "gen_ai.operation.name": operation,
            "http.response.status_code": flight.status,
            "actorproxy.request_id": flight.request_id,
        }
        if flight.model is not None:
            attributes["gen_ai.request.model"] = flight.model
        if flight.error is not None:
            attributes["error.type"] = flight.error.type
        tokens = usage_of(flight)
        if tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = tokens.prompt
            attributes["gen_ai.usage.output_tokens"] = tokens.completion
        yield self._span(
            f"{operation} {flight.model or ''}".strip(),
            (request, parent, SpanKind.SERVER),
            (at(0.0), at(now - flight.started)),
            attributes,
            flight.status >= 500,
        )
        yield from self._children(flight, trace, operation, at)

    def _children(
        self, flight: Flight, trace: TraceContext, operation: str, at: Clock
    ) -> Iterator[ReadableSpan]:
        request = _context(trace, trace.span_id)
        if flight.queue_s is not None and flight.attempts:
            start = flight.attempts[-1].start_offset_ms / 1000
            yield self._span(
                "queue wait",
                (_context(trace, new_span_id()), request, SpanKind.INTERNAL),
                (at(start), at(start + flight.queue_s)),
                {"actorproxy.provider": flight.attempts[-1].provider},
                False,
            )
        for attempt in flight.attempts:
            start = attempt.start_offset_ms / 1000
            yield self._span(
                f"{operation} {attempt.upstream_model}",
                (_context(trace, new_span_id()), request, SpanKind.CLIENT),
                (at(start), at(start + attempt.latency_ms / 1000)),
                self._attempt_attributes(operation, attempt),
                attempt.status_code >= 400,
            )

    def _attempt_attributes(self, operation: str, attempt: Attempt) -> Attributes:
        attributes: Attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": self._kinds.get(attempt.provider, attempt.provider),
            "gen_ai.request.model": attempt.upstream_model,
            "http.response.status_code": attempt.status_code,
            "actorproxy.provider": attempt.provider,
        }
        if attempt.error_type is not None:
            attributes["error.type"] = attempt.error_type
        return attributes

    def _span(
        self,
        name: str,
        where: tuple[SpanContext, SpanContext | None, SpanKind],
        times: tuple[int, int],
        attributes: Attributes,
        failed: bool,
    ) -> ReadableSpan:
        context, parent, kind = where
        return ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            kind=kind,
            status=Status(StatusCode.ERROR if failed else StatusCode.UNSET),
            start_time=times[0],
            end_time=max(times),
            instrumentation_scope=self._scope,
        )


def _context(trace: TraceContext, span_id: str, *, remote: bool = False) -> SpanContext:
    return SpanContext(
        trace_id=int(trace.trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=remote,
        trace_flags=TraceFlags(trace.flags),
    )


__all__ = ["SpanExport"]
