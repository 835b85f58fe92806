"""The admin API: master key only, actors' snapshots, keys that take effect at once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import openai
import pytest
import trio
from trio_websocket import open_websocket

from actorproxy import config as cfg
from actorproxy import runtime
from tests.e2e.conftest import MODELS, base_url
from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import MASTER_KEY, environ, open_proxy, openai_provider, proxy_config

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
HI: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def keyed(fake: FakeOpenAI, tmp_path: Path) -> AsyncIterator[runtime.Server]:
    config = proxy_config(openai_provider(fake.base_url), models=MODELS)
    auth = cfg.AuthConfig(master_key_env="ACTORPROXY_MASTER_KEY", keys_file=str(tmp_path / "k"))
    config = msgspec.structs.replace(config, auth=auth)
    async with open_proxy(config, environ(fake.api_key)) as server:
        yield server


@pytest.fixture
async def admin(keyed: runtime.Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=keyed.urls[0] + "/admin", headers=AUTH) as http:
        yield http


def assert_openai_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) >= {"message", "type", "param", "code"}


async def chat(server: runtime.Server, key: str, model: str = "gpt-4o-mini") -> int:
    """The status a client with ``key`` gets for one chat completion."""
    async with openai.AsyncOpenAI(base_url=base_url(server), api_key=key, max_retries=0) as sdk:
        try:
            await sdk.chat.completions.create(model=model, messages=HI)
        except openai.APIStatusError as exc:
            return exc.status_code
    return 200


async def test_actors_show_every_providers_statistics(
    keyed: runtime.Server, admin: httpx.AsyncClient
) -> None:
    with trio.fail_after(10):
        assert await chat(keyed, MASTER_KEY) == 200
        response = await admin.get("/actors")
    assert response.status_code == 200
    body = response.json()
    (provider,) = body["providers"]
    assert provider["name"] == "openai" and provider["state"] == "running"
    assert provider["served"] == 1 and provider["requests"] == 1
    assert provider["breaker"]["state"] == "closed"
    assert body["logger"]["state"] == "running"


async def test_keys_created_updated_and_revoked_take_effect_at_once(
    keyed: runtime.Server, admin: httpx.AsyncClient
) -> None:
    with trio.fail_after(15):
        created = await admin.post("/keys", json={"name": "ci", "models": ["gpt-4o-mini"]})
        assert created.status_code == 201, created.text
        key = created.json()
        assert key["secret"].startswith("sk-ap-") and "hash" not in key
        assert await chat(keyed, key["secret"]) == 200
        assert await chat(keyed, key["secret"], "renamed") == 403

        changed = await admin.patch(f"/keys/{key['id']}", json={"models": ["renamed"]})
        assert changed.status_code == 200 and changed.json()["models"] == ["renamed"]
        assert await chat(keyed, key["secret"], "renamed") == 200
        assert await chat(keyed, key["secret"]) == 403

        listed = (await admin.get("/keys")).json()["data"]
        assert [k["id"] for k in listed] == [key["id"]]
        assert "secret" not in listed[0] and "hash" not in listed[0]

        revoked = await admin.delete(f"/keys/{key['id']}")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        assert await chat(keyed, key["secret"], "renamed") == 401


async def test_only_the_master_key_may_use_the_admin_api(
    keyed: runtime.Server, admin: httpx.AsyncClient
) -> None:
    with trio.fail_after(10):
        secret = (await admin.post("/keys", json={"name": "user"})).json()["secret"]
        async with httpx.AsyncClient(base_url=keyed.urls[0] + "/admin") as anonymous:
            assert_openai_error(await anonymous.get("/actors"), 401)
            user = {"authorization": f"Bearer {secret}"}
            assert_openai_error(await anonymous.get("/actors", headers=user), 403)
            assert_openai_error(await anonymous.post("/keys", headers=user, json={}), 403)


async def test_bad_admin_requests_get_openai_errors(admin: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        assert_openai_error(await admin.post("/keys", content=b"{oops"), 400)
        assert_openai_error(await admin.post("/keys", json={"name": "x", "rpm": 0}), 400)
        assert_openai_error(await admin.post("/keys", json={"rpm": 5}), 400)
        assert_openai_error(await admin.patch("/keys/key_nope", json={"rpm": 5}), 404)
        assert_openai_error(await admin.delete("/keys/key_nope"), 404)
        created = (await admin.post("/keys", json={"name": "x"})).json()
        assert_openai_error(await admin.patch(f"/keys/{created['id']}", json={"name": "y"}), 400)
        assert_openai_error(await admin.patch(f"/keys/{created['id']}", json={"rpm": -1}), 400)
        assert_openai_error(await admin.get("/nothing-here"), 404)


async def test_keys_need_a_keys_file(proxy: runtime.Server) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(headers=AUTH) as http:
            response = await http.get(f"{proxy.urls[0]}/admin/keys")
    assert_openai_error(response, 400)


async def test_the_dashboard_feed_needs_the_master_key(keyed: runtime.Server) -> None:
    host, port = keyed.urls[0].removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(10):
        async with open_websocket(host, int(port), "/admin/ws", use_ssl=False) as ws:
            await ws.send_message(json.dumps({"key": "sk-wrong-key-0123456789"}))
            refused = json.loads(await ws.get_message())
        async with open_websocket(host, int(port), "/admin/ws", use_ssl=False) as ws:
            await ws.send_message(json.dumps({"key": MASTER_KEY}))
            first, second = [json.loads(await ws.get_message()) for _ in range(2)]
    assert refused["error"]["code"] == "invalid_api_key"
    assert [p["name"] for p in first["providers"]] == ["openai"]
    assert second["ts"] > first["ts"] and "recent" in second


async def test_concurrent_key_changes_lose_nothing(admin: httpx.AsyncClient) -> None:
    async def create(index: int) -> None:
        response = await admin.post("/keys", json={"name": f"k{index}"})
        assert response.status_code == 201

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for index in range(8):
                nursery.start_soon(create, index)
        listed = (await admin.get("/keys")).json()["data"]
    assert sorted(key["name"] for key in listed) == [f"k{index}" for index in range(8)]
