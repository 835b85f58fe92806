"""Smoke test of ``bench.overhead``: both modes serve requests, the JSON has its documented shape.

Runs real proxies (subprocesses on port 0) with the built-in load generator for one second each;
it asserts no timings, only counts and keys.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import overhead

METRICS = {
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "cpu_ms_per_request",
    "cpu_ms_per_request_all_in",
    "rss_mib",
    "errors",
    "runs",
}
COST = {
    "throughput_drop_pct",
    "p50_increase_pct",
    "increase_pct",
    "paired_throughput_drop_pct",
    "paired_p50_increase_pct",
    "per_round_throughput_drop_pct",
    "per_round_p50_increase_pct",
    "target_pct",
    "within_target",
}


def test_both_modes_serve_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    argv = ["--seconds", "1", "--rounds", "1", "--warmup", "0", "--connections", "2"]

    code = overhead.main([*argv, "--generator", "builtin", "--json", str(out)])

    document = json.loads(out.read_text())
    assert code == 0
    assert document["generator"] == "builtin"
    assert {"nproc", "cpu_model", "python"} <= document["machine"].keys()
    assert set(document["logging_cost"]) == COST
    for mode in ("off", "on"):
        summary = document["modes"][mode]
        assert summary.keys() >= METRICS
        assert summary["errors"] == 0
        (run,) = summary["runs"]
        assert run["ok"] > 0
        assert run["proxy_exit_code"] == 0
    (on,) = document["modes"]["on"]["runs"]
    # The built-in generator finishes in-flight requests, so every 200 it saw is a row.
    assert on["dataset"]["rows_200"] == on["dataset"]["responses_200"] == on["ok"]
