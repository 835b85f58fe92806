"""Retries and fall-overs for one request: a pure policy, randomness and time passed in.

After a failed attempt the caller asks ``RetryPolicy.decide`` what to do and gets one of:

``Retry(delay_s)``
    Try the same target again after sleeping ``delay_s``.
``NextTarget(reason)``
    Leave this target for the next one in the order (``strategies.order``); with none left the
    caller answers with the error it holds.
``GiveUp(reason)``
    Answer with this error now.

The rules, first match wins:

1. The first byte went to the client (``streaming``): ``GiveUp`` — a response cannot be restarted.
2. No time left before the request's deadline: ``GiveUp``.
3. The target refused without trying the upstream: its breaker is open (``Unavailable``), its
   queue is full or cannot meet the deadline (``RateLimited``), its actor crashed
   (``ActorFailed``), or its adapter cannot express the request (``CannotExpress``): ``NextTarget``
   at once — another target may well serve it, this one will not in the next moment.
4. The error is not ``retryable`` (a client's 4xx, an unparseable answer): ``GiveUp``. Retryable
   are connect errors, timeouts, protocol errors and the upstream statuses of
   ``errors.RETRYABLE_STATUS`` (408, 409, 429, 500, 502, 503, 504, 529).
5. ``max_retries`` retries of this target are spent: ``NextTarget``.
6. The delay — full jitter, ``uniform(0, min(cap_s, base_s * 2**attempt))``, raised to the
   upstream's ``Retry-After`` when it asked for more — exceeds ``max_wait_s`` or the time left:
   ``NextTarget`` rather than wait (another target may answer at once; a target that said "not
   before t" is never tried again sooner than t).
7. Otherwise ``Retry(delay)``.

``attempt`` counts from 0 per target: the attempt that just failed. Full jitter is the AWS
Architecture Blog's "Exponential Backoff And Jitter" variant that spreads retries most evenly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from actorproxy import errors

NextReason = Literal["refused", "retries_exhausted", "wait_too_long"]
GiveUpReason = Literal["streaming_started", "deadline", "not_retryable"]

#: "Not this target": nothing was sent upstream, or the target's actor gave up on the call.
TARGET_REFUSALS: tuple[type[errors.ProxyError], ...] = (
    errors.Unavailable,
    errors.RateLimited,
    errors.ActorFailed,
    errors.CannotExpress,
)


@dataclass(frozen=True, slots=True)
class Retry:
    delay_s: float


@dataclass(frozen=True, slots=True)
class NextTarget:
    reason: NextReason


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: GiveUpReason


Decision = Retry | NextTarget | GiveUp


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries`` per target; backoff ceilings ``base_s * 2**attempt`` capped at ``cap_s``;
    ``max_wait_s``: the longest sleep before retrying the same target (a longer ``Retry-After``
    moves on to the next target)."""

    max_retries: int = 1
    base_s: float = 0.25
    cap_s: float = 4.0
    max_wait_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if not all(value >= 0.0 for value in (self.base_s, self.cap_s, self.max_wait_s)):
            raise ValueError("base_s, cap_s and max_wait_s must be >= 0")

    def ceiling(self, attempt: int) -> float:
        """The full-jitter ceiling after failed attempt ``attempt``: min(cap, base * 2**attempt)."""
        return min(self.cap_s, self.base_s * 2.0 ** min(max(attempt, 0), 1000))

    def next_delay(
        self, attempt: int, retry_after_s: float | None, rng: random.Random
    ) -> float | None:
        """The sleep before retrying after failed ``attempt``; ``None`` when retries are spent.

        Always in ``[0, ceiling(attempt)]`` and never below ``retry_after_s``.
        """
        if attempt >= self.max_retries:
            return None
        delay = rng.uniform(0.0, self.ceiling(attempt))
        return max(delay, retry_after_s or 0.0)

    def decide(
        self,
        error: errors.ProxyError,
        attempt: int,
        *,
        streaming: bool,
        deadline_left_s: float,
        rng: random.Random,
    ) -> Decision:
        """What to do after ``error`` ended ``attempt`` (0-based, per target); module doc rules.

        ``streaming``: the first byte went to the client. ``deadline_left_s``: seconds until the
        request's deadline (``math.inf`` for none).
        """
        if streaming:
            return GiveUp("streaming_started")
        if deadline_left_s <= 0.0:
            return GiveUp("deadline")
        if isinstance(error, TARGET_REFUSALS):
            return NextTarget("refused")
        if not error.retryable:
            return GiveUp("not_retryable")
        delay = self.next_delay(attempt, retry_after_s(error), rng)
        if delay is None:
            return NextTarget("retries_exhausted")
        if delay > min(self.max_wait_s, deadline_left_s):
            return NextTarget("wait_too_long")
        return Retry(delay)


def retry_after_s(error: errors.ProxyError) -> float | None:
    """How long the error says to wait: our own 429's value, else the upstream's headers."""
    if isinstance(error, errors.RateLimited):
        return error.retry_after_s
    return parse_retry_after(error.headers)


def parse_retry_after(headers: Sequence[tuple[bytes, bytes]]) -> float | None:
    """``retry-after-ms`` (milliseconds, OpenAI/Azure) wins over ``retry-after`` (seconds).

    Names match case-insensitively. The HTTP-date form of ``retry-after`` needs a wall clock and
    no upstream we speak to sends it: it reads as absent, as does anything negative or unparsable.
    """
    found: dict[bytes, float] = {}
    for name, value in headers:
        key = name.lower()
        if key in (b"retry-after-ms", b"retry-after") and key not in found:
            seconds = _number(value)
            if seconds is not None:
                found[key] = seconds / 1000.0 if key == b"retry-after-ms" else seconds
    return found.get(b"retry-after-ms", found.get(b"retry-after"))


def _number(value: bytes) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0.0 else None
