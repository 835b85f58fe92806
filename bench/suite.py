"""Runs the scenarios: fake upstream, proxy under test and load, each its own process.

The proxy runs with every feature on: an API key, a model alias routed to the fake upstream
through the ``openai`` provider kind (the real H11 pool), metrics, and the dataset written to a
temporary directory with the default redaction. It is pinned to one CPU; the fake upstream and
the load generator share the other, so the proxy never competes with its load.

Each point of a sweep is measured twice in the same run, once straight at the fake upstream and
once through the proxy, so the report can state the proxy's cost as added latency and as a ratio,
which stay comparable on a noisy machine. While the proxied load runs, the proxy's resident set
is sampled from ``/proc``; its CPU time comes from ``/proc/<pid>/stat`` before and after.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from bench import loadgen, overhead
from bench.scenarios import Scenario
from bench.upstream import Behaviour

KEY_ENV = "ACTORPROXY_BENCH_KEY"
ALIAS = "bench"
_CONFIG = """\
[server]
host = "127.0.0.1"
port = 0
graceful_timeout_s = 10.0

[auth]
master_key_env = "{key_env}"

[[providers]]
name = "fake"
kind = "openai"
base_url = "{upstream}/v1"
max_concurrency = 4096
max_queue = 4096
request_timeout_s = 120.0

[[models]]
name = "{alias}"
targets = ["fake/gpt-bench"]
"""
_DATASET = """
[dataset]
dir = "{dir}"

[dataset.redaction]
mode = "mask"
"""


@dataclass
class Settings:
    """What stays fixed across scenarios: generator, CPUs, warm-up, the proxy's key."""

    generator: str = "auto"
    warmup_s: float = 2.0
    proxy_cpu: int | None = None
    load_cpu: int | None = None
    key: str = field(default_factory=lambda: "bench" + secrets.token_hex(16))

    def __post_init__(self) -> None:
        self.generator = overhead.pick_generator(self.generator)
        self.proxy_cpu, self.load_cpu = overhead.cpus()

    def generator_for(self, scenario: Scenario) -> str:
        return "builtin" if scenario.builtin_only else self.generator


class ChildServer:
    """A ``python -m ...`` server as a child process that prints ``{"port": N}`` once listening."""

    def __init__(self, module: str, arguments: list[str], *, cpu: int | None) -> None:
        self._command = [*loadgen.taskset(cpu), sys.executable, "-m", module, *arguments]
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> Self:
        self._process = process = subprocess.Popen(self._command, stdout=subprocess.PIPE)
        line = process.stdout.readline() if process.stdout else b""
        if not line:
            process.kill()
            process.wait()
            raise RuntimeError(f"{' '.join(self._command)} did not start")
        self.url = f"http://127.0.0.1:{json.loads(line)['port']}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            if self._process.stdout:
                self._process.stdout.close()

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("not started")
        return self._process.pid


class UpstreamProcess(ChildServer):
    """``python -m bench.upstream`` with ``behaviour``."""

    def __init__(self, behaviour: Behaviour, *, cpu: int | None) -> None:
        arguments = [
            *("--chunks", str(behaviour.chunks), "--latency-ms", str(behaviour.latency_ms)),
            *("--ttft-ms", str(behaviour.ttft_ms), "--interval-ms", str(behaviour.interval_ms)),
            *("--error-rate", str(behaviour.error_rate)),
        ]
        super().__init__("bench.upstream", arguments, cpu=cpu)


def proxy_config(directory: Path, upstream_url: str, *, dataset: bool) -> Path:
    """The proxy's config with every feature on (``dataset=False`` only for the logger check)."""
    text = _CONFIG.format(key_env=KEY_ENV, upstream=upstream_url, alias=ALIAS)
    if dataset:
        text += _DATASET.format(dir=directory / "data")
    path = directory / ("on.toml" if dataset else "off.toml")
    path.write_text(text)
    return path


@contextmanager
def running_proxy(
    settings: Settings, upstream_url: str, *, dataset: bool = True
) -> Iterator[overhead.ProxyProcess]:
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as name:
        config = proxy_config(Path(name), upstream_url, dataset=dataset)
        env = {KEY_ENV: settings.key}
        with overhead.ProxyProcess(config, cpu=settings.proxy_cpu, env=env) as proxy:
            yield proxy


def spec(scenario: Scenario, url: str, connections: int, key: str | None) -> loadgen.LoadSpec:
    return loadgen.LoadSpec(
        url=url,
        seconds=scenario.seconds,
        connections=connections,
        stream_fraction=scenario.stream_fraction,
        key=key,
        model=ALIAS,
    )


@dataclass
class Sampled:
    """A proxied load's result with the proxy's CPU seconds and RSS samples (MiB) during it."""

    result: loadgen.LoadResult
    cpu_s: float
    rss_mib: list[float]
    wall_s: float
    runqueue_wait_s: float  # time the proxy's threads were runnable but not on a CPU


def rss_mib(pid: int) -> float:
    """``VmRSS`` of ``pid`` now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sampled(pid: int, load: Callable[[], loadgen.LoadResult], every_s: float = 0.25) -> Sampled:
    """Run ``load`` in a thread while sampling ``pid``'s RSS every ``every_s`` seconds."""
    box: list[loadgen.LoadResult] = []
    failures: list[BaseException] = []

    def target() -> None:
        try:
            box.append(load())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failures.append(exc)

    cpu_before, wait_before, began = (
        overhead.process_cpu_seconds(pid),
        runqueue_wait_s(pid),
        time.monotonic(),
    )
    worker = threading.Thread(target=target, name="bench-load")
    worker.start()
    samples = [rss_mib(pid)]
    while worker.is_alive():
        worker.join(every_s)
        samples.append(rss_mib(pid))
    if failures:
        raise failures[0]
    cpu_s, wall_s = overhead.process_cpu_seconds(pid) - cpu_before, time.monotonic() - began
    waited = runqueue_wait_s(pid) - wait_before
    return Sampled(box[0], cpu_s, samples, wall_s, waited)


def runqueue_wait_s(pid: int) -> float:
    """Seconds ``pid``'s live threads spent waiting for a CPU (``/proc/<pid>/task/*/schedstat``).

    On a shared machine this says whether a slow point was the proxy's own cost or neighbours
    holding the proxy's core; 0 where the kernel keeps no schedstats.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended, or no schedstats
    return total / 1e9


def scrape_calls_ok(url: str, provider: str = "fake") -> int:
    """``actorproxy_provider_calls_total{outcome="ok"}`` for ``provider`` from ``/metrics``."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("actorproxy_provider_calls_total{") and (
            f'provider="{provider}"' in line and 'outcome="ok"' in line
        ):
            return int(float(line.rpartition(" ")[2]))
    return 0


def load_average() -> float:
    """The one-minute load average, recorded with every point (the machine is shared)."""
    return round(os.getloadavg()[0], 2)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
