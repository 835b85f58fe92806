"""Per-key limits end to end: keys from a real keys file, the official openai SDK on loopback.

What a client of a limited key sees: ``x-ratelimit-*`` headers on every answer, a 429 with
``retry-after`` (and ``retry-after-ms``) when it is over its rpm, its concurrency or its budget,
and token charges that follow the real usage of the answers it got.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import msgspec
import openai
import pytest
import trio

from actorproxy import config as cfg
from actorproxy import runtime
from actorproxy.keys import KeyStore, LimitArgs
from tests.e2e.conftest import MODELS, base_url
from tests.fakes.openai_upstream import Delay, FakeOpenAI
from tests.harness import environ, open_proxy, openai_provider, proxy_config

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
PRICES = {"gpt-4o-mini": cfg.Price(input=100_000.0, output=100_000.0)}  # $0.10 a token


@pytest.fixture
async def keyed(fake: FakeOpenAI, tmp_path: Path) -> AsyncIterator[tuple[runtime.Server, Path]]:
    keys_file = tmp_path / "keys.json"
    config = proxy_config(openai_provider(fake.base_url, request_timeout_s=5.0), models=MODELS)
    config = msgspec.structs.replace(
        config,
        auth=cfg.AuthConfig(master_key_env="ACTORPROXY_MASTER_KEY", keys_file=str(keys_file)),
        prices=PRICES,
    )
    KeyStore(keys_file).create("placeholder")  # the file exists before the server reads it
    async with open_proxy(config, environ(fake.api_key)) as server:
        yield server, keys_file


def client_for(keyed: tuple[runtime.Server, Path], **limits: object) -> openai.AsyncOpenAI:
    """A new key with ``limits`` in the served keys file, and an SDK client using it."""
    server, keys_file = keyed
    args: LimitArgs = limits  # type: ignore[assignment]
    _, secret = KeyStore(keys_file).create("test", **args)
    return openai.AsyncOpenAI(base_url=base_url(server), api_key=secret, max_retries=0)


async def wait_for_key(sdk: openai.AsyncOpenAI) -> None:
    """The server re-reads the keys file within a second: wait until the new key works."""
    while True:
        try:
            await sdk.models.list()
            return
        except openai.AuthenticationError:
            await trio.sleep(0.1)


async def test_over_rpm_is_429_with_retry_after_and_ratelimit_headers(
    keyed: tuple[runtime.Server, Path],
) -> None:
    with trio.fail_after(10):
        async with client_for(keyed, rpm=2) as sdk:
            await wait_for_key(sdk)
            first = await sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MESSAGES
            )
            assert first.headers["x-ratelimit-limit-requests"] == "2"
            assert first.headers["x-ratelimit-remaining-requests"] == "1"
            assert first.headers["x-ratelimit-reset-requests"].endswith("s")
            assert "x-ratelimit-limit-tokens" not in first.headers  # the key has no tpm
            await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            with pytest.raises(openai.RateLimitError) as refused:
                await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    headers = refused.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert 0 < int(headers["retry-after-ms"]) <= 60_000
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.value.code == "rate_limit_exceeded"


async def test_tokens_are_reconciled_with_the_real_usage(
    keyed: tuple[runtime.Server, Path],
) -> None:
    """The next answer's remaining tokens = the last one's minus the real usage in between: the
    rest of the reservation came back (both answers reserve the same, their bodies being equal)."""
    with trio.fail_after(10):
        async with client_for(keyed, tpm=100_000) as sdk:
            await wait_for_key(sdk)
            remaining, used = [], []
            for _ in range(2):
                raw = await sdk.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=MESSAGES, max_tokens=50
                )
                remaining.append(int(raw.headers["x-ratelimit-remaining-tokens"]))
                usage = raw.parse().usage
                assert usage is not None
                used.append(usage.total_tokens)
            for _ in range(2):
                streamed = await sdk.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini",
                    messages=MESSAGES,
                    max_tokens=50,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                remaining.append(int(streamed.headers["x-ratelimit-remaining-tokens"]))
                async for chunk in streamed.parse():
                    if chunk.usage is not None:
                        used.append(chunk.usage.total_tokens)
    assert len(used) == 4 and min(used) > 0
    assert remaining[1] == remaining[0] - used[0]
    assert remaining[3] == remaining[2] - used[2]


async def test_max_concurrency_per_key(
    keyed: tuple[runtime.Server, Path], fake: FakeOpenAI
) -> None:
    with trio.fail_after(10):
        async with client_for(keyed, max_concurrency=1) as sdk:
            await wait_for_key(sdk)
            fake.script(Delay(1.0))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
                )
                while fake.in_flight == 0:
                    await trio.sleep(0.01)
                with pytest.raises(openai.RateLimitError) as refused:
                    await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert "max_concurrency" in refused.value.message
            assert refused.value.response.headers["retry-after"] == "1"
            await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


async def test_budget_stops_at_the_limit_with_insufficient_quota(
    keyed: tuple[runtime.Server, Path], fake: FakeOpenAI
) -> None:
    """$0.10 a token and a $5 budget: each request reserves its estimate (prompt bytes / 4 + 5
    output tokens) and is charged its real usage, so requests stop before spend passes $5."""
    with trio.fail_after(20):
        async with client_for(keyed, budget_usd=5.0, budget_period="day") as sdk:
            await wait_for_key(sdk)
            spent, served = 0.0, 0
            while True:
                try:
                    reply = await sdk.chat.completions.create(
                        model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
                    )
                except openai.RateLimitError as exc:
                    refused = exc
                    break
                assert reply.usage is not None
                spent += reply.usage.total_tokens * 0.10
                served += 1
    assert served >= 1 and spent <= 5.0
    assert refused.code == "insufficient_quota"
    assert refused.body["type"] == "insufficient_quota"  # type: ignore[index]
    assert int(refused.response.headers["retry-after"]) <= 86_400
    assert "budget" in refused.message


async def test_a_key_without_limits_gets_no_ratelimit_headers(
    keyed: tuple[runtime.Server, Path],
) -> None:
    with trio.fail_after(10):
        async with client_for(keyed) as sdk:
            await wait_for_key(sdk)
            raw = await sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MESSAGES
            )
    assert not [name for name in raw.headers if name.startswith("x-ratelimit")]


async def test_anthropic_clients_get_the_same_limits_in_their_shape(
    keyed: tuple[runtime.Server, Path],
) -> None:
    """``/v1/messages`` counts against the same key; the 429 is Anthropic's rate_limit_error."""
    server, keys_file = keyed
    _, secret = KeyStore(keys_file).create("claude", rpm=1)
    with trio.fail_after(10):
        async with anthropic.AsyncAnthropic(
            base_url=server.urls[0], api_key=secret, max_retries=0
        ) as claude:
            while True:
                try:
                    raw = await claude.messages.with_raw_response.create(
                        model="gpt-4o-mini",
                        max_tokens=16,
                        messages=[{"role": "user", "content": "hi"}],
                    )
                    break
                except anthropic.AuthenticationError:  # until the server re-read the keys file
                    await trio.sleep(0.1)
            assert raw.headers["x-ratelimit-remaining-requests"] == "0"
            with pytest.raises(anthropic.RateLimitError) as refused:
                await claude.messages.create(
                    model="gpt-4o-mini", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
                )
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
