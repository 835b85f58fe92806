"""An actor that crashes is restarted; calls caught in the crash fail fast or fall over."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from actorproxy import config as cfg
from actorproxy import runtime
from actorproxy.net.base import UpstreamRequest, UpstreamResponse
from actorproxy.net.pool import H11Pool
from tests.e2e.conftest import base_url
from tests.fakes.openai_upstream import FakeOpenAI, Hang
from tests.harness import MASTER_KEY, environ, open_proxy, openai_provider, proxy_config

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
CHAT: dict[str, object] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


class Crashing:
    """A real upstream pool that raises a bug (not an HTTP error) on armed requests."""

    def __init__(self, base: str) -> None:
        self.inner = H11Pool(base, max_connections=8, connect_timeout_s=5.0)
        self.armed = 0

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if self.armed:
            self.armed -= 1
            raise RuntimeError("injected bug in the upstream seam")
        return await self.inner.send(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def crashing(fake: FakeOpenAI) -> AsyncIterator[tuple[runtime.Server, Crashing]]:
    models = [
        cfg.ModelConfig(name="gpt-4o-mini", targets=["openai/gpt-4o-mini"]),
        cfg.ModelConfig(name="safe", targets=["openai/gpt-4o-mini", "backup/gpt-4o"]),
    ]
    config = proxy_config(
        openai_provider(fake.base_url), openai_provider(fake.base_url, "backup"), models=models
    )
    upstream = Crashing(fake.base_url)
    async with open_proxy(config, environ(fake.api_key), {"openai": upstream}) as server:
        yield server, upstream


async def ready(http: httpx.AsyncClient, server: runtime.Server) -> httpx.Response:
    return await http.get(f"{server.urls[0]}/ready")


async def test_crash_fails_in_flight_calls_promptly_and_restarts(
    crashing: tuple[runtime.Server, Crashing], fake: FakeOpenAI
) -> None:
    server, upstream = crashing
    fake.script(Hang())
    results: list[httpx.Response] = []

    async def call(http: httpx.AsyncClient) -> None:
        results.append(
            await http.post(f"{base_url(server)}/chat/completions", json=CHAT, headers=AUTH)
        )

    with trio.fail_after(10):
        async with httpx.AsyncClient(timeout=10) as http:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, http)  # hangs at the upstream until the crash
                while not fake.requests:
                    await trio.sleep(0.01)
                upstream.armed = 1
                nursery.start_soon(call, http)  # crashes the actor
            assert [r.status_code for r in results] == [503, 503]
            assert {r.json()["error"]["code"] for r in results} == {"provider_actor_failed"}
            await fake.wait_disconnects(1)
            while (await ready(http, server)).status_code != 200:
                await trio.sleep(0.01)
            state = (await ready(http, server)).json()["actors"]["openai"]
            assert state["restarts"] == 1 and state["state"] == "running"
            after = await http.post(f"{base_url(server)}/chat/completions", json=CHAT, headers=AUTH)
    assert after.status_code == 200


async def test_crash_falls_over_to_the_next_target(
    crashing: tuple[runtime.Server, Crashing], fake: FakeOpenAI
) -> None:
    server, upstream = crashing
    upstream.armed = 1
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{base_url(server)}/chat/completions", json={**CHAT, "model": "safe"}, headers=AUTH
            )
    assert response.status_code == 200
    assert fake.requests[-1].body.startswith(b'{"model":"gpt-4o"')


async def test_ready_lists_every_actor(proxy: runtime.Server) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            response = await ready(http, proxy)
            health = await http.get(f"{proxy.urls[0]}/health")
    assert health.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert set(body["actors"]) == {"openai", "logger"}
    assert body["actors"]["openai"]["breaker"]["state"] == "closed"
