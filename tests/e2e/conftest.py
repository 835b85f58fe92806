from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from actorproxy import config as cfg
from actorproxy import runtime
from tests.fakes.openai_upstream import FakeOpenAI, open_fake_openai
from tests.harness import MASTER_KEY, environ, open_proxy, openai_provider, proxy_config

MODELS = [
    cfg.ModelConfig(name="gpt-4o-mini", targets=["openai/gpt-4o-mini"]),
    cfg.ModelConfig(name="renamed", targets=["openai/gpt-4o"]),
    cfg.ModelConfig(name="text-embedding-3-small", targets=["openai/text-embedding-3-small"]),
    cfg.ModelConfig(name="gpt-3.5-turbo-instruct", targets=["openai/gpt-3.5-turbo-instruct"]),
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with open_fake_openai() as upstream:
        yield upstream


@pytest.fixture
async def proxy(fake: FakeOpenAI) -> AsyncIterator[runtime.Server]:
    config = proxy_config(openai_provider(fake.base_url, request_timeout_s=5.0), models=MODELS)
    async with open_proxy(config, environ(fake.api_key)) as server:
        yield server


def base_url(server: runtime.Server) -> str:
    return server.urls[0] + "/v1"


@pytest.fixture
async def client(proxy: runtime.Server) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=base_url(proxy), api_key=MASTER_KEY, max_retries=0
    ) as sdk:
        yield sdk


@pytest.fixture
def sync_client(proxy: runtime.Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url(proxy), api_key=MASTER_KEY, max_retries=0) as sdk:
        yield sdk
