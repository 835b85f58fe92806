"""A mixed load through the real server, then the dataset read back with pyarrow and DuckDB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow.dataset as ds
import trio

from actorproxy import config as cfg
from tests import spec
from tests.fakes.openai_upstream import FakeOpenAI, Hang, Respond
from tests.harness import MASTER_KEY, environ, open_proxy, openai_provider, proxy_config

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
SECRET_EMAIL = "jane.doe.research@example.org"
SECRET_KEY = "sk-proj-Zx8f93Kq0Lm2Nb7Vc4Xs1Pw6Ty5Ru0Ei9Oa3Sd"
MODELS = [
    cfg.ModelConfig(name="gpt-4o-mini", targets=["openai/gpt-4o-mini"]),
    cfg.ModelConfig(name="slow", targets=["slow/gpt-4o-mini"]),
    cfg.ModelConfig(name="text-embedding-3-small", targets=["openai/text-embedding-3-small"]),
]


def chat(text: str, **extra: object) -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


async def load(base: str, fake: FakeOpenAI) -> dict[str, httpx.Response]:
    """One request of each kind; returns the responses by request id."""
    seen: dict[str, httpx.Response] = {}
    async with httpx.AsyncClient(timeout=10) as http:

        async def post(
            rid: str,
            body: dict[str, object],
            headers: dict[str, str] = AUTH,
            path: str = "/chat/completions",
        ) -> None:
            seen[rid] = await http.post(
                base + path, json=body, headers={**headers, "x-request-id": rid}
            )

        await post(
            "ok",
            chat(
                f"mail me at {SECRET_EMAIL} key {SECRET_KEY}",
                temperature=0.3,
                seed=7,
                max_tokens=64,
            ),
        )
        await post(
            "stream-usage",
            chat("count one two three", stream=True, stream_options={"include_usage": True}),
        )
        await post("stream-bare", chat("count four five", stream=True))
        fake.script(Respond(500, {"error": {"message": "boom", "type": "server_error"}}))
        await post("upstream-500", chat("x"))
        fake.script(
            Respond(
                429,
                {
                    "error": {
                        "message": "slow down",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                },
                {"retry-after": "3"},
            )
        )
        await post("upstream-429", chat("x"))
        fake.script(Hang())
        await post("timeout", {**chat("x"), "model": "slow"})
        await post("bad-key", chat("x"), headers={"authorization": "Bearer sk-wrong-000000"})
        await post(
            "embed", {"model": "text-embedding-3-small", "input": ["a", "b"]}, path="/embeddings"
        )
        fake.script(Hang())
        with trio.move_on_after(0.3):
            await post("gone", chat("x"))
        await fake.wait_disconnects(2)  # the timeout's and the client's
    return seen


def rows_by_id(directory: Path) -> dict[str, dict[str, Any]]:
    table = ds.dataset(directory, format="parquet", partitioning="hive").to_table()
    return {row["request_id"]: row for row in table.to_pylist()}


async def test_every_request_is_one_row_readable_by_pyarrow_and_duckdb(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    config = proxy_config(
        openai_provider(fake.base_url),
        openai_provider(fake.base_url, "slow", request_timeout_s=0.3),
        models=MODELS,
    )
    config = cfg.Config(
        **{
            **{f: getattr(config, f) for f in config.__struct_fields__},
            "dataset": cfg.DatasetConfig(dir=str(data), flush_interval_ms=20),
        }
    )
    with trio.fail_after(30):
        async with open_proxy(config, environ(fake.api_key)) as server:
            seen = await load(server.urls[0] + "/v1", fake)
    rows = rows_by_id(data)
    assert set(rows) == {*seen, "gone"}  # the client that left got no response
    assert not list((data / "_segments").glob("*")), "shutdown compacts the open segment"
    assert not [p for p in data.rglob("*") if p.name.endswith(".tmp")]
    check_success(rows["ok"], seen["ok"])
    check_stream(rows["stream-usage"], seen["stream-usage"], estimated=False)
    check_stream(rows["stream-bare"], seen["stream-bare"], estimated=True)
    check_failures(rows)
    check_duckdb(data, len(rows))
    check_no_secret_on_disk(data, fake.api_key)


def check_success(row: dict[str, Any], response: httpx.Response) -> None:
    body = response.json()
    assert row["status_code"] == 200 and row["error_type"] is None
    assert (row["provider"], row["upstream_model"], row["endpoint"]) == (
        "openai",
        "gpt-4o-mini",
        "chat",
    )
    assert row["prompt_tokens"] == body["usage"]["prompt_tokens"]
    assert row["completion_tokens"] == body["usage"]["completion_tokens"]
    assert row["usage_estimated"] is False
    assert (row["temperature"], row["seed"], row["max_tokens"]) == (0.3, 7, 64)
    assert row["finish_reason"] == "stop"
    assert row["api_key_id"] == "master" and row["schema_version"] == 1
    assert row["latency_ms"] >= row["upstream_ms"] > 0
    assert row["queue_ms"] is not None and row["ttft_ms"] is None
    assert len(row["trace_id"]) == 32 and row["ts_end"] >= row["ts_start"]
    assert len(row["attempts"]) == 1 and row["attempts"][0]["status_code"] == 200
    assert row["redactions"] >= 2
    assert "<EMAIL>" in row["request_body"] and SECRET_EMAIL not in row["request_body"]
    spec.validate("CreateChatCompletionResponse", json.loads(row["response_body"]))


def check_stream(row: dict[str, Any], response: httpx.Response, *, estimated: bool) -> None:
    chunks = spec.validate_sse_chunks("CreateChatCompletionStreamResponse", response.content)
    assert row["stream"] is True and row["status_code"] == 200
    assert len(row["chunk_offsets_ms"]) == len(chunks)
    assert row["chunk_offsets_ms"] == sorted(row["chunk_offsets_ms"])
    assert row["ttft_ms"] is not None and row["ttft_ms"] > 0
    assert row["usage_estimated"] is estimated
    assembled = json.loads(row["response_body"])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert assembled["choices"][0]["message"]["content"] == text
    if not estimated:
        assert row["total_tokens"] == chunks[-1]["usage"]["total_tokens"]


def check_failures(rows: dict[str, dict[str, Any]]) -> None:
    assert (rows["upstream-500"]["status_code"], rows["upstream-500"]["error_type"]) == (
        500,
        "server_error",
    )
    assert (rows["upstream-429"]["status_code"], rows["upstream-429"]["error_type"]) == (
        429,
        "requests",
    )
    assert (rows["timeout"]["status_code"], rows["timeout"]["error_type"]) == (504, "timeout")
    assert rows["timeout"]["provider"] == "slow"
    bad = rows["bad-key"]
    assert (bad["status_code"], bad["api_key_id"], bad["provider"]) == (
        401,
        "unauthenticated",
        None,
    )
    assert rows["gone"]["status_code"] == 499
    assert rows["gone"]["attempts"][0]["status_code"] == 499
    assert rows["embed"]["endpoint"] == "embeddings" and rows["embed"]["prompt_tokens"] > 0


def check_duckdb(directory: Path, expected: int) -> None:
    pattern = str(directory / "**" / "*.parquet")
    with duckdb.connect() as db:
        count, streams, errors = db.execute(
            "SELECT count(*), count(*) FILTER (stream), count(*) FILTER (status_code >= 400)"
            " FROM read_parquet(?, hive_partitioning = true)",
            [pattern],
        ).fetchone() or (0, 0, 0)
        attempts = db.execute(
            "SELECT count(*) FROM (SELECT unnest(attempts) AS a"
            " FROM read_parquet(?, hive_partitioning = true))",
            [pattern],
        ).fetchone()
    assert (count, streams, errors) == (expected, 2, 5)
    assert attempts is not None and attempts[0] == expected - 1  # the 401 never reached a target


def check_no_secret_on_disk(directory: Path, upstream_key: str) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            for secret in (MASTER_KEY, upstream_key, SECRET_KEY, SECRET_EMAIL):
                assert secret.encode() not in raw, (secret, path)
