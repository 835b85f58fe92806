"""ProviderActor driven directly: submit calls, read replies and ``statistics()``. No HTTP server.

Plain request/response behaviour goes through ``HttpxUpstream`` on ``httpx.MockTransport``; what
must block, hang or crash at a chosen moment goes through ``FakeUpstream`` (trio events), the
only upstream used together with ``autojump_clock``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import httpx
import msgspec
import pytest
import trio
import trio.testing

from actorproxy import errors
from actorproxy.actors.breaker import BreakerStats
from actorproxy.actors.provider import Call, Done, Failure, Head, ProviderActor, Reply
from actorproxy.adapters.base import Exchange
from actorproxy.adapters.openai import OpenAIAdapter
from actorproxy.config import ProviderConfig
from actorproxy.net.httpx_upstream import HttpxUpstream
from tests.fakes.actor_upstream import OK_BODY, FakeUpstream, Plan

BASE_URL = "https://api.test/v1"
PROVIDER = ProviderConfig(name="up", kind="openai", base_url=BASE_URL, api_key_env="K")
Receiver = trio.MemoryReceiveChannel[Reply]

# Closing an httpx response early leaves httpx's own async generators to trio's finalizer,
# which warns: https://github.com/encode/httpx/issues/3686
httpx_early_close_warns = pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")


class Boom(Exception):
    """A bug in the upstream layer: not a ProxyError, so it crashes the actor."""


def provider(**changes: int | float) -> ProviderConfig:
    return msgspec.structs.replace(PROVIDER, **changes)


def exchange(n: int = 0, *, stream: bool = False, upstream_model: str = "m") -> Exchange:
    body = json.dumps({"model": "m", "stream": stream, "n": n}).encode()
    return Exchange("chat", body, "m", upstream_model, stream, f"req-{n}", [])


def submit(actor: ProviderActor, item: Exchange, buffer: float = math.inf) -> tuple[Call, Receiver]:
    send, receive = trio.open_memory_channel[Reply](buffer)
    call = Call(item, send)
    actor.submit(call)
    return call, receive


async def replies(receive: Receiver) -> list[Reply]:
    """Everything the actor sends until it closes the channel."""
    return [reply async for reply in receive]


def only_failure(items: list[Reply]) -> errors.ProxyError:
    assert len(items) == 1
    assert isinstance(items[0], Failure)
    return items[0].error


@asynccontextmanager
async def running(actor: ProviderActor) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        yield nursery
        nursery.cancel_scope.cancel()


def mock_actor(
    handler: Callable[[httpx.Request], httpx.Response], config: ProviderConfig = PROVIDER
) -> ProviderActor:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=None)
    return ProviderActor(config, HttpxUpstream(client, BASE_URL), OpenAIAdapter(api_key="sk-up"))


def error_body(message: str = "bad", code: str | None = "oops") -> dict[str, object]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": "n", "code": code}
    }


def fake_actor(config: ProviderConfig = PROVIDER) -> tuple[ProviderActor, FakeUpstream]:
    fake = FakeUpstream()
    return ProviderActor(config, fake, OpenAIAdapter(api_key="sk-up")), fake


# -- replies ---------------------------------------------------------------------------------------


async def test_non_stream_reply_is_one_head_with_the_body() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = [("openai-version", "2020-10-01"), ("x-request-id", "up-1"), ("server", "x")]
        return httpx.Response(200, headers=headers, content=OK_BODY)

    actor = mock_actor(handler)
    with trio.fail_after(5):
        async with running(actor):
            assert actor.statistics().state == "running"
            _, receive = submit(actor, exchange(7, upstream_model="gpt-4o"))
            items = await replies(receive)
    assert len(items) == 1
    head = items[0]
    assert isinstance(head, Head)
    assert (head.status, head.body) == (200, OK_BODY)
    assert head.headers == [(b"openai-version", b"2020-10-01"), (b"x-upstream-request-id", b"up-1")]
    assert head.upstream_s >= 0
    request = seen[0]
    assert (request.method, str(request.url)) == ("POST", f"{BASE_URL}/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-up"
    assert request.headers["x-request-id"] == "req-7"
    assert json.loads(request.content) == {"model": "gpt-4o", "stream": False, "n": 7}
    stats = actor.statistics()
    assert (stats.served, stats.failed, stats.in_flight, stats.queued) == (1, 0, 0, 0)
    assert (stats.name, stats.kind, stats.max_concurrency) == ("up", "openai", 64)


class Chunks(httpx.AsyncByteStream):
    """A response body in pieces; an iterator object, not a generator (nothing to finalize)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = iter(chunks)
        self.reads = 0
        self.closed = False

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        await trio.lowlevel.checkpoint()
        self.reads += 1
        for chunk in self.chunks:
            return chunk
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


