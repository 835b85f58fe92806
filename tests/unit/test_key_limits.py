"""Per-key limits (``limits.keys``, ``limits.gate``) driven by simulated clients on trio's
``autojump_clock``: rpm/tpm in every 60-second window, concurrency, budgets and their periods,
two keys side by side, and the headers and refusals a client sees."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import trio

from actorproxy import errors
from actorproxy.config import KeyLimitsConfig, Price
from actorproxy.keys import Limits
from actorproxy.limits.gate import KeyGate, highest_price, price_for
from actorproxy.limits.keys import (
    KeyLimiter,
    KeyRequest,
    KeyTicket,
    cost_usd,
    duration,
    period_of,
)
from actorproxy.limits.usage import TokenUsage
from actorproxy.routing import Route, Target
from actorproxy.schema.views import RouteView

W = 60.0
PRICE = Price(input=1.0, output=2.0, cached_input=0.5)  # USD per million tokens
DEC_3 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp()


@dataclass
class Log:
    """What the limiter let through, as an upstream would see it."""

    admitted: list[tuple[float, int]] = field(default_factory=list)  # (time, charged tokens)
    refused: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    spend: list[tuple[float, float]] = field(default_factory=list)  # (wall, usd)


@dataclass
class Client:
    """A client that sends back to back, obeying ``retry-after`` like the OpenAI SDK does."""

    limiter: KeyLimiter
    key_id: str
    limits: Limits
    log: Log
    tokens: int = 100
    hold_s: float = 0.5
    price: Price | None = None
    wall0: float = DEC_3
    used: Callable[[int], int] = lambda reserved: reserved

    async def run(self, until: float) -> None:
        while trio.current_time() < until:
            now = trio.current_time()
            request = KeyRequest(now, self.wall0 + now, self.tokens, self.price)
            try:
                ticket = self.limiter.admit(self.key_id, self.limits, request)
            except errors.RateLimited as exc:
                self.log.refused += 1
                await trio.sleep(exc.retry_after_s)
                continue
            await self._hold(ticket, now)

    async def _hold(self, ticket: KeyTicket, admitted_at: float) -> None:
        log = self.log
        log.in_flight += 1
        log.max_in_flight = max(log.max_in_flight, log.in_flight)
        await trio.sleep(self.hold_s)
        real = self.used(self.tokens)
        usage = TokenUsage(prompt=real // 2, completion=real - real // 2)
        log.in_flight -= 1
        log.admitted.append((admitted_at, real))
        if self.price is not None:
            log.spend.append((self.wall0 + admitted_at, cost_usd(self.price, usage)))
        self.limiter.settle(ticket, trio.current_time(), usage, self.price)


def windows_hold(admitted: list[tuple[float, int]], rpm: int | None, tpm: int | None) -> None:
    """In every window [s, s + 60) at most rpm admissions and tpm tokens (the worst windows
    start at an admission)."""
    for start, _ in admitted:
        inside = [tokens for at, tokens in admitted if start <= at < start + W]
        assert rpm is None or len(inside) <= rpm, (start, len(inside))
        assert tpm is None or sum(inside) <= tpm, (start, sum(inside))


async def run_clients(clients: list[Client], until: float) -> None:
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(client.run, until)


# --- rpm, tpm, concurrency -----------------------------------------------------------------


async def test_rpm_holds_in_every_window_under_a_burst(autojump_clock: trio.abc.Clock) -> None:
    limiter, log = KeyLimiter(), Log()
    limits = Limits(rpm=30)
    await run_clients([Client(limiter, "k", limits, log, hold_s=0.1) for _ in range(8)], 600.0)
    windows_hold(log.admitted, 30, None)
    assert len(log.admitted) >= 30 * 10 - 30  # the limit is also reached, not just respected
    assert log.refused > 0


async def test_tpm_holds_with_reconciled_usage(autojump_clock: trio.abc.Clock) -> None:
    rng = random.Random(7)
    limiter, log = KeyLimiter(), Log()
    limits = Limits(tpm=5_000)
    clients = [
        Client(limiter, "k", limits, log, tokens=700, hold_s=3.0, used=lambda r: rng.randint(0, r))
        for _ in range(6)
    ]
    await run_clients(clients, 900.0)
    windows_hold(log.admitted, None, 5_000)
    # Reconciling gives unused tokens back: more requests got through than reservations allow.
    assert len(log.admitted) > 15 * 7


async def test_max_concurrency_per_key(autojump_clock: trio.abc.Clock) -> None:
    limiter, log = KeyLimiter(), Log()
    limits = Limits(max_concurrency=3)
    await run_clients([Client(limiter, "k", limits, log, hold_s=2.0) for _ in range(10)], 120.0)
    assert log.max_in_flight == 3
    assert limiter.statistics("k", DEC_3).in_flight == 0


async def test_two_keys_do_not_share_their_limits(autojump_clock: trio.abc.Clock) -> None:
    """A flooding key gets exactly its own rpm; a quiet key beside it gets all of its own."""
    limiter, flood, quiet = KeyLimiter(), Log(), Log()
    clients = [Client(limiter, "flood", Limits(rpm=20), flood, hold_s=0.05) for _ in range(20)]
    clients.append(Client(limiter, "quiet", Limits(rpm=10), quiet, hold_s=6.5))
    await run_clients(clients, 300.0)
    windows_hold(flood.admitted, 20, None)
    windows_hold(quiet.admitted, 10, None)
    assert len(flood.admitted) == 20 * 5
    assert quiet.refused == 0 and len(quiet.admitted) == 47  # at 0, 6.5, ... 299: never slowed


def test_a_reservation_above_tpm_is_a_400_not_a_wait() -> None:
    limiter = KeyLimiter()
    with pytest.raises(errors.InvalidRequest, match="tokens per minute"):
        limiter.admit("k", Limits(tpm=100), KeyRequest(0.0, DEC_3, 101, None))


def test_a_refusal_says_when_to_retry_and_obeying_it_succeeds() -> None:
    limiter = KeyLimiter()
    limits = Limits(rpm=2)
    for now in (0.0, 1.5):
        limiter.admit("k", limits, KeyRequest(now, DEC_3, 1, None))
    with pytest.raises(errors.RateLimited) as refused:
        limiter.admit("k", limits, KeyRequest(10.0, DEC_3, 1, None))
    assert refused.value.retry_after_s == 50.0
    assert (b"retry-after", b"50") in refused.value.headers
    assert (b"retry-after-ms", b"50000") in refused.value.headers
    limiter.admit("k", limits, KeyRequest(60.0, DEC_3, 1, None))


# --- budgets -------------------------------------------------------------------------------


async def test_budget_stops_spend_at_the_limit_and_renews_next_day(
    autojump_clock: trio.abc.Clock,
) -> None:
    limiter, log = KeyLimiter(), Log()
    limits = Limits(budget_usd=0.01, budget_period="day")
    wall0 = datetime(2026, 12, 3, 23, 0, tzinfo=UTC).timestamp()  # one hour before midnight
    clients = [
        Client(limiter, "k", limits, log, tokens=1_000, hold_s=1.0, price=PRICE, wall0=wall0)
        for _ in range(4)
    ]
    await run_clients(clients, 2 * 3600.0)
    days: dict[str, float] = {}
    for wall, usd in log.spend:
        day = period_of("day", wall)[0]
        days[day] = days.get(day, 0.0) + usd
    # A request reserves 1000 tokens * $2/M = $0.002 and really costs $0.0015 (half output):
    # six are spent ($0.009) when a seventh would need $0.011. Then the next day renews it.
    assert days == pytest.approx({"2026-12-03": 0.009, "2026-12-04": 0.009})
    assert limiter.statistics("k", wall0 + 7200).spent_usd == pytest.approx(0.009)


def test_budget_refusal_is_insufficient_quota_until_the_period_ends() -> None:
    limiter = KeyLimiter()
    limits = Limits(budget_usd=0.002, budget_period="month")
    ticket = limiter.admit("k", limits, KeyRequest(0.0, DEC_3, 1_000, PRICE))
    limiter.settle(ticket, 1.0, TokenUsage(0, 1_000), PRICE)  # $0.002: all of it
    with pytest.raises(errors.QuotaExceeded) as refused:
        limiter.admit("k", limits, KeyRequest(2.0, DEC_3, 1, PRICE))
    assert refused.value.status == 429 and refused.value.type == "insufficient_quota"
    january = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert refused.value.retry_after_s == pytest.approx(january - DEC_3)
    limiter.admit("k", limits, KeyRequest(3.0, january, 1_000, PRICE))


def test_reserved_spend_of_requests_in_flight_counts() -> None:
    limiter = KeyLimiter()
    limits = Limits(budget_usd=0.003, budget_period="day")
    first = limiter.admit("k", limits, KeyRequest(0.0, DEC_3, 1_000, PRICE))  # reserves $0.002
    with pytest.raises(errors.QuotaExceeded) as refused:
        limiter.admit("k", limits, KeyRequest(0.0, DEC_3, 1_000, PRICE))
    assert refused.value.retry_after_s == 1.0  # in-flight work may give room back soon
    limiter.settle(first, 1.0, TokenUsage(100, 100), PRICE)  # real cost $0.0003
    limiter.admit("k", limits, KeyRequest(1.0, DEC_3, 1_000, PRICE))
    assert limiter.statistics("k", DEC_3).spent_usd == pytest.approx(0.0003)


def test_unknown_usage_is_charged_its_whole_reservation() -> None:
    limiter = KeyLimiter()
    limits = Limits(tpm=1_000, budget_usd=1.0, budget_period="day")
    ticket = limiter.admit("k", limits, KeyRequest(0.0, DEC_3, 600, PRICE))
    limiter.settle(ticket, 1.0, None, PRICE)
    assert limiter.statistics("k", DEC_3).spent_usd == pytest.approx(600 * 2.0 / 1e6)
    with pytest.raises(errors.RateLimited):
        limiter.admit("k", limits, KeyRequest(2.0, DEC_3, 600, PRICE))


def test_a_budgeted_key_cannot_use_an_unpriced_model() -> None:
    gate = KeyGate({"gpt-4o": PRICE}, KeyLimitsConfig())
    route = Route("m", (Target("openai", "gpt-4o"), Target("local", "llama")))
    limits = Limits(budget_usd=1.0, budget_period="day")
    with pytest.raises(errors.PermissionDenied, match="no price"):
        gate.admit("k", limits, route, tokens=10, at=(0.0, DEC_3))
    gate.admit("k", Limits(rpm=5), route, tokens=10, at=(0.0, DEC_3))  # no budget: no price needed


def test_prices_by_provider_and_model_then_by_model() -> None:
    special = Price(input=9.0, output=9.0)
    prices = {"gpt-4o": PRICE, "azure/gpt-4o": special}
    assert price_for(prices, Target("openai", "gpt-4o")) == PRICE
    assert price_for(prices, Target("azure", "gpt-4o")) == special
    route = Route("m", (Target("openai", "gpt-4o"), Target("azure", "gpt-4o")))
    assert highest_price(prices, route) == Price(input=9.0, output=9.0, cached_input=9.0)


def test_cost_counts_cached_prompt_tokens_at_their_price() -> None:
    usage = TokenUsage(prompt=1_000_000, completion=1_000_000, cached=400_000)
    assert cost_usd(PRICE, usage) == pytest.approx(0.6 * 1.0 + 0.4 * 0.5 + 2.0)
    assert cost_usd(Price(input=1.0, output=0.0), usage) == pytest.approx(1.0)


def test_periods_are_utc_days_and_calendar_months() -> None:
    assert period_of("day", DEC_3) == (
        "2026-12-03",
        datetime(2026, 12, 4, tzinfo=UTC).timestamp(),
    )
    assert period_of("month", DEC_3) == ("2026-12", datetime(2027, 1, 1, tzinfo=UTC).timestamp())
    feb = datetime(2027, 2, 10, tzinfo=UTC).timestamp()
    assert period_of("month", feb)[1] == datetime(2027, 3, 1, tzinfo=UTC).timestamp()


# --- headers -------------------------------------------------------------------------------


def test_headers_only_for_the_limits_the_key_has() -> None:
    limiter = KeyLimiter()
    limiter.admit("both", Limits(rpm=60, tpm=1000), KeyRequest(0.0, DEC_3, 100, None))
    assert dict(limiter.headers("both", 0.0)) == {
        b"x-ratelimit-limit-requests": b"60",
        b"x-ratelimit-remaining-requests": b"59",
        b"x-ratelimit-reset-requests": b"1m0s",
        b"x-ratelimit-limit-tokens": b"1000",
        b"x-ratelimit-remaining-tokens": b"900",
        b"x-ratelimit-reset-tokens": b"1m0s",
    }
    limiter.admit("rpm", Limits(rpm=5), KeyRequest(0.0, DEC_3, 100, None))
    assert {name for name, _ in limiter.headers("rpm", 0.5)} == {
        b"x-ratelimit-limit-requests",
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-reset-requests",
    }
    limiter.admit("none", Limits(max_concurrency=2), KeyRequest(0.0, DEC_3, 100, None))
    assert limiter.headers("none", 0.0) == []
    assert limiter.headers("never-seen", 0.0) == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.02, "20ms"),
        (0.0004, "1ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (360.0, "6m0s"),
        (3723, "1h2m3s"),
    ],
)
def test_durations_in_openai_format(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_settling_twice_is_an_error() -> None:
    limiter = KeyLimiter()
    ticket = limiter.admit("k", Limits(rpm=1), KeyRequest(0.0, DEC_3, 1, None))
    limiter.settle(ticket, 0.0, None, None)
    with pytest.raises(RuntimeError):
        limiter.settle(ticket, 0.0, None, None)


def test_changed_limits_take_effect_for_the_next_request() -> None:
    limiter = KeyLimiter()
    limiter.admit("k", Limits(rpm=1), KeyRequest(0.0, DEC_3, 1, None))
    with pytest.raises(errors.RateLimited):
        limiter.admit("k", Limits(rpm=1), KeyRequest(1.0, DEC_3, 1, None))
    limiter.admit("k", Limits(rpm=2, max_concurrency=5), KeyRequest(1.0, DEC_3, 1, None))
    with pytest.raises(errors.RateLimited):  # the window is kept: 2 in the last minute
        limiter.admit("k", Limits(rpm=2), KeyRequest(2.0, DEC_3, 1, None))
    ticket = limiter.admit("k", Limits(max_concurrency=5), KeyRequest(2.0, DEC_3, 1, None))
    assert limiter.statistics("k", DEC_3).in_flight == 3
    limiter.settle(ticket, 2.0, None, None)


def test_the_estimate_reads_max_tokens_n_and_the_defaults() -> None:
    gate = KeyGate({}, KeyLimitsConfig(bytes_per_token=4.0))

    def view(**fields: object) -> RouteView:
        return RouteView(model="m", **fields)  # type: ignore[arg-type]

    assert gate.estimate(view(), 40, embeds=False, default_output=100) == 10 + 100
    assert gate.estimate(view(max_tokens=7), 40, embeds=False, default_output=100) == 10 + 7
    assert (
        gate.estimate(
            view(max_tokens=7, max_completion_tokens=9), 40, embeds=False, default_output=100
        )
        == 19
    )
    assert gate.estimate(view(max_tokens=7, n=3), 40, embeds=False, default_output=100) == 10 + 21
    assert gate.estimate(view(max_tokens=7), 40, embeds=True, default_output=100) == 10
