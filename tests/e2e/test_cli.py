"""The installed command as a user runs it: a real process, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import openai
import trio

from tests import spec

CLI = [sys.executable, "-m", "actorproxy"]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORPROXY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def read_until_listening(stream: trio.abc.ReceiveStream) -> tuple[str, bytes]:
    seen = b""
    while b'"listening"' not in seen:
        chunk = await stream.receive_some()
        assert chunk, f"the proxy exited before listening: {seen.decode()}"
        seen += chunk
    for line in seen.splitlines():
        if b'"listening"' in line:
            return str(json.loads(line)["urls"][0]), seen
    raise AssertionError(seen)


async def test_serve_without_config_uses_the_embedded_mock() -> None:
    with trio.fail_after(30):
        process = await trio.lowlevel.open_process(
            [*CLI, "serve", "--port", "0"], stderr=subprocess.PIPE, env=clean_env()
        )
        assert process.stderr is not None
        try:
            url, log = await read_until_listening(process.stderr)
            assert b"open access" in log
            with openai.OpenAI(base_url=url + "/v1", api_key="anything", max_retries=0) as client:
                await trio.to_thread.run_sync(use_the_mock, client)
        finally:
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
            await process.stderr.aclose()
    assert code == 0


def use_the_mock(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mock", messages=[{"role": "user", "content": "hello"}]
    )
    spec.validate("CreateChatCompletionResponse", json.loads(raw.content))
    emb = client.embeddings.create(model="mock-embedding", input="hello")
    assert len(emb.data[0].embedding) > 0


async def test_refuses_open_access_off_loopback() -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [*CLI, "serve", "--host", "0.0.0.0", "--port", "0"],
            capture_stderr=True,
            check=False,
            env=clean_env(),
        )
    assert result.returncode == 2
    assert b"loopback" in result.stderr


async def test_check_config_names_the_key_and_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[server]\nhost = "127.0.0.1"\nport = 8000\n\n[auth]\nmaster_key_env = '
        '"ACTORPROXY_MASTER_KEY"\n\n[[providers]]\nname = "openai"\nkind = "openai"\n'
        'base_url = "https://api.openai.com/v1"\napi_key_env = "OPENAI_API_KEY"\n'
        'max_concurrency = 64\n\n[[models]]\nname = "gpt-4o-mini"\n'
        'targets = ["openai/gpt-4o-mini"]\n'
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[[providers]]\nname = "x"\nkind = "mock"\nmax_concurency = 3\n')
    with trio.fail_after(30):
        ok = await trio.run_process(
            [*CLI, "check-config", str(good)], capture_stdout=True, check=False, env=clean_env()
        )
        failed = await trio.run_process(
            [*CLI, "check-config", str(bad)], capture_stderr=True, check=False, env=clean_env()
        )
    assert ok.returncode == 0 and b"OK" in ok.stdout
    assert failed.returncode == 2
    assert str(bad).encode() in failed.stderr and b"max_concurency" in failed.stderr