async def test_stream_chunks_arrive_in_order_then_done() -> None:
    frames = [f"data: {i}\n\n".encode() for i in range(5)] + [b"data: [DONE]\n\n"]
    body = Chunks(frames)
    actor = mock_actor(lambda request: httpx.Response(200, stream=body))
    with trio.fail_after(5):
        async with running(actor):
            _, receive = submit(actor, exchange(stream=True))
            items = await replies(receive)
    head, *chunks, done = items
    assert isinstance(head, Head)
    assert (head.status, head.body) == (200, None)
    assert chunks == frames
    assert isinstance(done, Done)
    assert done.upstream_s >= head.upstream_s
    assert body.closed
    assert actor.statistics().served == 1


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_upstream_4xx_is_a_failure_that_keeps_status_and_body(status: int) -> None:
    body = error_body("no such thing", "model_missing")
    actor = mock_actor(
        lambda request: httpx.Response(status, json=body, headers={"retry-after": "3"}),
        provider(breaker_failures=1),
    )
    with trio.fail_after(5):
        async with running(actor):
            for n in range(3):
                _, receive = submit(actor, exchange(n))
                error = only_failure(await replies(receive))
                assert isinstance(error, errors.UpstreamHTTPError)
                assert (error.status, error.retryable) == (status, False)
                assert json.loads(errors.render(error)) == body
                assert error.headers == [(b"retry-after", b"3")]
    stats = actor.statistics()
    assert (stats.served, stats.failed, stats.in_flight) == (0, 3, 0)
    assert stats.breaker == BreakerStats("closed", 0, 0)


@pytest.mark.parametrize(
    ("status", "content"),
    [
        (500, json.dumps(error_body("overloaded", None)).encode()),
        (502, b"<html>bad gateway</html>"),
        (503, b""),
    ],
)
async def test_upstream_5xx_opens_the_breaker_after_breaker_failures(
    status: int, content: bytes
) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, content=content)

    actor = mock_actor(handler, provider(breaker_failures=2))
    with trio.fail_after(5):
        async with running(actor):
            for n in range(2):
                _, receive = submit(actor, exchange(n))
                error = only_failure(await replies(receive))
                assert isinstance(error, errors.UpstreamHTTPError)
                assert (error.status, error.retryable) == (status, True)
                if status == 500:
                    assert json.loads(errors.render(error)) == json.loads(content)
            with pytest.raises(errors.Unavailable) as caught:
                submit(actor, exchange(2))
    assert (caught.value.status, caught.value.code) == (503, "no_healthy_provider")
    assert len(calls) == 2
    stats = actor.statistics()
    assert stats.breaker.state == "open"
    assert (stats.failed, stats.queued, stats.breaker.opened_total) == (2, 0, 1)


async def test_connect_error_is_a_failure_and_counts_against_the_breaker() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    actor = mock_actor(handler, provider(breaker_failures=1))
    with trio.fail_after(5):
        async with running(actor):
            _, receive = submit(actor, exchange())
            assert isinstance(only_failure(await replies(receive)), errors.UpstreamConnectFailed)
            with pytest.raises(errors.Unavailable):
                submit(actor, exchange(1))


# -- the breaker seen through the actor ------------------------------------------------------------


async def open_breaker(actor: ProviderActor, fake: FakeUpstream, failures: int) -> None:
    for n in range(failures):
        fake.plans[f"req-{100 + n}"] = Plan(status=500, body=[json.dumps(error_body()).encode()])
        _, receive = submit(actor, exchange(100 + n))
        assert isinstance(only_failure(await replies(receive)), errors.UpstreamHTTPError)
    assert actor.statistics().breaker.state == "open"


