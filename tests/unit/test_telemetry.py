"""The pure core behind /metrics and the dashboard: buckets, percentiles, usage, labels."""

from __future__ import annotations

import pytest

from actorproxy import errors
from actorproxy.config import Price
from actorproxy.flight import Flight
from actorproxy.limits.usage import TokenUsage
from actorproxy.routing import Target
from actorproxy.telemetry import Histogram, RequestStats, percentile, usage_of


def test_histogram_buckets_are_upper_bounds_inclusive_and_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert histogram.count == 5
    assert histogram.total == 0.05 + 0.1 + 0.5 + 1.0 + 7.0


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.5) is None


def _flight(**fields: object) -> Flight:
    flight = Flight("req_1", "chat", started=10.0, wall_start=1000.0, status=200)
    for name, value in fields.items():
        setattr(flight, name, value)
    return flight


def test_usage_is_what_the_actor_read_for_a_successful_request() -> None:
    usage = TokenUsage(7, 3, 2)
    assert usage_of(_flight(usage=usage)) == usage
    assert usage_of(_flight(usage=usage, status=500)) is None
    assert usage_of(_flight()) is None


def test_observe_counts_one_request_under_bounded_labels() -> None:
    stats = RequestStats(["fast"], ["openai"])
    usage = TokenUsage(prompt=7, completion=3)
    stats.observe(
        _flight(model="fast", target=Target("openai", "m"), upstream_s=0.5, usage=usage),
        now=11.0,
        wall=1001.0,
    )
    stats.observe(_flight(model="made-up", status=404), now=10.5, wall=1000.5)
    assert stats.requests == {
        ("chat", "fast", "openai", "200"): 1,
        ("chat", "other", "none", "404"): 1,
    }
    assert stats.tokens == {("openai", "fast", "input"): 7, ("openai", "fast", "output"): 3}
    assert stats.overhead[("chat",)].total == 0.5
    view = stats.provider_view("openai")
    assert (view.requests, view.tokens_out, view.p50_ms) == (1, 3, 1000.0)
    assert [r.status for r in stats.recent] == [200, 404]


def test_gaps_between_chunk_offsets_are_observed_in_seconds() -> None:
    histogram = Histogram((0.001, 0.01))
    histogram.observe_gaps([0.0, 0.5, 5.5, 25.5])
    assert histogram.cumulative() == [("0.001", 1), ("0.01", 2), ("+Inf", 3)]
    assert histogram.total == pytest.approx(0.0255)
    histogram.observe_gaps([7.0])
    assert histogram.count == 3


def test_cost_is_the_usage_at_the_served_targets_price() -> None:
    prices = {"m": Price(input=2.0, cached_input=1.0, output=10.0)}
    stats = RequestStats(["fast"], ["openai", "local"], prices)
    usage = TokenUsage(prompt=1_000_000, completion=100_000, cached=400_000)
    for target in (Target("openai", "m"), Target("local", "unpriced")):
        stats.observe(_flight(model="fast", target=target, usage=usage), now=11.0, wall=1001.0)
    # 600k uncached at $2/M, 400k cached at $1/M, 100k output at $10/M
    assert stats.cost_usd == {("openai", "fast"): pytest.approx(1.2 + 0.4 + 1.0)}


def test_refusals_are_counted_by_the_limit_that_refused() -> None:
    stats = RequestStats([], [])
    refusals = [
        errors.RateLimited("busy", retry_after_s=1.0, reason="key_rate"),
        errors.RateLimited("busy", retry_after_s=1.0, reason="key_rate"),
        errors.QuotaExceeded("spent", retry_after_s=1.0, reason="key_budget"),
        errors.CircuitOpen("failing"),
        errors.Unavailable("nothing"),
        errors.UpstreamTimeout("slow"),  # not a refusal
    ]
    for error in refusals:
        stats.observe(_flight(error=error, status=error.status), now=11.0, wall=1001.0)
    assert stats.rejections == {
        "key_rate": 2,
        "key_budget": 1,
        "breaker_open": 1,
        "unavailable": 1,
    }
