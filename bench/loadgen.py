"""Load for the bench: ``wrk`` when installed, else the raw HTTP/1.1 client of :mod:`bench.client`.

Both POST a chat completion body over ``connections`` keep-alive connections for ``seconds`` and
return a :class:`LoadResult`. Each runs as its own process (pinned to a CPU with ``taskset`` when
the caller asks) so the generator never shares a core with the proxy. wrk reports latency only and
cannot ask for streams; the built-in client also records the time to first byte, and finishes
each request in flight at the deadline so its counts are exact (wrk drops them).

Run alone: ``.venv/bin/python -m bench.loadgen --url http://127.0.0.1:8000 [--seconds N]
[--connections C] [--stream-fraction F] [--key K]``; prints one JSON :class:`LoadResult`.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import msgspec
import trio

from bench import client
from bench.upstream import raise_fd_limit

PATH = client.PATH
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
    '%s{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,"timeouts":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d}\\n',
    mark, summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


class LoadSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One load: where, how long, how many connections, and what they send."""

    url: str
    seconds: float
    connections: int
    body_bytes: int = 2048
    stream_fraction: float = 0.0  # the share of connections that ask for SSE streams
    key: str | None = None  # sent as a bearer token
    model: str = "mock"


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
    timeouts: int = 0
    ttfb_p50_ms: float | None = None  # the built-in client only
    ttfb_p90_ms: float | None = None
    ttfb_p99_ms: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class _WrkSummary(msgspec.Struct, frozen=True):
    requests: int
    duration_us: int
    status_errors: int
    socket_errors: int
    timeouts: int
    p50_us: int
    p90_us: int
    p99_us: int


_result_decoder = msgspec.json.Decoder(LoadResult)
_wrk_decoder = msgspec.json.Decoder(_WrkSummary)
_spec_decoder = msgspec.json.Decoder(LoadSpec)
_spec_encoder = msgspec.json.Encoder()


def chat_body(
    size: int = 2048, seed: int = 7, *, model: str = "mock", stream: bool = False
) -> bytes:
    """A chat request for ``model`` whose user message is ``size`` bytes of prose."""
    rng = random.Random(seed)
    vocabulary = _PROSE.split()
    words: list[str] = []
    while sum(len(word) + 1 for word in words) < size:
        words.append(rng.choice(vocabulary))
    content = " ".join(words)[:size]
    request: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
    }
    if stream:
        request["stream"] = True
    return msgspec.json.encode(request)


def taskset(cpu: int | None) -> list[str]:
    """The command prefix that pins a process to ``cpu``; empty when not pinning."""
    if cpu is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


def run_wrk(spec: LoadSpec, *, cpu: int | None) -> LoadResult:
    """Run wrk with one thread (one core) and parse the line its ``done`` hook prints."""
    body = chat_body(spec.body_bytes, model=spec.model)
    seconds, connections = max(round(spec.seconds), 1), spec.connections
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as directory:
        script = Path(directory, "chat.lua")
        script.write_text(_wrk_script(body, spec.key))
        command = [
            *taskset(cpu),
            *("wrk", "--latency", "-t1", f"-c{connections}", f"-d{seconds}s"),
            *("--timeout", "30s", "-s", str(script), spec.url + PATH),
        ]
        output = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=seconds + 60
        ).stdout
    line = next(line for line in output.splitlines() if line.startswith(_WRK_MARK))
    return _from_wrk(_wrk_decoder.decode(line.removeprefix(_WRK_MARK)))


def _wrk_script(body: bytes, key: str | None) -> str:
    text = body.decode()
    if "]==]" in text or (key and not key.isalnum()):
        raise ValueError("the body or key cannot be quoted in Lua")
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"\n' if key else ""
    return (
        f'mark = "{_WRK_MARK}"\nwrk.method = "POST"\nwrk.body = [==[{text}]==]\n'
        f'wrk.headers["Content-Type"] = "application/json"\n{auth}{_WRK_DONE}'
    )


