"""The Azure OpenAI adapter: paths, headers, bodies (our extensions stripped), filter chunks,
errors, model lists.

Sans-IO tests first, then the adapter against the fake Azure resource over a loopback socket.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
import trio

from actorproxy import errors
from actorproxy.adapters.azure import AzureAdapter
from actorproxy.adapters.base import Endpoint, Exchange
from actorproxy.net.base import UpstreamRequest
from tests.fakes.azure_upstream import Respond, content_filter_error, open_fake_azure
from tests.unit.test_openai_adapter import exchange as openai_exchange

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}'
STREAM = CHAT[:-1] + b',"stream":true}'
PROD = {"gpt-4o-mini": "gpt-4o-mini-prod"}


def exchange(body: bytes = CHAT, *, stream: bool = False, **fields: Any) -> Exchange:
    """As the OpenAI adapter's tests build it, with Azure's default body, not streamed."""
    return openai_exchange(body, stream=stream, **fields)


def adapter(**options: Any) -> AzureAdapter:
    return AzureAdapter(**({"api_key": "az-key", "deployments": PROD} | options))


# --- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "op"),
    [("chat", "chat/completions"), ("completions", "completions"), ("embeddings", "embeddings")],
)
def test_deployment_paths(endpoint: Endpoint, op: str) -> None:
    request = adapter().encode_request(exchange(endpoint=endpoint))
    assert request.method == b"POST"
    assert request.target == f"/openai/deployments/gpt-4o-mini-prod/{op}?api-version=2024-10-21"


def test_an_unmapped_model_is_its_own_deployment_and_is_quoted() -> None:
    request = adapter(api_version="2025-01-01 preview").encode_request(
        exchange(upstream_model="my model/1")
    )
    assert request.target == (
        "/openai/deployments/my%20model%2F1/chat/completions?api-version=2025-01-01%20preview"
    )


@pytest.mark.parametrize(
    ("api_version", "query"), [("2024-10-21", ""), ("preview", "?api-version=preview"), ("", "")]
)
def test_v1_paths_send_an_api_version_only_when_configured(api_version: str, query: str) -> None:
    request = adapter(style="v1", api_version=api_version).encode_request(exchange())
    assert request.target == f"/openai/v1/chat/completions{query}"


def test_headers_carry_the_key_as_api_key_and_tracing_headers() -> None:
    client = [(b"traceparent", b"00-1-2-01"), (b"tracestate", b"a=b"), (b"authorization", b"x")]
    request = adapter(headers={"X-Ms-Useragent": "lab"}).encode_request(exchange(headers=client))
    assert request.headers == [
        (b"content-type", b"application/json"),
        (b"accept", b"*/*"),
        (b"api-key", b"az-key"),
        (b"x-ms-useragent", b"lab"),
        (b"x-request-id", b"req-1"),
        (b"traceparent", b"00-1-2-01"),
        (b"tracestate", b"a=b"),
    ]


def test_no_key_no_key_header() -> None:
    request = adapter(api_key=None).encode_request(exchange())
    assert not [name for name, _ in request.headers if name in (b"api-key", b"authorization")]


def test_deployments_style_passes_the_body_through() -> None:
    ex = exchange()
    assert adapter().encode_request(ex).body is ex.body
    renamed = adapter().encode_request(exchange(upstream_model="gpt-4o")).body
    assert renamed == CHAT.replace(b"gpt-4o-mini", b"gpt-4o")


def test_v1_style_names_the_deployment_in_the_body() -> None:
    body = adapter(style="v1").encode_request(exchange()).body
    assert body == CHAT.replace(b"gpt-4o-mini", b"gpt-4o-mini-prod")
    unmapped = exchange(upstream_model="gpt-4o-mini", body=CHAT)
    assert adapter(style="v1", deployments={}).encode_request(unmapped).body is unmapped.body


EXTENDED = (
    b'{"model":"gpt-4o-mini","thinking":{"type":"enabled","budget_tokens":1024},"messages":['
    b'{"role":"user","content":[{"type":"text","text":"hello there",'
    b'"cache_control":{"type":"ephemeral"}}]},'
    b'{"role":"assistant","content":"hi","reasoning_content":"Hm.","thinking_blocks":[]},'
    b'{"role":"user","content":"hello there"}]}'
)
STRIPPED = (
    b'{"model":"gpt-4o-mini","messages":['
    b'{"role":"user","content":[{"type":"text","text":"hello there"}]},'
    b'{"role":"assistant","content":"hi"},'
    b'{"role":"user","content":"hello there"}]}'
)


def test_our_extensions_are_stripped_in_both_styles() -> None:
    assert adapter().encode_request(exchange(EXTENDED)).body == STRIPPED
    renamed = adapter(style="v1").encode_request(exchange(EXTENDED)).body
    assert renamed == STRIPPED.replace(b"gpt-4o-mini", b"gpt-4o-mini-prod")


def test_our_extensions_pass_with_strip_extensions_off() -> None:
    ex = exchange(EXTENDED)
    assert adapter(strip_extensions=False).encode_request(ex).body is ex.body


def test_responses_pass_through() -> None:
    body = b'{"choices":[{"content_filter_results":{"hate":{"filtered":false}}}],"x":1}'
    assert adapter().decode_response(exchange(), body) is body


# --- streams ----------------------------------------------------------------------------------

FILTER_CHUNK = (
    b'data: {"choices":[],"created":0,"id":"","model":"","object":"",'
    b'"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}\n\n'
)
CONTENT = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"a"}}],"usage":null}\n\n'
USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"total_tokens":2}}\n\n'
DONE = b"data: [DONE]\n\n"


def drain(stream: Any, data: bytes) -> tuple[bytes, bytes]:
    out = b"".join(stream.feed(data[i : i + 7]) for i in range(0, len(data), 7)) + stream.end()
    return out, stream.withheld()


def test_filter_chunks_are_withheld_and_client_usage_kept() -> None:
    body = STREAM[:-1] + b',"stream_options":{"include_usage":true}}'
    stream = adapter().open_stream(exchange(body, stream=True))
    assert drain(stream, FILTER_CHUNK + CONTENT + USAGE + DONE) == (
        CONTENT + USAGE + DONE,
        FILTER_CHUNK,
    )


def test_pass_forwards_filter_chunks_untouched() -> None:
    assert adapter(empty_choices="pass").open_stream(exchange(STREAM, stream=True)) is None


def test_stream_usage_injects_and_withholds_the_usage_chunk() -> None:
    ex = exchange(STREAM, stream=True)
    azure = adapter(stream_usage=True)
    assert (
        azure.encode_request(ex).body == STREAM[:-1] + b',"stream_options":{"include_usage":true}}'
    )
    stream = azure.open_stream(ex)
    assert drain(stream, FILTER_CHUNK + CONTENT + USAGE + DONE) == (
        CONTENT + DONE,
        FILTER_CHUNK + USAGE,
    )
    passing = adapter(stream_usage=True, empty_choices="pass").open_stream(ex)
    assert drain(passing, FILTER_CHUNK + CONTENT + USAGE + DONE) == (
        FILTER_CHUNK + CONTENT + DONE,
        USAGE,
    )


@pytest.mark.parametrize(
    "ex", [exchange(), exchange(endpoint="embeddings", stream=True)], ids=["not streamed", "embed"]
)
def test_no_translator_without_a_stream(ex: Exchange) -> None:
    assert adapter(stream_usage=True).open_stream(ex) is None


# --- errors -----------------------------------------------------------------------------------


def rendered(error: errors.ProxyError) -> Any:
    return msgspec.json.decode(errors.render(error))["error"]


def test_content_filter_400_keeps_message_param_and_innererror() -> None:
    body = msgspec.json.encode(content_filter_error("hate"))
    error = adapter().decode_error(400, [], body)
    assert isinstance(error, errors.UpstreamHTTPError)
    assert (error.status, error.retryable) == (400, False)
    shown = rendered(error)
    source = content_filter_error("hate")["error"]
    assert shown == {
        "message": source["message"],
        "type": "invalid_request_error",
        "param": "prompt",
        "code": "content_filter",
        "innererror": source["innererror"],
    }


INVALID = "invalid_request_error"
OPENAI_SHAPED = {"message": "bad", "type": INVALID, "param": "n", "code": None}


def azure(code: object, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@pytest.mark.parametrize(
    ("status", "body", "type_", "code"),
    [
        (401, azure("401", "Access denied"), INVALID, "invalid_api_key"),
        (404, azure("404", "Resource not found"), INVALID, "not_found"),
        (404, azure("DeploymentNotFound", "no"), INVALID, "DeploymentNotFound"),
        (429, azure("429", "retry after 1 s"), "requests", "rate_limit_exceeded"),
        (500, azure(500, "boom"), "server_error", None),
        (401, {"statusCode": 401, "message": "Unauthorized."}, INVALID, "invalid_api_key"),
        (400, {"error": OPENAI_SHAPED}, INVALID, None),
    ],
    ids=["401", "404", "deployment", "429", "500", "gateway", "openai-shaped"],
)
def test_azure_errors_become_openai_shaped(
    status: int, body: dict[str, Any], type_: str, code: str | None
) -> None:
    error = adapter().decode_error(status, [], msgspec.json.encode(body))
    shown = rendered(error)
    assert error.status == status
    assert (shown["type"], shown["code"]) == (type_, code)
    assert shown["message"] == (body.get("error") or body)["message"]
    assert "innererror" not in shown


def test_retry_headers_are_kept() -> None:
    headers = [(b"retry-after", b"1"), (b"retry-after-ms", b"900"), (b"apim-request-id", b"x")]
    error = adapter().decode_error(429, headers, b'{"error":{"code":"429","message":"slow"}}')
    assert error.headers == headers[:2]
    assert error.retryable


@pytest.mark.parametrize("body", [b"<html>502</html>", b"", b'{"error":"text"}', b"{}"])
def test_an_error_without_a_usable_body(body: bytes) -> None:
    error = adapter().decode_error(502, [], body)
    assert (error.status, error.type, error.retryable) == (502, "upstream_error", True)


# --- models -----------------------------------------------------------------------------------


def test_deployments_style_lists_the_configured_models_without_a_request() -> None:
    azure = adapter(deployments={"gpt-4o-mini": "prod", "gpt-4o": "big"})
    assert azure.models_request() is None
    assert azure.decode_models(b"") == ["gpt-4o-mini", "gpt-4o"]


def test_v1_lists_models_upstream() -> None:
    azure = adapter(style="v1")
    request = azure.models_request()
    assert request is not None
    assert (request.method, request.target, request.body) == (b"GET", "/openai/v1/models", b"")
    assert (b"api-key", b"az-key") in request.headers
    assert azure.decode_models(
        b'{"data":[{"id":"gpt-4o","status":"succeeded"}],"object":"list"}'
    ) == ["gpt-4o"]
    with pytest.raises(errors.CannotUnderstand):
        azure.decode_models(b"{}")


# --- against the fake Azure resource ----------------------------------------------------------


async def send(
    http: httpx.AsyncClient, request: UpstreamRequest, stream: Any = None
) -> tuple[int, bytes]:
    async with http.stream(
        request.method.decode(), request.target, headers=request.headers, content=request.body
    ) as response:
        if stream is None or response.status_code >= 400:
            return response.status_code, await response.aread()
        out = b"".join([stream.feed(piece) async for piece in response.aiter_raw()])
        return response.status_code, out + stream.end()


@pytest.mark.parametrize("style", ["deployments", "v1"])
async def test_against_the_fake(style: str) -> None:
    azure = AzureAdapter(api_key="k", style=style, deployments=PROD)  # type: ignore[arg-type]
    streamed = exchange(STREAM, stream=True)
    async with (
        open_fake_azure(api_key="k") as fake,
        httpx.AsyncClient(base_url=fake.base_url) as http,
    ):
        with trio.fail_after(10):
            status, body = await send(http, azure.encode_request(exchange()))
            assert status == 200
            reply = msgspec.json.decode(azure.decode_response(exchange(), body))
            stream = azure.open_stream(streamed)
            status, out = await send(http, azure.encode_request(streamed), stream)
    assert reply["choices"][0]["message"]["content"] == "echo: hello there"
    assert "prompt_filter_results" in reply
    assert status == 200
    assert stream is not None
    chunks = [msgspec.json.decode(line[6:]) for line in out.split(b"\n\n") if line[6:7] == b"{"]
    assert all(chunk["choices"] for chunk in chunks)
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "echo: hello there"
    )
    assert b'"prompt_filter_results"' in stream.withheld()
    assert out.endswith(b"data: [DONE]\n\n")


async def test_fake_errors_through_the_adapter() -> None:
    azure = AzureAdapter(api_key="k", deployments={"gpt-4o-mini": "nowhere"})
    async with (
        open_fake_azure(api_key="k") as fake,
        httpx.AsyncClient(base_url=fake.base_url) as http,
    ):
        with trio.fail_after(10):
            missing = await send(http, azure.encode_request(exchange()))
            fake.script(Respond(400, content_filter_error()))
            right = AzureAdapter(api_key="k", deployments=PROD)
            filtered = await send(http, right.encode_request(exchange()))
            wrong_key = await send(http, AzureAdapter(api_key="x").encode_request(exchange()))
    assert (
        rendered(azure.decode_error(*missing[:1], [], missing[1]))["code"] == "DeploymentNotFound"
    )
    shown = rendered(azure.decode_error(filtered[0], [], filtered[1]))
    assert (filtered[0], shown["code"]) == (400, "content_filter")
    assert shown["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert rendered(azure.decode_error(wrong_key[0], [], wrong_key[1]))["code"] == "invalid_api_key"


async def test_the_fake_accepts_a_stripped_body() -> None:
    azure = AzureAdapter(api_key="k", deployments=PROD)
    async with (
        open_fake_azure(api_key="k") as fake,
        httpx.AsyncClient(base_url=fake.base_url) as http,
    ):
        with trio.fail_after(10):
            status, body = await send(http, azure.encode_request(exchange(EXTENDED)))
    assert status == 200
    assert msgspec.json.decode(body)["choices"][0]["message"]["content"] == "echo: hello there"
    assert fake.requests[0].body == STRIPPED