async def test_half_open_admits_one_probe_and_its_success_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor, fake = fake_actor(provider(breaker_failures=2, breaker_cooldown_s=30.0))
    async with running(actor):
        await open_breaker(actor, fake, 2)
        await trio.sleep(29.0)
        with pytest.raises(errors.Unavailable):
            submit(actor, exchange(0))
        await trio.sleep(1.0)
        assert actor.statistics().breaker.state == "half_open"
        fake.plans["req-1"] = Plan(gate=(answer := trio.Event()))
        _, probe = submit(actor, exchange(1))
        with pytest.raises(errors.Unavailable):
            submit(actor, exchange(2))
        answer.set()
        assert isinstance((await replies(probe))[0], Head)
        assert actor.statistics().breaker == BreakerStats("closed", 0, 1)
        _, receive = submit(actor, exchange(3))
        assert isinstance((await replies(receive))[0], Head)


async def test_a_probe_whose_client_left_frees_the_half_open_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor, fake = fake_actor(provider(breaker_failures=1, breaker_cooldown_s=30.0))
    async with running(actor):
        await open_breaker(actor, fake, 1)
        await trio.sleep(30.0)
        _, probe = submit(actor, exchange(1))
        probe.close()  # the client went away before the head arrived
        await trio.testing.wait_all_tasks_blocked()
        assert actor.statistics().in_flight == 0
        _, receive = submit(actor, exchange(2))  # not Unavailable: the probe was released
        assert isinstance((await replies(receive))[0], Head)


async def test_a_cancelled_probe_frees_the_half_open_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor, fake = fake_actor(provider(max_concurrency=2, breaker_failures=1))
    fail = trio.Event()
    fake.plans["req-100"] = Plan(gate=fail, status=500)
    fake.plans["req-10"] = Plan(gate=trio.Event())
    async with running(actor):
        blocker = submit(actor, exchange(10))[0]
        submit(actor, exchange(100))
        await trio.testing.wait_all_tasks_blocked()
        fail.set()
        await trio.testing.wait_all_tasks_blocked()
        assert actor.statistics().breaker.state == "open"
        await trio.sleep(PROVIDER.breaker_cooldown_s)
        fake.plans["req-1"] = Plan(gate=trio.Event())
        call, probe = submit(actor, exchange(1))
        await trio.testing.wait_all_tasks_blocked()
        call.scope.cancel()
        blocker.scope.cancel()  # its client leaves too: no verdict that could close the breaker
        assert await replies(probe) == []
        await trio.testing.wait_all_tasks_blocked()
        assert actor.statistics().in_flight == 0
    assert actor.statistics().breaker.state == "half_open"
    try:
        submit(actor, exchange(2))
    except errors.Unavailable:
        pytest.fail("the breaker is stuck half_open: the cancelled probe still holds its slot")


async def test_a_probe_cancelled_while_queued_never_takes_a_probe_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor, fake = fake_actor(provider(max_concurrency=1, breaker_failures=1, breaker_probes=2))
    async with running(actor):
        await open_breaker(actor, fake, 1)
        await trio.sleep(PROVIDER.breaker_cooldown_s)
        fake.plans["req-10"] = Plan(gate=trio.Event())
        blocker, _ = submit(actor, exchange(10))  # the first probe, holding the only slot
        queued, queued_replies = submit(actor, exchange(1))  # the second, waiting for the slot
        await trio.testing.wait_all_tasks_blocked()
        assert actor.statistics().queued == 1
        queued.cancel()  # leaves the queue at once
        assert actor.statistics().queued == 0
        assert await replies(queued_replies) == []
        blocker.cancel()
        await trio.testing.wait_all_tasks_blocked()
        stats = actor.statistics()
        assert (stats.in_flight, stats.breaker.state) == (0, "half_open")
        assert "req-1" not in fake.sent
        fake.plans["req-2"] = Plan()
        _, probe = submit(actor, exchange(2))  # both probe slots are free again
        _, second = submit(actor, exchange(3))
        assert isinstance((await replies(probe))[0], Head)
        assert isinstance((await replies(second))[0], Head)


# -- admission: concurrency, order, mailbox --------------------------------------------------------


