"""``MockUpstream``: the ``mock`` provider kind's upstream, in process, behind the same seam.

The provider actor sends it an ``UpstreamRequest`` exactly as it would to ``H11Pool``; the reply
comes from the pure ``actorproxy.adapters.mock`` and is paced with ``trio.sleep`` by the
``MockConfig``: ``latency_ms`` before a JSON answer's head, ``ttft_ms`` before a stream's head,
and ``chunk_interval_ms`` between stream frames. The clock only stamps ``created``; pacing is
trio time, so tests run it under ``MockClock(autojump_threshold=0)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from actorproxy import errors
from actorproxy.adapters import mock
from actorproxy.config import MockConfig
from actorproxy.net.base import Headers, UpstreamRequest


class MockUpstream:
    """An ``Upstream`` that answers like an OpenAI-compatible server, with configured latency.

    Cancelling ``send`` or ``receive_some`` just stops the sleep: there is no connection to
    close and no state to repair.
    """

    def __init__(self, config: MockConfig, *, clock: Callable[[], float] | None = None) -> None:
        self._config = config
        self._clock = clock or time.time
        self._sent = 0
        self._closed = False

    async def send(self, request: UpstreamRequest) -> MockResponse:
        if self._closed:
            raise errors.UpstreamConnectFailed("The mock upstream is closed.")
        created = int(self._clock())
        reply = mock.respond(
            request.method, request.target, request.body, config=self._config, created=created
        )
        self._sent += 1
        request_id = f"req_mock_{self._sent:08x}"
        delay_ms = self._config.ttft_ms if reply.stream else self._config.latency_ms
        await trio.sleep(delay_ms / 1000)
        return MockResponse(reply, request_id, self._config.chunk_interval_ms / 1000)

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()


class MockResponse:
    """A mock reply; a stream yields one SSE frame per ``receive_some``, paced."""

    def __init__(self, reply: mock.Reply, request_id: str, interval_s: float) -> None:
        self._reply = reply
        self._interval_s = interval_s if reply.stream else 0.0
        self._next = 0
        self._closed = False
        self._headers: Headers = [
            (b"content-type", reply.content_type),
            (b"x-request-id", request_id.encode()),
        ]
        if reply.stream:
            self._headers.append((b"cache-control", b"no-cache"))
        else:
            self._headers.append((b"content-length", str(len(reply.body)).encode()))

    @property
    def status(self) -> int:
        return self._reply.status

    @property
    def headers(self) -> Headers:
        return self._headers

    async def receive_some(self) -> bytes:
        """The next frame (the whole body if not streamed); ``b""`` at the end."""
        if self._closed:
            raise trio.ClosedResourceError("the mock response was closed")
        if self._next >= len(self._reply.frames):
            await trio.lowlevel.checkpoint()
            return b""
        if self._next and self._interval_s:
            await trio.sleep(self._interval_s)
        else:
            await trio.lowlevel.checkpoint()
        frame = self._reply.frames[self._next]
        self._next += 1
        return frame

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()
