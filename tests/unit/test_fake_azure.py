"""The fake Azure OpenAI resource, driven by the official `openai` Azure clients over sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import trio
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.fakes.azure_upstream import (
    DEFAULT_API_KEY,
    FakeAzure,
    Respond,
    azure_error,
    content_filter_error,
    open_fake_azure,
)

VERSION = "2024-10-21"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
# The SDK leaves its SSE async generators suspended after [DONE]; trio's asyncgen finalizer then
# warns. An SDK wart under trio, not the fake's: ignore just that.
SDK_STREAM = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|httpx2|httpcore2)\.:ResourceWarning"
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAzure]:
    async with open_fake_azure() as fake:
        yield fake


@pytest.fixture
async def azure(fake: FakeAzure) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=fake.base_url, api_key=fake.api_key, api_version=VERSION, max_retries=0
    ) as client:
        yield client


def error_of(exc: openai.APIStatusError) -> Any:
    return exc.response.json()["error"]


async def test_chat_on_a_deployment(fake: FakeAzure, azure: openai.AsyncAzureOpenAI) -> None:
    with trio.fail_after(10):
        completion = await azure.chat.completions.create(model="gpt-4o-mini-prod", messages=HELLO)
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.model == "gpt-4o-mini"
    extra = completion.model_extra or {}
    assert extra["prompt_filter_results"][0]["prompt_index"] == 0
    choice_extra = completion.choices[0].model_extra or {}
    assert choice_extra["content_filter_results"]["hate"] == {"filtered": False, "severity": "safe"}
    request = fake.requests[-1]
    assert request.path == "/openai/deployments/gpt-4o-mini-prod/chat/completions"
    assert request.query == f"api-version={VERSION}"
    assert request.headers["api-key"] == DEFAULT_API_KEY
    assert "authorization" not in request.headers


@SDK_STREAM
async def test_stream_starts_with_a_prompt_filter_chunk(azure: openai.AsyncAzureOpenAI) -> None:
    with trio.fail_after(10):
        stream = await azure.chat.completions.create(
            model="gpt-4o-mini-prod",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks: list[ChatCompletionChunk] = [chunk async for chunk in stream]
    first, *rest = chunks
    assert (first.choices, first.id, first.model, first.created) == ([], "", "", 0)
    assert (first.model_extra or {})["prompt_filter_results"][0]["prompt_index"] == 0
    text = "".join(c.choices[0].delta.content or "" for c in rest if c.choices)
    assert text == "echo: hello there"
    content = [c for c in rest if c.choices and c.choices[0].delta.content]
    assert all("content_filter_results" in (c.choices[0].model_extra or {}) for c in content)
    assert rest[-1].choices == []
    assert rest[-1].usage is not None
    assert rest[-1].usage.total_tokens == rest[-1].usage.prompt_tokens + 3


async def test_legacy_completions_and_embeddings(azure: openai.AsyncAzureOpenAI) -> None:
    with trio.fail_after(10):
        completion = await azure.completions.create(model="gpt-4o-mini-prod", prompt="say hi")
        embedding = await azure.embeddings.create(model="gpt-4o-mini-prod", input="hi")
    assert completion.choices[0].text == "echo: say hi"
    assert "prompt_filter_results" in (completion.model_extra or {})
    assert len(embedding.data[0].embedding) == 8


async def test_models_list(azure: openai.AsyncAzureOpenAI) -> None:
    with trio.fail_after(10):
        page = await azure.models.list()
    assert [model.id for model in page.data] == ["gpt-4o-mini"]


async def test_v1_style_with_the_plain_openai_client(fake: FakeAzure) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{fake.base_url}/openai/v1", api_key=fake.api_key, max_retries=0
    ) as client:
        with trio.fail_after(10):
            completion = await client.chat.completions.create(
                model="gpt-4o-mini-prod", messages=HELLO
            )
            page = await client.models.list()
    assert completion.choices[0].message.content == "echo: hello there"
    assert [model.id for model in page.data] == ["gpt-4o-mini"]
    assert fake.requests[0].path == "/openai/v1/chat/completions"
    assert fake.requests[0].query == ""


async def test_v1_unknown_deployment(fake: FakeAzure) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{fake.base_url}/openai/v1",
        api_key="unused",
        default_headers={"api-key": fake.api_key},
        max_retries=0,
    ) as client:
        with pytest.raises(openai.NotFoundError) as caught, trio.fail_after(10):
            await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert error_of(caught.value)["code"] == "DeploymentNotFound"


async def test_missing_api_version_is_404(fake: FakeAzure) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        with trio.fail_after(10):
            response = await http.post(
                "/openai/deployments/gpt-4o-mini-prod/chat/completions",
                json={"messages": HELLO},
                headers={"api-key": fake.api_key},
            )
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "404", "message": "Resource not found"}}


@pytest.mark.parametrize(
    ("api_key", "bearer", "message"),
    [
        ("wrong", None, "invalid subscription key"),
        (None, DEFAULT_API_KEY, "missing subscription key"),  # a bearer is not key auth
    ],
)
async def test_key_auth(
    fake: FakeAzure, api_key: str | None, bearer: str | None, message: str
) -> None:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=fake.base_url,
        api_version=VERSION,
        api_key=api_key,
        azure_ad_token=bearer,
        max_retries=0,
    ) as client:
        with pytest.raises(openai.AuthenticationError) as caught, trio.fail_after(10):
            await client.chat.completions.create(model="gpt-4o-mini-prod", messages=HELLO)
    assert error_of(caught.value)["code"] == "401"
    assert message in error_of(caught.value)["message"]
    assert fake.requests[-1].headers.get("authorization", "") == (
        f"Bearer {bearer}" if bearer else ""
    )


async def test_unknown_deployment(azure: openai.AsyncAzureOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught, trio.fail_after(10):
        await azure.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert error_of(caught.value)["code"] == "DeploymentNotFound"
    assert caught.value.code == "DeploymentNotFound"


async def test_scripted_content_filter(fake: FakeAzure, azure: openai.AsyncAzureOpenAI) -> None:
    fake.script(Respond(400, content_filter_error("violence")))
    with pytest.raises(openai.BadRequestError) as caught, trio.fail_after(10):
        await azure.chat.completions.create(model="gpt-4o-mini-prod", messages=HELLO)
    error = error_of(caught.value)
    assert (caught.value.code, caught.value.param) == ("content_filter", "prompt")
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert error["innererror"]["content_filter_result"]["violence"]["filtered"] is True
    assert fake.unused_script == []


async def test_scripted_rate_limit_keeps_headers(
    fake: FakeAzure, azure: openai.AsyncAzureOpenAI
) -> None:
    body = azure_error("429", "Requests ... Please retry after 1 second.")
    fake.script(Respond(429, body, {"retry-after": "1", "retry-after-ms": "1000"}))
    with pytest.raises(openai.RateLimitError) as caught, trio.fail_after(10):
        await azure.chat.completions.create(model="gpt-4o-mini-prod", messages=HELLO)
    assert caught.value.response.headers["retry-after-ms"] == "1000"
    assert error_of(caught.value) == body["error"]


async def test_a_rejected_request_leaves_the_script_alone(fake: FakeAzure) -> None:
    fake.script(Respond(400, content_filter_error()))
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=fake.base_url, api_key="wrong", api_version=VERSION, max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError), trio.fail_after(10):
            await client.chat.completions.create(model="gpt-4o-mini-prod", messages=HELLO)
    assert len(fake.unused_script) == 1


async def test_openai_request_checks_apply(azure: openai.AsyncAzureOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught, trio.fail_after(10):
        await azure.chat.completions.create(model="gpt-4o-mini-prod", messages=[])
    assert caught.value.code == "empty_array"
