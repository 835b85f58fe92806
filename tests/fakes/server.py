"""The scaffold the fake upstreams share: a raw ASGI app on a real loopback socket.

    class FakeThing(server.FakeServer[Fault]):
        async def handle(self, scope, receive, send):
            request, seq = self.record(scope, await server.read_body(receive) or b"")
            fault = self.take_fault(request.path) if <request is valid> else None
            await server.send_response(send, 200, {"content-type": "application/json"}, [b"{}"])

    async with server.open_loopback_server(fake) as base_url:  # "http://127.0.0.1:<port>"
        ...

`FakeServer` records every request in ``requests`` (`RecordedRequest`), answers the ASGI lifespan
protocol and holds the fault script: `FakeServer.script` queues faults, FIFO, each optionally for
one path; the fake takes one with `FakeServer.take_fault` for each request it counts as valid.

How the wire behaves: `send_response` with ``cut=True`` returns before the final
``more_body=False`` message; hypercorn then closes the TCP connection without the chunked
terminator, so the client sees an incomplete body.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

__all__ = [
    "FakeServer",
    "RecordedRequest",
    "Respond",
    "open_loopback_server",
    "read_body",
    "send_head",
    "send_response",
]

F = TypeVar("F")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lowercased names; repeated headers joined with ", "
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass(frozen=True)
class Respond:
    """Answer with ``status``, ``body`` (bytes as they are, anything else as JSON) and headers."""

    status: int
    body: object = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def raw_body(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else msgspec.json.encode(self.body)


class FakeServer(ABC, Generic[F]):
    """An ASGI app that records requests and holds a script of faults of type ``F``.

    Subclasses answer HTTP requests in `handle`; lifespan messages are answered here.
    """

    def __init__(self) -> None:
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self._faults: list[tuple[str | None, F]] = []

    def script(self, *faults: F, path: str | None = None) -> None:
        """Queue ``faults`` for the next valid requests to ``path`` (any path if None), FIFO."""
        self._faults.extend((path, fault) for fault in faults)

    @property
    def unused_faults(self) -> list[F]:
        return [fault for _, fault in self._faults]

    def take_fault(self, path: str) -> F | None:
        """The first queued fault meant for ``path`` (or any path), removed from the script."""
        for index, (wanted, fault) in enumerate(self._faults):
            if wanted is None or wanted == path:
                del self._faults[index]
                return fault
        return None

    def record(self, scope: HTTPScope, body: bytes) -> tuple[RecordedRequest, int]:
        """Append the request to ``requests``; returns it and its 0-based index there."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        query = scope["query_string"].decode("latin-1")
        request = RecordedRequest(scope["method"], scope["path"], query, headers, body)
        self.requests.append(request)
        return request, len(self.requests) - 1

    @abstractmethod
    async def handle(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """Answer one HTTP request."""

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self.handle(scope, receive, send)


@asynccontextmanager
async def open_loopback_server(app: FakeServer[Any]) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (random port) until the block exits; yields its base URL.

    On exit the server is cancelled: requests still in flight are dropped.
    """
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.errorlog = _log
    config.include_server_header = False
    # Longer than any test, so a pooled idle connection is never closed under a client's feet.
    config.keep_alive_timeout = 120
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, app, config, mode="asgi"))
        try:
            yield binds[0]
        finally:
            nursery.cancel_scope.cancel()


async def read_body(receive: ASGIReceiveCallable) -> bytes | None:
    """The whole request body, or None if the client left first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)


async def send_head(send: ASGISendCallable, status: int, headers: Mapping[str, str]) -> None:
    """The response's status and headers (names lowercased)."""
    encoded = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    await send(
        {"type": "http.response.start", "status": status, "headers": encoded, "trailers": False}
    )


async def send_response(
    send: ASGISendCallable,
    status: int,
    headers: Mapping[str, str],
    frames: Iterable[bytes],
    *,
    cut: bool = False,
) -> None:
    """The head, then each frame; a cut returns before the final message, dropping the body."""
    await send_head(send, status, headers)
    for frame in frames:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    if not cut:
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
