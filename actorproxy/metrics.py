"""Prometheus metrics on the proxy's own registry (never the global one).

Actor state is read from ``statistics()`` snapshots when Prometheus scrapes, so the hot path pays
nothing for it. Labels are bounded: provider and actor names come from the config.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actorproxy.actors.logger import LoggerActor
from actorproxy.actors.provider import ProviderActor

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
        restarts = CounterMetricFamily(
            "actorproxy_actor_restarts", "Restarts by the supervisor.", labels=["actor"]
        )
        for name, actor in self._actors.items():
            stats = actor.statistics()
            in_flight.add_metric([name], stats.in_flight)
            queued.add_metric([name], stats.queued)
            breaker.add_metric([name], BREAKER_STATES[stats.breaker.state])
            served.add_metric([name, "ok"], stats.served)
            served.add_metric([name, "error"], stats.failed)
            restarts.add_metric([name], stats.restarts)
        restarts.add_metric(["logger"], self._logger.statistics().restarts)
        yield from (in_flight, queued, breaker, served, restarts)

    def _limits(self) -> Iterator[Metric]:
        """Admission state: what is left of the rate limits, pauses, breaker openings."""
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
        opened = CounterMetricFamily(
            "actorproxy_provider_breaker_opened", "Times the breaker opened.", labels=label
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
            opened.add_metric([name], stats.breaker.opened_total)
        yield from (remaining, paused, reservations, opened)

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
        ):
            yield CounterMetricFamily(f"actorproxy_logger_{name}", text, value=value)


def registry(actors: Mapping[str, ProviderActor], logger: LoggerActor) -> CollectorRegistry:
    built = CollectorRegistry(auto_describe=False)
    built.register(ActorCollector(actors, logger))
    return built


def render(built: CollectorRegistry) -> bytes:
    return generate_latest(built)
