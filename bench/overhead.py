"""What the research dataset costs a request: the proxy with ``[dataset] dir`` versus without.

For each mode the proxy runs as ``python -m actorproxy serve`` on the zero-latency ``mock``
provider (which answers in-process, so only the proxy's own cost is measured), pinned to one CPU;
the load generator (wrk, else :mod:`bench.loadgen`'s trio client) runs pinned to another. Modes
alternate off/on/off/on, each on a fresh proxy with a warm-up, and the median per mode is
reported with the proxy's CPU time per request (all its threads, so the logger's worker threads
count) and peak RSS. In the "on" mode, the dataset's rows are counted after shutdown and set
against the 200 responses the generator saw.

Run: ``.venv/bin/python -m bench.overhead [--seconds N] [--connections C] [--rounds R]
[--generator auto|wrk|builtin] [--json OUT]``; prints (or writes) one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import pyarrow.compute as pc
import pyarrow.dataset as ds

from bench import loadgen

Mode = Literal["off", "on"]
MODES: tuple[Mode, ...] = ("off", "on")
TARGET_PCT = 5.0
_CONFIG = """\
[server]
host = "127.0.0.1"
port = 0
graceful_timeout_s = 5.0

[[providers]]
name = "mock"
kind = "mock"
max_concurrency = 256

[[models]]
name = "mock"
targets = ["mock/mock"]
"""
# Redaction as shipped: every built-in detector, values masked.
_DATASET = """
[dataset]
dir = "{dir}"

[dataset.redaction]
mode = "mask"
"""
_METRICS = (
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "cpu_ms_per_request",
    "cpu_ms_per_request_all_in",
    "rss_mib",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured run per mode")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up before each run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs; medians reported")
    parser.add_argument("--body-bytes", type=int, default=2048, help="user message size")
    parser.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto")
    parser.add_argument("--json", type=Path, help="write the result here instead of stdout")
    return parser.parse_args(argv)


def write_config(directory: Path, mode: Mode) -> Path:
    """A config for ``mode`` in ``directory``; "on" writes its dataset under ``directory/data``."""
    text = _CONFIG
    if mode == "on":
        text += _DATASET.format(dir=directory / "data")
    path = directory / f"{mode}.toml"
    path.write_text(text)
    return path


class ProxyProcess:
    """``python -m actorproxy serve`` as a child process, stopped with SIGTERM on exit."""

    def __init__(
        self, config: Path, *, cpu: int | None, env: Mapping[str, str] | None = None
    ) -> None:
        self._config = config
        self._cpu = cpu
        self._env = None if env is None else {**os.environ, **env}
        self._log = config.with_suffix(".log")
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.exit_code: int | None = None
        self.lifetime_cpu_s = 0.0

    def __enter__(self) -> Self:
        command = [*loadgen.taskset(self._cpu), sys.executable, "-m", "actorproxy", "serve"]
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [*command, "--config", str(self._config)], stderr=log, env=self._env
            )
        try:
            self.url = self._listening(deadline=time.monotonic() + 30)
            self._wait_ready(deadline=time.monotonic() + 30)
        except BaseException:
            self._process.kill()
            self._process.wait()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._require()
        # Reaping the proxy adds its whole CPU time (shutdown flush and compaction included) to
        # RUSAGE_CHILDREN; nothing else is reaped meanwhile, so the difference is the proxy's.
        before = _children_cpu_s()
        process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            self.exit_code = process.wait()
        self.lifetime_cpu_s = _children_cpu_s() - before

    def _require(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the proxy was not started")
        return self._process

    def _listening(self, deadline: float) -> str:
        # The JSON log line {"event": "listening", "urls": [...]} names the port 0 picked.
        while time.monotonic() < deadline:
            for line in self._log.read_text().splitlines():
                complete = line.startswith("{") and line.endswith("}")  # not a half-written line
                entry = json.loads(line) if complete else {}
                if entry.get("event") == "listening":
                    return str(entry["urls"][0])
            if self._require().poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the proxy did not start; its log:\n{self._log.read_text()}")

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except urllib.error.URLError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the proxy never answered /ready with 200")

    def cpu_seconds(self) -> float:
        """utime + stime of every thread so far, from ``/proc/<pid>/stat``."""
        return process_cpu_seconds(self._require().pid)

    @property
    def pid(self) -> int:
        return self._require().pid

    def peak_rss_mib(self) -> float:
        """``VmHWM``: the largest resident set so far."""
        for line in Path(f"/proc/{self._require().pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far, from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Bench:
    """One configuration of the measurement: generator, CPUs and durations."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.generator = pick_generator(args.generator)
        self.proxy_cpu, self.load_cpu = cpus()

    def load(self, url: str, seconds: float) -> loadgen.LoadResult:
        spec = loadgen.LoadSpec(
            url=url,
            seconds=seconds,
            connections=self.args.connections,
            body_bytes=self.args.body_bytes,
        )
        return loadgen.run(spec, generator=self.generator, cpu=self.load_cpu)

    def run(self, mode: Mode) -> dict[str, object]:
        """Start a fresh proxy in ``mode``, warm it up, measure, stop it, check its dataset."""
        with tempfile.TemporaryDirectory(prefix=f"bench-overhead-{mode}-") as name:
            directory = Path(name)
            with ProxyProcess(write_config(directory, mode), cpu=self.proxy_cpu) as proxy:
                cpu_ready = proxy.cpu_seconds()
                warm = self.load(proxy.url, self.args.warmup) if self.args.warmup > 0 else None
                cpu_before = proxy.cpu_seconds()
                result = self.load(proxy.url, self.args.seconds)
                cpu_used = proxy.cpu_seconds() - cpu_before
                rss = proxy.peak_rss_mib()
            row = _row(result, cpu_used, rss, proxy.exit_code)
            served = result.requests + (warm.requests if warm else 0)
            # Work deferred past the run (the last batch, compacting the open segment) counts too.
            row["cpu_ms_per_request_all_in"] = round(
                (proxy.lifetime_cpu_s - cpu_ready) * 1000 / max(served, 1), 4
            )
            if mode == "on":
                row["dataset"] = _dataset_check(directory / "data", result, warm)
            return row


