"""A client that goes away cancels its upstream call, streaming and not; no slot leaks."""

from __future__ import annotations

import json

import httpx
import trio

from actorproxy import runtime
from tests.e2e.conftest import base_url
from tests.fakes.openai_upstream import FakeOpenAI, Hang, Slow
from tests.harness import MASTER_KEY

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
CHAT: dict[str, object] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "one two three four"}],
}


async def wait_idle(server: runtime.Server) -> None:
    while server.actors["openai"].statistics().in_flight:
        await trio.sleep(0.01)


async def test_disconnect_cancels_a_waiting_call(proxy: runtime.Server, fake: FakeOpenAI) -> None:
    fake.script(Hang())
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            with trio.move_on_after(0.3):
                await http.post(f"{base_url(proxy)}/chat/completions", json=CHAT, headers=AUTH)
        await fake.wait_disconnects(1)
        await wait_idle(proxy)
    assert proxy.actors["openai"].statistics().in_flight == 0


async def test_disconnect_cancels_a_stream(proxy: runtime.Server, fake: FakeOpenAI) -> None:
    fake.script(Slow(interval=0.2))
    body = json.dumps({**CHAT, "stream": True}).encode()
    host, port = proxy.urls[0].removeprefix("http://").rsplit(":", 1)
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
        f"authorization: Bearer {MASTER_KEY}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(request)
            received = b""
            while b"data: " not in received:
                received += await stream.receive_some()
        assert received.startswith(b"HTTP/1.1 200")
        await fake.wait_disconnects(1)
        await wait_idle(proxy)


async def test_proxy_keeps_serving_after_disconnects(
    proxy: runtime.Server, fake: FakeOpenAI
) -> None:
    fake.script(Hang(), Hang(), Hang())
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(_give_up_after, http, base_url(proxy), 0.3)
            await fake.wait_disconnects(3)
            response = await http.post(
                f"{base_url(proxy)}/chat/completions", json=CHAT, headers=AUTH
            )
    assert response.status_code == 200


async def _give_up_after(http: httpx.AsyncClient, url: str, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await http.post(f"{url}/chat/completions", json=CHAT, headers=AUTH)
