"""Load for :mod:`bench.overhead`: ``wrk`` when installed, else a raw HTTP/1.1 trio client.

Both POST the same chat completion body over ``connections`` keep-alive connections for
``seconds`` and return a :class:`LoadResult`. Each runs as its own process (pinned to a CPU with
``taskset`` when the caller asks) so the generator never shares a core with the proxy.

The built-in client exists because httpx spends more CPU per request than the proxy does, so it
would measure itself. It writes one pre-built request and parses only the status line and
``content-length``. At the deadline each connection finishes the request it has in flight, so
its counts are exact; wrk instead drops in-flight requests, which the proxy may still complete.

Run alone: ``.venv/bin/python -m bench.loadgen --url http://127.0.0.1:8000 [--seconds N]``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import trio

PATH = "/v1/chat/completions"
_PROSE = (
    "the proxy forwards each request to a provider actor which owns its pool and breaker while "
    "the logger writes every record to arrow segments compacted into parquet for research on "
    "latency tokens retries streams budgets and errors across models and keys"
)
_WRK_MARK = "WRK-RESULT "
# wrk's done() hook: exact percentiles in microseconds, no unit parsing of the text report.
_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d}\\n',
    mark, summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


class LoadResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one generator run saw; ``requests`` counts every response, ``ok`` the 2xx ones."""

    generator: str
    seconds: float
    requests: int
    ok: int
    errors: int  # non-2xx responses plus connect/read/write/timeout errors
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class _WrkSummary(msgspec.Struct, frozen=True):
    requests: int
    duration_us: int
    status_errors: int
    socket_errors: int
    p50_us: int
    p90_us: int
    p99_us: int


_result_decoder = msgspec.json.Decoder(LoadResult)
_wrk_decoder = msgspec.json.Decoder(_WrkSummary)


def chat_body(size: int = 2048, seed: int = 7) -> bytes:
    """A chat request for alias ``mock`` whose user message is ``size`` bytes of prose."""
    rng = random.Random(seed)
    vocabulary = _PROSE.split()
    words: list[str] = []
    while sum(len(word) + 1 for word in words) < size:
        words.append(rng.choice(vocabulary))
    content = " ".join(words)[:size]
    return msgspec.json.encode(
        {"model": "mock", "messages": [{"role": "user", "content": content}]}
    )


def taskset(cpu: int | None) -> list[str]:
    """The command prefix that pins a process to ``cpu``; empty when not pinning."""
    if cpu is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


def run_wrk(
    url: str, body: bytes, *, seconds: float, connections: int, cpu: int | None
) -> LoadResult:
    """Run wrk with one thread (one core) and parse the line its ``done`` hook prints."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as directory:
        script = Path(directory, "chat.lua")
        script.write_text(_wrk_script(body))
        command = [
            *taskset(cpu),
            *("wrk", "--latency", "-t1", f"-c{connections}", f"-d{max(round(seconds), 1)}s"),
            *("--timeout", "10s", "-s", str(script), url + PATH),
        ]
        output = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=seconds + 30
        ).stdout
    line = next(line for line in output.splitlines() if line.startswith(_WRK_MARK))
    return _from_wrk(_wrk_decoder.decode(line.removeprefix(_WRK_MARK)))


def _wrk_script(body: bytes) -> str:
    text = body.decode()
    if "]==]" in text:
        raise ValueError("the body cannot be quoted as a Lua long string")
    return (
        f'mark = "{_WRK_MARK}"\nwrk.method = "POST"\nwrk.body = [==[{text}]==]\n'
        f'wrk.headers["Content-Type"] = "application/json"\n{_WRK_DONE}'
    )


def _from_wrk(summary: _WrkSummary) -> LoadResult:
    return LoadResult(
        generator="wrk",
        seconds=summary.duration_us / 1e6,
        requests=summary.requests,
        ok=summary.requests - summary.status_errors,
        errors=summary.status_errors + summary.socket_errors,
        p50_ms=summary.p50_us / 1000,
        p90_ms=summary.p90_us / 1000,
        p99_ms=summary.p99_us / 1000,
    )


def run_builtin(
    url: str, body_bytes: int, *, seconds: float, connections: int, cpu: int | None
) -> LoadResult:
    """Run the trio client in a child process (``python -m bench.loadgen``) and decode its JSON."""
    command = [
        *taskset(cpu),
        *(sys.executable, "-m", "bench.loadgen", "--url", url, "--seconds", str(seconds)),
        *("--connections", str(connections), "--body-bytes", str(body_bytes)),
    ]
    output = subprocess.run(command, capture_output=True, check=True, timeout=seconds + 30).stdout
    return _result_decoder.decode(output)


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.non_2xx = 0
        self.socket_errors = 0


async def hammer(url: str, body: bytes, *, seconds: float, connections: int) -> LoadResult:
    """POST ``body`` to ``url`` over ``connections`` keep-alive connections for ``seconds``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = _request(host, port, body)
    tally = _Tally()
    began = time.perf_counter()
    deadline = began + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(_connection, host, port, request, deadline, tally)
    return _summarise(tally, time.perf_counter() - began)


def _request(host: str, port: int, body: bytes) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(host: str, port: int, request: bytes, deadline: float, tally: _Tally) -> None:
    while time.perf_counter() < deadline:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            tally.socket_errors += 1
            await trio.sleep(0.01)
            continue
        async with stream:
            await _exchanges(stream, request, deadline, tally)


async def _exchanges(
    stream: trio.SocketStream, request: bytes, deadline: float, tally: _Tally
) -> None:
    reader = _Reader(stream)
    try:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            await stream.send_all(request)
            status = await reader.response()
            tally.latencies.append(time.perf_counter() - sent)
            if not 200 <= status < 300:
                tally.non_2xx += 1
    except (OSError, trio.BrokenResourceError, EOFError):
        tally.socket_errors += 1


class _Reader:
    """Reads ``content-length`` framed responses; the proxy sends no chunked JSON answers."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def response(self) -> int:
        end = await self._until(b"\r\n\r\n")
        head = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        length = _content_length(head)
        while len(self._buffer) < length:
            await self._fill()
        del self._buffer[:length]
        return int(head[9:12])

    async def _until(self, marker: bytes) -> int:
        while (end := self._buffer.find(marker)) < 0:
            await self._fill()
        return end

    async def _fill(self) -> None:
        data = await self._stream.receive_some(65536)
        if not data:
            raise EOFError("the proxy closed the connection")
        self._buffer += data


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise EOFError("a response without content-length")


def _summarise(tally: _Tally, seconds: float) -> LoadResult:
    latencies = sorted(tally.latencies)
    return LoadResult(
        generator="builtin",
        seconds=seconds,
        requests=len(latencies),
        ok=len(latencies) - tally.non_2xx,
        errors=tally.non_2xx + tally.socket_errors,
        p50_ms=_percentile(latencies, 50) * 1000,
        p90_ms=_percentile(latencies, 90) * 1000,
        p99_ms=_percentile(latencies, 99) * 1000,
    )


def _percentile(ordered: Sequence[float], percent: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the proxy's base URL")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--body-bytes", type=int, default=2048)
    args = parser.parse_args(argv)
    body = chat_body(args.body_bytes)
    result = trio.run(
        lambda: hammer(args.url, body, seconds=args.seconds, connections=args.connections)
    )
    sys.stdout.buffer.write(msgspec.json.encode(result) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