def _from_wrk(summary: _WrkSummary) -> LoadResult:
    return LoadResult(
        generator="wrk",
        seconds=summary.duration_us / 1e6,
        requests=summary.requests,
        ok=summary.requests - summary.status_errors,
        errors=summary.status_errors + summary.socket_errors,
        timeouts=summary.timeouts,
        p50_ms=summary.p50_us / 1000,
        p90_ms=summary.p90_us / 1000,
        p99_ms=summary.p99_us / 1000,
    )


def run_builtin(spec: LoadSpec, *, cpu: int | None) -> LoadResult:
    """Run the trio client in a child process (``python -m bench.loadgen``) and decode its JSON."""
    command = [
        *taskset(cpu),
        *(sys.executable, "-m", "bench.loadgen", "--spec", _spec_encoder.encode(spec).decode()),
    ]
    timeout = spec.seconds + 120
    output = subprocess.run(command, capture_output=True, check=True, timeout=timeout).stdout
    return _result_decoder.decode(output)


def run(spec: LoadSpec, *, generator: str, cpu: int | None) -> LoadResult:
    """``spec`` with ``generator`` ("wrk" or "builtin"); wrk cannot ask for streams."""
    if generator == "wrk" and spec.stream_fraction == 0:
        return run_wrk(spec, cpu=cpu)
    return run_builtin(spec, cpu=cpu)


async def hammer(spec: LoadSpec) -> LoadResult:
    """Run ``spec`` in this process with :mod:`bench.client`."""
    plain = client.request(spec.url, chat_body(spec.body_bytes, model=spec.model), spec.key)
    streaming = client.request(
        spec.url, chat_body(spec.body_bytes, model=spec.model, stream=True), spec.key
    )
    streams = round(spec.connections * spec.stream_fraction)
    tally, elapsed = await client.hammer(
        spec.url,
        (plain, streaming),
        seconds=spec.seconds,
        connections=spec.connections,
        streams=streams,
    )
    return summarise(tally, elapsed)


def summarise(tally: client.Tally, seconds: float) -> LoadResult:
    latencies, ttfbs = sorted(tally.latencies), sorted(tally.ttfbs)
    return LoadResult(
        generator="builtin",
        seconds=seconds,
        requests=len(latencies),
        ok=len(latencies) - tally.non_2xx,
        errors=tally.non_2xx + tally.socket_errors + tally.timeouts,
        timeouts=tally.timeouts,
        p50_ms=client.percentile(latencies, 50) * 1000,
        p90_ms=client.percentile(latencies, 90) * 1000,
        p99_ms=client.percentile(latencies, 99) * 1000,
        ttfb_p50_ms=client.percentile(ttfbs, 50) * 1000,
        ttfb_p90_ms=client.percentile(ttfbs, 90) * 1000,
        ttfb_p99_ms=client.percentile(ttfbs, 99) * 1000,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", help="a whole LoadSpec as JSON (what run_builtin passes)")
    parser.add_argument("--url", help="the server's base URL")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--body-bytes", type=int, default=2048)
    parser.add_argument("--stream-fraction", type=float, default=0.0)
    parser.add_argument("--key", help="bearer token to send")
    parser.add_argument("--model", default="mock")
    args = parser.parse_args(argv)
    if args.spec is not None:
        spec = _spec_decoder.decode(args.spec)
    elif args.url is not None:
        spec = LoadSpec(
            url=args.url,
            seconds=args.seconds,
            connections=args.connections,
            body_bytes=args.body_bytes,
            stream_fraction=args.stream_fraction,
            key=args.key,
            model=args.model,
        )
    else:
        parser.error("give --url or --spec")
    raise_fd_limit()
    result = trio.run(hammer, spec)
    sys.stdout.buffer.write(msgspec.json.encode(result) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
