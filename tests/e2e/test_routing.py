"""Routing strategies, retries and fall-overs end to end: two fake OpenAI upstreams on loopback
with fault scripts, the real proxy, the official openai SDK.

A healthy target serves the client with no visible error whatever the other one does (5xx burst,
timeout, connection reset, 429); retries wait at least the upstream's ``Retry-After``; weighted
routing splits close to its weights; ``least_busy`` and ``latency`` pick the better target; an
open breaker is skipped; nothing hangs and every in-flight count returns to 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import openai
import pyarrow.dataset as ds
import pytest
import trio

from actorproxy import config as cfg
from actorproxy import runtime
from tests.e2e.conftest import base_url
from tests.fakes.openai_upstream import (
    Cut,
    Delay,
    FakeOpenAI,
    Hang,
    Respond,
    error_body,
    open_fake_openai,
)
from tests.harness import MASTER_KEY, environ, open_proxy, openai_provider, proxy_config

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
TARGETS = ["a/gpt-4o-mini", "b/gpt-4o-mini"]


class Rig:
    """Two fake upstreams ``a`` and ``b`` behind the proxy, and an SDK client of the proxy."""

    def __init__(
        self, a: FakeOpenAI, b: FakeOpenAI, server: runtime.Server, sdk: openai.AsyncOpenAI
    ) -> None:
        self.a, self.b, self.server, self.sdk = a, b, server, sdk

    async def chat(self, model: str = "m") -> str:
        reply = await self.sdk.chat.completions.create(model=model, messages=MESSAGES)
        return reply.choices[0].message.content or ""

    def served(self) -> tuple[int, int]:
        return len(self.a.requests), len(self.b.requests)

    async def assert_idle(self) -> None:
        """Every actor and both upstreams are back to 0 requests in flight."""
        with trio.fail_after(5):
            while any(a.statistics().in_flight for a in self.server.actors.values()) or (
                self.a.in_flight or self.b.in_flight
            ):
                await trio.sleep(0.01)


@asynccontextmanager
async def open_rig(
    model: cfg.ModelConfig,
    routing: cfg.RoutingConfig | None = None,
    dataset: Path | None = None,
    **provider: object,
) -> AsyncIterator[Rig]:
    async with open_fake_openai() as a, open_fake_openai() as b:
        providers = [
            openai_provider(f.base_url, name, **provider) for name, f in (("a", a), ("b", b))
        ]
        config = proxy_config(*providers, models=[model])
        config = msgspec.structs.replace(
            config,
            routing=routing or config.routing,
            dataset=cfg.DatasetConfig(dir=None if dataset is None else str(dataset)),
        )
        async with (
            open_proxy(config, environ(a.api_key)) as server,
            openai.AsyncOpenAI(base_url=base_url(server), api_key=MASTER_KEY, max_retries=0) as sdk,
        ):
            rig = Rig(a, b, server, sdk)
            yield rig
            await rig.assert_idle()


def fallback(**fields: object) -> cfg.ModelConfig:
    return cfg.ModelConfig(name="m", targets=TARGETS, **fields)  # type: ignore[arg-type]


SERVER_ERROR = Respond(503, error_body("overloaded", type="server_error"))


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([SERVER_ERROR] * 3, id="5xx-burst"),
        pytest.param([Hang()], id="timeout"),
        pytest.param([Cut(after_chunks=0)], id="connection-cut"),
        pytest.param([Respond(429, error_body("slow down", type="requests"))], id="429"),
    ],
)
async def test_a_healthy_target_serves_whatever_the_other_does(faults: list[object]) -> None:
    """a fails (each fault once per attempt, retried once), b serves: the client sees no error."""
    routing = cfg.RoutingConfig(max_retries=1, retry_base_s=0.01, retry_cap_s=0.05)
    with trio.fail_after(20):
        async with open_rig(fallback(), routing, request_timeout_s=0.5) as rig:
            rig.a.script(*faults * 2)  # type: ignore[arg-type]
            assert (await rig.chat()).startswith("echo")
            assert rig.served() == (2, 1)  # a: first try and one retry; then b


async def test_a_stream_falls_over_while_nothing_was_sent() -> None:
    with trio.fail_after(20):
        async with open_rig(fallback()) as rig:
            rig.a.script(SERVER_ERROR)
            stream = await rig.sdk.chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text.startswith("echo") and rig.served() == (1, 1)


async def test_every_attempt_is_in_the_dataset_row(tmp_path: Path) -> None:
    routing = cfg.RoutingConfig(max_retries=1, retry_base_s=0.01, retry_cap_s=0.05)
    with trio.fail_after(20):
        async with open_rig(fallback(), routing, dataset=tmp_path) as rig:
            rig.a.script(SERVER_ERROR, SERVER_ERROR)
            await rig.chat()
    (row,) = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table().to_pylist()
    attempts = [(a["provider"], a["status_code"]) for a in row["attempts"]]
    assert attempts == [("a", 503), ("a", 503), ("b", 200)]
    assert (row["provider"], row["status_code"]) == ("b", 200)
    offsets = [a["start_offset_ms"] for a in row["attempts"]]
    assert offsets == sorted(offsets)


async def test_retries_wait_at_least_retry_after() -> None:
    routing = cfg.RoutingConfig(max_retries=1, retry_base_s=0.0, retry_cap_s=0.0)
    busy = Respond(429, error_body("slow down", type="requests"), {"retry-after": "1"})
    with trio.fail_after(20):
        async with open_rig(cfg.ModelConfig(name="m", targets=TARGETS[:1]), routing) as rig:
            rig.a.script(busy)
            started = trio.current_time()
            assert (await rig.chat()).startswith("echo")
            assert trio.current_time() - started >= 1.0
            assert rig.served() == (2, 0)


async def test_a_retry_after_beyond_the_longest_wait_moves_to_the_next_target() -> None:
    routing = cfg.RoutingConfig(max_retries=3, retry_max_wait_s=1.0)
    busy = Respond(429, error_body("slow down", type="requests"), {"retry-after-ms": "30000"})
    with trio.fail_after(20):
        async with open_rig(fallback(), routing) as rig:
            rig.a.script(busy)
            started = trio.current_time()
            await rig.chat()
            assert trio.current_time() - started < 5.0  # b at once, not a in 30 s
            assert rig.served() == (1, 1)


async def test_a_final_429_carries_retry_after() -> None:
    with trio.fail_after(20):
        async with open_rig(cfg.ModelConfig(name="m", targets=TARGETS[:1])) as rig:
            rig.a.script(Respond(429, error_body("slow down", type="requests")))
            with pytest.raises(openai.RateLimitError) as refused:
                await rig.chat()
    assert refused.value.response.headers["retry-after"] == "1"


async def test_the_total_timeout_bounds_a_request_and_cancels_the_upstream_call() -> None:
    routing = cfg.RoutingConfig(total_timeout_s=1.0)
    with trio.fail_after(20):
        async with open_rig(fallback(), routing, request_timeout_s=30.0) as rig:
            rig.a.script(Hang())
            with pytest.raises(openai.APIStatusError) as failed:
                await rig.chat()
            await rig.a.wait_disconnects(1)
    assert failed.value.status_code == 504
    assert rig.served() == (1, 0)  # the deadline passed: b was not tried


async def test_no_retry_after_the_first_byte() -> None:
    """A stream cut after it started ends with an error event; nothing is retried."""
    routing = cfg.RoutingConfig(max_retries=2, retry_base_s=0.0, retry_cap_s=0.0)
    with trio.fail_after(20):
        async with open_rig(fallback(), routing) as rig:
            rig.a.script(Cut(after_chunks=1))
            stream = await rig.sdk.chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            )
            with pytest.raises(openai.APIError):
                async for _ in stream:
                    pass
            assert rig.served() == (1, 0)


async def test_weighted_routing_splits_close_to_the_weights() -> None:
    """3:1 over 160 requests: a's share is 0.75, binomial sd 0.034; accept 0.60-0.90."""
    with trio.fail_after(60):
        async with open_rig(fallback(strategy="weighted", weights=[3, 1])) as rig:
            for _ in range(160):
                await rig.chat()
            a, b = rig.served()
    assert a + b == 160
    assert 0.60 <= a / 160 <= 0.90


