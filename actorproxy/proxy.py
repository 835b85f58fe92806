"""The ``/v1`` proxy handler: authenticate, decode the routing view, admit the key, try targets.

Per request: one small msgspec decode (``RouteView``), the calling key's limits (``KeyGate``: rpm,
tpm, concurrency, budget; its ``x-ratelimit-*`` headers go on every answer), then the route's
targets in the order the ``Planner`` gives (the model's strategy over live actor snapshots). Each
attempt is one ``Call`` sent to a provider actor, its reply forwarded as bytes. A retryable
failure is retried on the same target with backoff (``retry.RetryPolicy``: full jitter, never
sooner than the upstream's ``Retry-After``) and then falls over to the next target, as long as
nothing has been sent to the client and ``routing.total_timeout_s`` has not passed; after the first
byte, a failure becomes a ``data: {"error": ...}`` frame and the stream ends cleanly. A client that
leaves cancels the request's nursery, which cancels the actor's upstream call. When the request
ends, the key is charged its real usage, read from the response the handler already holds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from actorproxy import asgi, errors, tracing
from actorproxy.actors.logger import LoggerActor
from actorproxy.actors.provider import Call, Done, Failure, Head, Reply
from actorproxy.adapters import messages_inbound
from actorproxy.adapters.base import Endpoint, Exchange
from actorproxy.auth import Authenticator, Principal
from actorproxy.dialects import MESSAGES, OPENAI, Dialect
from actorproxy.flight import (
    CLIENT_CLOSED,
    Flight,
    attempt_record,
    exchange_record,
    real_usage,
)
from actorproxy.limits.gate import KeyGate
from actorproxy.limits.keys import KeyTicket
from actorproxy.planner import Planner
from actorproxy.retry import GiveUp, Retry
from actorproxy.routing import Route, Target
from actorproxy.schema import views

log = logging.getLogger("actorproxy.proxy")

REPLY_BUFFER = 16
SSE_HEADERS: asgi.Headers = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]
FORWARDED = frozenset({b"openai-beta"})  # and the trace context, see tracing.py


@dataclass(frozen=True, slots=True)
class _Job:
    """One client request on its way through its route's targets."""

    send: asgi.Send
    flight: Flight
    exchange: Exchange
    route: Route
    deadline: float  # no new attempt, and no wait for a response head, after this


