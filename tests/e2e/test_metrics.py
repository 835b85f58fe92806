"""`/metrics` moves by exactly what a scripted run did, on the proxy's own registry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from actorproxy import runtime
from tests.e2e.conftest import MODELS, base_url
from tests.fakes.openai_upstream import FakeOpenAI, Respond
from tests.harness import MASTER_KEY, environ, open_proxy, openai_provider, proxy_config

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
FAIL = Respond(500, b'{"error": {"message": "x", "type": "server_error"}}')
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(server: runtime.Server) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.urls[0]}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def labels(**given: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(given.items()))


async def test_metrics_move_with_the_traffic(proxy: runtime.Server, fake: FakeOpenAI) -> None:
    fake.script(FAIL)
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            for _ in range(3):
                await http.post(f"{base_url(proxy)}/chat/completions", json=CHAT, headers=AUTH)
            while proxy.logger.statistics().received < 3:
                await trio.sleep(0.01)
        got = await scrape(proxy)
    openai_ok = labels(outcome="ok", provider="openai")
    assert got[("actorproxy_provider_calls_total", openai_ok)] == 2
    assert got[("actorproxy_provider_calls_total", labels(outcome="error", provider="openai"))] == 1
    assert got[("actorproxy_provider_in_flight", labels(provider="openai"))] == 0
    assert got[("actorproxy_provider_breaker_state", labels(provider="openai"))] == 0
    assert got[("actorproxy_provider_breaker_opened_total", labels(provider="openai"))] == 0
    assert got[("actorproxy_provider_paused_seconds", labels(provider="openai"))] == 0
    assert got[("actorproxy_provider_reservations", labels(provider="openai"))] == 0
    assert not any(name == "actorproxy_provider_rate_remaining" for name, _ in got)  # unlimited
    assert got[("actorproxy_logger_records_received_total", ())] == 3
    assert got[("actorproxy_logger_records_dropped_total", ())] == 0
    assert got[("actorproxy_actor_restarts_total", labels(actor="logger"))] == 0


@pytest.fixture
async def fragile(fake: FakeOpenAI) -> AsyncIterator[runtime.Server]:
    """A proxy whose breaker opens after two failures and stays open for the test."""
    provider = openai_provider(fake.base_url, breaker_failures=2, breaker_cooldown_s=600.0)
    async with open_proxy(proxy_config(provider, models=MODELS), environ(fake.api_key)) as server:
        yield server


async def _scripted_run(server: runtime.Server, fake: FakeOpenAI) -> tuple[int, int, int]:
    """3 answers (one streamed), 2 upstream 500s, 1 refused by the open breaker, 1 unknown model.

    Returns the prompt and completion tokens the client saw, and the streamed chunks.
    """
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "say three words"}
    ]
    prompt = completion = chunks = 0
    async with openai.AsyncOpenAI(
        base_url=base_url(server), api_key=MASTER_KEY, max_retries=0
    ) as sdk:
        for _ in range(2):
            reply = await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
            assert reply.usage is not None
            prompt, completion = (
                prompt + reply.usage.prompt_tokens,
                completion + reply.usage.completion_tokens,
            )
        stream = await sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            chunks += 1
            if chunk.usage is not None:
                prompt += chunk.usage.prompt_tokens
                completion += chunk.usage.completion_tokens
        fake.script(FAIL, FAIL)
        for status in (500, 500, 503):
            with pytest.raises(openai.APIStatusError) as failed:
                await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
            assert failed.value.status_code == status
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(model="no-such-model", messages=messages)
    return prompt, completion, chunks


async def test_a_scripted_run_moves_each_metric_by_what_it_did(
    fragile: runtime.Server, fake: FakeOpenAI
) -> None:
    with trio.fail_after(15):
        before = await scrape(fragile)
        prompt, completion, chunks = await _scripted_run(fragile, fake)
        while fragile.logger.statistics().received < 7:
            await trio.sleep(0.01)
        got = await scrape(fragile)
    assert not any(name.startswith("actorproxy_requests") for name, _ in before)

    def requests(model: str, provider: str, status: str) -> float:
        key = labels(endpoint="chat", model=model, provider=provider, status=status)
        return got[("actorproxy_requests_total", key)]

    assert requests("gpt-4o-mini", "openai", "200") == 3
    assert requests("gpt-4o-mini", "openai", "500") == 2
    assert requests("gpt-4o-mini", "openai", "503") == 1
    assert requests("other", "none", "404") == 1
    tokens = {
        kind: got[
            ("actorproxy_tokens_total", labels(kind=kind, model="gpt-4o-mini", provider="openai"))
        ]
        for kind in ("input", "output")
    }
    assert tokens == {"input": prompt, "output": completion} and prompt > 0 and completion > 0
    openai_label = labels(provider="openai")
    assert (
        got[("actorproxy_request_seconds_count", labels(endpoint="chat", provider="openai"))] == 6
    )
    assert got[("actorproxy_upstream_seconds_count", openai_label)] == 3
    assert got[("actorproxy_gateway_overhead_seconds_count", labels(endpoint="chat"))] == 3
    assert got[("actorproxy_queue_wait_seconds_count", openai_label)] == 5
    assert got[("actorproxy_time_to_first_token_seconds_count", openai_label)] == 1
    # The proxy relays the SDK's chunks and `data: [DONE]`, some frames possibly together.
    gaps = got[("actorproxy_inter_chunk_gap_seconds_count", openai_label)]
    assert 1 <= gaps <= chunks
    assert got[("actorproxy_provider_breaker_state", openai_label)] == 2
    assert got[("actorproxy_provider_breaker_opened_total", openai_label)] == 1
    assert got[("actorproxy_rejections_total", labels(reason="breaker_open"))] == 1
    assert not any(
        name == "actorproxy_rejections_total" and dict(key)["reason"] != "breaker_open"
        for name, key in got
    )
    inf = labels(endpoint="chat", le="+Inf", provider="openai")
    assert got[("actorproxy_request_seconds_bucket", inf)] == 6
    assert got[("actorproxy_provider_calls_total", labels(outcome="ok", provider="openai"))] == 3
    assert got[("actorproxy_provider_calls_total", labels(outcome="error", provider="openai"))] == 2
    assert got[("actorproxy_provider_in_flight", openai_label)] == 0
    assert got[("actorproxy_provider_queue_depth", openai_label)] == 0
    assert got[("actorproxy_actor_restarts_total", labels(actor="openai"))] == 0
    assert got[("actorproxy_logger_records_received_total", ())] == 7
    assert got[("actorproxy_logger_records_dropped_total", ())] == 0


async def test_models_outside_the_config_share_one_label(proxy: runtime.Server) -> None:
    async with httpx.AsyncClient() as http:
        for name in ("a", "b", "openai/not-a-configured-target"):
            body = {**CHAT, "model": name}
            await http.post(f"{base_url(proxy)}/chat/completions", json=body, headers=AUTH)
        while proxy.logger.statistics().received < 3:
            await trio.sleep(0.01)
    got = await scrape(proxy)
    models = {dict(key)["model"] for name, key in got if name == "actorproxy_requests_total"}
    assert models == {"other"}


async def test_every_proxy_response_carries_the_overhead_header(
    proxy: runtime.Server, fake: FakeOpenAI
) -> None:
    fake.script(FAIL)
    with trio.fail_after(10):
        async with httpx.AsyncClient(headers=AUTH) as http:
            answers = [
                await http.post(f"{base_url(proxy)}/chat/completions", json=body)
                for body in (CHAT, CHAT, {**CHAT, "model": "nope"}, {"model": 1})
            ]
            answers.append(await http.post(f"{base_url(proxy)}/completions", content=b"{"))
    assert [a.status_code for a in answers] == [500, 200, 404, 400, 400]
    for answer in answers:
        assert float(answer.headers["x-actorproxy-overhead-ms"]) >= 0
