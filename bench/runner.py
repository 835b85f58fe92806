"""One scenario from start to finish: processes up, warm-up, points measured, processes down.

Every kind measures the fake upstream directly in the same run as the proxy. A sweep keeps one
proxy for all its connection counts (warm, as in production); the logger check starts a fresh
proxy per run and alternates dataset off and on, so each pair shares the machine's state.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence

import msgspec

from bench import loadgen, overhead
from bench.scenarios import Scenario
from bench.suite import (
    ChildServer,
    Sampled,
    Settings,
    UpstreamProcess,
    load_average,
    running_proxy,
    sampled,
    scrape_calls_ok,
    spec,
)

Row = dict[str, object]


def run(scenario: Scenario, settings: Settings) -> Row:
    """Measure ``scenario``; a JSON-ready summary with one row per point."""
    with UpstreamProcess(scenario.upstream, cpu=settings.load_cpu) as upstream:
        if scenario.kind == "logger":
            body = _logger(scenario, settings, upstream.url)
        else:
            body = _sweep(scenario, settings, upstream.url)
    return {
        "name": scenario.name,
        "title": scenario.title,
        "kind": scenario.kind,
        "generator": settings.generator_for(scenario),
        "seconds": scenario.seconds,
        "stream_fraction": scenario.stream_fraction,
        "upstream": msgspec.to_builtins(scenario.upstream),
        **body,
    }


def _sweep(scenario: Scenario, settings: Settings, upstream_url: str) -> Row:
    points: list[Row] = []
    with running_proxy(settings, upstream_url) as proxy:
        _warm_up(scenario, settings, proxy)
        total = len(scenario.connections)
        for done, connections in enumerate(scenario.connections, start=1):
            direct = _load(scenario, settings, _direct_spec(scenario, upstream_url, connections))
            proxied = _proxied(scenario, settings, proxy, connections)
            row = point_row(scenario, connections, direct, proxied, proxy.peak_rss_mib())
            if scenario.floor:
                row["floor"] = _floor(scenario, settings, connections)
            if scenario.kind == "soak":
                row["rss_samples_mib"] = proxied.rss_mib
                row["rss_growth_pct"] = growth_pct(proxied.rss_mib)
            points.append(row)
            _progress(f"{scenario.name}: {connections} connections measured ({done}/{total})")
        calls_ok = scrape_calls_ok(proxy.url)  # metrics are on: they counted every call
    return {"points": points, "proxy_exit_codes": [proxy.exit_code], "metrics_calls_ok": calls_ok}


def _progress(message: str) -> None:
    """A long run says where it is (stderr; stdout stays free)."""
    print(f"bench:   {message}", file=sys.stderr, flush=True)


def _floor(scenario: Scenario, settings: Settings, connections: int) -> Row:
    """Bare hypercorn on the proxy's CPU, same load: what the HTTP server alone costs."""
    with ChildServer("bench.floor", [], cpu=settings.proxy_cpu) as floor:
        measured = sampled(
            floor.pid,
            lambda: _load(scenario, settings, spec(scenario, floor.url, connections, None)),
        )
    return {
        **_figures(measured.result),
        "cpu_ms_per_request": _round(measured.cpu_s * 1000 / max(measured.result.requests, 1)),
        "cpu_util": _round(measured.cpu_s / measured.wall_s if measured.wall_s else 0.0),
    }


def _direct_spec(scenario: Scenario, upstream_url: str, connections: int) -> loadgen.LoadSpec:
    """The direct run: as long as the proxied one, but a soak's reference needs no soaking."""
    direct = spec(scenario, upstream_url, connections, None)
    if scenario.kind == "soak":
        return msgspec.structs.replace(direct, seconds=min(scenario.seconds, 10.0))
    return direct


def _logger(scenario: Scenario, settings: Settings, upstream_url: str) -> Row:
    (connections,) = scenario.connections
    direct = _load(scenario, settings, spec(scenario, upstream_url, connections, None))
    points: list[Row] = []
    exit_codes: list[int | None] = []
    for _ in range(scenario.rounds):
        for dataset in (False, True):
            with running_proxy(settings, upstream_url, dataset=dataset) as proxy:
                _warm_up(scenario, settings, proxy)
                proxied = _proxied(scenario, settings, proxy, connections)
                row = point_row(scenario, connections, direct, proxied, proxy.peak_rss_mib())
            exit_codes.append(proxy.exit_code)
            points.append({**row, "dataset": "on" if dataset else "off"})
    offs, ons = points[0::2], points[1::2]
    return {
        "points": points,
        "proxy_exit_codes": exit_codes,
        "throughput_drop_pct": _paired(offs, ons, "rps", drop=True),
        "cpu_increase_pct": _paired(offs, ons, "cpu_ms_per_request", drop=False),
    }


