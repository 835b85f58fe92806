"""`/metrics` reports what the actors did, on the proxy's own registry."""

from __future__ import annotations

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from actorproxy import runtime
from tests.e2e.conftest import base_url
from tests.fakes.openai_upstream import FakeOpenAI, Respond
from tests.harness import MASTER_KEY

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_move_with_the_traffic(proxy: runtime.Server, fake: FakeOpenAI) -> None:
    fake.script(Respond(500, b'{"error": {"message": "x", "type": "server_error"}}'))
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            for _ in range(3):
                await http.post(f"{base_url(proxy)}/chat/completions", json=CHAT, headers=AUTH)
            while proxy.logger.statistics().received < 3:
                await trio.sleep(0.01)
            response = await http.get(f"{proxy.urls[0]}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert (
        got[("actorproxy_provider_calls_total", (("outcome", "ok"), ("provider", "openai")))] == 2
    )
    assert (
        got[("actorproxy_provider_calls_total", (("outcome", "error"), ("provider", "openai")))]
        == 1
    )
    assert got[("actorproxy_provider_in_flight", (("provider", "openai"),))] == 0
    assert got[("actorproxy_provider_breaker_state", (("provider", "openai"),))] == 0
    assert got[("actorproxy_provider_breaker_opened_total", (("provider", "openai"),))] == 0
    assert got[("actorproxy_provider_paused_seconds", (("provider", "openai"),))] == 0
    assert got[("actorproxy_provider_reservations", (("provider", "openai"),))] == 0
    assert not any(name == "actorproxy_provider_rate_remaining" for name, _ in got)  # unlimited
    assert got[("actorproxy_logger_records_received_total", ())] == 3
    assert got[("actorproxy_logger_records_dropped_total", ())] == 0
    assert got[("actorproxy_actor_restarts_total", (("actor", "logger"),))] == 0
