"""SIGKILL in the middle of a load loses nothing that was flushed; SIGTERM drains and compacts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import trio

CLI = [sys.executable, "-m", "actorproxy"]
CHAT = {"model": "mock", "messages": [{"role": "user", "content": "crash test"}]}
CONFIG = """\
[server]
host = "127.0.0.1"
port = 0
graceful_timeout_s = 5

[[providers]]
name = "mock"
kind = "mock"

[providers.mock]
latency_ms = 2

[[models]]
name = "mock"
targets = ["mock/mock"]

[dataset]
dir = "data"
flush_interval_ms = 20
"""


class Proxy:
    def __init__(self, process: trio.Process, url: str) -> None:
        self.process = process
        self.url = url


async def start(config: Path) -> Proxy:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORPROXY_")}
    process = await trio.lowlevel.open_process(
        [*CLI, "serve", "--config", str(config)], stderr=subprocess.PIPE, env=env
    )
    assert process.stderr is not None
    seen = b""
    while b'"listening"' not in seen:
        chunk = await process.stderr.receive_some()
        assert chunk, seen.decode()
        seen += chunk
    line = next(line for line in seen.splitlines() if b'"listening"' in line)
    return Proxy(process, json.loads(line)["urls"][0])


async def written(http: httpx.AsyncClient, proxy: Proxy) -> int:
    response = await http.get(proxy.url + "/ready")
    return int(response.json()["actors"]["logger"]["written"])


async def send(http: httpx.AsyncClient, proxy: Proxy, request_id: str) -> None:
    response = await http.post(
        proxy.url + "/v1/chat/completions", json=CHAT, headers={"x-request-id": request_id}
    )
    assert response.status_code == 200


async def keep_sending(http: httpx.AsyncClient, proxy: Proxy) -> None:
    number = 0
    while True:
        number += 1
        try:
            await send(http, proxy, f"during-{number}")
        except httpx.TransportError:
            return  # the proxy was killed


async def stop(proxy: Proxy) -> int:
    proxy.process.send_signal(signal.SIGTERM)
    code = await proxy.process.wait()
    assert proxy.process.stderr is not None
    await proxy.process.stderr.aclose()
    return code


async def test_sigkill_mid_load_then_recovery(tmp_path: Path) -> None:
    config = tmp_path / "actorproxy.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    flushed = [f"before-{n}" for n in range(40)]
    with trio.fail_after(60):
        proxy = await start(config)
        async with httpx.AsyncClient(timeout=5) as http:
            for request_id in flushed:
                await send(http, proxy, request_id)
            while await written(http, proxy) < len(flushed):
                await trio.sleep(0.02)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_sending, http, proxy)
                await trio.sleep(0.3)
                proxy.process.kill()  # SIGKILL: no flush, no compaction
            await proxy.process.wait()
            assert proxy.process.stderr is not None
            await proxy.process.stderr.aclose()
        assert list((data / "_segments").glob("*.arrows")), "the kill left an open segment"
        restarted = await start(config)  # recovery compacts the leftover segment
        assert await stop(restarted) == 0
    ids = set(
        ds.dataset(data, format="parquet", partitioning="hive").to_table()["request_id"].to_pylist()
    )
    assert set(flushed) <= ids
    assert not list((data / "_segments").glob("*.arrows"))
    files = [p for p in data.rglob("*") if p.is_file()]
    assert all(p.suffix == ".parquet" for p in files), files
    for part in files:
        assert pq.read_metadata(part).num_rows > 0  # every file complete and readable


async def test_sigterm_lets_in_flight_requests_finish_then_compacts(tmp_path: Path) -> None:
    config = tmp_path / "actorproxy.toml"
    config.write_text(CONFIG.replace("latency_ms = 2", "latency_ms = 700"))
    data = tmp_path / "data"
    with trio.fail_after(60):
        proxy = await start(config)
        async with httpx.AsyncClient(timeout=10) as http, trio.open_nursery() as nursery:
            nursery.start_soon(send, http, proxy, "in-flight")
            await trio.sleep(0.3)  # the request is now waiting on the (slow) mock upstream
            proxy.process.send_signal(signal.SIGTERM)
            code = await proxy.process.wait()
        assert proxy.process.stderr is not None
        await proxy.process.stderr.aclose()
    assert code == 0
    table = ds.dataset(data, format="parquet", partitioning="hive").to_table()
    assert table["request_id"].to_pylist() == ["in-flight"]
    assert table["status_code"].to_pylist() == [200]
    assert not list((data / "_segments").glob("*.arrows"))
