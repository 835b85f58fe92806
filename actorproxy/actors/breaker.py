"""A circuit breaker: a pure state machine, ``now`` injected by the caller.

closed -> open on EITHER rule:

- ``failures`` consecutive failures (a success resets the count), or
- the failure rate: with ``rate=RateRule(failure_rate, window_s, min_calls)``, once at least
  ``min_calls`` calls ended within the last ``window_s`` seconds and at least ``failure_rate`` of
  them failed. The window keeps counts in ``WINDOW_BUCKETS`` buckets of ``w = window_s /
  WINDOW_BUCKETS`` seconds, so memory stays constant: an outcome at ``t`` counts at ``now`` iff
  ``floor(t / w) > floor(now / w) - WINDOW_BUCKETS``. So one older than ``window_s`` never counts,
  one younger than ``window_s - w`` always does. Only outcomes of the current closed spell count.

open -> half_open once ``cooldown_s`` has passed. The cool-down is served in full: a late verdict of
a call admitted before the opening neither closes the breaker (a success) nor extends the cool-down
(a failure). Under a 50 % failure rate half the calls in flight still succeed; letting them close
the breaker would undo the rate rule at once.

half_open lets ``probes`` calls through at a time. The first success closes the breaker, a failure
opens it again for a full cool-down. Any verdict counts while half-open, also a straggler admitted
before the opening: it too is news of the upstream's health now.

Only failures that say something about the upstream's health should be reported (connect errors,
timeouts, 5xx, and the upstream's own 408/409/429, which say it cannot serve now); a client's
other 4xx is a success for the breaker, the upstream answered sensibly.

Each half-open spell has a ``period`` number. A probe remembers the period it was admitted in, and
``release_probe(period)`` (the probe ended without a verdict, e.g. its client left) frees a slot of
that period only: a straggler from an earlier spell never lets an extra probe through.

Every state change is kept as a ``Transition`` until the owner drains them with ``transitions()``,
to log and count them; the breaker keeps the last ``TRANSITIONS_KEPT`` when nobody drains.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]
#: Why a transition happened: ``failures`` (consecutive) and ``failure_rate`` open a closed
#: breaker, ``cooldown`` half-opens it, ``probe_failure``/``probe_success`` end a half-open spell.
Reason = Literal["failures", "failure_rate", "cooldown", "probe_failure", "probe_success"]

WINDOW_BUCKETS = 30
TRANSITIONS_KEPT = 64


@dataclass(frozen=True, slots=True)
class BreakerStats:
    state: State
    consecutive_failures: int
    opened_total: int


@dataclass(frozen=True, slots=True)
class WindowStats:
    """The calls that ended in the sliding window while closed, and how many of them failed."""

    calls: int
    failures: int


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change. ``at`` is when it became due: a half-opening at the cool-down's end."""

    at: float
    before: State
    after: State
    reason: Reason


@dataclass(frozen=True, slots=True)
class RateRule:
    """Open when ``failure_rate`` of at least ``min_calls`` calls in ``window_s`` seconds failed."""

    failure_rate: float = 0.5
    window_s: float = 30.0
    min_calls: int = 10

    def __post_init__(self) -> None:
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be in (0, 1]")
        if not self.window_s > 0.0 or self.min_calls < 1:
            raise ValueError("window_s must be positive and min_calls at least 1")


@dataclass(slots=True)
class _Bucket:
    index: int
    calls: int = 0
    failures: int = 0


class _Window:
    """Outcome counts over the last ``window_s`` seconds in ``WINDOW_BUCKETS`` time buckets."""

    def __init__(self, window_s: float) -> None:
        self._width = window_s / WINDOW_BUCKETS
        self._buckets: deque[_Bucket] = deque()

    def add(self, now: float, *, failed: bool) -> None:
        index = self._prune(now)
        if not self._buckets or self._buckets[-1].index < index:
            self._buckets.append(_Bucket(index))
        bucket = self._buckets[-1]  # time never runs back; if it did, the newest bucket takes it
        bucket.calls += 1
        bucket.failures += failed

    def totals(self, now: float) -> WindowStats:
        self._prune(now)
        calls = sum(bucket.calls for bucket in self._buckets)
        return WindowStats(calls, sum(bucket.failures for bucket in self._buckets))

    def clear(self) -> None:
        self._buckets.clear()

    def _prune(self, now: float) -> int:
        index = math.floor(now / self._width)
        while self._buckets and self._buckets[0].index <= index - WINDOW_BUCKETS:
            self._buckets.popleft()
        return index


