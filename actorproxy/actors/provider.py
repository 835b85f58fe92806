"""The provider actor: a task, a mailbox and a handle for one upstream provider.

The actor owns its upstream pool, its admission (concurrency, exact rpm/tpm, a fair queue across
API keys; ``admission.py``) and its circuit breaker. Handlers hand over a ``Call`` with
``submit()``, which never blocks: an open breaker is a 503, a full queue or a deadline that cannot
be met a 429 with ``retry-after``, a reservation larger than ``tpm`` a 400. An admitted call runs
in the actor's nursery (``attempt.py``) and its replies go over the call's channel: a ``Head``
(with the whole body when not streaming), then body chunks and ``Done`` for a stream, or a
``Failure``. The actor's loop sleeps until the limiter can next admit the queue's head (its exact
``ready_at``), the next queue deadline, or news (an arrival, a freed slot, tokens given back).

Every upstream response's rate-limit headers (``limits/signals.py``) can pause admission: a 429
with ``retry-after``, or a budget with nothing remaining, holds queued calls back for as long as
the upstream said (at most ``max_pause_s``) instead of hammering it.

Cancellation: a handler whose client left calls ``call.cancel()``: a queued call leaves the queue
at once; an admitted one has its upstream request abandoned, its connection closed and its slot
freed. A handler that stops reading closes its channel; the actor's next send fails and has the
same effect. If the actor itself crashes, every call it holds has its reply channel closed without
``Done``: the handler turns that into a prompt ``ActorFailed`` (and may fall over to another
target). Queued calls wait for the restarted actor: the queue, limiter and breaker live on the
actor object, not in ``run()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import trio

from actorproxy import errors
from actorproxy.actors.admission import Admission, AdmissionStats
from actorproxy.actors.attempt import (
    PASSED_HEADERS,
    Done,
    Exchanger,
    Failure,
    Head,
    Outcome,
    Reply,
    Timeouts,
)
from actorproxy.actors.breaker import Breaker, BreakerStats, RateRule, WindowStats
from actorproxy.adapters.base import Adapter, Exchange
from actorproxy.config import ProviderConfig
from actorproxy.limits import signals
from actorproxy.limits.rate import RateLimiter, Reservation
from actorproxy.net.base import Headers, Upstream, read_all

__all__ = [
    "PASSED_HEADERS",
    "ActorState",
    "Call",
    "Done",
    "Failure",
    "Head",
    "ProviderActor",
    "ProviderStats",
    "Reply",
]

log = logging.getLogger("actorproxy.provider")

MODELS_TTL_S = 60.0
ActorState = Literal["starting", "running", "restarting", "failed", "stopped"]
_SIGNALS = (b"retry-after", b"x-ratelimit-", b"anthropic-ratelimit-")
_PAUSING = frozenset({429, 503, 529})


@dataclass(eq=False, slots=True)
class Call:
    """An envelope for one attempt: the exchange, a reply channel and the scope the work runs in."""

    exchange: Exchange
    reply: trio.MemorySendChannel[Reply]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    submitted: float = 0.0
    queue_s: float | None = None  # set when the actor admits the call
    probe: int | None = None  # the breaker's half-open period, when this call is a probe
    reservation: Reservation | None = None  # held from admission until the call ends
    owner: ProviderActor | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.exchange.key_id

    @property
    def tokens(self) -> int:
        return self.exchange.tokens

    @property
    def cancelled(self) -> bool:
        return self.scope.cancel_called

    def close(self) -> None:
        self.reply.close()

    def cancel(self) -> None:
        """The caller is done with this call: stop its work, and take it out of the queue."""
        self.scope.cancel()
        if self.owner is not None:
            self.owner.withdraw(self)


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
    breaker_window: WindowStats
    admission: AdmissionStats
    paused_s: float  # how long admission stays paused by an upstream's signal (0: not paused)


@dataclass(frozen=True, slots=True)
class Load:
    """What routing reads of an actor on every request: a few counters, not a full snapshot."""

    in_flight: int
    capacity: int
    queued: int
    breaker_open: bool
    can_admit: bool  # a free slot, or room in the queue (max_queue = 0 still takes a free slot)


class ProviderActor:
    """One upstream provider. ``run()`` is restartable; the handle methods work across restarts."""

    def __init__(self, config: ProviderConfig, upstream: Upstream, adapter: Adapter) -> None:
        self.name = config.name
        self.config = config
        self._upstream = upstream
        self._adapter = adapter
        self._admission: Admission[Call] = Admission(
            max_concurrency=config.max_concurrency,
            max_queue=config.max_queue,
            max_wait_s=config.max_queue_wait_s,
            rate=RateLimiter(rpm=config.rpm, tpm=config.tpm, window_s=config.rate_window_s),
        )
        self._breaker = Breaker(
            failures=config.breaker_failures,
            cooldown_s=config.breaker_cooldown_s,
            probes=config.breaker_probes,
            rate=RateRule(
                config.breaker_failure_rate, config.breaker_window_s, config.breaker_min_calls
            ),
        )
        self._exchanger = Exchanger(upstream, adapter, Timeouts.of(config), self._observe)
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self.state: ActorState = "starting"
        self.restarts = 0
        self._served = 0
        self._failed = 0
        self._models: list[str] = []
        self._models_expire = float("-inf")
        self._stopping = False
        self._drained = trio.Event()

    def submit(self, call: Call) -> None:
        """Admit ``call`` now or queue it, without waiting (errors: see the module doc)."""
        now = trio.current_time()
        call.submitted = now
        if self._stopping:  # retryable: the proxy tries the actor that replaced this one
            raise errors.Unavailable(f"Provider {self.name!r} was replaced by a config reload.")
        if not self._breaker.admits(now):
            self._log_transitions()
            raise errors.CircuitOpen(f"Provider {self.name!r} is failing; its circuit is open.")
        call.owner = self
        if self._admission.enter(call, now, at_once=self._accepting()):
            self._start(call, now)
        else:
            self._changed.set()

    def _accepting(self) -> bool:
        return self._nursery is not None and not self._nursery.cancel_scope.cancel_called

    def withdraw(self, call: Call) -> None:
        """Take a queued call out of the queue (its client left); no-op once it was admitted."""
        if self._admission.withdraw(call) and self._admission.queue:
            self._changed.set()  # the queue's head may have changed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Admit calls until cancelled, or until ``stop()`` and every call taken has ended.

        A crash cancels every call in flight (see module doc).
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                self.state = "running"
                task_status.started()
                await self._admit_forever(nursery)
            finally:
                self._nursery = None
        self._drained.set()

    def stop(self) -> None:
        """Take no new calls; ``run()`` returns once the queued and in-flight ones have ended.

        Used when a config reload replaces this actor: nothing queued or in flight is cancelled.
        """
        self._stopping = True
        self._changed.set()

    async def wait_drained(self) -> None:
        """Return once ``run()`` has ended after ``stop()``."""
        await self._drained.wait()

    async def _admit_forever(self, nursery: trio.Nursery) -> None:
        admission = self._admission
        while not (self._stopping and not admission.queue):
            now = trio.current_time()
            for late in admission.expire(now):
                nursery.start_soon(self._refuse, late, admission.refusal(late, now))
            while (call := admission.admit_next(now)) is not None:
                self._start(call, now)
            wake_at = admission.wake_at(now)
            self._changed = changed = trio.Event()
            with trio.move_on_at(wake_at):
                await changed.wait()
            await trio.lowlevel.checkpoint_if_cancelled()  # crashing: admit nothing more

    def _start(self, call: Call, now: float) -> None:
        """Run an admitted call, unless the breaker refuses it now (then its slot comes back)."""
        assert self._nursery is not None
        if self._breaker.state(now) == "half_open":
            call.probe = self._breaker.period
        if not self._breaker.allow(now):
            self._log_transitions()
            self._admission.finish(call, now, seen=False, usage=None)
            error = errors.CircuitOpen(f"Provider {self.name!r} is failing; its circuit is open.")
            self._nursery.start_soon(self._refuse, call, error)
            return
        call.queue_s = now - call.submitted
        self._nursery.start_soon(self._serve, call)

    async def _refuse(self, call: Call, error: errors.ProxyError) -> None:
        with call.reply:
            await _send_quietly(call.reply, Failure(error))

    async def _serve(self, call: Call) -> None:
        outcome = Outcome()
        try:
            with call.reply, call.scope:
                await self._attempt(call, outcome)
            if call.scope.cancelled_caught:
                self._release_probe(call)
        finally:
            now = trio.current_time()
            self._admission.finish(
                call,
                now,
                seen=outcome.seen,
                usage=None if outcome.usage is None else outcome.usage.total,
            )
            if self._admission.queue:  # a slot (and maybe tokens) for a waiting call
                self._changed.set()

    def _release_probe(self, call: Call) -> None:
        if call.probe is not None:
            self._breaker.release_probe(call.probe)

    async def _attempt(self, call: Call, outcome: Outcome) -> None:
        try:
            await self._exchanger.run(call.exchange, call.reply, outcome)
        except errors.ProxyError as exc:
            self._record(call, exc)
            await _send_quietly(call.reply, Failure(exc))
        except trio.BrokenResourceError:
            self._release_probe(call)
        else:
            self._breaker.success()
            self._served += 1
            self._log_transitions()

    def _record(self, call: Call, exc: errors.ProxyError) -> None:
        self._failed += 1
        if exc.retryable:
            self._breaker.failure(trio.current_time())
        elif isinstance(exc, errors.UpstreamHTTPError):
            self._breaker.success()  # the upstream answered sensibly: it is healthy
        else:
            self._release_probe(call)
        self._log_transitions()

    def _observe(self, status: int, headers: Headers) -> None:
        """Pause admission when the upstream's rate-limit headers say stop: a budget with
        nothing remaining, or ``retry-after`` on a 429/503/529 (on other answers it is noise)."""
        if not any(name.startswith(_SIGNALS) for name, _ in headers):
            return
        signal = signals.parse(headers, now_wall=time.time())
        if status not in _PAUSING:
            signal = dataclasses.replace(signal, retry_after_s=None)
        pause_s = signal.pause_s
        if not pause_s:
            return
        pause_s = min(pause_s, self.config.max_pause_s)
        self._admission.rate.pause_until(trio.current_time() + pause_s)
        log.info("upstream asked to pause", extra={"provider": self.name, "pause_s": pause_s})

    def _log_transitions(self) -> None:
        for change in self._breaker.transitions():
            log.warning(
                "breaker changed",
                extra={
                    "actor": self.name,
                    "from": change.before,
                    "to": change.after,
                    "reason": change.reason,
                },
            )

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

    def load(self, now: float) -> Load:
        """The cheap view for routing (``planner``); ``statistics()`` is for operators."""
        admission = self._admission
        queued, in_flight = len(admission.queue), admission.in_flight
        return Load(
            in_flight=in_flight,
            capacity=admission.max_concurrency,
            queued=queued,
            breaker_open=self._breaker.state(now) == "open",
            can_admit=queued < admission.queue.capacity or in_flight < admission.max_concurrency,
        )

    def statistics(self) -> ProviderStats:
        now = trio.current_time()
        admission = self._admission.statistics(now)
        paused_until = admission.rate.paused_until
        self._breaker.state(now)
        self._log_transitions()
        return ProviderStats(
            name=self.name,
            kind=self.config.kind,
            state=self.state,
            in_flight=admission.in_flight,
            queued=admission.queued,
            max_concurrency=admission.max_concurrency,
            restarts=self.restarts,
            served=self._served,
            failed=self._failed,
            breaker=self._breaker.statistics(now),
            breaker_window=self._breaker.window(now),
            admission=admission,
            paused_s=0.0 if paused_until is None else paused_until - now,
        )

    async def aclose(self) -> None:
        await self._upstream.aclose()


async def _send_quietly(reply: trio.MemorySendChannel[Reply], item: Reply) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await reply.send(item)
