"""A circuit breaker: a pure state machine, ``now`` injected by the caller.

closed -> open after ``failures`` consecutive failures; open -> half_open once ``cooldown_s`` has
passed; half_open lets ``probes`` calls through at a time, closes on a success and opens again on a
failure. Only failures that say something about the upstream's health count (connect errors,
timeouts, 5xx, and the upstream's own 408/409/429, which say it cannot serve now); a client's
other 4xx never opens the breaker.

Each half-open spell has a ``period`` number. A probe remembers the period it was admitted in, and
``release_probe(period)`` (the probe ended without a verdict, e.g. its client left) frees a slot of
that period only: a straggler from an earlier spell never lets an extra probe through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerStats:
    state: State
    consecutive_failures: int
    opened_total: int


class Breaker:
    def __init__(self, *, failures: int, cooldown_s: float, probes: int = 1) -> None:
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._max_probes = probes
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self._opened_total = 0
        self.period = 0

    def state(self, now: float) -> State:
        if self._state == "open" and now - self._opened_at >= self._cooldown_s:
            self._state = "half_open"
            self._probes = 0
            self.period += 1
        return self._state

    def allow(self, now: float) -> bool:
        """Whether a call may start now; a half-open breaker counts the probe it lets through."""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "half_open" and self._probes < self._max_probes:
            self._probes += 1
            return True
        return False

    def retry_after(self, now: float) -> float:
        return max(0.0, self._opened_at + self._cooldown_s - now)

    def success(self) -> None:
        self._failures = 0
        self._state = "closed"

    def failure(self, now: float) -> None:
        self._failures += 1
        if self._state == "half_open" or self._failures >= self._threshold:
            if self._state != "open":
                self._opened_total += 1
            self._state = "open"
            self._opened_at = now

    def release_probe(self, period: int) -> None:
        """A probe of ``period`` ended without a verdict (e.g. its client left): free its slot."""
        if self._state == "half_open" and period == self.period and self._probes > 0:
            self._probes -= 1

    def statistics(self, now: float) -> BreakerStats:
        return BreakerStats(self.state(now), self._failures, self._opened_total)
