"""The ``/v1`` proxy handler: authenticate, decode the routing view, try each target in turn.

Per request: one small msgspec decode (``RouteView``), one ``Call`` per attempt sent to the chosen
provider actor, and the reply forwarded as bytes. Falls over to the next target on a retryable
failure as long as nothing has been sent to the client; after the first byte, a failure becomes a
``data: {"error": ...}`` frame and the stream ends cleanly. A client that leaves cancels the
request's nursery, which cancels the actor's upstream call.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec
import trio

from actorproxy import asgi, errors
from actorproxy.actors.logger import LoggerActor
from actorproxy.actors.provider import Call, Done, Failure, Head, ProviderActor, Reply
from actorproxy.adapters.base import Endpoint, Exchange
from actorproxy.auth import Authenticator, Principal
from actorproxy.routing import Route, Router, Target
from actorproxy.schema import views
from actorproxy.schema.records import Attempt
from actorproxy.schema.records import Exchange as ExchangeRecord

log = logging.getLogger("actorproxy.proxy")

REPLY_BUFFER = 16
SSE_HEADERS: asgi.Headers = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]
FORWARDED = frozenset({b"traceparent", b"tracestate", b"openai-beta"})
CLIENT_CLOSED = 499  # nginx's code for "client closed request", used in records only


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
    body: bytes = b""
    response_body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)
    chunk_offsets_ms: list[float] = field(default_factory=list)
    queue_s: float | None = None

    def headers(self) -> asgi.Headers:
        return [(b"x-request-id", self.request_id.encode())]

    def overhead_header(self, upstream_s: float) -> tuple[bytes, bytes]:
        overhead_ms = max(0.0, (trio.current_time() - self.started - upstream_s) * 1000)
        return (b"x-actorproxy-overhead-ms", f"{overhead_ms:.3f}".encode())


class ProxyHandler:
    def __init__(
        self,
        *,
        router: Router,
        actors: Mapping[str, ProviderActor],
        auth: Authenticator,
        logger: LoggerActor,
        max_body_bytes: int,
        replica: str,
    ) -> None:
        self._replica = replica
        self._router = router
        self._actors = actors
        self._auth = auth
        self._logger = logger
        self._max_body = max_body_bytes

    async def handle(
        self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send, endpoint: Endpoint
    ) -> None:
        flight = Flight(asgi.request_id(scope), endpoint, trio.current_time(), time.time())
        flight.trace_id = _trace_id(scope)
        try:
            exchange, route = await self._admit(scope, receive, flight)
        except errors.ProxyError as exc:
            flight.error, flight.status = exc, exc.status
            await asgi.respond_error(send, exc, flight.headers())
        except asgi.ClientGone:
            flight.status = CLIENT_CLOSED
        else:
            await self._serve(receive, send, flight, exchange, route)
        await self._logger.submit(_exchange_record(flight, self._replica))

    async def _admit(
        self, scope: asgi.Scope, receive: asgi.Receive, flight: Flight
    ) -> tuple[Exchange, Route]:
        if scope["method"] != "POST":
            raise errors.MethodNotAllowed(f"Use POST for {scope['path']}.")
        flight.principal = principal = self._auth.authenticate(scope["headers"])
        body = await asgi.read_body(receive, self._max_body, asgi.header(scope, b"content-length"))
        flight.body = body
        view = _decode_view(body)
        flight.model, flight.stream = view.model, bool(view.stream)
        if flight.stream and flight.endpoint == "embeddings":
            raise errors.InvalidRequest("Embeddings cannot be streamed.", param="stream")
        route = self._router.resolve(view.model)
        if principal.models is not None and route.alias not in principal.models:
            raise errors.PermissionDenied(
                f"This API key may not use the model `{route.alias}`.", param="model"
            )
        headers = [h for h in scope["headers"] if h[0] in FORWARDED]
        exchange = Exchange(
            flight.endpoint,
            body,
            view.model,
            view.model,
            flight.stream,
            flight.request_id,
            headers,
            int(flight.wall_start),
        )
        return exchange, route

    async def _serve(
        self,
        receive: asgi.Receive,
        send: asgi.Send,
        flight: Flight,
        exchange: Exchange,
        route: Route,
    ) -> None:
        with trio.CancelScope() as request_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_disconnect, receive, request_scope, flight)
                await self._try_targets(send, flight, exchange, route)
                nursery.cancel_scope.cancel()
        if request_scope.cancelled_caught:
            flight.status = CLIENT_CLOSED

    async def _try_targets(
        self, send: asgi.Send, flight: Flight, exchange: Exchange, route: Route
    ) -> None:
        last: errors.ProxyError = errors.Unavailable("No provider could take the request.")
        for target in route.targets:
            attempt = _for_target(exchange, target)
            try:
                await self._attempt(send, flight, attempt, target)
                return
            except errors.ProxyError as exc:
                last = exc
                if flight.response_started or not exc.retryable:
                    break
        flight.error, flight.status = last, flight.status or last.status
        flight.finished = True
        if flight.response_started:
            await _end_stream_with_error(send, last)
        else:
            await asgi.respond_error(send, last, flight.headers())

    async def _attempt(
        self, send: asgi.Send, flight: Flight, exchange: Exchange, target: Target
    ) -> None:
        actor = self._actors[target.provider]
        offset = trio.current_time()
        flight.target = target
        reply_send, reply_receive = trio.open_memory_channel[Reply](REPLY_BUFFER)
        call = Call(exchange, reply_send)
        status, error_type = 0, None
        try:
            actor.submit(call)
            with reply_receive:
                status = await self._relay(send, flight, reply_receive, call)
        except errors.ProxyError as exc:
            status, error_type = exc.status, exc.type
            raise
        finally:
            if status == 0:
                call.scope.cancel()
            flight.attempts.append(_attempt_record(target, status, error_type, offset, flight))

    async def _relay(
        self,
        send: asgi.Send,
        flight: Flight,
        replies: trio.MemoryReceiveChannel[Reply],
        call: Call,
    ) -> int:
        head = await _receive(replies)
        flight.queue_s = call.queue_s
        if isinstance(head, Failure):
            raise head.error
        if not isinstance(head, Head):
            raise errors.UpstreamProtocolError("The provider actor answered out of order.")
        flight.status, flight.upstream_s = head.status, head.upstream_s
        headers = [*flight.headers(), *head.headers, flight.overhead_header(head.upstream_s)]
        if head.body is not None:
            flight.response_body = head.body
            flight.finished = True
            await asgi.respond(send, head.status, head.body, headers)
            return head.status
        await send(
            {
                "type": "http.response.start",
                "status": head.status,
                "headers": [*SSE_HEADERS, *headers],
            }
        )
        flight.response_started = True
        await _relay_stream(send, flight, replies)
        return head.status


async def _relay_stream(
    send: asgi.Send, flight: Flight, replies: trio.MemoryReceiveChannel[Reply]
) -> None:
    chunks, offsets, started = flight.chunks, flight.chunk_offsets_ms, flight.started
    while True:
        item = await _receive(replies)
        if isinstance(item, bytes):
            offsets.append((trio.current_time() - started) * 1000)
            chunks.append(item)
            await send({"type": "http.response.body", "body": item, "more_body": True})
        elif isinstance(item, Done):
            flight.upstream_s = item.upstream_s
            if item.withheld:
                chunks.append(item.withheld)
                offsets.append((trio.current_time() - started) * 1000)
            flight.finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        elif isinstance(item, Failure):
            raise item.error
        else:
            raise errors.UpstreamProtocolError("The provider actor answered out of order.")


async def _watch_disconnect(receive: asgi.Receive, scope: trio.CancelScope, flight: Flight) -> None:
    """Cancel the request when its client leaves before the response is complete.

    hypercorn also reports ``http.disconnect`` once a response is complete; that one is ignored.
    """
    while (await receive())["type"] != "http.disconnect":
        pass
    if not flight.finished:
        scope.cancel()


async def _receive(replies: trio.MemoryReceiveChannel[Reply]) -> Reply:
    try:
        return await replies.receive()
    except trio.EndOfChannel:
        raise errors.ActorFailed("The provider actor failed while serving the request.") from None


async def _end_stream_with_error(send: asgi.Send, error: errors.ProxyError) -> None:
    frame = b"\n\ndata: " + errors.render(error) + b"\n\n"
    await send({"type": "http.response.body", "body": frame, "more_body": False})


def _decode_view(body: bytes) -> views.RouteView:
    try:
        return views.route_view.decode(body)
    except msgspec.ValidationError as exc:
        raise errors.invalid_body(exc) from None
    except msgspec.DecodeError:
        raise errors.InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object."
        ) from None


def _for_target(exchange: Exchange, target: Target) -> Exchange:
    if target.model == exchange.upstream_model:
        return exchange
    return dataclasses.replace(exchange, upstream_model=target.model)


def _trace_id(scope: asgi.Scope) -> str:
    """The W3C trace id of the client's ``traceparent``, else a new one."""
    given = asgi.header(scope, b"traceparent")
    if given is not None:
        parts = given.split(b"-")
        if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != b"0" * 32:
            try:
                return bytes.fromhex(parts[1].decode()).hex()
            except ValueError:
                pass
    return os.urandom(16).hex()


def _attempt_record(
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


def _exchange_record(flight: Flight, replica: str) -> ExchangeRecord:
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
