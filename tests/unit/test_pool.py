"""H11Pool against real loopback servers: a small trio + h11 server, scripted per test."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11
import pytest
import trio
import trio.testing
import trustme

from actorproxy import errors
from actorproxy.net.base import Headers, UpstreamRequest, read_all
from actorproxy.net.pool import H11Pool

Handler = Callable[["Exchange"], Awaitable[None]]


@dataclass
class Exchange:
    """One request as the server saw it, and the means to answer it."""

    stream: trio.abc.Stream
    conn: h11.Connection
    request: h11.Request
    body: bytes
    number: int  # requests served before this one on the same connection
    close_after: bool = False

    async def send(self, *events: h11.Event) -> None:
        for event in events:
            if data := self.conn.send(event):
                await self.stream.send_all(data)

    async def respond(self, body: bytes = b"ok", status: int = 200) -> None:
        length = (b"content-length", str(len(body)).encode())
        await self.send(h11.Response(status_code=status, headers=[length]))
        await self.send(h11.Data(data=body), h11.EndOfMessage())

    async def wait_eof(self) -> None:
        while await self.stream.receive_some(65536):
            pass


@dataclass
class Server:
    handler: Handler
    port: int
    accepted: int = 0
    open: int = 0
    max_open: int = 0
    closed: int = 0
    closed_changed: trio.Event = field(default_factory=trio.Event)
    requests: list[h11.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(
        self,
        listener: trio.abc.Listener[trio.abc.Stream],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                nursery.start_soon(self._serve, await listener.accept())

    async def _serve(self, stream: trio.abc.Stream) -> None:
        self.accepted += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            async with stream:
                await self._serve_requests(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            self.open -= 1
            self.closed += 1
            self.closed_changed.set()
            self.closed_changed = trio.Event()

    async def wait_closed(self, count: int) -> None:
        while self.closed < count:
            await self.closed_changed.wait()

    async def _serve_requests(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        number = 0
        while (received := await _read_request(stream, conn)) is not None:
            self.requests.append(received[0])
            self.bodies.append(received[1])
            exchange = Exchange(stream, conn, received[0], received[1], number)
            await self.handler(exchange)
            if exchange.close_after or conn.our_state is not h11.DONE:
                return
            conn.start_next_cycle()
            number += 1


async def _read_request(
    stream: trio.abc.Stream, conn: h11.Connection
) -> tuple[h11.Request, bytes] | None:
    request: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request, body
        else:
            return None


async def start_server(
    nursery: trio.Nursery, handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> Server:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    server = Server(handler, port=int(listener.socket.getsockname()[1]))
    if ssl_context is None:
        await nursery.start(server.run, listener)
    else:
        tls = trio.SSLListener(listener, ssl_context, https_compatible=True)
        await nursery.start(server.run, tls)
    return server


def get(target: str = "/", headers: Headers | None = None) -> UpstreamRequest:
    return UpstreamRequest(b"GET", target, headers or [], b"")


async def ok(exchange: Exchange) -> None:
    await exchange.respond()


def pool_for(url: str, max_connections: int = 4, idle_timeout_s: float = 30.0) -> H11Pool:
    return H11Pool(
        url,
        max_connections=max_connections,
        connect_timeout_s=5.0,
        idle_timeout_s=idle_timeout_s,
    )


async def test_sequential_requests_reuse_one_connection(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        server = await start_server(nursery, ok)
        async with pool_for(server.url + "/v1/") as pool:
            for _ in range(5):
                response = await pool.send(get("/chat/completions?x=1", [(b"X-Trace", b"A")]))
                assert (response.status, await read_all(response)) == (200, b"ok")
            stats = pool.statistics()
    assert server.accepted == 1
    assert (stats.created_total, stats.reused_total, stats.idle, stats.in_use) == (1, 4, 1, 0)
    request = server.requests[0]
    assert request.target == b"/v1/chat/completions?x=1"
    assert (b"host", f"127.0.0.1:{server.port}".encode()) in request.headers
    assert (b"x-trace", b"A") in request.headers


async def test_post_body_gets_content_length(nursery: trio.Nursery) -> None:
    body = b'{"model": "m"}' * 10_000
    with trio.fail_after(10):
        server = await start_server(nursery, ok)
        async with pool_for(server.url) as pool:
            request = UpstreamRequest(b"POST", "/x", [(b"content-type", b"a/b")], body)
            assert await read_all(await pool.send(request)) == b"ok"
    assert server.bodies == [body]
    assert (b"content-length", str(len(body)).encode()) in server.requests[0].headers


async def test_content_length_body_in_several_writes(nursery: trio.Nursery) -> None:
    body = bytes(range(256)) * 1000

    async def in_pieces(exchange: Exchange) -> None:
        length = (b"content-length", str(len(body)).encode())
        await exchange.send(h11.Response(status_code=201, headers=[length]))
        for start in range(0, len(body), 50_000):
            await exchange.send(h11.Data(data=body[start : start + 50_000]))
        await exchange.send(h11.EndOfMessage())

    with trio.fail_after(10):
        server = await start_server(nursery, in_pieces)
        async with pool_for(server.url) as pool:
            response = await pool.send(get())
            assert (b"content-length", str(len(body)).encode()) in response.headers
            assert (response.status, await read_all(response)) == (201, body)
            assert pool.statistics().idle == 1


async def test_concurrency_never_exceeds_max_connections(nursery: trio.Nursery) -> None:
    async def slow(exchange: Exchange) -> None:
        await trio.sleep(0.01)
        await exchange.respond()

    async def one(pool: H11Pool) -> None:
        assert await read_all(await pool.send(get())) == b"ok"

    with trio.fail_after(10):
        server = await start_server(nursery, slow)
        async with pool_for(server.url, max_connections=3) as pool:
            async with trio.open_nursery() as clients:
                for _ in range(12):
                    clients.start_soon(one, pool)
            stats = pool.statistics()
    assert server.max_open == 3
    assert (stats.created_total, stats.reused_total, stats.in_use, stats.waiting) == (3, 9, 0, 0)


async def test_chunked_sse_arrives_incrementally(nursery: trio.Nursery) -> None:
    first_seen = trio.Event()

    async def sse(exchange: Exchange) -> None:
        head = h11.Response(status_code=200, headers=[(b"content-type", b"text/event-stream")])
        await exchange.send(head, h11.Data(data=b"data: 1\n\n"))
        await first_seen.wait()
        await exchange.send(h11.Data(data=b"data: 2\n\n"), h11.EndOfMessage())

    with trio.fail_after(10):
        server = await start_server(nursery, sse)
        async with pool_for(server.url) as pool:
            response = await pool.send(get())
            assert (b"transfer-encoding", b"chunked") in response.headers
            assert await response.receive_some() == b"data: 1\n\n"
            first_seen.set()
            assert await response.receive_some() == b"data: 2\n\n"
            assert await response.receive_some() == b""
            await response.aclose()
            assert pool.statistics().idle == 1
    assert server.accepted == 1


async def test_idle_connection_closed_by_server_is_replaced(nursery: trio.Nursery) -> None:
    async def close_after_answer(exchange: Exchange) -> None:
        await exchange.respond()
        exchange.close_after = True

    with trio.fail_after(10):
        server = await start_server(nursery, close_after_answer)
        async with pool_for(server.url) as pool:
            assert await read_all(await pool.send(get())) == b"ok"
            await server.wait_closed(1)
            assert await read_all(await pool.send(get())) == b"ok"
            stats = pool.statistics()
    assert server.accepted == 2
    assert (stats.created_total, stats.open_connections) == (2, 1)


async def test_request_seen_by_the_server_is_never_resent(nursery: trio.Nursery) -> None:
    """A reused connection dropped after the request was written is ambiguous: the upstream may
    be running the (non-idempotent) LLM call, so the pool reports it instead of resending."""

    async def drop_second_request(exchange: Exchange) -> None:
        if exchange.number == 1:
            exchange.close_after = True  # closed while the request was in flight
        else:
            await exchange.respond()

    with trio.fail_after(10):
        server = await start_server(nursery, drop_second_request)
        async with pool_for(server.url) as pool:
            assert await read_all(await pool.send(get())) == b"ok"
            with pytest.raises(errors.UpstreamProtocolError):
                await pool.send(get())
            assert await read_all(await pool.send(get())) == b"ok"
            stats = pool.statistics()
    assert server.accepted == 2
    assert len(server.requests) == 3
    assert (stats.created_total, stats.reused_total, stats.open_connections) == (2, 1, 1)


async def test_fresh_connection_failing_before_head_is_not_retried(
    nursery: trio.Nursery,
) -> None:
    async def hang_up(exchange: Exchange) -> None:
        exchange.close_after = True

    with trio.fail_after(10):
        server = await start_server(nursery, hang_up)
        async with pool_for(server.url) as pool:
            with pytest.raises(errors.UpstreamProtocolError):
                await pool.send(get())
            stats = pool.statistics()
    assert server.accepted == 1
    assert (stats.open_connections, stats.in_use) == (0, 0)


async def test_server_cutting_mid_body_is_a_protocol_error(nursery: trio.Nursery) -> None:
    async def cut(exchange: Exchange) -> None:
        head = h11.Response(status_code=200, headers=[(b"content-length", b"100")])
        await exchange.send(head, h11.Data(data=b"0123456789"))
        exchange.close_after = True

    with trio.fail_after(10):
        server = await start_server(nursery, cut)
        async with pool_for(server.url) as pool:
            response = await pool.send(get())
            assert await response.receive_some() == b"0123456789"
            with pytest.raises(errors.UpstreamProtocolError) as caught:
                await response.receive_some()
            await response.aclose()
            assert isinstance(caught.value.__cause__, h11.RemoteProtocolError)
            stats = pool.statistics()
    assert (stats.open_connections, stats.in_use) == (0, 0)


async def test_connection_refused_is_connect_failed() -> None:
    with trio.fail_after(10):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        await listener.aclose()
        async with pool_for(f"http://127.0.0.1:{port}", max_connections=1) as pool:
            for _ in range(2):  # the slot is given back after a failure
                with pytest.raises(errors.UpstreamConnectFailed) as caught:
                    await pool.send(get())
                assert isinstance(caught.value.__cause__, OSError)
            stats = pool.statistics()
    assert (stats.open_connections, stats.in_use, stats.created_total) == (0, 0, 0)


async def test_tls_handshake_timeout_is_connect_failed() -> None:
    with trio.fail_after(10):
        # The kernel completes the TCP handshake, but nobody ever answers the ClientHello.
        async with (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0] as listener:
            url = f"https://127.0.0.1:{listener.socket.getsockname()[1]}"
            async with H11Pool(url, max_connections=1, connect_timeout_s=0.2) as pool:
                with pytest.raises(errors.UpstreamConnectFailed) as caught:
                    await pool.send(get())
    assert isinstance(caught.value.__cause__, trio.TooSlowError)


async def test_cancel_mid_body_closes_connection(nursery: trio.Nursery) -> None:
    eof = trio.Event()

    async def stream_then_wait(exchange: Exchange) -> None:
        await exchange.send(h11.Response(status_code=200, headers=[]), h11.Data(data=b"a"))
        await exchange.wait_eof()
        eof.set()

    async def read_forever(pool: H11Pool, first: trio.Event) -> None:
        response = await pool.send(get())
        assert await response.receive_some() == b"a"
        first.set()
        await response.receive_some()

    with trio.fail_after(10):
        server = await start_server(nursery, stream_then_wait)
        async with pool_for(server.url) as pool, trio.open_nursery() as clients:
            first = trio.Event()
            clients.start_soon(read_forever, pool, first)
            await first.wait()
            await trio.testing.wait_all_tasks_blocked()
            clients.cancel_scope.cancel()
        await eof.wait()
        stats = pool.statistics()
    assert (stats.open_connections, stats.in_use, stats.waiting) == (0, 0, 0)


async def test_cancel_while_waiting_for_head_closes_connection(nursery: trio.Nursery) -> None:
    arrived_send, arrived = trio.open_memory_channel[None](10)

    async def never_answer(exchange: Exchange) -> None:
        await arrived_send.send(None)
        await exchange.wait_eof()

    with trio.fail_after(10):
        server = await start_server(nursery, never_answer)
        async with pool_for(server.url, max_connections=1) as pool:
            for count in (1, 2):  # the second request proves the slot was given back
                async with trio.open_nursery() as clients:
                    clients.start_soon(pool.send, get())
                    await arrived.receive()
                    clients.cancel_scope.cancel()
                await server.wait_closed(count)
                stats = pool.statistics()
                assert (stats.open_connections, stats.in_use, stats.waiting) == (0, 0, 0)
    assert server.accepted == 2


async def test_early_close_does_not_return_connection(nursery: trio.Nursery) -> None:
    eof = trio.Event()

    async def half_then_wait(exchange: Exchange) -> None:
        if not eof.is_set():
            head = h11.Response(status_code=200, headers=[(b"content-length", b"4")])
            await exchange.send(head, h11.Data(data=b"ab"))
            await exchange.wait_eof()
            eof.set()
        else:
            await exchange.respond()

    with trio.fail_after(10):
        server = await start_server(nursery, half_then_wait)
        async with pool_for(server.url) as pool:
            response = await pool.send(get())
            assert await response.receive_some() == b"ab"
            await response.aclose()
            await response.aclose()  # idempotent
            assert pool.statistics().open_connections == 0
            await eof.wait()
            assert await read_all(await pool.send(get())) == b"ok"
            with pytest.raises(errors.UpstreamProtocolError):
                await response.receive_some()
    assert server.accepted == 2


async def test_idle_timeout_closes_old_connections_at_checkout(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        server = await start_server(nursery, ok)
        async with pool_for(server.url, idle_timeout_s=0.0) as pool:
            for _ in range(3):
                assert await read_all(await pool.send(get())) == b"ok"
            stats = pool.statistics()
    assert server.accepted == 3
    assert (stats.created_total, stats.reused_total, stats.open_connections) == (3, 0, 1)


async def test_aclose_closes_idle_connections(nursery: trio.Nursery) -> None:
    eof = trio.Event()

    async def answer_then_wait(exchange: Exchange) -> None:
        await exchange.respond()
        await exchange.wait_eof()
        eof.set()
        exchange.close_after = True

    with trio.fail_after(10):
        server = await start_server(nursery, answer_then_wait)
        pool = pool_for(server.url)
        assert await read_all(await pool.send(get())) == b"ok"
        await pool.aclose()
        await eof.wait()
        with pytest.raises(errors.UpstreamConnectFailed):
            await pool.send(get())
        assert pool.statistics().open_connections == 0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def test_https_with_self_signed_cert(nursery: trio.Nursery, ca: trustme.CA) -> None:
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    with trio.fail_after(10):
        server = await start_server(nursery, ok, server_tls(ca))
        url = f"https://127.0.0.1:{server.port}/v1"
        async with H11Pool(
            url, max_connections=2, connect_timeout_s=5, ssl_context=client_tls
        ) as pool:
            for _ in range(3):
                assert await read_all(await pool.send(get("/models"))) == b"ok"
    assert server.accepted == 1
    assert [r.target for r in server.requests] == [b"/v1/models"] * 3


async def test_https_untrusted_cert_is_connect_failed(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    with trio.fail_after(10):
        server = await start_server(nursery, ok, server_tls(ca))
        async with pool_for(f"https://127.0.0.1:{server.port}") as pool:
            with pytest.raises(errors.UpstreamConnectFailed):
                await pool.send(get())
            assert pool.statistics().open_connections == 0
