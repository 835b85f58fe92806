"""Admission for one provider actor: concurrency, exact rpm/tpm and a fair queue. Pure, ``now``
injected; the actor (``provider.py``) does the waiting.

A call is admitted when all three let it through at once: a concurrency slot is free
(``in_flight < max_concurrency``), the ``RateLimiter`` admits its token reservation (it takes the
reservation), and no upstream pause is running. ``enter`` admits at once when the queue is empty
and all three agree (the fast path); otherwise the call waits in the ``FairQueue`` under its API
key id (round-robin across keys, FIFO within a key) until ``admit_next`` lets it through or its
deadline (``max_queue_wait_s`` after ``enter``) passes. The actor sleeps until ``wake_at`` (the
limiter's exact ``ready_at`` for the head, or the next deadline), or until it is told that a slot
or tokens came back; it never polls.

429 (``RateLimited``) comes only from a full queue, or from a deadline that cannot be met: at
``enter`` when the limiter's lower bound for this call (counting the calls ahead of it in the
rotation) is past its deadline, and at expiry. Its ``retry_after_s`` is the time until the limiter
could admit the call (or the queue's head, when the queue is full): a client that waits that long
finds room, unless others took it meanwhile. A call reserving more than ``tpm`` could never go:
``InvalidRequest`` (400) at once.

``finish`` ends an admitted call: it frees the slot and settles the reservation: released when
the upstream never saw the request, reconciled with the real usage when known, else kept charged
in full (the safe side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from actorproxy import errors
from actorproxy.limits.fair_queue import FairQueue
from actorproxy.limits.rate import RateLimiter, RateStats, Reservation

#: The least ``retry-after`` of a full queue or an expired deadline. When the rate limits would
#: admit at once, the queue is waiting for concurrency slots, whose release nobody can foresee:
#: a 1 ms hint would only invite a retry storm.
BUSY_RETRY_S = 1.0


class Admittable(Protocol):
    """What admission needs of a call; it keeps the reservation on it while it runs."""

    reservation: Reservation | None

    @property
    def key(self) -> str: ...

    @property
    def tokens(self) -> int: ...

    @property
    def cancelled(self) -> bool: ...

    def __hash__(self) -> int: ...

    def close(self) -> None:
        """It leaves the queue unserved because its caller left: end its replies."""


T = TypeVar("T", bound=Admittable)


@dataclass(frozen=True, slots=True)
class AdmissionStats:
    max_concurrency: int
    in_flight: int
    max_queue: int
    queued: int
    queued_keys: int
    reservations: int  # reservations held by calls in flight (not settled yet)
    rate: RateStats


class Admission(Generic[T]):
    """One provider's admission state; it lives on the actor, so it survives a restart."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        max_queue: int,
        max_wait_s: float,
        rate: RateLimiter,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.max_wait_s = max_wait_s
        self.queue: FairQueue[str, T] = FairQueue(max_queue)
        self.rate = rate
        self._metered = rate.rpm is not None or rate.tpm is not None
        self.in_flight = 0
        self.reservations = 0

    def enter(self, call: T, now: float, *, at_once: bool = True) -> bool:
        """``True``: admitted now (slot and reservation taken); ``False``: queued. ``at_once``
        ``False`` always queues (the actor is restarting and cannot start it now).

        Raises ``InvalidRequest`` (never admissible) or ``RateLimited`` (see the module doc).
        """
        tokens = call.tokens
        if not self.rate.admissible(tokens):
            raise errors.InvalidRequest(
                f"This request reserves {tokens} tokens, more than the provider's limit of "
                f"{self.rate.tpm} tokens per minute; lower max_tokens or the prompt size.",
                code="tokens_exceed_limit",
            )
        if at_once and not self.queue and self._try_admit(call, now):
            return True
        ready = self.rate.ready_at(now, tokens, ahead=self.queue.ahead(call.key))
        if ready > now + self.max_wait_s:
            raise errors.RateLimited(
                "The provider's rate limit cannot admit this request within "
                f"{self.max_wait_s:g} s.",
                retry_after_s=ready - now,
                reason="provider_rate",
            )
        if not self.queue.push(call.key, call, now + self.max_wait_s):
            raise errors.RateLimited(
                f"The provider has {self.queue.capacity} requests queued.",
                retry_after_s=self._head_wait(now),
                reason="provider_queue_full",
            )
        return False

    def admit_next(self, now: float) -> T | None:
        """The next queued call, admitted; ``None`` if the head cannot go yet."""
        while (head := self.queue.peek()) is not None:
            call = head[1]
            if call.cancelled:  # its client left without withdrawing it
                self.queue.pop()
                call.close()
            elif self._try_admit(call, now):
                self.queue.pop()
                return call
            else:
                return None
        return None

    def expire(self, now: float) -> list[T]:
        """Queued calls whose deadline came: they get ``refusal``."""
        late = [call for _, call in self.queue.expire(now)]
        for call in late:
            if call.cancelled:
                call.close()
        return [call for call in late if not call.cancelled]

    def refusal(self, call: T, now: float) -> errors.RateLimited:
        wait = max(self.rate.ready_at(now, call.tokens) - now, BUSY_RETRY_S)
        return errors.RateLimited(
            f"The request waited {self.max_wait_s:g} s in the provider's queue.",
            retry_after_s=wait,
            reason="provider_queue_timeout",
        )

    def withdraw(self, call: T) -> bool:
        """Take a queued call out at once (its client left); ``False`` if it is not queued."""
        if not self.queue.remove(call):
            return False
        call.close()
        return True

    def wake_at(self, now: float) -> float:
        """When ``admit_next`` or ``expire`` can next change something, barring a slot or
        tokens coming back (the actor is woken for those); ``inf``: only such news helps."""
        deadline = self.queue.next_deadline()
        due = math.inf if deadline is None else deadline
        head = self.queue.peek()
        if head is None or self.in_flight >= self.max_concurrency:
            return due
        return min(due, self.rate.ready_at(now, head[1].tokens))

    def finish(self, call: T, now: float, *, seen: bool, usage: int | None) -> None:
        """An admitted call ended: free its slot, settle its reservation (module doc)."""
        self.in_flight -= 1
        reservation, call.reservation = call.reservation, None
        if reservation is None:
            return
        self.reservations -= 1
        if not seen:
            self.rate.release(reservation)
        elif usage is not None:
            self.rate.reconcile(reservation, usage, now)

    def statistics(self, now: float) -> AdmissionStats:
        queue = self.queue.statistics()
        return AdmissionStats(
            max_concurrency=self.max_concurrency,
            in_flight=self.in_flight,
            max_queue=queue.capacity,
            queued=queue.queued,
            queued_keys=queue.keys,
            reservations=self.reservations,
            rate=self.rate.statistics(now),
        )

    def _try_admit(self, call: T, now: float) -> bool:
        if self.in_flight >= self.max_concurrency:
            return False
        if self._metered:
            reservation = self.rate.try_acquire(now, call.tokens)
            if reservation is None:
                return False
            call.reservation = reservation
            self.reservations += 1
        elif self.rate.ready_at(now, 0) > now:  # unmetered, but the upstream said stop
            return False
        self.in_flight += 1
        return True

    def _head_wait(self, now: float) -> float:
        head = self.queue.peek()
        wait = 0.0 if head is None else self.rate.ready_at(now, head[1].tokens) - now
        return max(wait, BUSY_RETRY_S)
