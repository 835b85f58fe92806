"""The provider actor's limits, measured AT THE UPSTREAM (``FakeUpstream.arrivals``), in mock time.

Concurrency, rpm and tpm under a tenfold overload of streamed and whole responses; fair shares
across API keys; 429 only from a full queue or a deadline that cannot be met, with a
``retry-after`` that works; upstream signals pausing the actor; every timeout kind; the breaker's
failure-rate rule; reservations reconciled with real usage. All under ``autojump_clock``.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter

import pytest
import trio
import trio.testing

from actorproxy import errors
from actorproxy.actors.provider import Done, Failure, Head
from actorproxy.adapters.base import Exchange
from tests.fakes.actor_upstream import FakeUpstream, Plan, Step
from tests.unit.test_provider_actor import (
    Boom,
    fake_actor,
    only_failure,
    provider,
    replies,
    running,
    submit,
)

WINDOW = 60.0


def call(n: int, *, key: str = "", tokens: int = 0, stream: bool = False) -> Exchange:
    body = json.dumps({"model": "m", "stream": stream}).encode()
    return Exchange("chat", body, "m", "m", stream, f"req-{n}", [], key_id=key, tokens=tokens)


def whole(total: int) -> bytes:
    return json.dumps({"object": "chat.completion", "usage": {"total_tokens": total}}).encode()


def streamed(total: int | None, gap: float = 0.0) -> list[Step]:
    usage = b"" if total is None else f',"usage":{{"total_tokens":{total}}}'.encode()
    return [
        b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n',
        gap,
        b'data: {"choices":[]' + usage + b"}\n\n",
        b"data: [DONE]\n\n",
    ]


def assert_windows(fake: FakeUpstream, usage: dict[str, int], *, rpm: int, tpm: int) -> None:
    """Every window [t, t + 60) starting at an arrival holds <= rpm requests, <= tpm tokens."""
    times = [(at, rid) for at, rid in fake.arrivals]
    for start, _ in times:
        inside = [rid for at, rid in times if start <= at < start + WINDOW]
        assert len(inside) <= rpm, (start, len(inside))
        assert sum(usage[rid] for rid in inside) <= tpm, (start, inside)


# -- strictness under overload ---------------------------------------------------------------


async def test_a_tenfold_overload_never_exceeds_concurrency_rpm_or_tpm_at_the_upstream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rpm, tpm, concurrency = 20, 4000, 3
    actor, fake = fake_actor(
        provider(
            rpm=rpm, tpm=tpm, max_concurrency=concurrency, max_queue=1000, max_queue_wait_s=7200.0
        )
    )
    rng = random.Random(5)
    usage: dict[str, int] = {}
    results: Counter[str] = Counter()

    async def client(n: int) -> None:
        reserved, stream = rng.randint(50, 400), rng.random() < 0.5
        used = usage[f"req-{n}"] = rng.randint(1, reserved)
        service = rng.uniform(0.5, 20.0)
        body = streamed(used, service) if stream else [whole(used)]
        fake.plans[f"req-{n}"] = Plan(delay=0.0 if stream else service, body=body)
        _, receive = submit(actor, call(n, tokens=reserved, stream=stream))
        items = await replies(receive)
        results[type(items[0]).__name__] += 1
        assert isinstance(items[-1], Done if stream else Head)

    async with running(actor), trio.open_nursery() as clients:
        for n in range(10 * rpm * 2):  # two minutes at ten times the rpm
            clients.start_soon(client, n)
            await trio.sleep(WINDOW / (10 * rpm))
    assert results == {"Head": 10 * rpm * 2}
    assert fake.peak <= concurrency
    assert len(fake.arrivals) == 10 * rpm * 2
    assert_windows(fake, usage, rpm=rpm, tpm=tpm)
    stats = actor.statistics()
    assert (stats.in_flight, stats.queued, stats.admission.reservations) == (0, 0, 0)
    assert fake.in_flight == 0


async def test_contending_keys_get_equal_shares_within_ten_percent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rpm = 30
    actor, fake = fake_actor(
        provider(rpm=rpm, max_concurrency=100, max_queue=1000, max_queue_wait_s=7200.0)
    )
    demand = ["a"] * 400 + ["b"] * 150 + ["c"] * 150  # one key floods, two keep up a backlog
    random.Random(7).shuffle(demand)
    key_of = {f"req-{n}": key for n, key in enumerate(demand)}
    async with running(actor):
        receivers = [submit(actor, call(n, key=key))[1] for n, key in enumerate(demand)]
        await trio.sleep(10 * WINDOW)
    for receive in receivers:
        receive.close()
    queued = [key_of[rid] for at, rid in fake.arrivals if at > 0]
    shares = Counter(queued[:240])  # eight minutes: every key still has a backlog
    assert sum(shares.values()) == 240
    for key in "abc":
        assert abs(shares[key] - 80) <= 8, shares


# -- 429: only a full queue or a deadline that cannot be met ---------------------------------


async def test_a_deadline_that_cannot_be_met_is_a_429_whose_retry_after_works(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor, fake = fake_actor(provider(rpm=2, max_queue_wait_s=30.0))
    async with running(actor):
        for n in range(2):
            _, receive = submit(actor, call(n))
            assert isinstance((await replies(receive))[0], Head)
        with pytest.raises(errors.RateLimited) as refused:
            submit(actor, call(2))
        assert refused.value.retry_after_s == pytest.approx(WINDOW)
        assert refused.value.headers == [(b"retry-after", b"60"), (b"retry-after-ms", b"60000")]
        await trio.sleep(int(refused.value.headers[0][1]))
        _, receive = submit(actor, call(2))
        assert isinstance((await replies(receive))[0], Head)
    assert [at for at, _ in fake.arrivals] == [0.0, 0.0, WINDOW]


async def test_a_deadline_that_can_be_met_waits_in_the_queue_instead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor, fake = fake_actor(provider(rpm=2, max_queue_wait_s=90.0))
    async with running(actor):
        receivers = [submit(actor, call(n))[1] for n in range(4)]
        assert actor.statistics().queued == 2
        for receive in receivers:
            assert isinstance((await replies(receive))[0], Head)
    assert [at for at, _ in fake.arrivals] == [0.0, 0.0, WINDOW, WINDOW]


async def test_a_full_queue_is_a_429_and_a_queued_call_past_its_deadline_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor, fake = fake_actor(provider(max_concurrency=1, max_queue=2, max_queue_wait_s=5.0))
    fake.plans["req-0"] = Plan(gate=(release := trio.Event()))
    async with running(actor):
        first = submit(actor, call(0))[1]
        late = [submit(actor, call(n))[1] for n in (1, 2)]
        with pytest.raises(errors.RateLimited) as full:
            submit(actor, call(3))
        assert full.value.headers == [(b"retry-after", b"1"), (b"retry-after-ms", b"1000")]
        for receive in late:
            error = only_failure(await replies(receive))
            assert isinstance(error, errors.RateLimited)
        assert trio.current_time() == 5.0
        release.set()
        assert isinstance((await replies(first))[0], Head)
        _, receive = submit(actor, call(3))
        assert isinstance((await replies(receive))[0], Head)
    assert fake.sent == ["req-0", "req-3"]


async def test_a_reservation_larger_than_tpm_is_a_400() -> None:
    actor, fake = fake_actor(provider(tpm=100))
    with pytest.raises(errors.InvalidRequest) as caught:
        submit(actor, call(0, tokens=101))
    assert (caught.value.status, caught.value.code) == (400, "tokens_exceed_limit")
    assert fake.sent == []


# -- upstream signals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "pause"),
    [
        (429, [(b"retry-after", b"7")], 7.0),
        (429, [(b"retry-after-ms", b"2500")], 2.5),
        (
            200,
            [(b"x-ratelimit-remaining-requests", b"0"), (b"x-ratelimit-reset-requests", b"3s")],
            3.0,
        ),
        (400, [(b"retry-after", b"7")], 0.0),  # retry-after on a client error is noise
    ],
)
async def test_an_upstream_that_says_stop_pauses_the_actor(
    autojump_clock: trio.testing.MockClock,
    status: int,
    headers: list[tuple[bytes, bytes]],
    pause: float,
) -> None:
    actor, fake = fake_actor()
    body = json.dumps({"error": {"message": "x", "type": "requests"}}).encode()
    fake.plans["req-0"] = Plan(status=status, headers=headers, body=[body])
    async with running(actor):
        _, receive = submit(actor, call(0))
        await replies(receive)
        assert actor.statistics().paused_s == pytest.approx(pause)
        _, receive = submit(actor, call(1))
        assert isinstance((await replies(receive))[0], Head)
    assert [at for at, _ in fake.arrivals] == [0.0, pytest.approx(pause)]


async def test_a_pause_is_capped_by_max_pause_s(autojump_clock: trio.testing.MockClock) -> None:
    actor, fake = fake_actor(provider(max_pause_s=10.0))
    fake.plans["req-0"] = Plan(status=429, headers=[(b"retry-after", b"3600")], body=[b"{}"])
    async with running(actor):
        await replies(submit(actor, call(0))[1])
        await replies(submit(actor, call(1))[1])
    assert [at for at, _ in fake.arrivals] == [0.0, 10.0]


# -- timeouts --------------------------------------------------------------------------------


def hang() -> trio.Event:
    return trio.Event()  # never set


@pytest.mark.parametrize(
    ("limits", "plan", "stream", "fires_at"),
    [
        ({"first_byte_timeout_s": 3.0}, Plan(gate=hang()), False, 3.0),
        ({"first_byte_timeout_s": 3.0}, Plan(delay=5.0), True, 3.0),
        (
            {"idle_timeout_s": 2.0},
            Plan(body=[b"data: 1\n\n", 1.5, b"data: 2\n\n", hang()]),
            True,
            3.5,
        ),
        ({"idle_timeout_s": 2.0}, Plan(body=[b"{", hang()]), False, 2.0),
        (
            {"request_timeout_s": 4.0, "idle_timeout_s": 2.0},
            Plan(body=[b"data: 1\n\n", 1.0] * 9),
            True,
            4.0,
        ),
    ],
    ids=["first_byte", "first_byte_stream", "idle_stream", "idle_body", "total"],
)
async def test_every_timeout_fires_and_frees_its_slot_at_once(
    autojump_clock: trio.testing.MockClock,
    limits: dict[str, float],
    plan: Plan,
    stream: bool,
    fires_at: float,
) -> None:
    actor, fake = fake_actor(provider(max_concurrency=1, **limits))
    fake.plans["req-0"] = plan
    async with running(actor):
        _, stuck = submit(actor, call(0, stream=stream))
        _, waiting = submit(actor, call(1))
        items = await replies(stuck)
        assert trio.current_time() == pytest.approx(fires_at)
        assert isinstance(items[-1], Failure)
        assert isinstance(items[-1].error, errors.UpstreamTimeout)
        assert (items[-1].error.status, items[-1].error.retryable) == (504, True)
        assert isinstance((await replies(waiting))[0], Head)
    at, rid = fake.arrivals[1]
    assert at == pytest.approx(fires_at)
    assert rid == "req-1"
    assert "req-0" in fake.cancelled or fake.responses["req-0"].closed
    assert (actor.statistics().in_flight, fake.in_flight) == (0, 0)


async def test_a_connect_failure_gives_the_reservation_back() -> None:
    actor, fake = fake_actor(provider(rpm=1, tpm=1000))
    fake.plans["req-0"] = Plan(error=errors.UpstreamConnectFailed("refused"))
    with trio.fail_after(5):
        async with running(actor):
            error = only_failure(await replies(submit(actor, call(0, tokens=500))[1]))
            assert isinstance(error, errors.UpstreamConnectFailed)
            rate = actor.statistics().admission.rate
            assert (rate.requests, rate.tokens) == (0, 0)
            assert isinstance((await replies(submit(actor, call(1, tokens=500))[1]))[0], Head)


# -- reconciling with the real usage ---------------------------------------------------------


async def test_reservations_are_reconciled_with_the_usage_the_upstream_reports() -> None:
    actor, fake = fake_actor(provider(tpm=10_000))
    fake.plans["req-0"] = Plan(body=[whole(30)])
    fake.plans["req-1"] = Plan(body=streamed(40))
    fake.plans["req-2"] = Plan(body=streamed(None))
    with trio.fail_after(5):
        async with running(actor):
            head = (await replies(submit(actor, call(0, tokens=500))[1]))[0]
            assert isinstance(head, Head)
            assert head.usage is not None and head.usage.total == 30
            assert actor.statistics().admission.rate.tokens == 30
            done = (await replies(submit(actor, call(1, tokens=500, stream=True))[1]))[-1]
            assert isinstance(done, Done)
            assert done.usage is not None and done.usage.total == 40
            assert actor.statistics().admission.rate.tokens == 70
            done = (await replies(submit(actor, call(2, tokens=500, stream=True))[1]))[-1]
            assert isinstance(done, Done)
            assert done.usage is None  # unknown: the reservation stays charged
            stats = actor.statistics().admission
    assert (stats.rate.tokens, stats.reservations) == (570, 0)


# -- breaker ---------------------------------------------------------------------------------


async def test_the_breaker_opens_on_a_failure_rate_and_recovers_through_a_probe(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = provider(
        breaker_failures=100,
        breaker_failure_rate=0.5,
        breaker_min_calls=10,
        breaker_window_s=30.0,
        breaker_cooldown_s=10.0,
    )
    actor, fake = fake_actor(config)
    for n in range(1, 10, 2):
        fake.plans[f"req-{n}"] = Plan(status=500, body=[b"{}"])
    caplog.set_level(logging.WARNING, "actorproxy.provider")
    async with running(actor):
        for n in range(10):  # alternating: never two failures in a row
            await replies(submit(actor, call(n))[1])
            await trio.sleep(1.0)
        assert actor.statistics().breaker.state == "open"
        with pytest.raises(errors.Unavailable):
            submit(actor, call(10))
        await trio.sleep(10.0)
        assert actor.statistics().breaker.state == "half_open"
        assert isinstance((await replies(submit(actor, call(11))[1]))[0], Head)
        assert actor.statistics().breaker.state == "closed"
    changes = [
        tuple(getattr(record, name) for name in ("from", "to", "reason"))
        for record in caplog.records
        if record.msg == "breaker changed"
    ]
    assert changes == [
        ("closed", "open", "failure_rate"),
        ("open", "half_open", "cooldown"),
        ("half_open", "closed", "probe_success"),
    ]


# -- supervision -----------------------------------------------------------------------------


async def test_limits_and_queue_survive_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    actor, fake = fake_actor(provider(rpm=2, max_queue_wait_s=120.0))
    fake.plans["req-1"] = Plan(error=Boom("bug"))
    with pytest.RaisesGroup(Boom, flatten_subgroups=True):
        async with running(actor):
            await replies(submit(actor, call(0))[1])
            await replies(submit(actor, call(1))[1])
            await trio.sleep_forever()
    _, queued = submit(actor, call(2))  # the limiter remembers both admissions of t=0
    async with running(actor):
        assert isinstance((await replies(queued))[0], Head)
    assert [at for at, _ in fake.arrivals] == [0.0, 0.0, WINDOW]
    assert actor.statistics().in_flight == 0
