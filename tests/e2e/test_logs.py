"""Structured logs: one JSON object a line on stderr, operational events only, no secrets."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import httpx
import trio

from tests.e2e.test_cli import CLI, clean_env, read_until_listening
from tests.fakes.openai_upstream import FakeOpenAI, Respond
from tests.harness import MASTER_KEY

MARKER = "do-not-log-this-body-7f3a"
FAIL = Respond(500, b'{"error": {"message": "x", "type": "server_error"}}')


def write_config(tmp_path: Path, upstream: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f"""
[server]
port = 0
graceful_timeout_s = 2

[auth]
master_key_env = "ACTORPROXY_MASTER_KEY"

[logging]
level = "info"

[[providers]]
name = "openai"
kind = "openai"
base_url = "{upstream}"
api_key_env = "UPSTREAM_KEY"
breaker_failures = 1
breaker_cooldown_s = 600

[[models]]
name = "gpt-4o-mini"
targets = ["openai/gpt-4o-mini"]
"""
    )
    return path


async def test_events_are_json_lines_without_bodies_or_keys(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    env = clean_env() | {"ACTORPROXY_MASTER_KEY": MASTER_KEY, "UPSTREAM_KEY": fake.api_key}
    config = write_config(tmp_path, fake.base_url)
    fake.script(FAIL)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": MARKER}]}
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [*CLI, "serve", "--config", str(config)], stderr=subprocess.PIPE, env=env
        )
        assert process.stderr is not None
        try:
            url, seen = await read_until_listening(process.stderr)
            async with httpx.AsyncClient(headers={"authorization": f"Bearer {MASTER_KEY}"}) as http:
                failed = await http.post(f"{url}/v1/chat/completions", json=body)
                assert failed.status_code == 500
                while b'"breaker changed"' not in seen:
                    seen += await process.stderr.receive_some()
        finally:
            process.send_signal(signal.SIGTERM)
            await process.wait()
            seen += await process.stderr.receive_some()
            await process.stderr.aclose()
    lines = [json.loads(line) for line in seen.decode().splitlines()]
    events = {line["event"]: line for line in lines}
    assert all({"ts", "level", "logger", "event"} <= set(line) for line in lines)
    assert events["config"]["providers"] == ["openai (openai)"]
    assert events["listening"]["urls"] == [url]
    assert events["request failed"]["status"] == 500
    assert events["request failed"]["provider"] == "openai"
    breaker = events["breaker changed"]
    assert (breaker["actor"], breaker["from"], breaker["to"], breaker["level"]) == (
        "openai",
        "closed",
        "open",
        "warning",
    )
    text = seen.decode()
    assert MARKER not in text and MASTER_KEY not in text and fake.api_key not in text
