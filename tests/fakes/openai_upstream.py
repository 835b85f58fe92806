"""A fake OpenAI API on a real loopback socket, for end-to-end tests of the proxy.

    async with open_fake_openai() as fake:
        fake.script(Respond(429, error_body("slow down", type="requests"), {"retry-after": "1"}))
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)
        ...
        assert fake.requests[-1].json()["model"] == "gpt-4o-mini"

Bodies, validation and usage numbers are documented in `tests.fakes.openai_bodies`; rejections in
`tests.fakes.openai_checks`. This module is the I/O: a raw ASGI app served by
``hypercorn.trio.serve`` on 127.0.0.1 port 0, plus the fault script.

Faults (`Respond`, `Delay`, `Hang`, `Cut`, `Slow`) are queued with `FakeOpenAI.script` and each is
consumed by the next request that matches its path and passes auth and validation (a malformed
request gets its normal 4xx and leaves the queue alone). Without a fault a request is answered
normally.

How the wire behaves: a cut (`Cut`) is the app returning before its final ``more_body=False``
message; hypercorn then closes the TCP connection without the chunked terminator, so the client
sees an incomplete body (httpx: ``RemoteProtocolError: incomplete chunked read``). A client going
away reaches the app as ``http.disconnect`` (hypercorn reads EOF concurrently with the response);
a watcher task counts it in `FakeOpenAI.disconnects` (``await fake.wait_disconnects(n)``
returns once n have happened) and cancels the request's work. A request stops counting in
`FakeOpenAI.in_flight` just before its last byte is handed over, or when its client leaves.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

from tests.fakes import openai_bodies as bodies
from tests.fakes.openai_bodies import RecordedRequest
from tests.fakes.openai_checks import error_body

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MODELS",
    "Cut",
    "Delay",
    "FakeOpenAI",
    "Fault",
    "Hang",
    "RecordedRequest",
    "Respond",
    "Slow",
    "error_body",
    "open_fake_openai",
]

DEFAULT_API_KEY = "sk-upstream-test"
DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "gpt-3.5-turbo-instruct")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Respond:
    """Answer with ``status``, ``body`` (bytes as they are, anything else as JSON) and headers."""

    status: int
    body: object = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delay:
    """Answer normally after ``seconds``, before the head is sent."""

    seconds: float


@dataclass(frozen=True)
class Hang:
    """Never answer; the request ends when its client goes away (see `FakeOpenAI.disconnects`)."""


@dataclass(frozen=True)
class Cut:
    """Send the head and the first ``after_chunks`` SSE events, then drop the connection.

    A non-streaming answer is cut after the first half of its body (``after_chunks`` unused).
    """

    after_chunks: int
    interval: float = 0.0


@dataclass(frozen=True)
class Slow:
    """Stream normally, waiting ``interval`` seconds before each SSE event."""

    interval: float


Fault = Respond | Delay | Hang | Cut | Slow


class FakeOpenAI:
    """The ASGI app and what tests observe: ``requests``, ``disconnects``, ``max_in_flight``."""

    def __init__(self, api_key: str, models: Collection[str]) -> None:
        self.api_key = api_key
        self.models = models
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: list[tuple[str | None, Fault]] = []
        self._disconnected = trio.Event()

    def script(self, *faults: Fault, path: str | None = None) -> None:
        """Queue ``faults`` for the next valid requests to ``path`` (any path if None), FIFO."""
        self._faults.extend((path, fault) for fault in faults)

    @property
    def unused_faults(self) -> list[Fault]:
        return [fault for _, fault in self._faults]

    async def wait_disconnects(self, count: int = 1) -> None:
        """Return once ``count`` requests in total have lost their client before the end."""
        while self.disconnects < count:
            await self._disconnected.wait()

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            flight = _InFlight(self)
            try:
                await self._http(scope, receive, _Response(send, flight))
            finally:
                flight.release()

    async def _http(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, response: _Response
    ) -> None:
        body = await _read_body(receive)
        if body is None:
            self._note_disconnect()
            return
        request = _record(scope, body)
        seq = len(self.requests)
        self.requests.append(request)
        answer = bodies.reply(request, api_key=self.api_key, models=self.models, seq=seq)
        valid = isinstance(answer, bodies.SseReply) or answer.status < 400
        response.request_id = f"req_{seq}"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, receive, response, nursery.cancel_scope)
            await response.perform(answer, self._take_fault(request.path) if valid else None)
            nursery.cancel_scope.cancel()

    def _take_fault(self, path: str) -> Fault | None:
        for index, (wanted, fault) in enumerate(self._faults):
            if wanted is None or wanted == path:
                del self._faults[index]
                return fault
        return None

    async def _watch(
        self, receive: ASGIReceiveCallable, response: _Response, scope: trio.CancelScope
    ) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not response.finishing:
            response.abandon()
            self._note_disconnect()
            scope.cancel()

    def _note_disconnect(self) -> None:
        self.disconnects += 1
        self._disconnected.set()
        self._disconnected = trio.Event()


@asynccontextmanager
async def open_fake_openai(
    api_key: str = DEFAULT_API_KEY, *, models: Collection[str] = DEFAULT_MODELS
) -> AsyncIterator[FakeOpenAI]:
    """Serve a `FakeOpenAI` on 127.0.0.1 (random port) until the block exits.

    On exit the server is cancelled: requests still in flight (e.g. `Hang`) are dropped without
    counting as disconnects.
    """
    fake = FakeOpenAI(api_key, models)
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.errorlog = _log
    config.include_server_header = False
    # Longer than any test, so a pooled idle connection is never closed under a client's feet.
    config.keep_alive_timeout = 120
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, fake, config, mode="asgi"))
        fake.base_url = f"{binds[0]}/v1"
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()


class _InFlight:
    """One request's share of `FakeOpenAI.in_flight`, held until the last byte of its answer is
    handed to the server (so a client that saw the end never races the count) or the app returns.
    """

    def __init__(self, fake: FakeOpenAI) -> None:
        self._fake = fake
        self._held = True
        fake.in_flight += 1
        fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)

    def release(self) -> None:
        if self._held:
            self._held = False
            self._fake.in_flight -= 1


class _Response:
    """Sends one answer, shaped by a fault; ``finishing`` is set just before the final message,
    so a disconnect seen after it is the normal end of the exchange, not a client leaving."""

    def __init__(self, send: ASGISendCallable, flight: _InFlight) -> None:
        self._send = send
        self._flight = flight
        self.request_id = ""
        self.finishing = False

    def abandon(self) -> None:
        """The client left: this request is no longer in flight."""
        self._flight.release()

    async def perform(self, answer: bodies.Reply, fault: Fault | None) -> None:
        match fault:
            case Hang():
                await trio.sleep_forever()
            case Respond(status=status, body=body, headers=headers):
                raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
                await self._json(bodies.JsonReply(status, raw), headers)
            case Delay(seconds=seconds):
                await trio.sleep(seconds)
                await self._answer(answer)
            case Slow(interval=interval):
                await self._answer(answer, interval=interval)
            case Cut(after_chunks=after_chunks, interval=interval):
                await self._answer(answer, interval=interval, cut_after=after_chunks)
            case None:
                await self._answer(answer)

    async def _answer(
        self, answer: bodies.Reply, *, interval: float = 0.0, cut_after: int | None = None
    ) -> None:
        if isinstance(answer, bodies.JsonReply):
            await self._json(answer, {}, cut=cut_after is not None)
            return
        await self._head(200, {"content-type": "text/event-stream; charset=utf-8"})
        for index, event in enumerate(answer.events):
            if index == cut_after:
                return
            await trio.sleep(interval)
            await self._send({"type": "http.response.body", "body": event, "more_body": True})
        await self._finish(b"")

    async def _json(
        self, answer: bodies.JsonReply, headers: Mapping[str, str], *, cut: bool = False
    ) -> None:
        fields = {"content-type": "application/json", "content-length": str(len(answer.body))}
        fields |= {name.lower(): value for name, value in headers.items()}
        await self._head(answer.status, fields)
        if cut:
            half = answer.body[: len(answer.body) // 2]
            await self._send({"type": "http.response.body", "body": half, "more_body": True})
        else:
            await self._finish(answer.body)

    async def _head(self, status: int, headers: Mapping[str, str]) -> None:
        fields = {"x-request-id": self.request_id, **headers}
        encoded = [(name.encode(), value.encode()) for name, value in fields.items()]
        await self._send(
            {"type": "http.response.start", "status": status, "headers": encoded, "trailers": False}
        )

    async def _finish(self, body: bytes) -> None:
        self.finishing = True
        self._flight.release()
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: ASGIReceiveCallable) -> bytes | None:
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


def _record(scope: HTTPScope, body: bytes) -> bodies.RecordedRequest:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return bodies.RecordedRequest(
        method=scope["method"],
        path=scope["path"],
        query=scope["query_string"].decode("latin-1"),
        headers=headers,
        body=body,
    )


async def _lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
