"""Prometheus metrics on the proxy's own registry (never the global one).

Actor state is read from ``statistics()`` snapshots when Prometheus scrapes, so the hot path pays
nothing for it; per-request counters and histograms are kept by ``telemetry.RequestStats`` (plain
counting, once per finished request) and turned into metric families here, at scrape time too.
Labels are bounded: provider and actor names come from the config, models are configured names or
``other``. docs/observability.md lists every metric.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from actorproxy.actors.logger import LoggerActor
from actorproxy.actors.provider import ProviderActor
from actorproxy.telemetry import Histogram, RequestStats

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class ActorCollector(Collector):
    def __init__(self, actors: Mapping[str, ProviderActor], logger: LoggerActor) -> None:
        self._actors = actors
        self._logger = logger

    def collect(self) -> Iterator[Metric]:
        yield from self._providers()
        yield from self._limits()
        yield from self._logger_metrics()

    def _providers(self) -> Iterator[Metric]:
        label = ["provider"]
        in_flight = GaugeMetricFamily(
            "actorproxy_provider_in_flight", "Upstream calls in flight.", labels=label
        )
        queued = GaugeMetricFamily(
            "actorproxy_provider_queue_depth", "Calls waiting for a slot.", labels=label
        )
        breaker = GaugeMetricFamily(
            "actorproxy_provider_breaker_state", "0 closed, 1 half-open, 2 open.", labels=label
        )
        served = CounterMetricFamily(
            "actorproxy_provider_calls",
            "Upstream calls ended, by outcome.",
            labels=["provider", "outcome"],
        )
        opened = CounterMetricFamily(
            "actorproxy_provider_breaker_opened",
            "Times the breaker opened (closed or half-open to open).",
            labels=label,
        )
        restarts = CounterMetricFamily(
            "actorproxy_actor_restarts", "Restarts by the supervisor.", labels=["actor"]
        )
        for name, actor in self._actors.items():
            stats = actor.statistics()
            in_flight.add_metric([name], stats.in_flight)
            queued.add_metric([name], stats.queued)
            breaker.add_metric([name], BREAKER_STATES[stats.breaker.state])
            opened.add_metric([name], stats.breaker.opened_total)
            served.add_metric([name, "ok"], stats.served)
            served.add_metric([name, "error"], stats.failed)
            restarts.add_metric([name], stats.restarts)
        restarts.add_metric(["logger"], self._logger.statistics().restarts)
        yield from (in_flight, queued, breaker, opened, served, restarts)

    def _limits(self) -> Iterator[Metric]:
        """Admission state: what is left of the rate limits, pauses, reservations."""
        label, by_kind = ["provider"], ["provider", "limit"]
        remaining = GaugeMetricFamily(
            "actorproxy_provider_rate_remaining",
            "Requests or tokens the rate limiter can still admit in its window.",
            labels=by_kind,
        )
        paused = GaugeMetricFamily(
            "actorproxy_provider_paused_seconds",
            "Seconds admission stays paused because the upstream said stop.",
            labels=label,
        )
        reservations = GaugeMetricFamily(
            "actorproxy_provider_reservations", "Token reservations in flight.", labels=label
        )
        for name, actor in self._actors.items():
            stats = actor.statistics()
            rate = stats.admission.rate
            for kind, left in (
                ("requests", rate.remaining_requests),
                ("tokens", rate.remaining_tokens),
            ):
                if left is not None:
                    remaining.add_metric([name, kind], left)
            paused.add_metric([name], stats.paused_s)
            reservations.add_metric([name], stats.admission.reservations)
        yield from (remaining, paused, reservations)

    def _logger_metrics(self) -> Iterator[Metric]:
        stats = self._logger.statistics()
        yield GaugeMetricFamily(
            "actorproxy_logger_queue_depth", "Records waiting for the logger.", value=stats.queued
        )
        for name, value, text in (
            ("records_received", stats.received, "Records the logger took."),
            ("records_written", stats.written, "Records written to the dataset."),
            ("records_dropped", stats.dropped, "Records dropped on a full queue (on_full=drop)."),
            ("batches", stats.batches, "Batches written."),
            ("write_errors", stats.write_errors, "Failed dataset writes (retried)."),
            ("segment_bytes", stats.sink.segment_bytes, "Bytes appended to Arrow IPC segments."),
            ("segment_rotations", stats.sink.segments_closed, "IPC segments closed (rotated)."),
            ("parquet_files", stats.sink.parquet_files, "Parquet files compaction published."),
            ("parquet_bytes", stats.sink.parquet_bytes, "Bytes of published Parquet files."),
        ):
            yield CounterMetricFamily(f"actorproxy_logger_{name}", text, value=value)


class RequestCollector(Collector):
    """The counters and histograms of finished requests (``telemetry.RequestStats``)."""

    def __init__(self, stats: RequestStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        requests = CounterMetricFamily(
            "actorproxy_requests",
            "Finished requests.",
            labels=["endpoint", "model", "provider", "status"],
        )
        for key, count in list(stats.requests.items()):
            requests.add_metric(list(key), count)
        tokens = CounterMetricFamily(
            "actorproxy_tokens",
            "Tokens the upstreams reported, by kind (input, output, cached).",
            labels=["provider", "model", "kind"],
        )
        for kinds, total in list(stats.tokens.items()):
            tokens.add_metric(list(kinds), total)
        cost = CounterMetricFamily(
            "actorproxy_cost_usd",
            "Estimated cost of the reported usage at the [prices] table (priced targets only).",
            labels=["provider", "model"],
        )
        for pair, usd in list(stats.cost_usd.items()):
            cost.add_metric(list(pair), usd)
        rejections = CounterMetricFamily(
            "actorproxy_rejections",
            "Requests refused by a limit or an open breaker, by reason.",
            labels=["reason"],
        )
        for reason, count in list(stats.rejections.items()):
            rejections.add_metric([reason], count)
        yield requests
        yield tokens
        yield cost
        yield rejections
        histograms: list[tuple[str, str, list[str], Mapping[tuple[str, ...], Histogram]]] = [
            ("request", "Request latency, total.", ["endpoint", "provider"], stats.latency),
            ("upstream", "Upstream latency.", ["provider"], stats.upstream),
            ("gateway_overhead", "Total minus upstream latency.", ["endpoint"], stats.overhead),
            ("time_to_first_token", "First stream chunk.", ["provider"], stats.ttft),
            ("inter_chunk_gap", "Gap between stream chunks.", ["provider"], stats.gaps),
            ("queue_wait", "Wait for a provider slot.", ["provider"], stats.queue_wait),
        ]
        for name, text, labels, table in histograms:
            yield _histogram(f"actorproxy_{name}_seconds", text, labels, table)


def _histogram(
    name: str, text: str, labels: list[str], table: Mapping[tuple[str, ...], Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, text, labels=labels)
    for key, histogram in list(table.items()):
        family.add_metric(list(key), histogram.cumulative(), histogram.total)
    return family


def registry(
    actors: Mapping[str, ProviderActor], logger: LoggerActor, stats: RequestStats
) -> CollectorRegistry:
    built = CollectorRegistry(auto_describe=False)
    built.register(ActorCollector(actors, logger))
    built.register(RequestCollector(stats))
    return built


def render(built: CollectorRegistry) -> bytes:
    return generate_latest(built)