class Breaker:
    """One provider's breaker.

    ``failures``: consecutive failures that open it; ``cooldown_s``: how long it stays open;
    ``probes``: calls let through at a time while half-open; ``rate``: the failure-rate rule, or
    ``None`` for consecutive failures only.
    """

    def __init__(
        self,
        *,
        failures: int,
        cooldown_s: float,
        probes: int = 1,
        rate: RateRule | None = None,
    ) -> None:
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._max_probes = probes
        self._rate = rate
        self._window = _Window(rate.window_s) if rate is not None else None
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self._opened_total = 0
        self._latest = 0.0
        self._transitions: deque[Transition] = deque(maxlen=TRANSITIONS_KEPT)
        self.period = 0

    def state(self, now: float) -> State:
        self._latest = max(self._latest, now)
        if self._state == "open" and now - self._opened_at >= self._cooldown_s:
            self._move("half_open", "cooldown", self._opened_at + self._cooldown_s)
            self._probes = 0
            self.period += 1
        return self._state

    def admits(self, now: float) -> bool:
        """Whether ``allow(now)`` would let a call through, without taking a probe slot."""
        state = self.state(now)
        return state == "closed" or (state == "half_open" and self._probes < self._max_probes)

    def allow(self, now: float) -> bool:
        """Whether a call may start now; a half-open breaker counts the probe it lets through."""
        if not self.admits(now):
            return False
        if self._state == "half_open":
            self._probes += 1
        return True

    def retry_after(self, now: float) -> float:
        return max(0.0, self._opened_at + self._cooldown_s - now)

    def success(self, now: float | None = None) -> None:
        """A call ended well. Without ``now``, the latest time the breaker was given is used."""
        at = self._latest if now is None else now
        self._failures = 0
        state = self.state(at)
        if state == "half_open":
            self._move("closed", "probe_success", at)
        elif state == "closed" and self._window is not None:
            self._window.add(at, failed=False)

    def failure(self, now: float) -> None:
        self._failures += 1
        state = self.state(now)
        if state == "half_open":
            self._open(now, "probe_failure")
        elif state == "closed":
            if self._window is not None:
                self._window.add(now, failed=True)
            if self._failures >= self._threshold:
                self._open(now, "failures")
            elif self._rate_exceeded(now):
                self._open(now, "failure_rate")

    def release_probe(self, period: int) -> None:
        """A probe of ``period`` ended without a verdict (e.g. its client left): free its slot."""
        if self._state == "half_open" and period == self.period and self._probes > 0:
            self._probes -= 1

    def transitions(self) -> list[Transition]:
        """The state changes since the last call, oldest first; the breaker forgets them."""
        drained = list(self._transitions)
        self._transitions.clear()
        return drained

    def statistics(self, now: float) -> BreakerStats:
        return BreakerStats(self.state(now), self._failures, self._opened_total)

    def window(self, now: float) -> WindowStats:
        """The failure-rate window as of ``now``; empty without a rate rule or while not closed."""
        if self._window is None:
            return WindowStats(0, 0)
        return self._window.totals(now)

    def _rate_exceeded(self, now: float) -> bool:
        if self._rate is None or self._window is None:
            return False
        window = self._window.totals(now)
        if window.calls < self._rate.min_calls:
            return False
        return window.failures / window.calls >= self._rate.failure_rate

    def _open(self, now: float, reason: Reason) -> None:
        self._move("open", reason, now)
        self._opened_at = now
        self._opened_total += 1

    def _move(self, after: State, reason: Reason, at: float) -> None:
        self._transitions.append(Transition(at, self._state, after, reason))
        self._state = after
        if self._window is not None:
            self._window.clear()  # each closed spell starts with an empty window