async def test_concurrency_is_bounded_and_queued_calls_proceed_in_order() -> None:
    actor, fake = fake_actor(provider(max_concurrency=2))
    gates = {f"req-{n}": trio.Event() for n in range(6)}
    fake.plans = {rid: Plan(gate=gate) for rid, gate in gates.items()}
    with trio.fail_after(5):
        async with running(actor):
            receivers = [submit(actor, exchange(n))[1] for n in range(6)]  # 3x overload
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(fake.sent) == ["req-0", "req-1"]  # admitted together
            assert actor.statistics().in_flight == 2
            for release, admitted in [(1, 2), (0, 3), (3, 4), (2, 5)]:
                gates[f"req-{release}"].set()
                await trio.testing.wait_all_tasks_blocked()
                assert fake.sent[-1] == f"req-{admitted}"
                assert actor.statistics().in_flight == 2
            gates["req-4"].set()
            gates["req-5"].set()
            results = [await replies(receive) for receive in receivers]
    assert fake.sent[2:] == [f"req-{n}" for n in range(2, 6)]
    assert fake.peak == 2
    assert all(isinstance(items[0], Head) for items in results)
    stats = actor.statistics()
    assert (stats.in_flight, stats.queued, stats.served) == (0, 0, 6)


async def test_a_full_mailbox_is_rate_limited_with_retry_after() -> None:
    actor, fake = fake_actor(provider(max_concurrency=1, max_queue=2))
    gate = trio.Event()
    fake.plans = {f"req-{n}": Plan(gate=gate) for n in range(10)}
    with trio.fail_after(5):
        async with running(actor):
            accepted: list[Receiver] = []
            with pytest.raises(errors.RateLimited) as caught:
                for n in range(10):
                    accepted.append(submit(actor, exchange(n))[1])
                    await trio.testing.wait_all_tasks_blocked()
            assert actor.statistics().queued == 2
            gate.set()
            results = [await replies(receive) for receive in accepted]
    error = caught.value
    assert (error.status, error.code, error.headers) == (
        429,
        "rate_limit_exceeded",
        [(b"retry-after", b"1"), (b"retry-after-ms", b"1000")],
    )
    # One call in flight and max_queue in the mailbox.
    assert len(accepted) == 3
    assert all(isinstance(items[0], Head) for items in results)
    assert fake.sent == [f"req-{n}" for n in range(len(accepted))]
    assert actor.statistics().breaker.state == "closed"


async def test_at_most_max_queue_calls_wait() -> None:
    actor, fake = fake_actor(provider(max_concurrency=1, max_queue=1))
    gate = trio.Event()
    fake.plans = {f"req-{n}": Plan(gate=gate) for n in range(3)}
    with trio.fail_after(5):
        async with running(actor):
            submit(actor, exchange(0))
            await trio.testing.wait_all_tasks_blocked()
            submit(actor, exchange(1))
            await trio.testing.wait_all_tasks_blocked()
            try:
                with pytest.raises(errors.RateLimited):
                    submit(actor, exchange(2))
                assert actor.statistics().queued == 1
            finally:
                gate.set()


async def test_queue_s_is_the_time_spent_waiting(autojump_clock: trio.testing.MockClock) -> None:
    actor, fake = fake_actor(provider(max_concurrency=1))
    fake.plans["req-0"] = Plan(gate=(answer := trio.Event()))
    async with running(actor):
        first, first_replies = submit(actor, exchange(0))
        await trio.sleep(1.0)
        second, second_replies = submit(actor, exchange(1))
        await trio.sleep(3.0)
        assert (first.queue_s, second.queue_s) == (0.0, None)
        answer.set()
        await replies(first_replies)
        await replies(second_replies)
    assert second.queue_s == pytest.approx(3.0)


# -- cancellation, timeouts ------------------------------------------------------------------------


async def test_cancelling_the_call_scope_abandons_the_upstream_and_frees_the_slot() -> None:
    actor, fake = fake_actor(provider(max_concurrency=1))
    fake.plans = {"req-0": Plan(gate=trio.Event()), "req-1": Plan(gate=trio.Event())}
    with trio.fail_after(5):
        async with running(actor):
            call, receive = submit(actor, exchange(0))
            queued, queued_replies = submit(actor, exchange(1))
            await trio.testing.wait_all_tasks_blocked()
            assert (fake.sent, actor.statistics().in_flight) == (["req-0"], 1)
            queued.scope.cancel()  # the client of the queued call leaves too
            call.scope.cancel()
            assert await replies(receive) == []  # closed without Done or Failure
            assert await replies(queued_replies) == []
            assert fake.cancelled == ["req-0"]
            _, later = submit(actor, exchange(2))
            assert isinstance((await replies(later))[0], Head)
    assert fake.sent == ["req-0", "req-2"]  # the cancelled queued call never went upstream
    stats = actor.statistics()
    assert (stats.in_flight, stats.served, stats.failed) == (0, 1, 0)
    assert stats.breaker == BreakerStats("closed", 0, 0)


