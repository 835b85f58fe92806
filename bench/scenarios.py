"""The scenarios of the bench suite, at full scale and at smoke scale.

A scenario names the fake upstream's behaviour, the connection counts to sweep, how long each
point runs and what share of the connections stream. ``kind`` says how the runner treats it:
``sweep`` measures each connection count directly and through the proxy, ``soak`` runs one long
point while sampling the proxy's memory, ``logger`` alternates fresh proxies with the dataset off
and on. Smoke scale keeps every kind but shrinks counts and times to seconds, so the test suite
can run them all.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from bench.upstream import Behaviour

Kind = Literal["sweep", "soak", "logger"]
Scale = Literal["full", "smoke"]


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    title: str
    upstream: Behaviour
    connections: tuple[int, ...]
    seconds: float
    stream_fraction: float = 0.0
    builtin_only: bool = False  # needs ttfb or streams, which wrk cannot give
    kind: Kind = "sweep"
    rounds: int = 1
    floor: bool = False  # also measure bare hypercorn (bench.floor) at each point

    @property
    def call_s(self) -> float:
        """How long the upstream takes for one call (the mean when the load is mixed)."""
        up = self.upstream
        stream_s = (up.ttft_ms + (up.chunks - 1) * up.interval_ms) / 1000
        plain_s = up.latency_ms / 1000
        return self.stream_fraction * stream_s + (1 - self.stream_fraction) * plain_s

    def ideal_rps(self, connections: int) -> float | None:
        """``connections / call duration``: the rate of a zero-cost proxy (slow upstreams)."""
        return connections / self.call_s if self.call_s >= 0.05 else None


_FAST = Behaviour()
_STREAM = Behaviour(chunks=10)
_SLOW_STREAM = Behaviour(ttft_ms=2000, chunks=10, interval_ms=100)
_SLOW_CALL = Behaviour(latency_ms=5000)
_MIXED = Behaviour(latency_ms=100, ttft_ms=100, chunks=10, interval_ms=20)


def full(soak_s: float = 600.0) -> list[Scenario]:
    """Every scenario as the issue states it; a few minutes plus the soak."""
    sweep = (1, 16, 64, 256)
    return [
        Scenario(name="fast", title="fast upstream, JSON", upstream=_FAST, connections=sweep,
                 seconds=10, floor=True),
        Scenario(name="stream", title="fast upstream, 10-chunk SSE", upstream=_STREAM,
                 connections=sweep, seconds=10, stream_fraction=1.0, builtin_only=True),
        Scenario(name="slow_stream", title="slow SSE: ttft 2 s + 10 chunks 100 ms apart",
                 upstream=_SLOW_STREAM, connections=(1000,), seconds=15, stream_fraction=1.0,
                 builtin_only=True),
        Scenario(name="slow_calls", title="slow JSON: 5 s calls", upstream=_SLOW_CALL,
                 connections=(2000,), seconds=15, builtin_only=True),
        Scenario(name="mixed", title="mixed: half 100 ms JSON, half 280 ms SSE", upstream=_MIXED,
                 connections=(64, 256), seconds=10, stream_fraction=0.5, builtin_only=True),
        Scenario(name="logger", title="dataset logging off vs on (fast, 16 conns)",
                 upstream=_FAST, connections=(16,), seconds=10, kind="logger", rounds=2),
        Scenario(name="soak", title="soak: fast JSON, 64 conns", upstream=_FAST,
                 connections=(64,), seconds=soak_s, kind="soak"),
    ]  # fmt: skip


def smoke() -> list[Scenario]:
    """Every kind once at tiny scale: seconds in all, for the test suite."""
    return [
        Scenario(name="fast", title="fast upstream, JSON", upstream=_FAST, connections=(1, 4),
                 seconds=0.5, floor=True),
        Scenario(name="stream", title="fast upstream, SSE", upstream=Behaviour(chunks=3),
                 connections=(1, 4), seconds=0.5, stream_fraction=1.0, builtin_only=True),
        Scenario(name="slow_stream", title="slow SSE", connections=(20,), seconds=0.5,
                 upstream=Behaviour(ttft_ms=200, chunks=3, interval_ms=20), stream_fraction=1.0,
                 builtin_only=True),
        Scenario(name="slow_calls", title="slow JSON", upstream=Behaviour(latency_ms=300),
                 connections=(20,), seconds=0.5, builtin_only=True),
        Scenario(name="mixed", title="mixed", upstream=_MIXED, connections=(8,), seconds=0.5,
                 stream_fraction=0.5, builtin_only=True),
        Scenario(name="logger", title="dataset off vs on", upstream=_FAST, connections=(2,),
                 seconds=0.5, kind="logger"),
        Scenario(name="soak", title="soak", upstream=_FAST, connections=(2,), seconds=1.5,
                 kind="soak"),
    ]  # fmt: skip


def select(scale: Scale, names: list[str] | None, soak_s: float) -> list[Scenario]:
    """The scenarios of ``scale`` named in ``names`` (all when ``None``), in suite order."""
    chosen = smoke() if scale == "smoke" else full(soak_s)
    if names is None:
        return chosen
    unknown = set(names) - {scenario.name for scenario in chosen}
    if unknown:
        raise ValueError(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return [scenario for scenario in chosen if scenario.name in names]
