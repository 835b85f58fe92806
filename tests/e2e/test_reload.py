"""Config reload under load: changed providers get new actors, no request is dropped."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
import trio

from actorproxy import config as cfg
from actorproxy import runtime
from tests.e2e.test_cli import CLI, clean_env, read_until_listening
from tests.fakes.openai_upstream import Delay, FakeOpenAI
from tests.harness import MASTER_KEY, environ, open_proxy

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
HI: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def config_text(upstream: str, *, concurrency: int = 8, backup: bool = False) -> str:
    text = f"""
[server]
port = 0
graceful_timeout_s = 2

[auth]
master_key_env = "ACTORPROXY_MASTER_KEY"

[[providers]]
name = "openai"
kind = "openai"
base_url = "{upstream}"
api_key_env = "FAKE_OPENAI_KEY"
max_concurrency = {concurrency}

[[models]]
name = "gpt-4o-mini"
targets = ["openai/gpt-4o-mini"]
"""
    if backup:
        text += f"""
[[providers]]
name = "backup"
kind = "openai"
base_url = "{upstream}"
api_key_env = "FAKE_OPENAI_KEY"

[[models]]
name = "spare"
targets = ["backup/gpt-4o"]
"""
    return text


@pytest.fixture
def config_file(fake: FakeOpenAI, tmp_path: Path) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(config_text(fake.base_url))
    return path


@pytest.fixture
async def served(fake: FakeOpenAI, config_file: Path) -> AsyncIterator[runtime.Server]:
    async with open_proxy(cfg.load(config_file), environ(fake.api_key)) as server:
        yield server


async def _client_loop(url: str, statuses: list[int], stop: trio.Event) -> None:
    async with openai.AsyncOpenAI(base_url=url, api_key=MASTER_KEY, max_retries=0) as sdk:
        while not stop.is_set():
            try:
                await sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)
                statuses.append(200)
            except openai.APIStatusError as exc:
                statuses.append(exc.status_code)


async def test_reload_under_load_drops_no_request(
    served: runtime.Server, fake: FakeOpenAI, config_file: Path
) -> None:
    fake.script(*[Delay(0.05)] * 2000)
    statuses: list[int] = []
    stop = trio.Event()
    old = served.actors["openai"]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, httpx.AsyncClient(headers=AUTH) as admin:
            for _ in range(6):
                nursery.start_soon(_client_loop, served.urls[0] + "/v1", statuses, stop)
            while old.statistics().in_flight < 3:
                await trio.sleep(0.01)
            await trio.Path(config_file).write_text(
                config_text(fake.base_url, concurrency=16, backup=True)
            )
            answer = await admin.post(f"{served.urls[0]}/admin/reload")
            in_flight_at_reload = old.statistics().in_flight
            await trio.sleep(0.3)  # traffic goes on through the new actor
            stop.set()
        await old.wait_drained()
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "added": ["backup"],
        "changed": ["openai"],
        "removed": [],
        "unchanged": [],
        "needs_restart": [],
    }
    assert in_flight_at_reload >= 1  # the reload happened with requests in flight
    assert statuses and set(statuses) == {200}, statuses
    new = served.actors["openai"]
    assert new is not old and new.statistics().max_concurrency == 16
    assert new.statistics().served >= 1
    assert old.state == "stopped" and old.statistics().in_flight == 0
    async with openai.AsyncOpenAI(
        base_url=served.urls[0] + "/v1", api_key=MASTER_KEY, max_retries=0
    ) as sdk:
        reply = await sdk.chat.completions.create(model="spare", messages=HI)
    assert reply.model == "gpt-4o"


async def test_a_bad_config_changes_nothing(
    served: runtime.Server, fake: FakeOpenAI, config_file: Path
) -> None:
    before = dict(served.actors)
    await trio.Path(config_file).write_text(config_text(fake.base_url) + "\n[[models]]\nname = 7\n")
    with trio.fail_after(10):
        async with httpx.AsyncClient(headers=AUTH) as admin:
            answer = await admin.post(f"{served.urls[0]}/admin/reload")
            listed = await admin.get(f"{served.urls[0]}/v1/models")
    assert answer.status_code == 400
    assert "proxy.toml" in answer.json()["error"]["message"]
    assert served.actors == before
    assert [model["id"] for model in listed.json()["data"]] == ["gpt-4o-mini"]


async def test_sighup_reloads_the_config(fake: FakeOpenAI, config_file: Path) -> None:
    env = clean_env() | {"ACTORPROXY_MASTER_KEY": MASTER_KEY, "FAKE_OPENAI_KEY": fake.api_key}
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [*CLI, "serve", "--config", str(config_file)], stderr=subprocess.PIPE, env=env
        )
        assert process.stderr is not None
        try:
            url, seen = await read_until_listening(process.stderr)
            await trio.Path(config_file).write_text(config_text(fake.base_url, backup=True))
            process.send_signal(signal.SIGHUP)
            while b'"config reloaded"' not in seen:
                seen += await process.stderr.receive_some()
            async with httpx.AsyncClient(headers=AUTH) as http:
                listed = await http.get(f"{url}/v1/models")
        finally:
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
            await process.stderr.aclose()
    assert code == 0
    assert [model["id"] for model in listed.json()["data"]] == ["gpt-4o-mini", "spare"]
    reloaded = next(json.loads(line) for line in seen.splitlines() if b"config reloaded" in line)
    assert reloaded["added"] == ["backup"]