def pick_generator(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "builtin"
    if choice == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("bench.overhead: --generator wrk, but wrk is not installed")
    return choice


def cpus() -> tuple[int | None, int | None]:
    # The proxy on one CPU, the generator on another: neither steals the other's core.
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2 or shutil.which("taskset") is None:
        return None, None
    return allowed[0], allowed[1]


def _row(
    result: loadgen.LoadResult, cpu_used: float, rss: float, exit_code: int | None
) -> dict[str, object]:
    return {
        "rps": round(result.rps, 1),
        "p50_ms": round(result.p50_ms, 3),
        "p90_ms": round(result.p90_ms, 3),
        "p99_ms": round(result.p99_ms, 3),
        "cpu_ms_per_request": round(cpu_used * 1000 / max(result.requests, 1), 4),
        "rss_mib": round(rss, 1),
        "requests": result.requests,
        "ok": result.ok,
        "errors": result.errors,
        "seconds": round(result.seconds, 3),
        "proxy_exit_code": exit_code,
    }


def _dataset_check(
    data: Path, measured: loadgen.LoadResult, warm: loadgen.LoadResult | None
) -> dict[str, object]:
    """Rows written versus 200 responses seen, warm-up included (the same proxy served both)."""
    table = ds.dataset(data, format="parquet", partitioning="hive").to_table(
        columns=["status_code"]
    )
    rows_200 = pc.sum(pc.equal(table["status_code"], 200)).as_py() or 0
    seen = measured.ok + (warm.ok if warm else 0)
    return {
        "parquet_files": len(list(data.glob("date=*/*.parquet"))),
        "rows": table.num_rows,
        "rows_200": rows_200,
        "responses_200": seen,
        "requests": measured.requests + (warm.requests if warm else 0),
        # wrk drops requests in flight at its deadline; the proxy may still answer and log them.
        "difference": rows_200 - seen,
    }


def summarise(runs: dict[Mode, list[dict[str, object]]]) -> dict[str, dict[str, object]]:
    """The median of each metric per mode, with errors summed over the rounds."""
    summary: dict[str, dict[str, object]] = {}
    for mode, rows in runs.items():
        medians: dict[str, object] = {
            key: round(statistics.median(_number(row[key]) for row in rows), 4) for key in _METRICS
        }
        medians["errors"] = sum(int(_number(row["errors"])) for row in rows)
        medians["runs"] = rows
        summary[mode] = medians
    return summary


def _number(value: object) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def cost(
    runs: dict[Mode, list[dict[str, object]]], summary: dict[str, dict[str, object]]
) -> dict[str, object]:
    """Relative cost of logging in percent; positive numbers mean "on" is worse.

    A round runs off then on back to back, so each pair shares the machine's state at the time:
    the median of per-round differences resists drift better than the difference of medians,
    and it decides ``within_target``.
    """
    off, on = summary["off"], summary["on"]
    pairs = list(zip(runs["off"], runs["on"], strict=True))
    drops = [-_increase(off_run, on_run, "rps") for off_run, on_run in pairs]
    p50s = [_increase(off_run, on_run, "p50_ms") for off_run, on_run in pairs]
    paired_drop, paired_p50 = statistics.median(drops), statistics.median(p50s)
    return {
        "throughput_drop_pct": -_increase(off, on, "rps"),
        "p50_increase_pct": _increase(off, on, "p50_ms"),
        "increase_pct": {key: _increase(off, on, key) for key in _METRICS},
        "paired_throughput_drop_pct": round(paired_drop, 2),
        "paired_p50_increase_pct": round(paired_p50, 2),
        "per_round_throughput_drop_pct": drops,
        "per_round_p50_increase_pct": p50s,
        "target_pct": TARGET_PCT,
        "within_target": paired_drop < TARGET_PCT and paired_p50 < TARGET_PCT,
    }


def _increase(off: Mapping[str, object], on: Mapping[str, object], key: str) -> float:
    return _pct(_number(on[key]) - _number(off[key]), _number(off[key]))


def _pct(delta: float, base: float) -> float:
    return round(100 * delta / base, 2) if base else 0.0


def machine() -> dict[str, object]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor()


def healthy(runs: dict[Mode, list[dict[str, object]]]) -> bool:
    """Every run served requests without errors and its proxy exited with status 0."""
    rows = [row for mode_rows in runs.values() for row in mode_rows]
    return all(row["errors"] == 0 and row["proxy_exit_code"] == 0 and row["ok"] for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    runs: dict[Mode, list[dict[str, object]]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            runs[mode].append(bench.run(mode))
    summary = summarise(runs)
    document = {
        "name": "overhead",
        "machine": machine(),
        "generator": bench.generator,
        "pinning": {"proxy_cpu": bench.proxy_cpu, "load_cpu": bench.load_cpu},
        "settings": {
            key: getattr(args, key)
            for key in ("seconds", "warmup", "connections", "rounds", "body_bytes")
        },
        "modes": summary,
        "logging_cost": cost(runs, summary),
    }
    text = json.dumps(document, indent=2)
    if args.json is None:
        print(text)
    else:
        args.json.write_text(text + "\n")
    return 0 if healthy(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
