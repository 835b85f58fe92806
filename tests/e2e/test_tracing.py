"""W3C trace context end to end, and OTLP span export to a fake collector."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import httpx
import msgspec
import openai
import pytest
import trio

from actorproxy import config as cfg
from actorproxy import runtime, tracing
from tests.e2e.conftest import base_url
from tests.fakes.openai_upstream import FakeOpenAI, Respond
from tests.fakes.otlp_collector import FakeCollector, open_fake_collector
from tests.harness import MASTER_KEY, environ, open_proxy, openai_provider, proxy_config

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
HI: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def test_the_clients_trace_reaches_the_upstream_under_our_span(
    proxy: runtime.Server, fake: FakeOpenAI
) -> None:
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"}
    with trio.fail_after(10):
        async with openai.AsyncOpenAI(
            base_url=base_url(proxy), api_key=MASTER_KEY, max_retries=0, default_headers=headers
        ) as sdk:
            await sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)
            await sdk.chat.completions.create(
                model="gpt-4o-mini", messages=HI, extra_headers={"traceparent": "00-zz-1-01"}
            )
    with_client, invalid = fake.requests[-2:]
    parsed = tracing.parse(with_client.headers["traceparent"].encode())
    assert parsed is not None
    trace_id, parent, flags = parsed
    assert (trace_id, flags) == (CLIENT_TRACE, 1) and parent != CLIENT_SPAN
    assert with_client.headers["tracestate"] == "vendor=abc"
    fresh = tracing.parse(invalid.headers["traceparent"].encode())
    assert fresh is not None and fresh[0] != CLIENT_TRACE
    assert "tracestate" not in invalid.headers  # it belonged to the invalid traceparent


@pytest.fixture
async def collector() -> AsyncIterator[FakeCollector]:
    async with open_fake_collector() as fake_collector:
        yield fake_collector


@pytest.fixture
async def traced(fake: FakeOpenAI, collector: FakeCollector) -> AsyncIterator[runtime.Server]:
    """Two providers on the same fake upstream; "resilient" falls over from one to the other."""
    config = proxy_config(
        openai_provider(fake.base_url),
        openai_provider(fake.base_url, name="backup"),
        models=[cfg.ModelConfig(name="resilient", targets=["openai/gpt-4o", "backup/gpt-4o"])],
    )
    tracing_config = cfg.TracingConfig(
        otlp_endpoint=f"{collector.base_url}/v1/traces", service_name="gw", export_interval_ms=50
    )
    config = msgspec.structs.replace(config, tracing=tracing_config)
    async with open_proxy(config, environ(fake.api_key)) as server:
        yield server


async def test_spans_reach_the_collector_with_the_right_links(
    traced: runtime.Server, fake: FakeOpenAI, collector: FakeCollector
) -> None:
    fake.script(Respond(500, b'{"error": {"message": "x", "type": "server_error"}}'))
    with trio.fail_after(15):
        async with openai.AsyncOpenAI(
            base_url=base_url(traced),
            api_key=MASTER_KEY,
            max_retries=0,
            default_headers={"traceparent": TRACEPARENT},
        ) as sdk:
            reply = await sdk.chat.completions.create(model="resilient", messages=HI)
        spans = await collector.wait_spans(4)
    assert reply.usage is not None
    assert {span.trace_id for span in spans} == {CLIENT_TRACE}
    assert {span.service for span in spans} == {"gw"}
    (request,) = [span for span in spans if span.kind == "SERVER"]
    assert request.parent_id == CLIENT_SPAN and request.name == "chat resilient"
    assert request.attributes["gen_ai.operation.name"] == "chat"
    assert request.attributes["gen_ai.request.model"] == "resilient"
    assert request.attributes["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert request.attributes["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    children = [span for span in spans if span is not request]
    assert {span.parent_id for span in children} == {request.span_id}
    attempts = sorted((s for s in children if s.kind == "CLIENT"), key=lambda s: s.start_ns)
    assert [a.attributes["actorproxy.provider"] for a in attempts] == ["openai", "backup"]
    assert [a.attributes["http.response.status_code"] for a in attempts] == [500, 200]
    assert attempts[0].attributes["gen_ai.provider.name"] == "openai"
    assert [span.name for span in children if span.kind == "INTERNAL"] == ["queue wait"]
    assert all(request.start_ns <= s.start_ns <= s.end_ns <= request.end_ns for s in children)
    # The upstream's parent is the exported request span: the traces join up.
    upstream = tracing.parse(fake.requests[-1].headers["traceparent"].encode())
    assert upstream is not None and upstream[:2] == (CLIENT_TRACE, request.span_id)


async def test_unsampled_requests_export_nothing(
    traced: runtime.Server, collector: FakeCollector
) -> None:
    unsampled = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"}
    body = {"model": "resilient", "messages": HI}
    auth = {"authorization": f"Bearer {MASTER_KEY}"}
    with trio.fail_after(10):
        async with httpx.AsyncClient(headers=auth) as http:
            await http.post(f"{base_url(traced)}/chat/completions", json=body, headers=unsampled)
            await http.post(f"{base_url(traced)}/chat/completions", json=body)
        spans = await collector.wait_spans(3)
        await trio.sleep(0.2)  # one more export period: nothing else may come
    assert CLIENT_TRACE not in {span.trace_id for span in collector.spans}
    assert len(spans) == 3


_NO_OTEL = textwrap.dedent(
    """
    import sys, httpx, trio
    from functools import partial
    from actorproxy import cli, config, runtime

    async def main():
        shutdown = trio.Event()
        conf = config.EMBEDDED_DEFAULT
        conf = config.msgspec.structs.replace(
            conf, server=config.ServerConfig(port=0, graceful_timeout_s=1)
        )
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(runtime.serve, conf, environ={}, shutdown=shutdown)
            )
            async with httpx.AsyncClient() as http:
                body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
                reply = await http.post(server.urls[0] + "/v1/chat/completions", json=body)
                assert reply.status_code == 200, reply.text
            shutdown.set()

    trio.run(main)
    print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
    """
)


def test_nothing_from_opentelemetry_is_imported_without_an_endpoint() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _NO_OTEL], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


_NO_EXTRA = textwrap.dedent(
    """
    import sys
    sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
    from actorproxy import config, ops
    conf = config.Config(
        tracing=config.TracingConfig(otlp_endpoint="http://127.0.0.1:9/v1/traces"),
        source="proxy.toml",
    )
    try:
        ops.span_export(conf)
    except config.ConfigError as exc:
        print(exc)
    """
)


def test_an_endpoint_without_the_extra_is_a_config_error() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _NO_EXTRA], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("proxy.toml: tracing.otlp_endpoint needs the otel extra")
