"""The provider actor: a task, a mailbox and a handle for one upstream provider.

The actor owns its upstream pool, a concurrency limiter and its circuit breaker. Handlers put a
``Call`` in the mailbox with ``submit()`` (never blocking: a full mailbox is a 429, an open breaker
a 503); the actor admits calls in order, runs each upstream exchange in its own nursery and pushes
the reply over the call's channel: a ``Head`` (with the whole body when not streaming), then body
chunks and ``Done`` for a stream, or a ``Failure``.

Cancellation: a handler whose client left cancels ``call.scope``; the upstream request is abandoned
at once, its connection closed and the concurrency slot released. A handler that stops reading
closes its channel; the actor's next send fails and has the same effect. If the actor itself
crashes, every call it holds has its reply channel closed without ``Done``: the handler turns that
into a prompt ``ActorFailed`` (and may fall over to another target). Calls still in the mailbox
wait for the restarted actor: the mailbox, limiter and breaker live on the actor object, not in
``run()``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Literal

import trio

from actorproxy import errors
from actorproxy.actors.breaker import Breaker, BreakerStats
from actorproxy.adapters.base import Adapter, Exchange, StreamTranslator
from actorproxy.config import ProviderConfig
from actorproxy.net.base import Headers, Upstream, UpstreamResponse, read_all

log = logging.getLogger("actorproxy.provider")

MODELS_TTL_S = 60.0
ActorState = Literal["starting", "running", "restarting", "failed", "stopped"]

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


@dataclass(frozen=True, slots=True)
class Done:
    upstream_s: float
    withheld: bytes = b""  # frames for the record, not for the client (see StreamTranslator)


@dataclass(frozen=True, slots=True)
class Failure:
    error: errors.ProxyError


Reply = Head | bytes | Done | Failure


@dataclass(eq=False, slots=True)
class Call:
    """An envelope for one attempt: the exchange, a reply channel and the scope the work runs in."""

    exchange: Exchange
    reply: trio.MemorySendChannel[Reply]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    submitted: float = 0.0
    queue_s: float | None = None  # set when the actor admits the call
    probe: int | None = None  # the breaker's half-open period, when this call is a probe


@dataclass(frozen=True, slots=True)
class ProviderStats:
    name: str
    kind: str
    state: ActorState
    in_flight: int
    queued: int
    max_concurrency: int
    restarts: int
    served: int
    failed: int
    breaker: BreakerStats


class ProviderActor:
    """One upstream provider. ``run()`` is restartable; the handle methods work across restarts."""

    def __init__(self, config: ProviderConfig, upstream: Upstream, adapter: Adapter) -> None:
        self.name = config.name
        self.config = config
        self._upstream = upstream
        self._adapter = adapter
        self._outbox, self._inbox = trio.open_memory_channel[Call](config.max_queue)
        self._limiter = trio.CapacityLimiter(config.max_concurrency)
        self._breaker = Breaker(
            failures=config.breaker_failures, cooldown_s=config.breaker_cooldown_s
        )
        self.state: ActorState = "starting"
        self.restarts = 0
        self._served = 0
        self._failed = 0
        self._in_flight = 0
        self._models: list[str] = []
        self._models_expire = float("-inf")
        self._drained = trio.Event()

    def submit(self, call: Call) -> None:
        """Queue ``call`` without waiting. ``Unavailable`` if the breaker is open, 429 if full."""
        now = trio.current_time()
        call.submitted = now
        if not self._breaker.allow(now):
            raise errors.Unavailable(f"Provider {self.name!r} is failing; its circuit is open.")
        if self._breaker.state(now) == "half_open":
            call.probe = self._breaker.period
        try:
            self._outbox.send_nowait(call)
        except trio.WouldBlock:
            self._release_probe(call)
            raise errors.RateLimited(
                f"Provider {self.name!r} has {self.config.max_queue} requests queued.",
                retry_after_s=1.0,
            ) from None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Admit calls until cancelled, or until ``stop()`` and every call taken has ended.

        A crash cancels every call in flight (see module doc).
        """
        async with trio.open_nursery() as nursery:
            self.state = "running"
            task_status.started()
            while await self._admit_next(nursery):
                pass
        self._drained.set()

    def stop(self) -> None:
        """Take no new calls; ``run()`` returns once the queued and in-flight ones have ended.

        Used when a config reload replaces this actor: nothing in flight is cancelled.
        """
        self._outbox.close()

    async def wait_drained(self) -> None:
        """Return once ``run()`` has ended after ``stop()``."""
        await self._drained.wait()

    async def _admit_next(self, nursery: trio.Nursery) -> bool:
        """Take a concurrency slot, then the next call: the mailbox holds exactly the queue.

        False once the mailbox is closed (``stop()``) and empty.
        """
        slot = _Slot()
        await self._limiter.acquire_on_behalf_of(slot)
        try:
            call = await self._inbox.receive()
        except trio.EndOfChannel:
            self._limiter.release_on_behalf_of(slot)
            return False
        except BaseException:
            self._limiter.release_on_behalf_of(slot)
            raise
        if call.scope.cancel_called:  # its client left while it waited
            self._limiter.release_on_behalf_of(slot)
            self._release_probe(call)
            call.reply.close()
            return True
        call.queue_s = trio.current_time() - call.submitted
        nursery.start_soon(self._serve, call, slot)
        return True

    async def _serve(self, call: Call, slot: _Slot) -> None:
        self._in_flight += 1
        try:
            with call.reply, call.scope:
                await self._attempt(call)
            if call.scope.cancelled_caught:
                self._release_probe(call)
        finally:
            self._in_flight -= 1
            self._limiter.release_on_behalf_of(slot)

    def _release_probe(self, call: Call) -> None:
        if call.probe is not None:
            self._breaker.release_probe(call.probe)

    async def _attempt(self, call: Call) -> None:
        started = trio.current_time()
        try:
            with trio.fail_after(self.config.request_timeout_s):
                await self._exchange(call, started)
        except errors.ProxyError as exc:
            self._record(call, exc)
            await _send_quietly(call.reply, Failure(exc))
        except trio.TooSlowError:
            timeout = errors.UpstreamTimeout(
                f"Provider {self.name!r} did not answer within {self.config.request_timeout_s} s."
            )
            self._record(call, timeout)
            await _send_quietly(call.reply, Failure(timeout))
        except trio.BrokenResourceError:
            self._release_probe(call)

    async def _exchange(self, call: Call, started: float) -> None:
        request = self._adapter.encode_request(call.exchange)
        response = await self._upstream.send(request)
        try:
            if response.status >= 400:
                body = await read_all(response)
                raise self._adapter.decode_error(response.status, response.headers, body)
            headers = [(PASSED_HEADERS[k], v) for k, v in response.headers if k in PASSED_HEADERS]
            exchange = call.exchange
            if not exchange.stream:
                body = self._adapter.decode_response(exchange, await read_all(response))
                await call.reply.send(Head(response.status, headers, body, self._since(started)))
            else:
                await call.reply.send(Head(response.status, headers, None, self._since(started)))
                translator = self._adapter.open_stream(exchange)
                await _pump(response, call.reply, translator)
                await response.aclose()  # back to the pool before the handler hears of the end
                withheld = translator.withheld() if translator is not None else b""
                await call.reply.send(Done(self._since(started), withheld))
        finally:
            await response.aclose()
        self._breaker.success()
        self._served += 1

    def _record(self, call: Call, exc: errors.ProxyError) -> None:
        self._failed += 1
        if exc.retryable:
            self._breaker.failure(trio.current_time())
        elif isinstance(exc, errors.UpstreamHTTPError):
            self._breaker.success()  # the upstream answered sensibly: it is healthy
        else:
            self._release_probe(call)

    @staticmethod
    def _since(started: float) -> float:
        return trio.current_time() - started

    async def upstream_models(self) -> list[str]:
        """The upstream's own model list, fetched at most once a minute (``list_models``).

        Fetched on the caller's task, outside the mailbox: listing models is not a call the limits
        count. A failed fetch keeps the last good list and is retried on the next request.
        """
        now = trio.current_time()
        if now < self._models_expire:
            return self._models
        request = self._adapter.models_request()
        if request is None:  # the list is in the config (Azure's deployments)
            return self._adapter.decode_models(b"")
        try:
            with trio.fail_after(self.config.connect_timeout_s):
                response = await self._upstream.send(request)
                body = await read_all(response)
            if response.status >= 400:
                raise self._adapter.decode_error(response.status, response.headers, body)
            self._models = self._adapter.decode_models(body)
        except (errors.ProxyError, trio.TooSlowError) as exc:
            log.warning(
                "listing upstream models failed",
                extra={"provider": self.name, "error": type(exc).__name__},
            )
            return self._models
        self._models_expire = now + MODELS_TTL_S
        return self._models

    def statistics(self) -> ProviderStats:
        stats = self._inbox.statistics()
        return ProviderStats(
            name=self.name,
            kind=self.config.kind,
            state=self.state,
            in_flight=self._in_flight,
            queued=stats.current_buffer_used,
            max_concurrency=int(self._limiter.total_tokens),
            restarts=self.restarts,
            served=self._served,
            failed=self._failed,
            breaker=self._breaker.statistics(trio.current_time()),
        )

    async def aclose(self) -> None:
        await self._upstream.aclose()


class _Slot:
    """The borrower of one concurrency slot, from admission until the call's task ends."""

    __slots__ = ()


async def _pump(
    response: UpstreamResponse,
    reply: trio.MemorySendChannel[Reply],
    translator: StreamTranslator | None,
) -> None:
    """Forward body chunks as they arrive; a closed reply channel abandons the upstream."""
    if translator is None:
        while chunk := await response.receive_some():
            await reply.send(chunk)
        return
    while chunk := await response.receive_some():
        if frames := translator.feed(chunk):
            await reply.send(frames)
    if frames := translator.end():
        await reply.send(frames)


async def _send_quietly(reply: trio.MemorySendChannel[Reply], item: Reply) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await reply.send(item)
