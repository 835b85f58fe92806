"""Provider limits end to end: the real proxy, the official SDK, the fake OpenAI upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgspec
import openai
import pytest
import trio

from actorproxy import config as cfg
from actorproxy import runtime
from actorproxy.keys import KeyStore
from tests.e2e.conftest import MODELS, base_url
from tests.fakes.openai_upstream import Delay, FakeOpenAI, Hang
from tests.harness import MASTER_KEY, environ, open_proxy, openai_provider, proxy_config

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@asynccontextmanager
async def open_client(
    fake: FakeOpenAI, **limits: object
) -> AsyncIterator[tuple[runtime.Server, openai.AsyncOpenAI]]:
    provider = msgspec.structs.replace(openai_provider(fake.base_url), **limits)
    config = proxy_config(provider, models=MODELS)
    async with (
        open_proxy(config, environ(fake.api_key)) as server,
        openai.AsyncOpenAI(base_url=base_url(server), api_key=MASTER_KEY, max_retries=0) as sdk,
    ):
        yield server, sdk


async def ask(sdk: openai.AsyncOpenAI) -> None:
    await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


async def wait_until_queued(server: runtime.Server, count: int) -> None:
    while server.actors["openai"].statistics().queued < count:
        await trio.sleep(0.01)


async def test_an_rpm_limit_queues_requests_then_serves_them(fake: FakeOpenAI) -> None:
    with trio.fail_after(15):
        async with open_client(fake, rpm=2, rate_window_s=2.0) as (server, sdk):
            start = trio.current_time()
            finished: list[float] = []

            async def ask() -> None:
                reply = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                assert reply.choices[0].message.content
                finished.append(trio.current_time() - start)

            async with trio.open_nursery() as clients:
                for _ in range(4):
                    clients.start_soon(ask)
                await wait_until_queued(server, 2)
                while len(fake.requests) < 2:
                    await trio.sleep(0.01)
                assert len(fake.requests) == 2  # the upstream has seen two, two wait
                async with httpx.AsyncClient() as http:
                    ready = (await http.get(f"{server.urls[0]}/ready")).json()
                    metrics = (await http.get(f"{server.urls[0]}/metrics")).text
                assert (
                    'actorproxy_provider_rate_remaining{limit="requests",provider="openai"} 0.0'
                    in metrics
                )
                admission = ready["actors"]["openai"]["admission"]
                assert (admission["queued"], admission["rate"]["remaining_requests"]) == (2, 0)
    assert len(fake.requests) == 4
    assert sorted(finished)[2] >= 2.0  # admitted a full window after the first two


async def test_a_full_queue_gives_the_sdk_a_429_with_retry_after(fake: FakeOpenAI) -> None:
    fake.script(Hang(), Hang())
    with trio.fail_after(15):
        async with open_client(fake, max_concurrency=1, max_queue=1) as (server, sdk):
            async with trio.open_nursery() as clients:
                for _ in range(2):
                    clients.start_soon(ask, sdk)
                await wait_until_queued(server, 1)
                with pytest.raises(openai.RateLimitError) as refused:
                    await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                clients.cancel_scope.cancel()
            await fake.wait_disconnects(1)
    assert refused.value.status_code == 429
    assert refused.value.response.headers["retry-after"] == "1"
    assert refused.value.code == "rate_limit_exceeded"
    assert len(fake.requests) == 1


async def test_a_slow_first_byte_is_a_504_and_frees_the_slot(fake: FakeOpenAI) -> None:
    fake.script(Delay(3.0))
    with trio.fail_after(15):
        async with open_client(fake, max_concurrency=1, first_byte_timeout_s=0.3) as (server, sdk):
            with pytest.raises(openai.InternalServerError) as timed_out:
                await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            reply = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            stats = server.actors["openai"].statistics()
    assert timed_out.value.status_code == 504
    assert timed_out.value.code == "upstream_timeout"
    assert reply.choices[0].message.content
    assert (stats.in_flight, stats.admission.reservations) == (0, 0)


async def test_a_request_that_can_never_fit_the_tpm_limit_is_a_400(fake: FakeOpenAI) -> None:
    with trio.fail_after(15):
        async with open_client(fake, tpm=1000, default_output_tokens=100) as (_, sdk):
            with pytest.raises(openai.BadRequestError) as refused:
                await sdk.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, max_tokens=600, n=2
                )
            small = await sdk.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=400, n=2
            )
            default = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert refused.value.code == "tokens_exceed_limit"
    assert small.choices[0].message.content
    assert default.choices[0].message.content
    assert len(fake.requests) == 2


async def test_queued_calls_are_queued_under_their_api_key(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    store = KeyStore(tmp_path / "keys.json")
    secrets = [store.create(name)[1] for name in ("alice", "bob")]
    provider = msgspec.structs.replace(openai_provider(fake.base_url), max_concurrency=1)
    config = proxy_config(provider, models=MODELS)
    auth = cfg.AuthConfig(master_key_env="ACTORPROXY_MASTER_KEY", keys_file=str(store.path))
    config = msgspec.structs.replace(config, auth=auth)
    fake.script(Hang())
    with trio.fail_after(15):
        async with open_proxy(config, environ(fake.api_key)) as server:
            sdks = [
                openai.AsyncOpenAI(base_url=base_url(server), api_key=key, max_retries=0)
                for key in (MASTER_KEY, *secrets, secrets[0])
            ]
            async with trio.open_nursery() as clients:
                for sdk in sdks:
                    clients.start_soon(ask, sdk)
                    await trio.sleep(0.05)  # in this order
                await wait_until_queued(server, 3)
                admission = server.actors["openai"].statistics().admission
                clients.cancel_scope.cancel()
            for sdk in sdks:
                await sdk.close()
    assert (admission.in_flight, admission.queued, admission.queued_keys) == (1, 3, 2)
