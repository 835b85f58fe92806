"""The suite's outputs: the targets of issue 7 checked, a markdown table, and PNG plots.

``targets`` reads the scenario summaries and says, per target, what was measured and whether it
was met (``None`` when the scenario it needs did not run). Plots need matplotlib (the ``bench``
or ``dev`` extra); they use the non-interactive Agg backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]
Check = Callable[[Mapping[str, Row]], float | None]


def _point(scenarios: Mapping[str, Row], name: str, connections: int | None = None) -> Row | None:
    """The point of ``name`` at ``connections`` (the largest count when ``None``)."""
    scenario = scenarios.get(name)
    if scenario is None or not scenario["points"]:
        return None
    points = scenario["points"]
    if connections is None:
        return max(points, key=lambda row: row["connections"])  # type: ignore[no-any-return]
    return next((row for row in points if row["connections"] == connections), None)


def _best_rps(scenarios: Mapping[str, Row], name: str) -> float | None:
    scenario = scenarios.get(name)
    if scenario is None or not scenario["points"]:
        return None
    return max(float(row["proxy"]["rps"]) for row in scenario["points"])


def _field(name: str, key: str, connections: int | None = None) -> Check:
    def read(scenarios: Mapping[str, Row]) -> float | None:
        row = _point(scenarios, name, connections)
        if row is None:
            return None
        value = row[key] if key in row else row["proxy"][key]
        return None if value is None else float(value)

    return read


def _tail_ratio(scenarios: Mapping[str, Row]) -> float | None:
    row = _point(scenarios, "fast")
    if row is None or not row["proxy"]["p50_ms"]:
        return None
    return float(row["proxy"]["p99_ms"]) / float(row["proxy"]["p50_ms"])


def _logger_drop(scenarios: Mapping[str, Row]) -> float | None:
    scenario = scenarios.get("logger")
    return None if scenario is None else float(scenario["throughput_drop_pct"])


# (what, target, comparison, how to read it from the scenario summaries)
TARGETS: Sequence[tuple[str, float, str, Check]] = (
    ("fast JSON: req/s on one core (best point)", 800, ">=", lambda s: _best_rps(s, "fast")),
    ("fast JSON: added p50 at 1 conn (ms)", 1.2, "<=", _field("fast", "added_p50_ms", 1)),
    ("fast JSON: p99 at 1 conn (ms)", 3.0, "<=", _field("fast", "p99_ms", 1)),
    ("fast JSON: errors at the largest count", 0, "<=", _field("fast", "errors")),
    ("fast JSON: p99 / p50 at the largest count", 2.0, "<=", _tail_ratio),
    ("fast SSE: added ttfb p50, 1 conn (ms)", 1.5, "<=", _field("stream", "added_ttfb_p50_ms", 1)),
    ("fast SSE: streams/s (best point)", 500, ">=", lambda s: _best_rps(s, "stream")),
    ("slow SSE: share of the ideal rate", 0.95, ">=", _field("slow_stream", "efficiency")),
    ("slow SSE: errors", 0, "<=", _field("slow_stream", "errors")),
    ("slow SSE: added ttfb p99 (ms)", 100, "<=", _field("slow_stream", "added_ttfb_p99_ms")),
    ("slow JSON: share of the ideal rate", 0.95, ">=", _field("slow_calls", "efficiency")),
    ("slow JSON: errors", 0, "<=", _field("slow_calls", "errors")),
    ("slow JSON: added ttfb p99 (ms)", 100, "<=", _field("slow_calls", "added_ttfb_p99_ms")),
    ("RSS under fast load (MiB)", 100, "<=", _field("fast", "rss_peak_mib")),
    ("RSS with the slow streams open (MiB)", 150, "<=", _field("slow_stream", "rss_max_mib")),
    ("soak: RSS growth (%)", 5, "<", _field("soak", "rss_growth_pct")),
    ("logging on: throughput drop (%)", 5, "<=", _logger_drop),
)  # fmt: skip


def targets(scenarios: Sequence[Row]) -> list[dict[str, object]]:
    """Each target with its measured value and ``met`` (``None`` when not measured)."""
    by_name = {scenario["name"]: scenario for scenario in scenarios}
    checked: list[dict[str, object]] = []
    for what, goal, comparison, read in TARGETS:
        value = read(by_name)
        met = None if value is None else _compare(value, comparison, goal)
        checked.append({"target": what, "goal": f"{comparison} {goal:g}", "measured": value,
                        "met": met})  # fmt: skip
    return checked


def _compare(value: float, comparison: str, goal: float) -> bool:
    if comparison == ">=":
        return value >= goal
    if comparison == "<":
        return value < goal
    return value <= goal


_COLUMNS = (
    "| scenario | conns | direct req/s | proxy req/s | direct/proxy | proxy p50 / p90 / p99 ms "
    "| added p50 / p99 ms | added ttfb p50 / p99 ms | CPU ms/req | CPU util / wait | RSS MiB "
    "| efficiency proxy / direct | errors | load |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)


def markdown(document: Mapping[str, Any]) -> str:
    """The points table and the targets table, ready to paste into docs/benchmarks.md."""
    machine, load = document["machine"], document["load_avg_1m"]
    lines = [
        f"{document['scale']} run {document['started']} - {document['finished']} on "
        f"{machine['nproc']} x {machine['cpu_model']}, Python {machine['python']}; "
        f"generator {document['generator']}; CPUs {document['pinning']}; "
        f"load average (1 min) {load['start']} at start, {load['end']} at end.\n\n",
        _COLUMNS,
    ]
    for scenario in document["scenarios"]:
        for row in scenario["points"]:
            lines.append(_table_row(scenario, row))
    floors = [(s, row) for s in document["scenarios"] for row in s["points"] if "floor" in row]
    if floors:
        lines.append(
            "\nThe floor: bare hypercorn (`bench.floor`, a static JSON body) on the proxy's CPU\n\n"
            "| conns | req/s | p50 / p99 ms | CPU ms/req | proxy CPU ms/req | proxy minus floor |\n"
            "|---|---|---|---|---|---|\n"
        )
        lines += [_floor_row(row) for _, row in floors]
    lines.append("\n| target | goal | measured | met |\n|---|---|---|---|\n")
    for target in document["targets"]:
        measured = target["measured"]
        shown = "not run" if measured is None else f"{measured:,.3g}"
        met = {True: "yes", False: "**no**", None: "-"}[target["met"]]
        lines.append(f"| {target['target']} | {target['goal']} | {shown} | {met} |\n")
    return "".join(lines)


def _table_row(scenario: Row, row: Row) -> str:
    direct, proxy = row["direct"], row["proxy"]
    name = scenario["name"] + (f" ({row['dataset']})" if "dataset" in row else "")
    cells = [
        name,
        str(row["connections"]),
        f"{direct['rps']:,.0f}",
        f"{proxy['rps']:,.0f}",
        f"{row['direct_rps_ratio']:.2f}",
        f"{proxy['p50_ms']:.2f} / {proxy['p90_ms']:.2f} / {proxy['p99_ms']:.2f}",
        f"{row['added_p50_ms']:.2f} / {row['added_p99_ms']:.2f}",
        _pair(row["added_ttfb_p50_ms"], row["added_ttfb_p99_ms"]),
        f"{row['cpu_ms_per_request']:.3f}",
        f"{row['proxy_cpu_util']:.2f} / {row['proxy_runqueue_wait']:.2f}",
        f"{row['rss_max_mib']:.0f}",
        _pair(row["efficiency"], row["direct_efficiency"]),
        str(row["errors"]),
        f"{row['load_avg_1m']:.1f}",
    ]
    return "| " + " | ".join(cells) + " |\n"


def _floor_row(row: Row) -> str:
    floor, proxy_cpu = row["floor"], row["cpu_ms_per_request"]
    return (
        f"| {row['connections']} | {floor['rps']:,.0f} | {floor['p50_ms']:.2f} / "
        f"{floor['p99_ms']:.2f} | {floor['cpu_ms_per_request']:.3f} | {proxy_cpu:.3f} | "
        f"{proxy_cpu - floor['cpu_ms_per_request']:.3f} |\n"
    )


def _pair(first: float | None, second: float | None) -> str:
    if first is None or second is None:
        return "-"
    return f"{first:.2f} / {second:.2f}"


def plots(document: Mapping[str, Any], directory: Path) -> list[Path]:
    """``latency.png`` and ``throughput.png`` for the sweeps over connection counts."""
    import matplotlib  # optional and heavy: imported only to plot

    matplotlib.use("Agg")
    from matplotlib import pyplot

    sweeps = [s for s in document["scenarios"] if s["name"] in ("fast", "stream")]
    written = []
    figure, axes = pyplot.subplots(1, len(sweeps) or 1, figsize=(11, 4), squeeze=False)
    for axis, scenario in zip(axes[0], sweeps, strict=False):
        _latency_axis(axis, scenario)
    figure.tight_layout()
    written.append(directory / "latency.png")
    figure.savefig(written[-1], dpi=110)
    figure, axis = pyplot.subplots(figsize=(6, 4))
    for scenario in sweeps:
        _throughput_lines(axis, scenario)
    axis.set(xscale="log", xlabel="connections", ylabel="requests/s", title="throughput")
    axis.legend(fontsize="small")
    figure.tight_layout()
    written.append(directory / "throughput.png")
    figure.savefig(written[-1], dpi=110)
    pyplot.close("all")
    return written


def _latency_axis(axis: Any, scenario: Row) -> None:
    conns = [row["connections"] for row in scenario["points"]]
    for side, style in (("proxy", "-o"), ("direct", "--x")):
        for key in ("p50_ms", "p99_ms"):
            values = [row[side][key] for row in scenario["points"]]
            axis.plot(conns, values, style, label=f"{side} {key.removesuffix('_ms')}")
    axis.set(xscale="log", yscale="log", xlabel="connections", ylabel="latency (ms)")
    axis.set_title(scenario["title"], fontsize="medium")
    axis.legend(fontsize="small")


def _throughput_lines(axis: Any, scenario: Row) -> None:
    conns = [row["connections"] for row in scenario["points"]]
    for side, style in (("proxy", "-o"), ("direct", "--x")):
        values = [row[side]["rps"] for row in scenario["points"]]
        axis.plot(conns, values, style, label=f"{scenario['name']} {side}")
