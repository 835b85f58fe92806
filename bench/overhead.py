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
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pyarrow.compute as pc
import pyarrow.dataset as ds

from bench import loadgen
from bench.proxyproc import ProxyProcess

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
# The default detectors, spelled out so the bench keeps measuring redaction if defaults change.
_DATASET = """
[dataset]
dir = "{dir}"

[dataset.redaction]
mode = "mask"
detectors = ["email", "phone", "credit_card", "ip", "bearer", "api_key"]
"""
_METRICS = ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_ms_per_request", "rss_mib")


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


class Bench:
    """One configuration of the measurement: generator, CPUs and durations."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.generator = _generator(args.generator)
        self.proxy_cpu, self.load_cpu = _cpus()
        self.body = loadgen.chat_body(args.body_bytes)

    def load(self, url: str, seconds: float) -> loadgen.LoadResult:
        connections, cpu = self.args.connections, self.load_cpu
        if self.generator == "wrk":
            return loadgen.run_wrk(
                url, self.body, seconds=seconds, connections=connections, cpu=cpu
            )
        return loadgen.run_builtin(
            url, self.args.body_bytes, seconds=seconds, connections=connections, cpu=cpu
        )

    def run(self, mode: Mode) -> dict[str, object]:
        """Start a fresh proxy in ``mode``, warm it up, measure, stop it, check its dataset."""
        with tempfile.TemporaryDirectory(prefix=f"bench-overhead-{mode}-") as name:
            directory = Path(name)
            with ProxyProcess(write_config(directory, mode), cpu=self.proxy_cpu) as proxy:
                warm = self.load(proxy.url, self.args.warmup) if self.args.warmup > 0 else None
                cpu_before = proxy.cpu_seconds()
                result = self.load(proxy.url, self.args.seconds)
                cpu_used = proxy.cpu_seconds() - cpu_before
                rss = proxy.peak_rss_mib()
            row = _row(result, cpu_used, rss, proxy.exit_code)
            if mode == "on":
                row["dataset"] = _dataset_check(directory / "data", result, warm)
            return row


def _generator(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "builtin"
    if choice == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("bench.overhead: --generator wrk, but wrk is not installed")
    return choice


def _cpus() -> tuple[int | None, int | None]:
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
        medians["errors"] = sum(_number(row["errors"]) for row in rows)
        medians["runs"] = rows
        summary[mode] = medians
    return summary


def _number(value: object) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def cost(summary: dict[str, dict[str, object]]) -> dict[str, object]:
    """Relative cost of logging: positive numbers mean "on" is worse."""
    off, on = summary["off"], summary["on"]
    drop = _pct(_number(off["rps"]) - _number(on["rps"]), _number(off["rps"]))
    p50 = _pct(_number(on["p50_ms"]) - _number(off["p50_ms"]), _number(off["p50_ms"]))
    cpu = _pct(
        _number(on["cpu_ms_per_request"]) - _number(off["cpu_ms_per_request"]),
        _number(off["cpu_ms_per_request"]),
    )
    return {
        "throughput_drop_pct": drop,
        "p50_increase_pct": p50,
        "cpu_per_request_increase_pct": cpu,
        "target_pct": TARGET_PCT,
        "within_target": drop < TARGET_PCT and p50 < TARGET_PCT,
    }


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
        "logging_cost": cost(summary),
    }
    text = json.dumps(document, indent=2)
    if args.json is None:
        print(text)
    else:
        args.json.write_text(text + "\n")
    return 0 if healthy(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
