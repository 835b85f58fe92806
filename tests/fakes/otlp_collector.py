"""A fake OpenTelemetry collector: OTLP/HTTP protobuf on a real loopback socket.

It accepts ``POST /v1/traces`` (``application/x-protobuf``), decodes each export request with
the OTLP protobuf types and keeps the spans in ``spans``, flattened with their resource's
``service.name``. Its fault script (`Respond`) answers the next exports with another status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.fakes import server
from tests.fakes.server import Respond

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT"}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    attributes: dict[str, object]
    start_ns: int
    end_ns: int


class FakeCollector(server.FakeServer[Respond]):
    def __init__(self) -> None:
        super().__init__()
        self.spans: list[ReceivedSpan] = []
        self._arrived = trio.Event()

    async def wait_spans(self, count: int) -> list[ReceivedSpan]:
        """Return the spans once at least ``count`` have arrived."""
        while len(self.spans) < count:
            await self._arrived.wait()
        return self.spans

    async def handle(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        body = await server.read_body(receive)
        if body is None:
            return
        request, _ = self.record(scope, body)
        fault = self.take_fault(request.path)
        if fault is not None:
            await server.send_response(send, fault.status, fault.headers, [fault.raw_body()])
            return
        if request.path != "/v1/traces" or scope["method"] != "POST":
            await server.send_response(send, 404, {}, [b""])
            return
        self._collect(ExportTraceServiceRequest.FromString(body))
        answer = ExportTraceServiceResponse().SerializeToString()
        await server.send_response(send, 200, {"content-type": "application/x-protobuf"}, [answer])

    def _collect(self, export: ExportTraceServiceRequest) -> None:
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(_span(resource.get("service.name", ""), span))
        self._arrived.set()
        self._arrived = trio.Event()


def _span(service: str, span: Span) -> ReceivedSpan:
    attributes: dict[str, object] = {}
    for attribute in span.attributes:
        value = attribute.value
        attributes[attribute.key] = getattr(value, value.WhichOneof("value"))
    return ReceivedSpan(
        service=service,
        name=span.name,
        kind=KINDS.get(span.kind, str(span.kind)),
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        attributes=attributes,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
    )


@asynccontextmanager
async def open_fake_collector() -> AsyncIterator[FakeCollector]:
    """Serve a `FakeCollector` on 127.0.0.1 (random port); ``base_url`` is where it listens."""
    collector = FakeCollector()
    async with server.open_loopback_server(collector) as base_url:
        collector.base_url = base_url
        yield collector