class ProxyHandler:
    def __init__(
        self,
        *,
        planner: Planner,
        keys: KeyGate,
        auth: Authenticator,
        logger: LoggerActor,
        max_body_bytes: int,
        replica: str,
    ) -> None:
        self._replica = replica
        self._planner = planner
        self._keys = keys
        self._auth = auth
        self._logger = logger
        self._max_body = max_body_bytes
        #: Called with each finished request's ``Flight`` after its response went out (metrics).
        self.observers: list[Callable[[Flight], None]] = []

    async def handle(
        self,
        scope: asgi.Scope,
        receive: asgi.Receive,
        send: asgi.Send,
        endpoint: Endpoint,
        dialect: Dialect = OPENAI,
    ) -> None:
        flight = Flight(asgi.request_id(scope), endpoint, trio.current_time(), time.time())
        flight.trace = trace = tracing.from_headers(scope["headers"])
        flight.trace_id, flight.dialect = trace.trace_id, dialect
        try:
            exchange, route, ticket = await self._admit(scope, receive, flight)
        except errors.ProxyError as exc:
            flight.error, flight.status = exc, exc.status
            await _respond_error(send, flight, exc)
        except asgi.ClientGone:
            flight.status = CLIENT_CLOSED
        else:
            try:
                await self._serve(receive, send, flight, exchange, route)
            finally:
                self._settle(ticket, flight)
        _notify(self.observers, flight)
        await self._logger.submit(exchange_record(flight, self._replica))

    async def count_tokens(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        """Anthropic's ``/v1/messages/count_tokens``: an estimate, answered without an upstream."""
        flight = Flight(asgi.request_id(scope), "chat", trio.current_time(), 0.0, dialect=MESSAGES)
        try:
            self._auth.authenticate(scope["headers"])
            if scope["method"] != "POST":
                raise errors.MethodNotAllowed("Use POST for /v1/messages/count_tokens.")
            declared = asgi.header(scope, b"content-length")
            answer = messages_inbound.count_tokens(
                await asgi.read_body(receive, self._max_body, declared)
            )
        except errors.ProxyError as exc:
            await _respond_error(send, flight, exc)
        except asgi.ClientGone:
            return
        else:
            await asgi.respond(send, 200, answer, [*flight.headers(), flight.overhead_header(0.0)])

    async def _admit(
        self, scope: asgi.Scope, receive: asgi.Receive, flight: Flight
    ) -> tuple[Exchange, Route, KeyTicket]:
        if scope["method"] != "POST":
            raise errors.MethodNotAllowed(f"Use POST for {scope['path']}.")
        flight.principal = principal = self._auth.authenticate(scope["headers"])
        body = await asgi.read_body(receive, self._max_body, asgi.header(scope, b"content-length"))
        flight.body = body = flight.dialect.request(body)
        view = errors.decode_json(views.route_view, body)
        flight.model, flight.stream = view.model, bool(view.stream)
        if flight.stream and flight.endpoint == "embeddings":
            raise errors.InvalidRequest("Embeddings cannot be streamed.", param="stream")
        route = self._planner.resolve(view.model)
        if principal.models is not None and route.alias not in principal.models:
            raise errors.PermissionDenied(
                f"This API key may not use the model `{route.alias}`.", param="model"
            )
        first = self._planner.actors[route.targets[0].provider].config
        tokens = self._keys.estimate(
            view,
            len(body),
            embeds=flight.endpoint == "embeddings",
            default_output=first.default_output_tokens,
        )
        ticket = self._admit_key(flight, principal, route, tokens)
        headers = [h for h in scope["headers"] if h[0] in FORWARDED]
        if flight.trace is not None:
            headers += flight.trace.upstream_headers()
        exchange = Exchange(
            flight.endpoint,
            body,
            view.model,
            view.model,
            flight.stream,
            flight.request_id,
            headers,
            int(flight.wall_start),
            key_id=principal.key_id,
            tokens=tokens,
        )
        return exchange, route, ticket

    def _admit_key(
        self, flight: Flight, principal: Principal, route: Route, tokens: int
    ) -> KeyTicket:
        """The key's ticket, or its refusal; either way its ``x-ratelimit-*`` headers after."""
        now = trio.current_time()
        try:
            return self._keys.admit(
                principal.key_id, principal, route, tokens=tokens, at=(now, time.time())
            )
        finally:
            flight.rate_headers = self._keys.headers(principal.key_id, now)

    def _settle(self, ticket: KeyTicket, flight: Flight) -> None:
        spent = real_usage(flight) if ticket.wants_usage else None
        self._keys.settle(ticket, trio.current_time(), flight.target, spent)

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
        """Each target in the planner's order, each retried per the retry policy, until one
        serves, a failure must not be retried anywhere, or the targets run out."""
        job = _Job(send, flight, exchange, route, flight.started + self._planner.total_timeout_s)
        last: errors.ProxyError = errors.Unavailable("No provider could take the request.")
        for target in self._planner.order(route, trio.current_time()):
            ended = await self._try_target(job, target)
            if ended is None:
                return
            last, give_up = ended
            if give_up:
                break
        if last.status == 429 and not any(name == b"retry-after" for name, _ in last.headers):
            last.headers = [*last.headers, *errors.retry_after_headers(1.0)]
        flight.error, flight.status = last, flight.status or last.status
        flight.finished = True
        if flight.response_started:
            await _end_stream_with_error(send, flight, last)
        else:
            await _respond_error(send, flight, last)

    async def _try_target(self, job: _Job, target: Target) -> tuple[errors.ProxyError, bool] | None:
        """Attempts on one target: ``None`` once one served, else the last error and whether to
        give up on the other targets too."""
        attempt = 0
        while True:
            try:
                await self._attempt(job, target)
                return None
            except errors.ProxyError as exc:
                decision = self._planner.decide(
                    job.route,
                    exc,
                    attempt,
                    streaming=job.flight.response_started,
                    deadline_left_s=job.deadline - trio.current_time(),
                )
                if not isinstance(decision, Retry):
                    return exc, isinstance(decision, GiveUp)
            await trio.sleep(decision.delay_s)
            attempt += 1

    async def _attempt(self, job: _Job, target: Target) -> None:
        flight = job.flight
        actor = self._planner.actors[target.provider]
        offset = trio.current_time()
        flight.target = target
        reply_send, reply_receive = trio.open_memory_channel[Reply](REPLY_BUFFER)
        call = Call(_for_target(job.exchange, target), reply_send)
        status, error_type = 0, None
        try:
            actor.submit(call)
            with reply_receive:
                status = await self._relay(job, reply_receive, call)
        except errors.ProxyError as exc:
            status, error_type = exc.status, exc.type
            if isinstance(exc, errors.UpstreamTimeout):
                self._planner.observe(target, trio.current_time() - offset, trio.current_time())
            raise
        finally:
            if status == 0 or error_type is not None:
                call.cancel()  # abandoned here: the actor must stop working on it (or queueing it)
            flight.attempts.append(attempt_record(target, status, error_type, offset, flight))

    async def _relay(self, job: _Job, replies: trio.MemoryReceiveChannel[Reply], call: Call) -> int:
        send, flight = job.send, job.flight
        head: Reply | None = None
        with trio.move_on_at(job.deadline):
            head = await _receive(replies)
        flight.queue_s = call.queue_s
        if head is None:
            raise errors.UpstreamTimeout(
                f"No provider answered within {self._planner.total_timeout_s} s "
                "(routing.total_timeout_s)."
            )
        if isinstance(head, Failure):
            raise head.error
        if not isinstance(head, Head):
            raise errors.UpstreamProtocolError("The provider actor answered out of order.")
        flight.status, flight.upstream_s = head.status, head.upstream_s
        if flight.target is not None:
            self._planner.observe(flight.target, head.upstream_s, trio.current_time())
        headers = [*flight.headers(), *head.headers, flight.overhead_header(head.upstream_s)]
        if head.body is not None:
            flight.response_body, flight.usage = head.body, head.usage
            flight.finished = True
            body = flight.dialect.response(head.body, flight.model or "")
            await asgi.respond(send, head.status, body, headers)
            return head.status
        flight.encoder = flight.dialect.stream(flight.model or "")
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
    encoder = flight.encoder
    while True:
        item = await _receive(replies)
        if isinstance(item, bytes):
            offsets.append((trio.current_time() - started) * 1000)
            chunks.append(item)
            body = item if encoder is None else encoder.feed(item)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        elif isinstance(item, Done):
            flight.upstream_s, flight.usage = item.upstream_s, item.usage
            if item.withheld:
                chunks.append(item.withheld)
                offsets.append((trio.current_time() - started) * 1000)
            flight.finished = True
            tail = b"" if encoder is None else encoder.end()
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            return
        elif isinstance(item, Failure):
            raise item.error
        else:
            raise errors.UpstreamProtocolError("The provider actor answered out of order.")


def _notify(observers: list[Callable[[Flight], None]], flight: Flight) -> None:
    """Hand the finished flight to each observer; a failing one never costs the dataset row."""
    for observe in observers:
        try:
            observe(flight)
        except Exception:  # metrics and traces must never cost the request its record
            log.exception("request observer failed", extra={"request_id": flight.request_id})


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


async def _end_stream_with_error(send: asgi.Send, flight: Flight, error: errors.ProxyError) -> None:
    frame = flight.dialect.stream_error(error)
    await send({"type": "http.response.body", "body": frame, "more_body": False})


async def _respond_error(send: asgi.Send, flight: Flight, error: errors.ProxyError) -> None:
    status, body, headers = flight.dialect.error(error)
    overhead = flight.overhead_header(flight.upstream_s or 0.0)
    await asgi.respond(send, status, body, [*flight.headers(), overhead, *headers])


def _for_target(exchange: Exchange, target: Target) -> Exchange:
    if target.model == exchange.upstream_model:
        return exchange
    return dataclasses.replace(exchange, upstream_model=target.model)