def _paired(offs: Sequence[Row], ons: Sequence[Row], key: str, *, drop: bool) -> float:
    """The median over rounds of the change from off to on, in percent of off."""
    changes = []
    for off, on in zip(offs, ons, strict=True):
        before, after = _metric(off, key), _metric(on, key)
        change = 100 * (after - before) / before if before else 0.0
        changes.append(-change if drop else change)
    return round(statistics.median(changes), 2)


def _metric(row: Row, key: str) -> float:
    value = row[key] if key in row else _side(row, "proxy")[key]
    if not isinstance(value, int | float):
        raise TypeError(f"{key} is not a number: {value!r}")
    return float(value)


def _side(row: Row, side: str) -> dict[str, object]:
    value = row[side]
    if not isinstance(value, dict):
        raise TypeError(f"{side} is not a mapping")
    return value


def _warm_up(scenario: Scenario, settings: Settings, proxy: overhead.ProxyProcess) -> None:
    if settings.warmup_s <= 0:
        return
    connections = min(16, max(scenario.connections))
    warm = msgspec.structs.replace(
        spec(scenario, proxy.url, connections, settings.key), seconds=settings.warmup_s
    )
    _load(scenario, settings, warm)


def _load(scenario: Scenario, settings: Settings, load: loadgen.LoadSpec) -> loadgen.LoadResult:
    generator = settings.generator_for(scenario)
    return loadgen.run(load, generator=generator, cpu=settings.load_cpu)


def _proxied(
    scenario: Scenario, settings: Settings, proxy: overhead.ProxyProcess, connections: int
) -> Sampled:
    load = spec(scenario, proxy.url, connections, settings.key)
    every_s = max(scenario.seconds / 300, 0.25)
    return sampled(proxy.pid, lambda: _load(scenario, settings, load), every_s=every_s)


def point_row(
    scenario: Scenario,
    connections: int,
    direct: loadgen.LoadResult,
    proxied: Sampled,
    peak_rss_mib: float,
) -> Row:
    """The figures of one point; ``added_*`` are proxy minus direct, ``*_ratio`` proxy/direct."""
    through = proxied.result
    ideal = scenario.ideal_rps(connections)
    return {
        "connections": connections,
        "load_avg_1m": load_average(),
        "direct": _figures(direct),
        "proxy": _figures(through),
        "added_p50_ms": _round(through.p50_ms - direct.p50_ms),
        "added_p99_ms": _round(through.p99_ms - direct.p99_ms),
        "added_ttfb_p50_ms": _added(through.ttfb_p50_ms, direct.ttfb_p50_ms),
        "added_ttfb_p99_ms": _added(through.ttfb_p99_ms, direct.ttfb_p99_ms),
        "p50_ratio": _round(through.p50_ms / direct.p50_ms if direct.p50_ms else 0.0),
        "direct_rps_ratio": _round(direct.rps / through.rps if through.rps else 0.0),
        "cpu_ms_per_request": _round(proxied.cpu_s * 1000 / max(through.requests, 1)),
        # Near 1: the proxy was CPU-bound; well below with queueing: starved or blocked.
        "proxy_cpu_util": _round(proxied.cpu_s / proxied.wall_s if proxied.wall_s else 0.0),
        "proxy_runqueue_wait": _round(
            proxied.runqueue_wait_s / proxied.wall_s if proxied.wall_s else 0.0
        ),
        "rss_max_mib": round(max(proxied.rss_mib), 1),
        "rss_peak_mib": round(peak_rss_mib, 1),
        "ideal_rps": None if ideal is None else round(ideal, 1),
        "efficiency": None if ideal is None else _round(through.rps / ideal),
        "direct_efficiency": None if ideal is None else _round(direct.rps / ideal),
        "errors": through.errors,
    }


def _figures(result: loadgen.LoadResult) -> dict[str, object]:
    figures: dict[str, object] = {
        key: _round(value) if isinstance(value, float) else value
        for key, value in msgspec.structs.asdict(result).items()
    }
    figures["rps"] = round(result.rps, 1)
    return figures


def _added(proxied: float | None, direct: float | None) -> float | None:
    return None if proxied is None or direct is None else _round(proxied - direct)


def _round(value: float) -> float:
    return round(value, 3)


def growth_pct(samples: Sequence[float]) -> float:
    """RSS growth from the run's second tenth (after warm-up effects) to its last tenth."""
    if len(samples) < 10:
        return 0.0
    tenth = len(samples) // 10
    base = statistics.median(samples[tenth : 2 * tenth])
    end = statistics.median(samples[-tenth:])
    return round(100 * (end - base) / base, 2) if base else 0.0
