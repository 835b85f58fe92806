"""A keep-alive HTTP/1.1 connection pool on trio + h11, the default ``Upstream``.

Why not httpcore: its pool scans every connection on each request (quadratic under load) and httpx
adds milliseconds per request. A provider actor already caps its concurrency, so this pool does O(1)
work per request: idle connections wait on a LIFO stack (the most recently used one is the least
likely to have been closed by the server), and nothing ever walks all connections.

A request takes a slot (at most ``max_connections`` requests hold one, the rest wait), pops an idle
connection or opens a new one, writes the request and waits for the response head. The response then
owns the connection and the slot: it gives the connection back to the stack once the body was read
to its end and h11 allows another cycle, and closes it otherwise.

Cancellation: cancelling a task inside ``send`` or ``receive_some`` closes that connection at once
(the server sees EOF) and frees its slot. Closing is synchronous, so it works in a cancelled scope.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import h11
import trio

from actorproxy import errors
from actorproxy.net.base import Headers, UpstreamRequest, UpstreamResponse

_READ_SIZE = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
# What sockets, TLS and h11 raise. Anything else (Cancelled, bugs) propagates untouched.
_LOW_LEVEL = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    h11.ProtocolError,
)


@contextlib.contextmanager
def _translate(error: type[errors.UpstreamFailed], what: str) -> Iterator[None]:
    """The one boundary where socket, TLS and h11 exceptions become ``actorproxy.errors``."""
    try:
        yield
    except _LOW_LEVEL as exc:
        raise error(f"{what} ({type(exc).__name__})") from exc


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of an ``H11Pool``: ``open_connections == idle + in_use``."""

    open_connections: int
    idle: int
    in_use: int
    waiting: int
    created_total: int
    reused_total: int


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int
    prefix: str
    host_header: bytes


def _parse_base_url(base_url: str) -> _Origin:
    parts = urlsplit(base_url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"unsupported upstream base URL: {base_url!r}")
    return _Origin(
        scheme=parts.scheme,
        host=parts.hostname,
        port=parts.port or _DEFAULT_PORTS[parts.scheme],
        prefix=parts.path.rstrip("/"),
        host_header=parts.netloc.rpartition("@")[2].encode("ascii"),
    )


def _tls_context(origin: _Origin, given: ssl.SSLContext | None) -> ssl.SSLContext | None:
    if origin.scheme != "https":
        return None
    context = given if given is not None else ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def _encode(conn: h11.Connection, head: h11.Request, body: bytes) -> bytes:
    events: list[h11.Event] = [head, h11.Data(data=body)] if body else [head]
    events.append(h11.EndOfMessage())
    return b"".join(conn.send(event) or b"" for event in events)


def _reusable(conn: h11.Connection) -> bool:
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE


class _Connection:
    """One socket and its h11 state machine."""

    __slots__ = ("_socket", "h11", "idle_since", "request_sent", "response_started", "stream")

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        self._socket = socket
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self.request_sent = False
        self.response_started = False

    def close(self) -> None:
        """Synchronous and idempotent: the peer sees EOF at once, even from a cancelled scope."""
        self._socket.close()

    def closed_by_peer(self) -> bool:
        # An idle HTTP/1.1 connection has nothing to read unless the server closed it.
        return self._socket.is_readable()

    async def next_event(self) -> h11.Event:
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            data = bytes(await self.stream.receive_some(_READ_SIZE))
            self.response_started = self.response_started or bool(data)
            self.h11.receive_data(data)
        if not isinstance(event, h11.Event):
            raise RuntimeError("h11 paused: the response was already complete")
        return event

    async def receive_head(self) -> h11.Response:
        event = await self.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await self.next_event()
        if not isinstance(event, h11.Response):
            raise errors.UpstreamProtocolError(f"upstream sent {type(event).__name__} first")
        return event


