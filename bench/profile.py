"""Where the proxy's CPU goes under a scenario's load (default: fast JSON), sampled with py-spy.

Starts the fake upstream and the proxy with every feature on (as :mod:`bench.suite` does), loads
it as the full-scale scenario does, and while the load runs records the proxy with
``py-spy record --format raw`` (every thread, including the dataset's workers). The raw stacks
are kept; the summary groups each sample by the part of the system it was in (the first matching
rule of ``PARTS``), then lists the functions with the most samples of their own and the
project's functions by inclusive share.

Run: ``.venv/bin/python -m bench.profile [--scenario fast|stream|slow_stream|slow_calls|mixed]
[--seconds 15] [--connections 16] [--dataset off]``
(needs ``py-spy``: the ``bench`` extra). Writes ``profile.raw.txt`` and ``profile.md`` under
``--out`` (default ``bench/results/``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from bench import loadgen, scenarios
from bench.suite import ALIAS, Settings, UpstreamProcess, running_proxy

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
Stack = list[str]
_HANDLER = ("actorproxy/proxy.py", "actorproxy/app.py", "actorproxy/asgi.py")


def _worker(stack: Stack) -> bool:
    return any("Thread._bootstrap" in frame for frame in stack)


def _provider(stack: Stack) -> bool:
    return any("actorproxy/actors/provider.py" in frame for frame in stack)


def _handler_sends(stack: Stack) -> bool:
    first = next((i for i, frame in enumerate(stack) if frame_in(frame, _HANDLER)), None)
    return first is not None and any("hypercorn/" in frame for frame in stack[first:])


def _handler(stack: Stack) -> bool:
    return any(frame_in(frame, _HANDLER) for frame in stack)


def _hypercorn(stack: Stack) -> bool:
    return any("hypercorn/" in frame for frame in stack)


def _logger(stack: Stack) -> bool:
    return any("actorproxy/actors/logger.py" in frame for frame in stack)


def frame_in(frame: str, files: Iterable[str]) -> bool:
    return any(name in frame for name in files)


PARTS: Sequence[tuple[str, Callable[[Stack], bool]]] = (
    ("dataset worker threads (derive, redact, Arrow, Parquet)", _worker),
    ("provider actor (adapter, H11 pool, upstream socket I/O)", _provider),
    ("hypercorn writing the response (called by the handler)", _handler_sends),
    ("handler (auth, body, route view, relay, dataset record)", _handler),
    ("hypercorn (HTTP parsing, per-connection tasks and timers)", _hypercorn),
    ("logger actor (event-loop side)", _logger),
    ("trio scheduler and epoll", lambda stack: True),
)


def parse_raw(text: str) -> list[tuple[Stack, int]]:
    """py-spy's raw (collapsed) format: ``frame;frame;... count`` per line."""
    samples = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples.append((stack.split(";"), int(count)))
    return samples


def summarise(samples: Sequence[tuple[Stack, int]], top: int = 25) -> str:
    """Markdown: share per part, top functions by own samples, project functions inclusive."""
    total = sum(count for _, count in samples) or 1
    parts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in samples:
        parts[next(name for name, rule in PARTS if rule(stack))] += count
        frames = [_short(frame) for frame in stack]
        own[frames[-1]] += count
        packages[package(frames[-1])] += count
        for frame in set(frames):
            if "actorproxy/" in frame:
                inclusive[frame] += count
    lines = [f"{total} samples\n", "\n| part | share |\n|---|---|\n"]
    lines += [f"| {name} | {100 * n / total:.1f}% |\n" for name, n in parts.most_common()]
    # Robust where a sampled stack lost its outer frames: only the running function counts.
    lines.append("\n| package of the running function | share |\n|---|---|\n")
    lines += [f"| {name} | {100 * n / total:.1f}% |\n" for name, n in packages.most_common()]
    lines.append("\n| function (own samples) | share |\n|---|---|\n")
    lines += [f"| `{name}` | {100 * n / total:.1f}% |\n" for name, n in own.most_common(top)]
    lines.append("\n| project function (inclusive) | share |\n|---|---|\n")
    lines += [f"| `{name}` | {100 * n / total:.1f}% |\n" for name, n in inclusive.most_common(top)]
    return "".join(lines)


def package(frame: str) -> str:
    """The top-level package of a shortened frame (``trio``, ``h11``, ...), else "other"."""
    where = frame.rpartition("(")[2]
    top = where.split("/")[0] if "/" in where else ""
    return top or ("python stdlib" if where.endswith(".py)") else "other")


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r"\(.*?(site-packages/|/(?=actorproxy/))", "(", frame)


def record(pid: int, seconds: float, rate: int, raw: Path) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(round(seconds))]
    command += ["--rate", str(rate), "--format", "raw", "--nonblocking", "-o", str(raw)]
    subprocess.run(command, check=True, capture_output=True, timeout=seconds + 60)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to sample")
    parser.add_argument("--scenario", default="fast", help="a sweep of the full suite")
    parser.add_argument("--connections", type=int, help="default: 16, or the scenario's count")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--dataset", choices=("on", "off"), default="on")
    parser.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    (scenario,) = scenarios.select("full", [args.scenario], soak_s=0)
    settings = Settings(generator=args.generator)
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "profile.raw.txt"
    connections = args.connections or (16 if scenario.name == "fast" else scenario.connections[-1])
    with (
        UpstreamProcess(scenario.upstream, cpu=settings.load_cpu) as upstream,
        running_proxy(settings, upstream.url, dataset=args.dataset == "on") as proxy,
    ):
        spec = loadgen.LoadSpec(
            url=proxy.url,
            seconds=args.seconds + 4,
            connections=connections,
            stream_fraction=scenario.stream_fraction,
            key=settings.key,
            model=ALIAS,
        )
        load = threading.Thread(
            target=loadgen.run,
            args=(spec,),
            kwargs={"generator": settings.generator_for(scenario), "cpu": settings.load_cpu},
        )
        load.start()
        time.sleep(2)  # warm: connections open, pools filled
        record(proxy.pid, args.seconds, args.rate, raw)
        load.join()
    summary = summarise(parse_raw(raw.read_text()))
    (args.out / "profile.md").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
