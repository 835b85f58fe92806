"""One upstream exchange of a provider actor, under its timeouts, and the replies it sends.

The replies go over the call's channel: a ``Head`` (with the whole body when not streaming), then
body chunks and ``Done`` for a stream. Both carry ``usage``, the real usage the upstream
reported (``None`` if it did not): per-key limits, budgets and metrics use it as it is.

Timeouts are cancel scopes, and each is an ``UpstreamTimeout`` (504, retryable):

* ``first_byte_timeout_s``: from the start of the attempt to the response head (connecting
  included; the connection itself is bounded by the pool's ``connect_timeout_s``, whose expiry
  is an ``UpstreamConnectFailed``);
* ``idle_timeout_s``: the longest gap between two pieces of the body, stream or not; time spent
  waiting for the client to take a chunk does not count;
* ``request_timeout_s``: the whole exchange, stream included.

Cancellation (the call's scope, or a closed reply channel) abandons the upstream response: it is
closed, never returned to the pool. ``Outcome`` tells the actor what admission needs to settle the
call's reservation: whether the upstream may have seen the request, and the usage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import trio

from actorproxy import errors
from actorproxy.adapters.base import Adapter, Exchange, StreamTranslator
from actorproxy.config import ProviderConfig
from actorproxy.limits import usage
from actorproxy.limits.usage import TokenUsage
from actorproxy.net.base import Headers, Upstream, UpstreamRequest, UpstreamResponse

#: Response headers worth passing from an upstream to the client, under the name they get.
PASSED_HEADERS = {
    b"openai-processing-ms": b"openai-processing-ms",
    b"openai-version": b"openai-version",
    b"x-request-id": b"x-upstream-request-id",
}


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: Headers
    body: bytes | None
    upstream_s: float
    usage: TokenUsage | None = None  # non-streamed: the body's ``usage``


@dataclass(frozen=True, slots=True)
class Done:
    upstream_s: float
    withheld: bytes = b""  # frames for the record, not for the client (see StreamTranslator)
    usage: TokenUsage | None = None  # the stream's usage chunk, if it had one


@dataclass(frozen=True, slots=True)
class Failure:
    error: errors.ProxyError


Reply = Head | bytes | Done | Failure


@dataclass(slots=True)
class Outcome:
    """What an attempt left behind: ``seen`` is ``False`` only when the request surely never
    reached the upstream (no connection); ``usage`` is the real usage, if reported."""

    seen: bool = False
    usage: TokenUsage | None = None


@dataclass(frozen=True, slots=True)
class Timeouts:
    first_byte_s: float | None
    idle_s: float | None
    total_s: float

    @classmethod
    def of(cls, config: ProviderConfig) -> Timeouts:
        return cls(config.first_byte_timeout_s, config.idle_timeout_s, config.request_timeout_s)


class Exchanger:
    """Runs exchanges against one upstream. ``observe`` gets every response's status and
    headers first."""

    def __init__(
        self,
        upstream: Upstream,
        adapter: Adapter,
        timeouts: Timeouts,
        observe: Callable[[int, Headers], None],
    ) -> None:
        self._upstream = upstream
        self._adapter = adapter
        self._timeouts = timeouts
        self._observe = observe

    async def run(
        self, exchange: Exchange, reply: trio.MemorySendChannel[Reply], outcome: Outcome
    ) -> None:
        """Send the replies for ``exchange``; raise a ``ProxyError`` for a failure before ``Done``
        and ``trio.BrokenResourceError`` if the reply channel's reader left."""
        started = trio.current_time()
        with trio.CancelScope(deadline=started + self._timeouts.total_s) as total:
            await self._run(exchange, reply, outcome, started)
        if total.cancelled_caught:
            raise errors.UpstreamTimeout(
                f"The upstream did not finish within {self._timeouts.total_s:g} s."
            )

    async def _run(
        self,
        exchange: Exchange,
        reply: trio.MemorySendChannel[Reply],
        outcome: Outcome,
        started: float,
    ) -> None:
        request = self._adapter.encode_request(exchange)
        response = await self._head(request, outcome, started)
        try:
            self._observe(response.status, response.headers)
            if response.status >= 400:
                body = await self._read(response)
                raise self._adapter.decode_error(response.status, response.headers, body)
            headers = [(PASSED_HEADERS[k], v) for k, v in response.headers if k in PASSED_HEADERS]
            if not exchange.stream:
                body = self._adapter.decode_response(exchange, await self._read(response))
                outcome.usage = usage.from_body(body)
                head = Head(response.status, headers, body, _since(started), outcome.usage)
                await reply.send(head)
                return
            await reply.send(Head(response.status, headers, None, _since(started)))
            translator = self._adapter.open_stream(exchange)
            tail = usage.StreamTail()
            await self._pump(response, reply, translator, tail)
            await response.aclose()  # back to the pool before the handler hears of the end
            withheld = translator.withheld() if translator is not None else b""
            outcome.usage = tail.usage(withheld)
            await reply.send(Done(_since(started), withheld, outcome.usage))
        finally:
            await response.aclose()

    async def _head(
        self, request: UpstreamRequest, outcome: Outcome, started: float
    ) -> UpstreamResponse:
        limit = self._timeouts.first_byte_s
        outcome.seen = True
        with trio.CancelScope(deadline=math.inf if limit is None else started + limit) as scope:
            try:
                return await self._upstream.send(request)
            except errors.UpstreamConnectFailed:
                outcome.seen = False  # no connection: not a byte of it went out
                raise
        assert scope.cancelled_caught
        raise errors.UpstreamTimeout(f"The upstream sent no response within {limit:g} s.")

    async def _read(self, response: UpstreamResponse) -> bytes:
        parts: list[bytes] = []
        idle = _Idle(self._timeouts.idle_s)
        with idle.scope:
            while chunk := await response.receive_some():
                parts.append(chunk)
                idle.arm()
        idle.check()
        return b"".join(parts)

    async def _pump(
        self,
        response: UpstreamResponse,
        reply: trio.MemorySendChannel[Reply],
        translator: StreamTranslator | None,
        tail: usage.StreamTail,
    ) -> None:
        """Forward body pieces as they arrive; a closed reply channel abandons the upstream."""
        idle = _Idle(self._timeouts.idle_s)
        with idle.scope:
            while chunk := await response.receive_some():
                if translator is not None and not (chunk := translator.feed(chunk)):
                    idle.arm()
                    continue
                tail.feed(chunk)
                idle.hold()
                await reply.send(chunk)
                idle.arm()
            if translator is not None and (frames := translator.end()):
                tail.feed(frames)
                await reply.send(frames)
        idle.check()


class _Idle:
    """A cancel scope whose deadline is ``idle_s`` after the last piece; off without a limit."""

    __slots__ = ("_idle_s", "scope")

    def __init__(self, idle_s: float | None) -> None:
        self._idle_s = idle_s
        self.scope = trio.CancelScope()
        self.arm()

    def arm(self) -> None:
        if self._idle_s is not None:
            self.scope.deadline = trio.current_time() + self._idle_s

    def hold(self) -> None:
        """While the client takes a chunk, the upstream is not idle."""
        if self._idle_s is not None:
            self.scope.deadline = math.inf

    def check(self) -> None:
        if self.scope.cancelled_caught:
            raise errors.UpstreamTimeout(
                f"The upstream sent nothing for {self._idle_s:g} s in the middle of its response."
            )


def _since(started: float) -> float:
    return trio.current_time() - started
