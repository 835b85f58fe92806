"""Per-request statistics: the pure core behind ``/metrics`` and the dashboard.

The handler calls ``RequestStats.observe`` once per finished request, after the response has been
sent, with the request's ``Flight`` and ``now``. Everything here is plain counting: dict lookups,
one ``bisect`` per histogram observation, no locks, no clock, no I/O. Prometheus reads the result
at scrape time (``metrics.RequestCollector``); the dashboard reads ``provider_view`` and ``recent``.

Labels are bounded: ``model`` is the requested name only when it is a configured alias or target,
else ``"other"``; ``provider`` comes from the config (``"none"`` before routing); ``status`` is an
HTTP status; ``endpoint`` one of a handful of names.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Protocol

from actorproxy import errors
from actorproxy.config import Price
from actorproxy.limits.gate import price_for
from actorproxy.limits.keys import cost_usd
from actorproxy.limits.usage import TokenUsage
from actorproxy.routing import Target

#: Seconds; request, upstream, first-token and queue-wait latencies.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Seconds; what the gateway adds, and the gap between two stream chunks.
FINE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
OTHER = "other"
RECENT = 50
WINDOW = 512  # latencies kept per provider for the dashboard's percentiles


class Flight(Protocol):
    """What telemetry reads of a finished request (``flight.Flight`` has it all)."""

    @property
    def request_id(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def started(self) -> float: ...
    @property
    def model(self) -> str | None: ...
    @property
    def target(self) -> Target | None: ...
    @property
    def stream(self) -> bool: ...
    @property
    def status(self) -> int: ...
    @property
    def error(self) -> errors.ProxyError | None: ...
    @property
    def upstream_s(self) -> float | None: ...
    @property
    def queue_s(self) -> float | None: ...
    @property
    def usage(self) -> TokenUsage | None: ...
    @property
    def chunk_offsets_ms(self) -> list[float]: ...


class Histogram:
    """Bucket counts (non-cumulative, the last one is +Inf) and the sum of the observations."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def observe_gaps(self, offsets_ms: list[float]) -> None:
        """Observe the gaps between successive offsets (milliseconds), in seconds."""
        counts, bounds, total = self.counts, self.bounds, 0.0
        for before, after in pairwise(offsets_ms):
            gap = (after - before) / 1000
            counts[bisect_left(bounds, gap)] += 1
            total += gap
        self.total += total

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        running, pairs = 0, []
        for bound, count in zip([*self.bounds, math.inf], self.counts, strict=True):
            running += count
            pairs.append(("+Inf" if bound == math.inf else repr(bound), running))
        return pairs

    @property
    def count(self) -> int:
        return sum(self.counts)


def usage_of(flight: Flight) -> TokenUsage | None:
    """The usage the upstream reported for a successful request (read once, by the actor)."""
    return flight.usage if 200 <= flight.status < 300 else None


@dataclass(frozen=True, slots=True)
class Recent:
    """One finished request as the dashboard lists it: no body, no key."""

    request_id: str
    ts: float
    endpoint: str
    model: str
    provider: str
    status: int
    latency_ms: float
    tokens_out: int


@dataclass(slots=True)
class ProviderTotals:
    requests: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))


@dataclass(frozen=True, slots=True)
class ProviderView:
    requests: int
    errors: int
    tokens_in: int
    tokens_out: int
    p50_ms: float | None
    p99_ms: float | None


