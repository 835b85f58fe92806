"""``python -m bench`` (or ``actorproxy bench``): run the suite and write its report.

    python -m bench                          # every scenario, full scale, 10-minute soak
    python -m bench --soak-seconds 60 --scenarios fast,stream
    python -m bench --smoke                  # every scenario kind at tiny scale (seconds)

Writes ``bench.json``, ``bench.md``, ``latency.png`` and ``throughput.png`` under ``--out``
(default ``bench/results/``, which git ignores). Exits 1 when a proxied request failed or a proxy
did not stop cleanly; missed targets are reported, not failures. The parts run alone too:
``python -m bench.upstream``, ``python -m bench.loadgen``, ``python -m bench.overhead``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import overhead, report, runner, scenarios
from bench.suite import Settings, load_average, now_iso

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts and times (tests)")
    parser.add_argument("--scenarios", help="comma-separated names (default: all)")
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, help="seconds before each proxy's first point")
    parser.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-plots", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.scenarios.split(",") if args.scenarios else None
    scale: scenarios.Scale = "smoke" if args.smoke else "full"
    chosen = scenarios.select(scale, names, args.soak_seconds)
    warmup = args.warmup if args.warmup is not None else (0.2 if args.smoke else 2.0)
    settings = Settings(generator=args.generator, warmup_s=warmup)
    started, load_before = now_iso(), load_average()
    results = []
    for scenario in chosen:
        print(f"bench: {scenario.name} ...", file=sys.stderr, flush=True)
        results.append(runner.run(scenario, settings))
    document: dict[str, object] = {
        "name": "bench",
        "scale": scale,
        "started": started,
        "finished": now_iso(),
        "load_avg_1m": {"start": load_before, "end": load_average()},
        "machine": overhead.machine(),
        "generator": settings.generator,
        "pinning": {"proxy_cpu": settings.proxy_cpu, "load_and_upstream_cpu": settings.load_cpu},
        "scenarios": results,
        "targets": report.targets(results),
    }
    write(document, args.out, plots=not args.no_plots)
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0 if healthy(results) else 1


def write(document: dict[str, object], out: Path, *, plots: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "bench.md").write_text(report.markdown(document))
    if plots:
        report.plots(document, out)


def healthy(results: Sequence[dict[str, object]]) -> bool:
    """No proxied request failed and every proxy exited with status 0."""
    for scenario in results:
        points = scenario["points"]
        codes = scenario["proxy_exit_codes"]
        if not isinstance(points, list) or not isinstance(codes, list):
            return False
        if any(row["errors"] for row in points) or any(code != 0 for code in codes):
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
