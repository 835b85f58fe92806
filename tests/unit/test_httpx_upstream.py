"""HttpxUpstream on httpx.MockTransport, plus one run against a real loopback server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import h11
import httpx
import pytest
import trio
import trio.testing

from actorproxy import errors
from actorproxy.net.base import UpstreamRequest, read_all
from actorproxy.net.httpx_upstream import HttpxUpstream
from tests.unit.test_pool import Exchange, start_server

MockHandler = Callable[[httpx.Request], httpx.Response]


def upstream_for(handler: MockHandler, base_url: str = "https://api.test/v1") -> HttpxUpstream:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=None)
    return HttpxUpstream(client, base_url)


def post(body: bytes = b"{}") -> UpstreamRequest:
    headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer k")]
    return UpstreamRequest(b"POST", "/chat/completions?x=1", headers, body)


class Body(httpx.AsyncByteStream):
    """A response body released piece by piece as the test sets ``gate``; records ``aclose``.

    An iterator object rather than an async generator, so abandoning it leaves nothing for
    trio's async generator finalizer to warn about."""

    def __init__(self, chunks: list[bytes], gate: trio.Event) -> None:
        self.chunks = chunks
        self.gate = gate
        self.closed = False

    def __aiter__(self) -> Body:
        return self

    async def __anext__(self) -> bytes:
        if len(self.chunks) == 1:
            await self.gate.wait()
        if not self.chunks:
            raise StopAsyncIteration
        return self.chunks.pop(0)

    async def aclose(self) -> None:
        self.closed = True


# Closing an httpx response early leaves httpx's own async generators (BoundAsyncStream) to
# trio's finalizer, which warns: https://github.com/encode/httpx/issues/3686
httpx_early_close_warns = pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")


async def test_request_and_response_pass_through() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, headers={"x-request-id": "r1"}, content=b'{"ok":1}')

    with trio.fail_after(10):
        response = await upstream_for(handler).send(post(b'{"model":"m"}'))
        assert (response.status, await read_all(response)) == (201, b'{"ok":1}')
    assert (b"x-request-id", b"r1") in response.headers
    request = seen[0]
    assert str(request.url) == "https://api.test/v1/chat/completions?x=1"
    assert request.content == b'{"model":"m"}'
    assert request.headers["authorization"] == "Bearer k"
    assert request.headers["accept-encoding"] == "identity"


async def test_caller_accept_encoding_is_kept() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    with trio.fail_after(10):
        request = UpstreamRequest(b"GET", "/models", [(b"Accept-Encoding", b"gzip")], b"")
        assert await read_all(await upstream_for(handler).send(request)) == b""
    assert seen[0].headers.get_list("accept-encoding") == ["gzip"]


async def test_body_arrives_incrementally() -> None:
    gate = trio.Event()
    body = Body([b"data: 1\n\n", b"data: 2\n\n"], gate)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    with trio.fail_after(10):
        response = await upstream_for(handler).send(post())
        assert await response.receive_some() == b"data: 1\n\n"
        gate.set()
        assert await response.receive_some() == b"data: 2\n\n"
        assert await response.receive_some() == b""
        assert await response.receive_some() == b""
        await response.aclose()
    assert body.closed


@pytest.mark.parametrize("exc_type", [httpx.ConnectError, httpx.ConnectTimeout])
async def test_connect_failures(exc_type: type[httpx.TransportError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("no route", request=request)

    with trio.fail_after(10), pytest.raises(errors.UpstreamConnectFailed) as caught:
        await upstream_for(handler).send(post())
    assert isinstance(caught.value.__cause__, exc_type)


@pytest.mark.parametrize("exc_type", [httpx.RemoteProtocolError, httpx.ReadError])
async def test_protocol_failures_at_send(exc_type: type[httpx.TransportError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("broken", request=request)

    with trio.fail_after(10), pytest.raises(errors.UpstreamProtocolError):
        await upstream_for(handler).send(post())


class BrokenBody(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"partial"
        raise httpx.ReadError("connection reset")


async def test_failure_mid_body_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=BrokenBody())

    with trio.fail_after(10):
        response = await upstream_for(handler).send(post())
        assert await response.receive_some() == b"partial"
        with pytest.raises(errors.UpstreamProtocolError):
            await response.receive_some()
        await response.aclose()


@httpx_early_close_warns
async def test_cancel_mid_body_closes_response() -> None:
    body = Body([b"a", b"b"], trio.Event())

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    async def read_forever(first: trio.Event) -> None:
        response = await upstream_for(handler).send(post())
        assert await response.receive_some() == b"a"
        first.set()
        await response.receive_some()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            first = trio.Event()
            nursery.start_soon(read_forever, first)
            await first.wait()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert body.closed


@httpx_early_close_warns
async def test_early_close_then_receive_is_an_error() -> None:
    body = Body([b"a", b"b"], trio.Event())

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    with trio.fail_after(10):
        response = await upstream_for(handler).send(post())
        assert await response.receive_some() == b"a"
        await response.aclose()
        await response.aclose()
        with pytest.raises(errors.UpstreamProtocolError):
            await response.receive_some()
    assert body.closed


async def test_loopback_streaming_and_keep_alive(nursery: trio.Nursery) -> None:
    first_seen = trio.Event()

    async def sse(exchange: Exchange) -> None:
        await exchange.send(h11.Response(status_code=200, headers=[]), h11.Data(data=b"1"))
        await first_seen.wait()
        await exchange.send(h11.Data(data=b"2"), h11.EndOfMessage())

    with trio.fail_after(10):
        server = await start_server(nursery, sse)
        async with httpx.AsyncClient(timeout=None) as client:
            upstream = HttpxUpstream(client, server.url + "/v1")
            for _ in range(2):
                first_seen = trio.Event()
                response = await upstream.send(post())
                assert await response.receive_some() == b"1"
                first_seen.set()
                assert await read_all(response) == b"2"
            await upstream.aclose()
    assert server.accepted == 1
    assert [r.target for r in server.requests] == [b"/v1/chat/completions?x=1"] * 2


async def test_loopback_connection_refused() -> None:
    with trio.fail_after(10):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        await listener.aclose()
        async with httpx.AsyncClient(timeout=None) as client:
            upstream = HttpxUpstream(client, f"http://127.0.0.1:{port}")
            with pytest.raises(errors.UpstreamConnectFailed):
                await upstream.send(post())
