"""Every error the proxy produces is OpenAI-shaped, with the right status, and never a traceback."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import trio

from actorproxy import config as cfg
from actorproxy import runtime
from tests import spec
from tests.e2e.conftest import MODELS, base_url
from tests.fakes.openai_upstream import Cut, FakeOpenAI, Hang, Respond
from tests.harness import MASTER_KEY, environ, open_proxy, openai_provider, proxy_config

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
CHAT: dict[str, object] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def post(
    server: runtime.Server,
    body: bytes | dict[str, object],
    headers: dict[str, str] | None = None,
    path: str = "/chat/completions",
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            return await http.post(
                f"{base_url(server)}{path}",
                content=content,
                headers=AUTH if headers is None else headers,
            )


def assert_openai_error(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    spec.validate("ErrorResponse", body)
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"]
    if code is not None:
        assert body["error"]["code"] == code
    error: dict[str, object] = body["error"]
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": []}', "model"),
        (b'{"model": 17, "messages": []}', "model"),
        (b'{"model": "gpt-4o-mini", "stream": "yes"}', "stream"),
    ],
)
async def test_malformed_bodies_are_400(
    proxy: runtime.Server, body: bytes, param: str | None
) -> None:
    error = assert_openai_error(await post(proxy, body), 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_upstream_validation_errors_keep_status_and_shape(proxy: runtime.Server) -> None:
    error = assert_openai_error(await post(proxy, {"model": "gpt-4o-mini", "messages": "hi"}), 400)
    assert error["param"] == "messages"


async def test_missing_and_wrong_keys_are_401(proxy: runtime.Server) -> None:
    assert_openai_error(await post(proxy, CHAT, headers={}), 401, "invalid_api_key")
    wrong = {"authorization": "Bearer sk-wrong-key-123456789012345"}
    error = assert_openai_error(await post(proxy, CHAT, headers=wrong), 401, "invalid_api_key")
    assert "sk-wrong-key-123456789012345" not in str(error["message"])
    assert (await post(proxy, CHAT, headers={"api-key": MASTER_KEY})).status_code == 200
    assert (await post(proxy, CHAT, headers={"x-api-key": MASTER_KEY})).status_code == 200


async def test_sdk_sees_typed_errors(proxy: runtime.Server) -> None:
    bad = openai.AsyncOpenAI(base_url=base_url(proxy), api_key="sk-nope", max_retries=0)
    good = openai.AsyncOpenAI(base_url=base_url(proxy), api_key=MASTER_KEY, max_retries=0)
    async with bad, good:
        await _typed_errors(bad, good)


async def _typed_errors(bad: openai.AsyncOpenAI, good: openai.AsyncOpenAI) -> None:
    with trio.fail_after(10):
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
        with pytest.raises(openai.NotFoundError) as missing:
            await good.chat.completions.create(model="nope", messages=[])
        with pytest.raises(openai.NotFoundError):
            await good.models.retrieve("nope")
    assert missing.value.code == "model_not_found"


async def test_unknown_model_is_404(proxy: runtime.Server) -> None:
    error = assert_openai_error(
        await post(proxy, {**CHAT, "model": "gpt-9"}), 404, "model_not_found"
    )
    assert error["param"] == "model"


async def test_unknown_route_and_wrong_method(proxy: runtime.Server) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            missing = await http.get(f"{base_url(proxy)}/nothing-here", headers=AUTH)
            wrong = await http.get(f"{base_url(proxy)}/chat/completions", headers=AUTH)
            admin = await http.get(f"{proxy.urls[0]}/no/such/page")
    assert_openai_error(missing, 404)
    assert_openai_error(wrong, 405)
    assert admin.status_code == 404 and admin.json()["error"]["type"] == "invalid_request_error"


async def test_body_over_limit_is_413(fake: FakeOpenAI) -> None:
    config = proxy_config(
        openai_provider(fake.base_url),
        models=MODELS,
        server=cfg.ServerConfig(port=0, max_body_bytes=2048),
    )
    async with open_proxy(config, environ(fake.api_key)) as server:
        big = {**CHAT, "padding": "x" * 4096}
        assert_openai_error(await post(server, big), 413, "request_too_large")
    assert fake.requests == []


async def test_upstream_error_status_and_body_come_back(
    proxy: runtime.Server, fake: FakeOpenAI
) -> None:
    fake.script(
        Respond(
            429,
            {
                "error": {
                    "message": "slow down",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            },
            {"retry-after": "7"},
        )
    )
    response = await post(proxy, CHAT)
    error = assert_openai_error(response, 429, "rate_limit_exceeded")
    assert error["message"] == "slow down"
    assert response.headers["retry-after"] == "7"


async def test_non_openai_upstream_error_body_is_wrapped(
    proxy: runtime.Server, fake: FakeOpenAI
) -> None:
    fake.script(Respond(500, b"<html>oops</html>", {"content-type": "text/html"}))
    error = assert_openai_error(await post(proxy, CHAT), 500)
    assert "500" in str(error["message"])


async def test_unreachable_upstream_is_502() -> None:
    with trio.socket.socket() as sock:  # a port that nothing listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = proxy_config(openai_provider(f"http://127.0.0.1:{port}/v1"), models=MODELS)
    async with open_proxy(config, environ("k")) as server:
        assert_openai_error(await post(server, CHAT), 502, "upstream_connect_error")


async def test_open_breaker_is_503(fake: FakeOpenAI) -> None:
    provider = openai_provider(fake.base_url, breaker_failures=2, breaker_cooldown_s=60.0)
    config = proxy_config(provider, models=MODELS)
    fake.script(Respond(500, b"{}"), Respond(500, b"{}"))
    async with open_proxy(config, environ(fake.api_key)) as server:
        assert (await post(server, CHAT)).status_code == 500
        assert (await post(server, CHAT)).status_code == 500
        assert_openai_error(await post(server, CHAT), 503, "no_healthy_provider")
    assert len(fake.requests) == 2


async def test_slow_upstream_is_504(fake: FakeOpenAI) -> None:
    config = proxy_config(openai_provider(fake.base_url, request_timeout_s=0.3), models=MODELS)
    fake.script(Hang())
    async with open_proxy(config, environ(fake.api_key)) as server:
        assert_openai_error(await post(server, CHAT), 504, "upstream_timeout")
        with trio.fail_after(5):
            await fake.wait_disconnects(1)


async def test_failure_mid_stream_becomes_an_error_frame(
    proxy: runtime.Server, fake: FakeOpenAI
) -> None:
    fake.script(Cut(after_chunks=2))
    response = await post(proxy, {**CHAT, "stream": True})
    assert response.status_code == 200
    frames = spec.sse_data(response.content)
    error = json.loads(frames[-1])
    spec.validate("ErrorResponse", error)
    assert error["error"]["type"] == "upstream_error"
    spec.validate_sse_chunks("CreateChatCompletionStreamResponse", frames[:-1])

    fake.script(Cut(after_chunks=2))
    client = openai.AsyncOpenAI(base_url=base_url(proxy), api_key=MASTER_KEY, max_retries=0)
    async with client:
        await _stream_fails(client)


async def _stream_fails(client: openai.AsyncOpenAI) -> None:
    with trio.fail_after(10), pytest.raises(openai.APIError):
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for _ in stream:
            pass


async def test_fallback_to_next_target_on_retryable_failure(fake: FakeOpenAI) -> None:
    models = [cfg.ModelConfig(name="gpt-4o-mini", targets=["first/gpt-4o-mini", "second/gpt-4o"])]
    config = proxy_config(
        openai_provider(fake.base_url, name="first"),
        openai_provider(fake.base_url, name="second"),
        models=models,
    )
    fake.script(Respond(503, b'{"error": {"message": "busy", "type": "server_error"}}'))
    async with open_proxy(config, environ(fake.api_key)) as server:
        response = await post(server, CHAT)
    assert response.status_code == 200
    assert [json.loads(r.body)["model"] for r in fake.requests] == ["gpt-4o-mini", "gpt-4o"]


async def test_client_error_does_not_fall_over(fake: FakeOpenAI) -> None:
    models = [cfg.ModelConfig(name="gpt-4o-mini", targets=["first/gpt-4o-mini", "second/gpt-4o"])]
    config = proxy_config(
        openai_provider(fake.base_url, name="first"),
        openai_provider(fake.base_url, name="second"),
        models=models,
    )
    async with open_proxy(config, environ(fake.api_key)) as server:
        response = await post(server, {**CHAT, "messages": "not a list"})
    assert response.status_code == 400
    assert len(fake.requests) == 1