async def test_least_busy_picks_the_target_with_fewer_in_flight() -> None:
    with trio.fail_after(20):
        async with open_rig(fallback(strategy="least_busy"), max_concurrency=4) as rig:
            rig.a.script(Hang(), Hang())
            async with trio.open_nursery() as nursery:
                for _ in range(2):  # two calls held on a, addressed to it directly
                    nursery.start_soon(rig.chat, "a/gpt-4o-mini")
                while rig.a.in_flight < 2:
                    await trio.sleep(0.01)
                for _ in range(10):
                    await rig.chat()
                assert rig.served() == (2, 10)
                nursery.cancel_scope.cancel()


async def test_latency_routing_prefers_the_faster_target() -> None:
    with trio.fail_after(40):
        async with open_rig(fallback(strategy="latency")) as rig:
            rig.a.script(*[Delay(0.3)] * 40)
            while not all(rig.served()):  # until both have been measured
                await rig.chat()
            before = rig.served()
            for _ in range(20):
                await rig.chat()
            a, b = (now - then for now, then in zip(rig.served(), before, strict=True))
    assert b >= 18, (a, b)


async def test_a_target_with_an_open_breaker_is_skipped() -> None:
    with trio.fail_after(20):
        async with open_rig(fallback(), breaker_failures=1, breaker_cooldown_s=60.0) as rig:
            rig.a.script(SERVER_ERROR)
            await rig.chat()  # a fails, its breaker opens, b serves
            for _ in range(5):
                await rig.chat()
            assert rig.served() == (1, 6)