class RequestStats:
    """Counters and histograms keyed by bounded label tuples (see the module doc)."""

    def __init__(
        self,
        models: Iterable[str],
        providers: Iterable[str],
        prices: Mapping[str, Price] | None = None,
    ) -> None:
        """``prices``: the config's ``[prices]``, for the estimated cost of each request."""
        self._models = frozenset(models)
        self.providers = list(providers)
        self._prices = prices or {}
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.tokens: dict[tuple[str, str, str], int] = {}
        self.cost_usd: dict[tuple[str, str], float] = {}  # (provider, model), priced targets only
        self.rejections: dict[str, int] = {}  # refusals by which limit refused (``reason``)
        self.latency: dict[tuple[str, ...], Histogram] = {}
        self.upstream: dict[tuple[str, ...], Histogram] = {}
        self.overhead: dict[tuple[str, ...], Histogram] = {}
        self.ttft: dict[tuple[str, ...], Histogram] = {}
        self.gaps: dict[tuple[str, ...], Histogram] = {}
        self.queue_wait: dict[tuple[str, ...], Histogram] = {}
        self.totals = {name: ProviderTotals() for name in self.providers}
        self.recent: deque[Recent] = deque(maxlen=RECENT)

    def reconfigure(self, models: Iterable[str], providers: Iterable[str]) -> None:
        """Label by the new config's names (a config reload); counts so far stay."""
        self._models = frozenset(models)
        self.providers = list(providers)
        for name in self.providers:
            self.totals.setdefault(name, ProviderTotals())

    def model_label(self, model: str | None) -> str:
        return model if model is not None and model in self._models else OTHER

    def observe(self, flight: Flight, now: float, wall: float) -> None:
        """Count one finished request; ``now`` on the flight's clock, ``wall`` in Unix seconds."""
        provider = flight.target.provider if flight.target is not None else "none"
        model = self.model_label(flight.model)
        endpoint, total = flight.endpoint, now - flight.started
        key = (endpoint, model, provider, str(flight.status))
        self.requests[key] = self.requests.get(key, 0) + 1
        if isinstance(flight.error, errors.RateLimited | errors.Unavailable):
            reason = flight.error.reason
            self.rejections[reason] = self.rejections.get(reason, 0) + 1
        _observe(self.latency, LATENCY_BUCKETS, (endpoint, provider), total)
        if flight.upstream_s is not None:
            _observe(self.upstream, LATENCY_BUCKETS, (provider,), flight.upstream_s)
            _observe(self.overhead, FINE_BUCKETS, (endpoint,), max(0.0, total - flight.upstream_s))
        if flight.queue_s is not None:
            _observe(self.queue_wait, LATENCY_BUCKETS, (provider,), flight.queue_s)
        self._stream(flight.chunk_offsets_ms, provider)
        tokens = usage_of(flight)
        if tokens is not None:
            self._tokens(provider, model, tokens)
            self._cost(flight.target, model, tokens)
        self._remember(flight, provider, total, tokens, wall)

    def _stream(self, offsets_ms: list[float], provider: str) -> None:
        if not offsets_ms:
            return
        _observe(self.ttft, LATENCY_BUCKETS, (provider,), offsets_ms[0] / 1000)
        gaps = self.gaps.get((provider,))
        if gaps is None:
            gaps = self.gaps[(provider,)] = Histogram(FINE_BUCKETS)
        gaps.observe_gaps(offsets_ms)

    def _tokens(self, provider: str, model: str, tokens: TokenUsage) -> None:
        for kind, value in (("input", tokens.prompt), ("output", tokens.completion)):
            key = (provider, model, kind)
            self.tokens[key] = self.tokens.get(key, 0) + value
        if tokens.cached:
            key = (provider, model, "cached")
            self.tokens[key] = self.tokens.get(key, 0) + tokens.cached

    def _cost(self, target: Target | None, model: str, tokens: TokenUsage) -> None:
        price = None if target is None else price_for(self._prices, target)
        if target is not None and price is not None:
            key = (target.provider, model)
            self.cost_usd[key] = self.cost_usd.get(key, 0.0) + cost_usd(price, tokens)

    def _remember(
        self, flight: Flight, provider: str, total: float, tokens: TokenUsage | None, wall: float
    ) -> None:
        totals = self.totals.get(provider)
        if totals is not None:
            totals.requests += 1
            totals.errors += not 200 <= flight.status < 300
            totals.latencies.append(total * 1000)
            if tokens is not None:
                totals.tokens_in += tokens.prompt
                totals.tokens_out += tokens.completion
        self.recent.append(
            Recent(
                request_id=flight.request_id,
                ts=wall,
                endpoint=flight.endpoint,
                model=self.model_label(flight.model),
                provider=provider,
                status=flight.status,
                latency_ms=round(total * 1000, 3),
                tokens_out=tokens.completion if tokens is not None else 0,
            )
        )

    def provider_view(self, provider: str) -> ProviderView:
        totals = self.totals.get(provider) or ProviderTotals()
        ordered = sorted(totals.latencies)
        return ProviderView(
            requests=totals.requests,
            errors=totals.errors,
            tokens_in=totals.tokens_in,
            tokens_out=totals.tokens_out,
            p50_ms=percentile(ordered, 0.50),
            p99_ms=percentile(ordered, 0.99),
        )


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of sorted values, or None when there are none."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _observe(
    table: dict[tuple[str, ...], Histogram],
    bounds: Sequence[float],
    key: tuple[str, ...],
    value: float,
) -> None:
    histogram = table.get(key)
    if histogram is None:
        histogram = table[key] = Histogram(bounds)
    histogram.observe(value)