class H11Pool:
    """Keep-alive HTTP/1.1 connections to one origin; implements ``Upstream``.

    ``base_url``'s path (say ``/v1``) prefixes every request target. At most ``max_connections``
    requests are in flight; more wait for a slot. Idle connections older than ``idle_timeout_s``
    are closed when a request would pick them up.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int,
        connect_timeout_s: float,
        idle_timeout_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._origin = _parse_base_url(base_url)
        self._tls = _tls_context(self._origin, ssl_context)
        self._connect_timeout_s = connect_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._slots = trio.Semaphore(max_connections, max_value=max_connections)
        self._idle: list[_Connection] = []
        self._active: set[_Connection] = set()
        self._created_total = 0
        self._reused_total = 0
        self._closed = False

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send ``request``; return once the response head arrived. Cancelling closes the
        connection. A reused connection that fails while the request is being written is retried
        once on a fresh one (the server closed it while idle and cannot have the whole request).
        Once the request is written it is never resent: an LLM call is not idempotent (RFC 9110
        section 9.2.2), so an ambiguous failure surfaces as ``UpstreamProtocolError``."""
        with _translate(errors.UpstreamProtocolError, "request cannot be encoded"):
            head = self._request_head(request)
        if self._closed:
            raise errors.UpstreamConnectFailed("the upstream pool is closed")
        await self._slots.acquire()
        try:
            return await self._send_retrying(head, request.body)
        except BaseException:
            self._slots.release()
            raise

    async def aclose(self) -> None:
        """Close every connection, idle or in use; later ``send`` calls fail."""
        self._closed = True
        for conn in [*self._idle, *self._active]:
            conn.close()
        self._idle.clear()
        self._active.clear()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def __aenter__(self) -> H11Pool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def statistics(self) -> PoolStatistics:
        idle, in_use = len(self._idle), len(self._active)
        return PoolStatistics(
            open_connections=idle + in_use,
            idle=idle,
            in_use=in_use,
            waiting=self._slots.statistics().tasks_waiting,
            created_total=self._created_total,
            reused_total=self._reused_total,
        )

    def _request_head(self, request: UpstreamRequest) -> h11.Request:
        headers = list(request.headers)
        names = {name.lower() for name, _ in headers}
        if b"host" not in names:
            headers.insert(0, (b"host", self._origin.host_header))
        framed = b"content-length" in names or b"transfer-encoding" in names
        if not framed and (request.body or request.method in _BODY_METHODS):
            headers.append((b"content-length", str(len(request.body)).encode()))
        target = self._origin.prefix + request.target
        return h11.Request(method=request.method, target=target, headers=headers)

    async def _send_retrying(self, head: h11.Request, body: bytes) -> _Response:
        conn = self._checkout()
        if conn is not None:
            try:
                return await self._exchange(conn, head, body)
            except errors.UpstreamProtocolError:
                if conn.request_sent:
                    raise
        return await self._exchange(await self._connect(), head, body)

    async def _exchange(self, conn: _Connection, head: h11.Request, body: bytes) -> _Response:
        try:
            with _translate(errors.UpstreamProtocolError, "upstream connection failed"):
                await conn.stream.send_all(_encode(conn.h11, head, body))
                conn.request_sent = True
                response = await conn.receive_head()
        except BaseException:
            self._drop(conn)
            raise
        return _Response(self, conn, response)

    def _checkout(self) -> _Connection | None:
        now = trio.current_time()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since >= self._idle_timeout_s:
                # LIFO: everything below this connection has been idle even longer.
                self._close_idle()
                conn.close()
                return None
            if conn.closed_by_peer():
                conn.close()
                continue
            self._active.add(conn)
            self._reused_total += 1
            return conn
        return None

    async def _connect(self) -> _Connection:
        with (
            _translate(errors.UpstreamConnectFailed, "cannot connect to the upstream"),
            trio.fail_after(self._connect_timeout_s),
        ):
            conn = await self._open()
        self._created_total += 1
        self._active.add(conn)
        return conn

    async def _open(self) -> _Connection:
        tcp = await trio.open_tcp_stream(self._origin.host, self._origin.port)
        if self._tls is None:
            return _Connection(tcp, tcp.socket)
        tls = trio.SSLStream(
            tcp, self._tls, server_hostname=self._origin.host, https_compatible=True
        )
        try:
            await tls.do_handshake()
        except BaseException:
            tcp.socket.close()
            raise
        return _Connection(tls, tcp.socket)

    def _checkin(self, conn: _Connection, *, reusable: bool) -> None:
        """Give back a response's connection and its slot."""
        self._active.discard(conn)
        if reusable and not self._closed and _reusable(conn.h11):
            conn.h11.start_next_cycle()
            conn.idle_since = trio.current_time()
            conn.response_started = False
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    def _drop(self, conn: _Connection) -> None:
        self._active.discard(conn)
        conn.close()

    def _close_idle(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class _Response:
    """A response head and the connection it holds until the body ends or ``aclose``."""

    def __init__(self, pool: H11Pool, conn: _Connection, head: h11.Response) -> None:
        self.status = head.status_code
        self.headers: Headers = list(head.headers)
        self._pool = pool
        self._conn = conn
        self._complete = False
        self._released = False

    async def receive_some(self) -> bytes:
        """Body data as it arrives, ``b""`` at the end. Cancelling closes the connection."""
        if self._complete:
            await trio.lowlevel.checkpoint()
            return b""
        if self._released:
            raise errors.UpstreamProtocolError("the response was closed before its end")
        try:
            with _translate(errors.UpstreamProtocolError, "upstream broke off the response"):
                data = await self._next_data()
        except BaseException:
            self._release(reusable=False)
            raise
        if not data:
            self._complete = True
            self._release(reusable=True)
        return data

    async def aclose(self) -> None:
        """Idempotent; keeps the connection only if the body was read to its end."""
        self._release(reusable=self._complete)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _next_data(self) -> bytes:
        while True:
            event = await self._conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                return b""
            if not isinstance(event, h11.Data):
                raise errors.UpstreamProtocolError(f"upstream sent {type(event).__name__}")
            if event.data:
                return bytes(event.data)

    def _release(self, *, reusable: bool) -> None:
        if not self._released:
            self._released = True
            self._pool._checkin(self._conn, reusable=reusable)
