"""Exact sliding-window limits on requests and tokens per window: a pure ledger, ``now`` injected.

A token bucket lets through twice its rate across a window edge; this is an exact sliding log
instead. The ledger holds one entry per admission of the last ``window_s`` seconds (time, 1
request, its tokens) plus "excess" entries (time, 0 requests, tokens) for usage that exceeded its
reservation. An entry admitted at ``t`` counts while ``now < t + window_s`` (its ``expires``).
A request of ``tokens`` is admitted at ``now`` only when, counting the entries still in the ledger,
``requests + 1 <= rpm`` and ``tokens_in_window + tokens <= tpm`` and ``now >= paused_until``.

Guarantees (docs/limits.md names the tests that prove each):

* **Requests.** In every half-open window ``[s, s + window_s)`` at most ``rpm`` admissions,
  not counting released ones.
* **Tokens, exact.** Each admission is charged its reservation at its admission time;
  ``reconcile`` lowers the charge to the real usage, keeping the admission time (the moment the
  upstream saw the request, which is when upstreams count it). If no request uses more than it
  reserved, in every window ``[s, s + window_s)`` the final charges (real usage, or the
  reservation for a request never reconciled) of the admissions in it sum to at most ``tpm``:
  charges only ever decrease after admission, so the check made at the window's last admission
  still holds for the final values.
* **Tokens, under-estimated.** Usage above the reservation cannot be undone, so the excess is
  charged at reconcile time (charging it at admission time would rewrite a window that already
  admitted more work on the smaller figure, and leave it sooner). No request is admitted while
  the ledger, excess included, is over the limit. Exactly: for every admission ``j``, the charges
  recorded before ``j`` in ``(t_j - window_s, t_j]`` (final values) plus ``j``'s own final charge
  are at most ``tpm``. An overshoot is thus paid back by a pause, never compounded.

``now`` must never decrease from one call to the next (``trio.current_time()`` never does);
a call with an earlier ``now`` raises ``ValueError``. Complexity: admission, reconcile and
release are O(1) amortised; ``ready_at`` scans only the entries that must leave the window.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 60.0


class NeverAdmissible(ValueError):
    """A request reserves more tokens than ``tpm``: no window can ever admit it (answer 400)."""

    def __init__(self, tokens: int, tpm: int) -> None:
        super().__init__(f"{tokens} tokens exceed the limit of {tpm} tokens per window")
        self.tokens = tokens
        self.tpm = tpm


@dataclass(eq=False, slots=True)
class _Entry:
    expires: float
    requests: int  # 1 for an admission, 0 for an excess charge or a released admission
    tokens: int
    live: bool = True  # still counted in the running sums (not yet past ``expires``)
    settled: bool = False  # reconciled or released


@dataclass(frozen=True, slots=True, eq=False)
class Reservation:
    """One admission: a request slot and ``tokens`` reserved at ``admitted_at``.

    Settle it exactly once: ``reconcile`` with the real usage, or ``release`` if the request
    never reached the upstream. A reservation never settled stays charged in full until it
    leaves the window: the safe default for an attempt whose usage is unknown.
    """

    admitted_at: float
    tokens: int
    _entry: _Entry = field(repr=False)
    _owner: RateLimiter = field(repr=False)


@dataclass(frozen=True, slots=True)
class RateStats:
    """A snapshot at ``now``; ``remaining_*`` and the limits are ``None`` when unlimited.

    ``reset_*_s`` is the time until the window holds no requests (tokens) at all, i.e. until the
    limit is back to its initial state: OpenAI's meaning of ``x-ratelimit-reset-*``.
    """

    rpm: int | None
    tpm: int | None
    requests: int
    tokens: int
    remaining_requests: int | None
    remaining_tokens: int | None
    reset_requests_s: float
    reset_tokens_s: float
    paused_until: float | None


def estimate_tokens(
    body_len: int,
    max_output: int | None,
    default_output: int,
    *,
    choices: int = 1,
    bytes_per_token: float = 4.0,
) -> int:
    """The tokens to reserve for a request: ``ceil(body_len / bytes_per_token)`` for the prompt
    plus ``choices * (max_output or default_output)`` for the output.

    Four bytes per token is the usual ratio of English text in OpenAI's tokenizers, and the body
    also holds JSON syntax, so it usually over-estimates (reconcile gives the rest back). Text in
    other scripts can need more tokens per byte; ``bytes_per_token=1`` is a safe upper bound for
    text, which makes the token guarantee exact without assumptions (see the module doc).
    """
    if body_len < 0 or default_output < 0 or choices < 1 or bytes_per_token <= 0:
        raise ValueError("estimate_tokens: negative size or non-positive ratio")
    output = default_output if max_output is None else max(0, max_output)
    return math.ceil(body_len / bytes_per_token) + choices * output


class RateLimiter:
    """Exact sliding-window ``rpm``/``tpm`` limits; ``None`` leaves a dimension unlimited."""

    def __init__(self, *, rpm: int | None, tpm: int | None, window_s: float = WINDOW_S) -> None:
        if (rpm is not None and rpm < 1) or (tpm is not None and tpm < 1) or window_s <= 0:
            raise ValueError("RateLimiter: rpm, tpm and window_s must be positive")
        self.rpm = rpm
        self.tpm = tpm
        self.window_s = window_s
        self._entries: deque[_Entry] = deque()
        self._requests = 0  # sums over the live entries
        self._tokens = 0
        self._paused_until = -math.inf
        self._now = -math.inf

    def admissible(self, tokens: int) -> bool:
        """Whether ``tokens`` can ever be admitted (``False``: answer 400, never queue it)."""
        return self.tpm is None or tokens <= self.tpm

    def try_acquire(self, now: float, tokens: int) -> Reservation | None:
        """Admit a request reserving ``tokens`` now, or ``None`` (``ready_at`` says when).

        Raises ``NeverAdmissible`` when ``tokens > tpm``.
        """
        if self.ready_at(now, tokens) > now:
            return None
        entry = _Entry(now + self.window_s, 1, tokens)
        self._append(entry)
        return Reservation(now, tokens, entry, self)

    def ready_at(self, now: float, tokens: int, *, ahead: int = 0, ahead_tokens: int = 0) -> float:
        """The earliest time ``>= now`` at which ``try_acquire(t, tokens)`` succeeds, absolute.

        Exact when nothing else changes the ledger meanwhile (no other admission, reconcile or
        pause): ``try_acquire`` fails at any earlier time and succeeds at the returned one. Use
        this with ``trio.sleep_until``; ``wait_time`` is the relative form for ``Retry-After``.

        ``ahead``/``ahead_tokens`` count requests that will be admitted first (those ahead in a
        queue; their tokens may be left at 0). The answer is then the earliest time at which the
        ledger could hold all of them and this one: exact if they are admitted at once, and a
        lower bound on this request's admission in any case, as long as it is below
        ``now + window_s`` (all of them are admitted after ``now`` and stay in the window until
        then). When they cannot fit in one window, ``now + window_s`` is returned, a lower bound.
        Raises ``NeverAdmissible`` when ``tokens > tpm``.
        """
        self._advance(now)
        if not self.admissible(tokens):
            assert self.tpm is not None
            raise NeverAdmissible(tokens, self.tpm)
        if ahead < 0 or ahead_tokens < 0 or tokens < 0:
            raise ValueError("ready_at: negative tokens or count")
        excess_requests = 0 if self.rpm is None else self._requests + ahead + 1 - self.rpm
        excess_tokens = 0 if self.tpm is None else self._tokens + ahead_tokens + tokens - self.tpm
        ready = self._expiry_freeing(excess_requests, excess_tokens)
        return max(now, self._paused_until, min(ready, now + self.window_s))

    def wait_time(self, now: float, tokens: int) -> float:
        """Seconds from ``now`` until ``ready_at``: the smallest ``w`` with ``now + w >= ready``.

        Rounding up to whole seconds for a ``Retry-After`` header keeps it obeyable.
        """
        ready = self.ready_at(now, tokens)
        wait = ready - now
        while now + wait < ready:  # float rounding: never answer a moment too early
            wait = math.nextafter(wait, math.inf)
        return wait

    def reconcile(self, reservation: Reservation, actual_tokens: int, now: float) -> None:
        """Replace ``reservation``'s charge with the real usage (see the module doc).

        Up to the reservation, the usage is charged at the admission time; any excess is charged
        at ``now``. Raises ``RuntimeError`` if the reservation was already settled.
        """
        if actual_tokens < 0:
            raise ValueError("reconcile: negative token count")
        self._advance(now)
        entry = self._settle(reservation)
        kept = min(actual_tokens, reservation.tokens)
        if entry.live:
            self._tokens -= entry.tokens - kept
        entry.tokens = kept
        if actual_tokens > kept:
            self._append(_Entry(now + self.window_s, 0, actual_tokens - kept))

    def release(self, reservation: Reservation) -> None:
        """Give back the slot and tokens of a request the upstream never saw.

        For a request cancelled before it was sent, or whose connection failed before a byte of
        it went out; releasing one the upstream did see breaks the guarantees. Raises
        ``RuntimeError`` if the reservation was already settled.
        """
        entry = self._settle(reservation)
        if entry.live:
            self._requests -= entry.requests
            self._tokens -= entry.tokens
        entry.requests = entry.tokens = 0

    def pause_until(self, until: float) -> None:
        """Admit nothing before ``until`` (the upstream said stop); pauses only ever extend."""
        self._paused_until = max(self._paused_until, until)

    def statistics(self, now: float) -> RateStats:
        self._advance(now)
        return RateStats(
            rpm=self.rpm,
            tpm=self.tpm,
            requests=self._requests,
            tokens=self._tokens,
            remaining_requests=None if self.rpm is None else max(0, self.rpm - self._requests),
            remaining_tokens=None if self.tpm is None else max(0, self.tpm - self._tokens),
            reset_requests_s=self._last_expiry(now, requests=True) - now,
            reset_tokens_s=self._last_expiry(now, requests=False) - now,
            paused_until=self._paused_until if self._paused_until > now else None,
        )

    def _advance(self, now: float) -> None:
        if now < self._now:
            raise ValueError(f"time went backwards: {now} < {self._now}")
        self._now = now
        entries = self._entries
        while entries and entries[0].expires <= now:
            entry = entries.popleft()
            entry.live = False
            self._requests -= entry.requests
            self._tokens -= entry.tokens

    def _append(self, entry: _Entry) -> None:
        self._entries.append(entry)  # ``now`` never decreases: the deque stays sorted
        self._requests += entry.requests
        self._tokens += entry.tokens

    def _settle(self, reservation: Reservation) -> _Entry:
        entry = reservation._entry
        if reservation._owner is not self:
            raise ValueError("the reservation belongs to another limiter")
        if entry.settled:
            raise RuntimeError("the reservation was already reconciled or released")
        entry.settled = True
        return entry

    def _expiry_freeing(self, requests: int, tokens: int) -> float:
        """When enough entries will have left to free ``requests`` and ``tokens``; inf if never."""
        ready = -math.inf
        for entry in self._entries:
            if requests <= 0 and tokens <= 0:
                return ready
            requests -= entry.requests
            tokens -= entry.tokens
            ready = entry.expires
        return ready if requests <= 0 and tokens <= 0 else math.inf

    def _last_expiry(self, now: float, *, requests: bool) -> float:
        for entry in reversed(self._entries):
            if entry.requests if requests else entry.tokens:
                return entry.expires
        return now
