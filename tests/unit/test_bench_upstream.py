"""The bench's fake upstream and built-in load client, over real loopback sockets.

The official SDK reads the fake's JSON and SSE answers (so the bench measures valid OpenAI
traffic); the bench client's counts, framing and error accounting are checked against what the
fake served. No timings are asserted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import openai
import pytest
import trio

from bench import loadgen
from bench.upstream import Behaviour, FakeUpstream, build_replies

SDK_STREAM = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|httpx2|httpcore2)\.:ResourceWarning"
)


async def _started(nursery: trio.Nursery, behaviour: Behaviour) -> tuple[FakeUpstream, str]:
    upstream = FakeUpstream(behaviour)
    port = await nursery.start(partial(upstream.serve, 0))
    return upstream, f"http://127.0.0.1:{port}"


@pytest.fixture
async def sdk(nursery: trio.Nursery) -> AsyncIterator[openai.AsyncOpenAI]:
    _, url = await _started(nursery, Behaviour(chunks=4))
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
        yield client


async def test_the_sdk_reads_the_json_answer(sdk: openai.AsyncOpenAI) -> None:
    with trio.fail_after(10):
        completion = await sdk.chat.completions.create(
            model="bench", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens == 4


@SDK_STREAM
async def test_the_sdk_reads_the_stream(sdk: openai.AsyncOpenAI) -> None:
    with trio.fail_after(10):
        stream = await sdk.chat.completions.create(
            model="bench", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert len(text.split()) == 4
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("chunks", [1, 3, 10, 40])
def test_a_stream_is_written_in_exactly_chunks_writes(chunks: int) -> None:
    replies = build_replies(chunks)

    writes = replies.stream_writes

    assert len(writes) == min(chunks, len(_events(writes)))
    assert writes[-1].endswith(b"0\r\n\r\n")
    assert _events(writes)[-1] == b"data: [DONE]"


def _events(writes: tuple[bytes, ...]) -> list[bytes]:
    """De-chunk the writes and split the SSE events."""
    data, raw = b"", b"".join(writes)
    while raw:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line, 16)
        data, raw = data + raw[:size], raw[size + 2 :]
    return [event for event in data.split(b"\n\n") if event]


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
async def test_the_client_counts_every_answer_the_fake_served(
    nursery: trio.Nursery, fraction: float
) -> None:
    upstream, url = await _started(nursery, Behaviour(chunks=3))
    load = loadgen.LoadSpec(url=url, seconds=0.3, connections=4, stream_fraction=fraction)

    with trio.fail_after(20):
        result = await loadgen.hammer(load)

    assert result.requests == result.ok == upstream.served > 0
    assert result.errors == 0
    assert result.ttfb_p50_ms is not None and result.ttfb_p50_ms <= result.p50_ms


@pytest.mark.parametrize(("rate", "all_fail"), [(1.0, True), (0.0, False)])
async def test_errors_follow_the_error_rate(
    nursery: trio.Nursery, rate: float, all_fail: bool
) -> None:
    upstream, url = await _started(nursery, Behaviour(error_rate=rate))
    load = loadgen.LoadSpec(url=url, seconds=0.2, connections=2)

    with trio.fail_after(20):
        result = await loadgen.hammer(load)

    assert result.requests == upstream.served > 0
    assert result.errors == (result.requests if all_fail else 0)
    assert result.ok == (0 if all_fail else result.requests)
