"""The fake OpenAI upstream's fault script, over real sockets: what a client observes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest
import trio
from openai.types.chat import ChatCompletionMessageParam

from tests import spec
from tests.fakes.openai_upstream import (
    DEFAULT_API_KEY,
    Cut,
    Delay,
    FakeOpenAI,
    Hang,
    Respond,
    Slow,
    error_body,
    open_fake_openai,
)

AUTH = {"authorization": f"Bearer {DEFAULT_API_KEY}"}
MODEL = "gpt-4o-mini"
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello world"}]
CHAT = {"model": MODEL, "messages": HELLO}
STREAM = CHAT | {"stream": True}
# role, "echo:", " hello", " world", finish, [DONE]
STREAM_EVENTS = 6

SDK_STREAM = pytest.mark.filterwarnings(
    r"ignore:Async generator '(openai|httpx2|httpcore2)\.:ResourceWarning"
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with open_fake_openai() as fake:
        yield fake


@pytest.fixture
async def http(fake: FakeOpenAI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, headers=AUTH) as client:
        yield client


@pytest.fixture
async def sdk(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=fake.base_url, api_key=DEFAULT_API_KEY, max_retries=0
    ) as client:
        yield client


async def until(predicate: Callable[[], bool]) -> None:
    # Polling on purpose: the fake exposes counters, not events, for in-flight requests.
    while not predicate():
        await trio.sleep(0.01)


async def read_raw(response: httpx.Response, into: list[bytes]) -> None:
    async for chunk in response.aiter_raw():
        into.append(chunk)


async def test_respond_replaces_status_body_and_headers(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    limited = error_body("Rate limit reached", type="requests", code="rate_limit_exceeded")
    fake.script(Respond(429, limited, {"retry-after": "7"}))
    fake.script(Respond(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"}))
    with trio.fail_after(10):
        with pytest.raises(openai.RateLimitError) as error:
            await sdk.chat.completions.create(model=MODEL, messages=HELLO)
        gateway = await http.post("/chat/completions", json=CHAT)
        normal = await http.post("/chat/completions", json=CHAT)
    assert error.value.code == "rate_limit_exceeded"
    assert error.value.response.headers["retry-after"] == "7"
    assert error.value.response.headers["x-request-id"] == "req_0"
    spec.validate("ErrorResponse", error.value.response.json())
    assert (gateway.status_code, gateway.content) == (502, b"<html>bad gateway</html>")
    assert gateway.headers["content-type"] == "text/html"
    assert normal.status_code == 200
    assert fake.unused_faults == []


async def test_faults_match_their_path_in_order(fake: FakeOpenAI, http: httpx.AsyncClient) -> None:
    fake.script(Respond(500), Respond(503), path="/v1/chat/completions")
    fake.script(Respond(504))
    embedding = {"model": "text-embedding-3-small", "input": "a"}
    with trio.fail_after(10):
        statuses = [
            (await http.post("/embeddings", json=embedding)).status_code,
            (await http.post("/chat/completions", json=CHAT)).status_code,
            (await http.post("/chat/completions", json=CHAT)).status_code,
            (await http.post("/chat/completions", json=CHAT)).status_code,
        ]
    # The embeddings call takes the first fault that matches any path.
    assert statuses == [504, 500, 503, 200]


async def test_invalid_requests_leave_the_script_alone(
    fake: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake.script(Respond(500))
    with trio.fail_after(10):
        no_key = await http.post("/chat/completions", json=CHAT, headers={"authorization": ""})
        no_messages = await http.post("/chat/completions", json={"model": "gpt-4o"})
        assert fake.unused_faults == [Respond(500)]
        scripted = await http.post("/chat/completions", json=CHAT)
    assert [no_key.status_code, no_messages.status_code, scripted.status_code] == [401, 400, 500]


async def test_delay_holds_the_head(fake: FakeOpenAI, http: httpx.AsyncClient) -> None:
    fake.script(Delay(0.3))
    with trio.fail_after(10):
        start = trio.current_time()
        async with http.stream("POST", "/chat/completions", json=STREAM) as response:
            head_at = trio.current_time()
            await response.aread()
    assert head_at - start >= 0.3
    assert response.status_code == 200
    spec.validate_sse_chunks("CreateChatCompletionStreamResponse", response.content)
    assert fake.disconnects == 0


async def test_hang_until_the_client_leaves(fake: FakeOpenAI, sdk: openai.AsyncOpenAI) -> None:
    fake.script(Hang(), Hang())
    with trio.fail_after(10):
        for _ in range(2):
            with trio.move_on_after(0.2) as gave_up:
                await sdk.chat.completions.create(model=MODEL, messages=HELLO)
            assert gave_up.cancelled_caught
        await fake.wait_disconnects(2)
    assert fake.disconnects == 2
    assert fake.in_flight == 0
    assert len(fake.requests) == 2


async def test_leaving_during_a_delay_or_mid_stream_is_a_disconnect(
    fake: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake.script(Delay(5), Slow(0.2))
    with trio.fail_after(10):
        with trio.move_on_after(0.2):
            await http.post("/chat/completions", json=CHAT)
        await fake.wait_disconnects(1)
        # Leave once the head is in. (Breaking out of httpx's body iterator instead would leave
        # httpx's inner async generators suspended, which trio reports as a ResourceWarning.)
        async with http.stream("POST", "/chat/completions", json=STREAM) as response:
            assert response.status_code == 200
        await fake.wait_disconnects(2)
    assert fake.in_flight == 0


async def test_cut_stream_after_n_events(fake: FakeOpenAI, http: httpx.AsyncClient) -> None:
    fake.script(Cut(after_chunks=2), Cut(after_chunks=0))
    received: list[bytes] = []
    with trio.fail_after(10):
        async with http.stream("POST", "/chat/completions", json=STREAM) as response:
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                await read_raw(response, received)
        async with http.stream("POST", "/chat/completions", json=STREAM) as headless:
            with pytest.raises(httpx.RemoteProtocolError):
                await headless.aread()
    assert response.status_code == 200
    events = spec.sse_data(b"".join(received))
    assert len(events) == 2
    spec.validate_sse_chunks("CreateChatCompletionStreamResponse", events)
    assert headless.status_code == 200
    assert fake.disconnects == 0
    assert fake.in_flight == 0


async def test_cut_plain_body_halfway(fake: FakeOpenAI, http: httpx.AsyncClient) -> None:
    fake.script(Cut(after_chunks=1))
    with trio.fail_after(10):
        with pytest.raises(httpx.RemoteProtocolError, match="peer closed connection"):
            await http.post("/chat/completions", json=CHAT)
        after = await http.post("/chat/completions", json=CHAT)
    assert after.status_code == 200


@SDK_STREAM
async def test_sdk_sees_a_cut_stream_as_a_connection_error(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    fake.script(Cut(after_chunks=3, interval=0.05))
    chunks: list[Any] = []
    with trio.fail_after(10):
        stream = await sdk.chat.completions.create(model=MODEL, messages=HELLO, stream=True)
        with pytest.raises(openai.APIConnectionError):
            async for chunk in stream:
                chunks.append(chunk)
    assert [chunk.choices[0].delta.content for chunk in chunks] == ["", "echo:", " hello"]


async def test_slow_stream_spaces_its_events(fake: FakeOpenAI, http: httpx.AsyncClient) -> None:
    fake.script(Slow(0.1))
    received: list[bytes] = []
    with trio.fail_after(10):
        start = trio.current_time()
        async with http.stream("POST", "/chat/completions", json=STREAM) as response:
            await read_raw(response, received)
        elapsed = trio.current_time() - start
    assert elapsed >= 0.1 * STREAM_EVENTS
    assert len(received) >= 2
    spec.validate_sse_chunks("CreateChatCompletionStreamResponse", b"".join(received))


async def test_max_in_flight_counts_concurrent_requests(
    fake: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake.script(Delay(0.3), Delay(0.3), Delay(0.3))
    statuses: list[int] = []

    async def call() -> None:
        statuses.append((await http.post("/chat/completions", json=CHAT)).status_code)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
            await until(lambda: fake.in_flight == 3)
        await http.post("/chat/completions", json=CHAT)
    assert statuses == [200, 200, 200]
    assert fake.max_in_flight == 3
    assert fake.in_flight == 0


async def test_closing_the_fake_drops_hanging_requests() -> None:
    outcome: list[type[BaseException]] = []

    async def call(http: httpx.AsyncClient, url: str) -> None:
        try:
            await http.post(f"{url}/chat/completions", json=CHAT)
        except httpx.TransportError as error:
            outcome.append(type(error))

    with trio.fail_after(10):
        async with (
            httpx.AsyncClient(headers=AUTH) as http,
            trio.open_nursery() as nursery,
            open_fake_openai() as fake,
        ):
            fake.script(Hang())
            nursery.start_soon(call, http, fake.base_url)
            await until(lambda: fake.in_flight == 1)
    assert outcome == [httpx.RemoteProtocolError]
    assert fake.disconnects == 0
