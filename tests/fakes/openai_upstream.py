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

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

from tests.fakes import openai_bodies as bodies
from tests.fakes import server
from tests.fakes.openai_checks import error_body
from tests.fakes.server import RecordedRequest, Respond

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


class FakeOpenAI(server.FakeServer[Fault]):
    """The ASGI app and what tests observe: ``requests``, ``disconnects``, ``max_in_flight``.

    ``script(*faults, path=None)`` queues faults for the next valid requests to ``path`` (any
    path if None), FIFO; ``unused_faults`` lists those not consumed yet.
    """

    def __init__(self, api_key: str, models: Collection[str]) -> None:
        super().__init__()
        self.api_key = api_key
        self.models = models
        self.disconnects = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._disconnected = trio.Event()

    async def wait_disconnects(self, count: int = 1) -> None:
        """Return once ``count`` requests in total have lost their client before the end."""
        while self.disconnects < count:
            await self._disconnected.wait()

    async def handle(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        flight = _InFlight(self)
        try:
            await self._http(scope, receive, _Response(send, flight))
        finally:
            flight.release()

    async def _http(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, response: _Response
    ) -> None:
        body = await server.read_body(receive)
        if body is None:
            self._note_disconnect()
            return
        request, seq = self.record(scope, body)
        answer = bodies.reply(request, api_key=self.api_key, models=self.models, seq=seq)
        valid = isinstance(answer, bodies.SseReply) or answer.status < 400
        response.request_id = f"req_{seq}"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, receive, response, nursery.cancel_scope)
            await response.perform(answer, self.take_fault(request.path) if valid else None)
            nursery.cancel_scope.cancel()

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
    async with server.open_loopback_server(fake) as base_url:
        fake.base_url = f"{base_url}/v1"
        yield fake


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
            case Respond():
                await self._json(bodies.JsonReply(fault.status, fault.raw_body()), fault.headers)
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
        await server.send_head(self._send, status, {"x-request-id": self.request_id, **headers})

    async def _finish(self, body: bytes) -> None:
        self.finishing = True
        self._flight.release()
        await self._send({"type": "http.response.body", "body": body, "more_body": False})
