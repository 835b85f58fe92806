"""Smoke run of the whole bench suite (``python -m bench --smoke``) so it never rots.

Every scenario kind runs once at tiny scale with real processes on loopback: the fake upstream,
the proxy under test (auth, alias routing, metrics, dataset logging) and the built-in load
client. It asserts what the report holds, never how fast anything was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import __main__ as bench_main
from bench import report, scenarios

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("bench")
    code = bench_main.main(
        ["--smoke", "--generator", "builtin", "--warmup", "0", "--out", str(out)]
    )
    return code, out


def _document(out: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((out / "bench.json").read_text())
    return document


def test_the_smoke_run_is_healthy(smoke: tuple[int, Path]) -> None:
    code, out = smoke
    document = _document(out)

    assert code == 0
    assert document["scale"] == "smoke"
    assert [s["name"] for s in document["scenarios"]] == [s.name for s in scenarios.smoke()]
    assert {"nproc", "cpu_model", "python"} <= document["machine"].keys()
    for scenario in document["scenarios"]:
        assert scenario["proxy_exit_codes"] and set(scenario["proxy_exit_codes"]) == {0}
        if scenario["kind"] != "logger":  # warm-up and proxied calls, all counted by /metrics
            proxied = sum(row["proxy"]["ok"] for row in scenario["points"])
            assert scenario["metrics_calls_ok"] >= proxied


def test_every_point_measures_direct_and_proxied(smoke: tuple[int, Path]) -> None:
    for scenario in _document(smoke[1])["scenarios"]:
        for row in scenario["points"]:
            assert row["errors"] == 0
            assert row["direct"]["ok"] > 0 and row["proxy"]["ok"] > 0
            assert row["proxy"]["requests"] == row["proxy"]["ok"]
            assert row["cpu_ms_per_request"] > 0
            assert row["rss_max_mib"] > 0
            assert row["direct_rps_ratio"] > 0


def test_streams_and_slow_upstreams_report_ttfb_and_efficiency(smoke: tuple[int, Path]) -> None:
    by_name = {s["name"]: s for s in _document(smoke[1])["scenarios"]}

    for name in ("stream", "slow_stream", "slow_calls", "mixed"):
        for row in by_name[name]["points"]:
            assert row["proxy"]["ttfb_p50_ms"] is not None
            assert row["added_ttfb_p99_ms"] is not None
    for name in ("slow_stream", "slow_calls"):
        (row,) = by_name[name]["points"]
        assert row["ideal_rps"] > 0 and row["efficiency"] > 0


def test_the_fast_sweep_measures_the_bare_server_floor(smoke: tuple[int, Path]) -> None:
    (fast,) = [s for s in _document(smoke[1])["scenarios"] if s["name"] == "fast"]

    for row in fast["points"]:
        assert row["floor"]["ok"] > 0 and row["floor"]["errors"] == 0
        assert row["floor"]["cpu_ms_per_request"] > 0
    assert "The floor: bare hypercorn" in (smoke[1] / "bench.md").read_text()


def test_logger_and_soak_have_their_summaries(smoke: tuple[int, Path]) -> None:
    by_name = {s["name"]: s for s in _document(smoke[1])["scenarios"]}

    logger = by_name["logger"]
    assert [row["dataset"] for row in logger["points"]] == ["off", "on"]
    assert isinstance(logger["throughput_drop_pct"], float)
    (soak,) = by_name["soak"]["points"]
    assert len(soak["rss_samples_mib"]) >= 2
    assert isinstance(soak["rss_growth_pct"], float)


def test_targets_markdown_and_plots_are_written(smoke: tuple[int, Path]) -> None:
    out = smoke[1]
    document = _document(out)
    markdown = (out / "bench.md").read_text()

    assert len(document["targets"]) == len(report.TARGETS)
    assert all(target["measured"] is not None for target in document["targets"])
    for scenario in document["scenarios"]:
        assert f"| {scenario['name']}" in markdown
    for target in document["targets"]:
        assert target["target"] in markdown
    for name in ("latency.png", "throughput.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
