"""The built-in load generator: a closed loop over raw HTTP/1.1 keep-alive connections on trio.

httpx spends more CPU per request than the proxy does, so it would measure itself. This client
writes pre-built requests and parses only the status line, ``content-length`` and chunked
framing. Per request it records the latency (request written to last byte read) and the time to
first byte (request written to the first byte of the response: for an SSE stream, its first
event). At the deadline each connection finishes the request it has in flight, so counts are
exact. A request that takes longer than ``timeout_s`` counts as a timeout and its connection is
replaced.

Connection ``i`` asks for a stream when ``i`` falls in the first ``stream_fraction`` of the
connections, so a mixed run keeps a fixed share of streaming clients.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio

PATH = "/v1/chat/completions"
_READ = 65536


@dataclass
class Tally:
    """Raw observations of one run; ``latencies`` and ``ttfbs`` in seconds, one per response."""

    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    non_2xx: int = 0
    socket_errors: int = 0
    timeouts: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    host: str
    port: int
    requests: tuple[bytes, bytes]  # (plain, streaming)
    stream_connections: int
    deadline: float
    timeout_s: float


def request(url: str, body: bytes, key: str | None) -> bytes:
    """The whole POST for ``body``, with a bearer ``key`` when given."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"{auth}content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def hammer(
    url: str, requests: tuple[bytes, bytes], *, seconds: float, connections: int, streams: int
) -> tuple[Tally, float]:
    """Run ``connections`` closed loops for ``seconds``; the first ``streams`` send the
    streaming request. Returns the tally and the elapsed wall time."""
    parts = urlsplit(url)
    began = time.perf_counter()
    plan = Plan(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 80,
        requests=requests,
        stream_connections=streams,
        deadline=began + seconds,
        timeout_s=max(seconds, 1.0) + 30.0,
    )
    tally = Tally()
    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(_connection, plan, index, tally)
    return tally, time.perf_counter() - began


async def _connection(plan: Plan, index: int, tally: Tally) -> None:
    payload = plan.requests[1 if index < plan.stream_connections else 0]
    while time.perf_counter() < plan.deadline:
        try:
            stream = await trio.open_tcp_stream(plan.host, plan.port)
        except OSError:
            tally.socket_errors += 1
            await trio.sleep(0.01)
            continue
        async with stream:
            await _exchanges(stream, payload, plan, tally)


async def _exchanges(stream: trio.SocketStream, payload: bytes, plan: Plan, tally: Tally) -> None:
    reader = Reader(stream)
    while time.perf_counter() < plan.deadline:
        sent = time.perf_counter()
        with trio.move_on_after(plan.timeout_s) as scope:
            try:
                await stream.send_all(payload)
                status, first = await reader.response()
            except (OSError, trio.BrokenResourceError, EOFError, ValueError):
                tally.socket_errors += 1
                return
        if scope.cancelled_caught:
            tally.timeouts += 1
            return
        done = time.perf_counter()
        tally.latencies.append(done - sent)
        tally.ttfbs.append(first - sent)
        if not 200 <= status < 300:
            tally.non_2xx += 1


class Reader:
    """Reads ``content-length`` or chunked responses; notes when the first byte arrived."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._first = 0.0

    async def response(self) -> tuple[int, float]:
        """The status of the next whole response and ``perf_counter()`` at its first byte."""
        self._first = time.perf_counter() if self._buffer else 0.0
        end = await self._until(b"\r\n\r\n")
        head = bytes(self._buffer[:end]).lower()
        del self._buffer[: end + 4]
        if b"\r\ntransfer-encoding: chunked" in head:
            await self._chunked()
        else:
            await self._exactly(_content_length(head))
        return int(head[9:12]), self._first

    async def _chunked(self) -> None:
        while True:
            end = await self._until(b"\r\n")
            size = int(bytes(self._buffer[:end]).split(b";")[0], 16)
            del self._buffer[: end + 2]
            await self._exactly(size + 2)  # the data and its CRLF
            if size == 0:
                return

    async def _exactly(self, length: int) -> None:
        while len(self._buffer) < length:
            await self._fill()
        del self._buffer[:length]

    async def _until(self, marker: bytes) -> int:
        while (end := self._buffer.find(marker)) < 0:
            await self._fill()
        return end

    async def _fill(self) -> None:
        data = await self._stream.receive_some(_READ)
        if not data:
            raise EOFError("the server closed the connection")
        if not self._first:
            self._first = time.perf_counter()
        self._buffer += data


def _content_length(head: bytes) -> int:
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise EOFError("a response with neither content-length nor chunked framing")
    end = head.find(b"\r\n", at + 2)
    return int(head[at + 17 : end if end >= 0 else len(head)])


def percentile(ordered: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of an ascending sequence; 0 for none."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]
