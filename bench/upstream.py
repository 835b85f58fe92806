"""A fake OpenAI upstream that is never the bottleneck: raw trio sockets, pre-built replies.

Every ``POST`` gets a fixed chat completion: JSON (``content-length``) when the body does not ask
for ``"stream": true``, else an SSE stream (``transfer-encoding: chunked``) written in exactly
``chunks`` writes, the first after ``ttft_ms`` and the rest ``interval_ms`` apart. A non-streaming
answer waits ``latency_ms`` first; ``error_rate`` of the requests (seeded, so runs repeat) get a
500 with OpenAI's error body instead. The bodies come from the ``mock`` provider's pure
``respond`` once at start-up, so they are valid OpenAI replies and cost nothing per request.

HTTP/1.1 keep-alive only, parsed by hand: the request line and headers are scanned for
``content-length`` and nothing else, which is all a proxy or load generator sends. Each
connection is one trio task, so thousands of slow streams cost only memory; ``RLIMIT_NOFILE`` is
raised to its hard limit at start.

Run alone: ``.venv/bin/python -m bench.upstream [--port 0] [--ttft-ms 2000 --chunks 10 ...]``;
it prints ``{"port": N}`` on stdout once it listens and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import msgspec
import trio

from actorproxy.adapters import mock
from actorproxy.config import MockConfig

_READ = 65536
_MAX_HEAD = 64 * 1024
_CREATED = 1_700_000_000
_PROMPT = msgspec.json.encode(
    {"model": "bench", "messages": [{"role": "user", "content": "say something"}]}
)
_ERROR = (
    b'{"error":{"message":"fake upstream error","type":"server_error","param":null,"code":null}}'
)


class _StreamView(msgspec.Struct):
    stream: bool | None = None


_view = msgspec.json.Decoder(_StreamView)


class Behaviour(msgspec.Struct, frozen=True, kw_only=True):
    """How the fake answers; the defaults are the fast upstream."""

    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    chunks: int = 10
    interval_ms: float = 0.0
    error_rate: float = 0.0
    seed: int = 7


@dataclass(frozen=True, slots=True)
class Replies:
    """Pre-encoded responses: the JSON answer, the SSE writes, the error."""

    json: bytes
    stream_head: bytes
    stream_writes: tuple[bytes, ...]
    error: bytes


def build_replies(chunks: int) -> Replies:
    """The fixed answers, the stream's events packed into exactly ``chunks`` chunked writes."""
    config = MockConfig(chunks=max(chunks, 1))
    whole = mock.respond(b"POST", "/v1/chat/completions", _PROMPT, config=config, created=_CREATED)
    stream_prompt = _PROMPT[:-1] + b',"stream":true}'
    streamed = mock.respond(
        b"POST", "/v1/chat/completions", stream_prompt, config=config, created=_CREATED
    )
    writes = [_chunk(b"".join(group)) for group in _groups(streamed.frames, max(chunks, 1))]
    writes[-1] += b"0\r\n\r\n"
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    return Replies(
        json=_response(200, whole.body),
        stream_head=head,
        stream_writes=tuple(writes),
        error=_response(500, _ERROR),
    )


def _groups(frames: Sequence[bytes], count: int) -> list[Sequence[bytes]]:
    size, extra = divmod(len(frames), count)
    groups, start = [], 0
    for index in range(min(count, len(frames))):
        end = start + size + (1 if index < extra else 0)
        groups.append(frames[start:end])
        start = end
    return groups


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _response(status: int, body: bytes) -> bytes:
    reason = b"OK" if status == 200 else b"Internal Server Error"
    return b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (
        status,
        reason,
        len(body),
        body,
    )


class FakeUpstream:
    """Serves one listener; ``served`` counts answered requests (statistics for tests)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.replies = build_replies(behaviour.chunks)
        self.served = 0
        self._random = random.Random(behaviour.seed)

    async def serve(
        self, port: int = 0, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on 127.0.0.1:``port``; report the bound port; serve until cancelled."""
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=65535)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        async with stream:
            try:
                while (body := await _read_request(stream, buffer)) is not None:
                    await self._answer(stream, body)
            except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
                return

    async def _answer(self, stream: trio.SocketStream, body: bytes) -> None:
        behaviour, replies = self.behaviour, self.replies
        failed = behaviour.error_rate > 0 and self._random.random() < behaviour.error_rate
        streaming = not failed and b'"stream"' in body and bool(_view.decode(body).stream)
        if not streaming:
            if behaviour.latency_ms > 0:
                await trio.sleep(behaviour.latency_ms / 1000)
            await stream.send_all(replies.error if failed else replies.json)
        else:
            await self._stream(stream)
        self.served += 1

    async def _stream(self, stream: trio.SocketStream) -> None:
        behaviour, writes = self.behaviour, self.replies.stream_writes
        if behaviour.ttft_ms > 0:
            await trio.sleep(behaviour.ttft_ms / 1000)
        await stream.send_all(self.replies.stream_head + writes[0])
        for data in writes[1:]:
            if behaviour.interval_ms > 0:
                await trio.sleep(behaviour.interval_ms / 1000)
            await stream.send_all(data)


async def _read_request(stream: trio.SocketStream, buffer: bytearray) -> bytes | None:
    """The next request's body, or ``None`` when the client closed between requests."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > _MAX_HEAD:
            raise ValueError("request head too large")
        data = await stream.receive_some(_READ)
        if not data:
            return None
        buffer += data
    length = _content_length(bytes(buffer[:end]))
    start = end + 4
    while len(buffer) < start + length:
        data = await stream.receive_some(_READ)
        if not data:
            return None
        buffer += data
    body = bytes(buffer[start : start + length])
    del buffer[: start + length]
    return body


def _content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    end = lower.find(b"\r\n", at + 2)
    return int(lower[at + 17 : end if end >= 0 else len(lower)])


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--interval-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    return parser.parse_args(argv)


async def _main(port: int, behaviour: Behaviour) -> None:
    upstream = FakeUpstream(behaviour)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(upstream.serve, port))
        print(json.dumps({"port": bound}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    behaviour = Behaviour(
        latency_ms=args.latency_ms,
        ttft_ms=args.ttft_ms,
        chunks=args.chunks,
        interval_ms=args.interval_ms,
        error_rate=args.error_rate,
    )
    try:
        trio.run(_main, args.port, behaviour)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