@httpx_early_close_warns
async def test_closing_the_reply_channel_mid_stream_stops_the_upstream_read() -> None:
    body = Chunks(itertools.repeat(b"data: {}\n\n"))
    actor = mock_actor(lambda request: httpx.Response(200, stream=body))
    with trio.fail_after(5):
        async with running(actor):
            _, receive = submit(actor, exchange(stream=True), buffer=0)
            assert isinstance(await receive.receive(), Head)
            assert await receive.receive() == b"data: {}\n\n"
            await receive.aclose()
            await trio.testing.wait_all_tasks_blocked()
            stats = actor.statistics()
    assert body.closed
    assert body.reads <= 3
    assert (stats.in_flight, stats.served, stats.failed) == (0, 0, 0)


async def test_request_timeout_is_a_failure(autojump_clock: trio.testing.MockClock) -> None:
    actor, fake = fake_actor(provider(request_timeout_s=5.0))
    fake.plans["req-0"] = Plan(gate=trio.Event())
    async with running(actor):
        start = trio.current_time()
        _, receive = submit(actor, exchange())
        error = only_failure(await replies(receive))
        assert trio.current_time() - start == pytest.approx(5.0)
    assert isinstance(error, errors.UpstreamTimeout)
    assert (error.status, error.retryable) == (504, True)
    assert fake.cancelled == ["req-0"]
    stats = actor.statistics()
    assert (stats.in_flight, stats.failed, stats.breaker.consecutive_failures) == (0, 1, 1)


async def test_a_stream_that_stalls_times_out_after_its_chunks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor, fake = fake_actor(provider(request_timeout_s=5.0))
    fake.plans["req-0"] = Plan(body=[b"data: 1\n\n", trio.Event()])
    async with running(actor):
        _, receive = submit(actor, exchange(stream=True))
        head, chunk, failure = await replies(receive)
    assert isinstance(head, Head)
    assert chunk == b"data: 1\n\n"
    assert isinstance(failure, Failure)
    assert isinstance(failure.error, errors.UpstreamTimeout)
    assert fake.responses["req-0"].closed


# -- crashes ---------------------------------------------------------------------------------------


async def test_a_crash_closes_calls_in_flight_and_the_mailbox_outlives_run() -> None:
    actor, fake = fake_actor(provider(max_concurrency=2))
    crash = trio.Event()
    fake.plans = {
        "req-0": Plan(gate=crash, error=Boom("bug")),
        "req-1": Plan(body=[b"data: 1\n\n", trio.Event()]),  # a stream stuck after one chunk
        "req-2": Plan(gate=trio.Event()),  # in the mailbox, waiting for a slot
        "req-3": Plan(),  # in the mailbox behind it
    }
    with trio.fail_after(5):
        with pytest.RaisesGroup(Boom, flatten_subgroups=True):
            async with running(actor):
                receivers = [submit(actor, exchange(n, stream=n == 1))[1] for n in range(4)]
                await trio.testing.wait_all_tasks_blocked()
                assert sorted(fake.sent) == ["req-0", "req-1"]  # admitted together
                crash.set()
                await trio.sleep_forever()
        crashed, streaming, _, queued = receivers
        assert await replies(crashed) == []
        head, chunk, *rest = await replies(streaming)
        assert (isinstance(head, Head), chunk, rest) == (True, b"data: 1\n\n", [])  # no Done
        assert fake.cancelled == ["req-1"]
        stats = actor.statistics()
        assert (stats.in_flight, stats.queued, stats.served) == (0, 2, 0)
        assert fake.in_flight == 0
        async with running(actor):  # the restarted actor serves what waited in the mailbox
            assert actor.state == "running"
            items = await replies(queued)
    assert isinstance(items[0], Head)
    assert items[0].body == OK_BODY
    assert sorted(fake.sent) == ["req-0", "req-1", "req-2", "req-3"]
    assert actor.statistics().served == 1


async def test_aclose_closes_the_upstream() -> None:
    actor, fake = fake_actor()
    with trio.fail_after(5):
        await actor.aclose()
    assert fake.closed
