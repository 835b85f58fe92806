"""Per-key limits: ``rpm``, ``tpm``, ``max_concurrency`` and a USD budget. Pure, time injected.

The proxy asks ``KeyLimiter.admit`` once per client request, before any target is tried, and
settles the ticket it got exactly once when the request ends (``settle``). What a key may do comes
from its ``keys.Limits`` (the keys file); a key with none of these limits costs one dict lookup.

* **rpm / tpm**: an exact sliding window per key (``limits.rate.RateLimiter``), the same ledger the
  provider actors use. ``admit`` reserves the request's estimated tokens; ``settle`` lowers the
  charge to the real usage (``reconcile``). A request the upstream never answered is charged 0
  tokens but keeps its request slot: the key made the request.
* **max_concurrency**: requests of the key between ``admit`` and ``settle``.
* **budget**: USD per UTC day or calendar month (``budget_period``), from the price table
  (``[prices."<model>"]``, USD per million input, cached input and output tokens). ``admit``
  reserves the estimated cost (tokens times the route's highest price) and refuses a request whose
  reservation would take spend plus reservations past the budget; ``settle`` replaces the
  reservation with the real cost. So spend never passes the budget as long as no request uses more
  tokens than it reserved; a request whose usage is unknown is charged its full reservation.

Refusals are ``errors.RateLimited`` (429, ``retry-after`` = when a retry can succeed),
``errors.QuotaExceeded`` (429 ``insufficient_quota``, ``retry-after`` = the next period when the
spend itself is the obstacle), or ``errors.InvalidRequest`` (a reservation above ``tpm`` can never
be admitted). State lives in memory, per replica: N replicas allow N times a key's limits. The
interface (admit / settle / headers) is what a shared store with leases would implement later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from actorproxy import errors
from actorproxy.config import Price
from actorproxy.keys import Limits
from actorproxy.limits.rate import NeverAdmissible, RateLimiter, Reservation
from actorproxy.limits.usage import TokenUsage

Period = Literal["day", "month"]
MILLION = 1_000_000
CONCURRENCY_RETRY_S = 1.0  # when a slot frees is unknown: the shortest honest advice


def cost_usd(price: Price, usage: TokenUsage) -> float:
    """What ``usage`` costs at ``price`` (cached prompt tokens at ``cached_input``)."""
    cached = min(max(usage.cached, 0), usage.prompt)
    cached_price = price.input if price.cached_input is None else price.cached_input
    return (
        (usage.prompt - cached) * price.input
        + cached * cached_price
        + usage.completion * price.output
    ) / MILLION


def reserve_usd(price: Price, tokens: int) -> float:
    """An upper bound of the cost of ``tokens`` tokens of any kind at ``price``."""
    return tokens * max(price.input, price.output, price.cached_input or 0.0) / MILLION


def period_of(period: Period, wall: float) -> tuple[str, float]:
    """The UTC period holding Unix time ``wall`` (``2026-12-03`` or ``2026-12``) and its end."""
    moment = datetime.fromtimestamp(wall, UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), (start + timedelta(days=1)).timestamp()
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start.strftime("%Y-%m"), end.timestamp()


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """One request as the key limiter sees it: when, its token estimate, its costliest price."""

    now: float  # monotonic (trio.current_time())
    wall: float  # Unix time, for budget periods
    tokens: int
    price: Price | None  # the highest price among the route's targets; None if one has none


@dataclass(slots=True)
class _Budget:
    kind: Period
    period: str
    ends: float
    spent: float = 0.0
    reserved: float = 0.0


@dataclass(slots=True)
class _KeyState:
    limits: Limits
    rate: RateLimiter | None
    in_flight: int = 0
    budget: _Budget | None = None


@dataclass(eq=False, slots=True)
class KeyTicket:
    """One admitted request of a key; settle it exactly once (``KeyLimiter.settle``)."""

    state: _KeyState | None
    reservation: Reservation | None = None
    limiter: RateLimiter | None = None
    budget: _Budget | None = None
    cost_reserved: float = 0.0
    settled: bool = False

    @property
    def wants_usage(self) -> bool:
        """Whether settling needs the real usage (a ``tpm`` or a budget), or any value will do."""
        return self.budget is not None or (
            self.limiter is not None and self.limiter.tpm is not None
        )


@dataclass(frozen=True, slots=True)
class KeyStats:
    in_flight: int
    spent_usd: float | None
    reserved_usd: float | None


def _limited(limits: Limits) -> bool:
    return (
        limits.rpm is not None
        or limits.tpm is not None
        or limits.max_concurrency is not None
        or limits.budget_usd is not None
    )


class KeyLimiter:
    """The limits of every key, in memory (see the module doc)."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeyState] = {}

    def admit(self, key_id: str, limits: Limits, request: KeyRequest) -> KeyTicket:
        """Admit one request of ``key_id`` or raise the refusal (see the module doc)."""
        if not _limited(limits):
            return KeyTicket(None)
        state = self._state(key_id, limits)
        self._check_concurrency(state)
        budget, cost = self._check_budget(state, request)
        reservation = self._acquire(state, request)
        state.in_flight += 1
        if budget is not None:
            budget.reserved += cost
        return KeyTicket(state, reservation, state.rate, budget, cost)

    def settle(
        self, ticket: KeyTicket, now: float, usage: TokenUsage | None, price: Price | None
    ) -> None:
        """End ``ticket``'s request. ``usage`` is the real usage; ``None`` means unknown, which
        keeps the whole reservation charged. ``price`` is the served target's (``None``: the
        reservation stands for the cost). Settling twice raises ``RuntimeError``."""
        if ticket.settled:
            raise RuntimeError("the key ticket was already settled")
        ticket.settled = True
        state = ticket.state
        if state is None:
            return
        state.in_flight -= 1
        if ticket.reservation is not None and ticket.limiter is not None and usage is not None:
            ticket.limiter.reconcile(ticket.reservation, usage.total, now)
        budget = ticket.budget
        if budget is not None:
            budget.reserved -= ticket.cost_reserved
            if usage is not None and price is not None:
                budget.spent += cost_usd(price, usage)
            else:
                budget.spent += ticket.cost_reserved

    def headers(self, key_id: str, now: float) -> list[tuple[bytes, bytes]]:
        """OpenAI's ``x-ratelimit-*`` headers for the key's ``rpm`` and ``tpm``, if it has them."""
        state = self._keys.get(key_id)
        if state is None or state.rate is None:
            return []
        stats = state.rate.statistics(now)
        found: list[tuple[bytes, bytes]] = []
        for kind, limit, remaining, reset in (
            (b"requests", stats.rpm, stats.remaining_requests, stats.reset_requests_s),
            (b"tokens", stats.tpm, stats.remaining_tokens, stats.reset_tokens_s),
        ):
            if limit is not None and remaining is not None:
                found += [
                    (b"x-ratelimit-limit-" + kind, str(limit).encode()),
                    (b"x-ratelimit-remaining-" + kind, str(remaining).encode()),
                    (b"x-ratelimit-reset-" + kind, duration(reset).encode()),
                ]
        return found

    def statistics(self, key_id: str, wall: float) -> KeyStats:
        state = self._keys.get(key_id)
        if state is None:
            return KeyStats(0, None, None)
        budget = self._budget(state, wall)
        if budget is None:
            return KeyStats(state.in_flight, None, None)
        return KeyStats(state.in_flight, budget.spent, budget.reserved)

    def _state(self, key_id: str, limits: Limits) -> _KeyState:
        state = self._keys.get(key_id)
        if state is None:
            state = self._keys[key_id] = _KeyState(limits, _rate(limits))
        elif state.limits != limits:  # the keys file changed: same windows, same spend
            state.limits = limits
            if state.rate is None or (limits.rpm is None and limits.tpm is None):
                state.rate = _rate(limits)
            else:
                state.rate.rpm, state.rate.tpm = limits.rpm, limits.tpm
        return state

    @staticmethod
    def _check_concurrency(state: _KeyState) -> None:
        most = state.limits.max_concurrency
        if most is not None and state.in_flight >= most:
            raise errors.RateLimited(
                f"This API key already has {state.in_flight} requests in flight, its limit "
                f"(max_concurrency = {most}). Wait for one to finish.",
                retry_after_s=CONCURRENCY_RETRY_S,
                reason="key_concurrency",
            )

    def _check_budget(self, state: _KeyState, request: KeyRequest) -> tuple[_Budget | None, float]:
        budget = self._budget(state, request.wall)
        if budget is None:
            return None, 0.0
        limit = state.limits.budget_usd or 0.0
        if request.price is None:
            raise errors.PermissionDenied(
                "This API key has a budget, and a target of this model has no price in the "
                "proxy's price table, so its spend could not be counted.",
                param="model",
            )
        cost = reserve_usd(request.price, request.tokens)
        if budget.spent + budget.reserved + cost <= limit:
            return budget, cost
        # Spend alone leaves no room: only the next period helps. Else requests in flight
        # hold the room, and their end may give it back.
        spent_out = budget.spent + cost > limit
        wait = budget.ends - request.wall if spent_out else CONCURRENCY_RETRY_S
        raise errors.QuotaExceeded(
            f"This API key has spent ${budget.spent:.4f} of its ${limit:.2f} budget for "
            f"{budget.period}, ${budget.reserved:.4f} more is reserved by requests in flight, "
            f"and this request may cost up to ${cost:.4f}. The budget renews with the next "
            f"{state.limits.budget_period} (UTC).",
            retry_after_s=max(wait, 0.001),
            reason="key_budget",
        )

    @staticmethod
    def _budget(state: _KeyState, wall: float) -> _Budget | None:
        period = state.limits.budget_period
        if period is None or state.limits.budget_usd is None:
            return None
        budget = state.budget
        if budget is not None and budget.kind == period and wall < budget.ends:
            return budget  # the common case, without date arithmetic
        key, ends = period_of(period, wall)
        if budget is None or budget.kind != period or budget.period != key:
            state.budget = budget = _Budget(period, key, ends)
        return budget

    @staticmethod
    def _acquire(state: _KeyState, request: KeyRequest) -> Reservation | None:
        rate = state.rate
        if rate is None:
            return None
        tokens = request.tokens if rate.tpm is not None else 0
        try:
            reservation = rate.try_acquire(request.now, tokens)
        except NeverAdmissible as exc:
            raise errors.InvalidRequest(
                f"This request may use {exc.tokens} tokens (prompt estimate plus max_tokens), "
                f"more than this API key's limit of {exc.tpm} tokens per minute. Lower max_tokens.",
                param="max_tokens",
                code="tokens_exceed_key_limit",
            ) from None
        if reservation is None:
            wait = rate.wait_time(request.now, tokens)
            raise errors.RateLimited(
                f"This API key is over its rate limit ({_describe(rate)} per minute). "
                f"Retry in {duration(wait)}.",
                retry_after_s=wait,
                reason="key_rate",
            )
        return reservation


def _rate(limits: Limits) -> RateLimiter | None:
    if limits.rpm is None and limits.tpm is None:
        return None
    return RateLimiter(rpm=limits.rpm, tpm=limits.tpm)


def _describe(rate: RateLimiter) -> str:
    parts = [] if rate.rpm is None else [f"{rate.rpm} requests"]
    parts += [] if rate.tpm is None else [f"{rate.tpm} tokens"]
    return " and ".join(parts)


def duration(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` format: ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1.0:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    millis = math.ceil(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    text = f"{secs}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text
