"""Routing strategies: the order in which one request tries the targets of its route. Pure code.

The caller takes a snapshot of every target (a ``TargetView``) and passes an explicit
``random.Random``; ``order()`` reads nothing else, so a seeded generator makes it reproducible.

Every strategy first sets aside the targets that cannot serve now: an open breaker (or a half-open
one without a free probe slot), or a queue that cannot admit within the request's deadline. They
come last, in config order, after every target that can: the request tries them only when all
others failed, and then gets the actor's own fast answer (503 for an open breaker, 429 with an
accurate ``retry-after`` for a full queue) instead of a generic error. The strategies order the
rest:

``fallback``
    Config order.
``weighted``
    A weighted random order without replacement: the first target is drawn with probability
    weight / sum of weights, the next from the rest the same way, and so on (an exponential race:
    each target draws Exp(weight), smallest first). Weight 0 means "fallback only": such targets
    follow all positive weights, in config order. No weights means equal weights.
``least_busy``
    Ascending ``(in_flight + queued) / capacity``; ties keep config order.
``latency``
    Power of two choices on peak-EWMA cost (Finagle, Linkerd): draw two targets at random, the one
    with the lower ``latency_s * (in_flight + queued + 1)`` goes next (a tie goes to either with
    equal chance); repeat on the rest. A target never measured gets a neutral prior: the mean of
    the measured targets' latencies, or ``NEUTRAL_LATENCY_S`` when none is measured, so it is
    neither shunned nor flooded and gets measured. ``LatencyTracker`` supplies ``latency_s``.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from actorproxy.config import Strategy
from actorproxy.routing import Target

NEUTRAL_LATENCY_S = 1.0


@dataclass(frozen=True, slots=True)
class TargetView:
    """What a strategy may know about one target when the request is routed.

    ``in_flight``/``queued``/``capacity``: the provider actor's ``statistics()`` (``capacity`` is
    ``max_concurrency``). ``breaker_open``: ``not breaker.admits(now)``. ``can_admit``: whether the
    actor's queue can admit the request within its deadline. ``latency_s``: the peak-EWMA from
    ``LatencyTracker.estimate``, ``None`` when never measured.
    """

    in_flight: int = 0
    capacity: int = 1
    queued: int = 0
    breaker_open: bool = False
    can_admit: bool = True
    latency_s: float | None = None

    @property
    def skipped(self) -> bool:
        return self.breaker_open or not self.can_admit

    @property
    def load(self) -> float:
        """Busy-ness relative to capacity: 1.0 is every slot taken and nobody waiting."""
        if self.capacity <= 0:
            return math.inf
        return (self.in_flight + self.queued) / self.capacity

    @property
    def pending(self) -> int:
        return self.in_flight + self.queued


def order(
    strategy: Strategy,
    targets: Sequence[Target],
    views: Sequence[TargetView],
    rng: random.Random,
    weights: Sequence[float] | None = None,
) -> list[Target]:
    """Every target of ``targets`` once, in the order to try them (see the module docstring).

    ``views[i]`` and ``weights[i]`` describe ``targets[i]``; ``weights`` matters to ``weighted``
    only. ``ValueError`` for a length mismatch, a negative or non-finite weight, or an unknown
    strategy.
    """
    if len(views) != len(targets):
        raise ValueError("one view per target")
    chosen = _STRATEGIES.get(strategy)
    if chosen is None:
        raise ValueError(f"unknown strategy {strategy!r}")
    ready = [i for i, view in enumerate(views) if not view.skipped]
    skipped = [i for i, view in enumerate(views) if view.skipped]
    ranked = chosen(ready, views, rng, _weights(weights, len(targets)))
    return [targets[i] for i in (*ranked, *skipped)]


def _weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if weights is None:
        return [1.0] * count
    if len(weights) != count:
        raise ValueError("one weight per target")
    if not all(math.isfinite(w) and w >= 0.0 for w in weights):
        raise ValueError("weights must be finite and >= 0")
    return [float(w) for w in weights]


_Ranker = Callable[[list[int], Sequence[TargetView], random.Random, list[float]], list[int]]


def _fallback(
    ready: list[int], views: Sequence[TargetView], rng: random.Random, weights: list[float]
) -> list[int]:
    return ready


def _weighted(
    ready: list[int], views: Sequence[TargetView], rng: random.Random, weights: list[float]
) -> list[int]:
    positive = [i for i in ready if weights[i] > 0.0]
    race = {i: rng.expovariate(weights[i]) for i in positive}
    return [*sorted(positive, key=race.__getitem__), *(i for i in ready if weights[i] == 0.0)]


def _least_busy(
    ready: list[int], views: Sequence[TargetView], rng: random.Random, weights: list[float]
) -> list[int]:
    return sorted(ready, key=lambda i: views[i].load)


def _latency(
    ready: list[int], views: Sequence[TargetView], rng: random.Random, weights: list[float]
) -> list[int]:
    cost = _costs(ready, views)
    rest, ranked = list(ready), []
    while len(rest) > 1:
        first, second = rng.sample(rest, 2)
        pick = second if cost[second] < cost[first] else first
        ranked.append(pick)
        rest.remove(pick)
    return ranked + rest


def _costs(ready: list[int], views: Sequence[TargetView]) -> dict[int, float]:
    """Peak-EWMA latency times (pending + 1); the unmeasured get the mean of the measured."""
    seen = [latency for i in ready if (latency := views[i].latency_s) is not None]
    prior = statistics.fmean(seen) if seen else NEUTRAL_LATENCY_S
    costs = {}
    for i in ready:
        latency = views[i].latency_s
        costs[i] = (prior if latency is None else latency) * (views[i].pending + 1)
    return costs


_STRATEGIES: dict[str, _Ranker] = {
    "fallback": _fallback,
    "weighted": _weighted,
    "least_busy": _least_busy,
    "latency": _latency,
}


@dataclass(slots=True)
class _Ewma:
    value: float
    stamp: float


class LatencyTracker:
    """Peak-EWMA of upstream latency per target, ``now`` injected. Pure, not thread-safe.

    ``observe`` with a latency above the estimate jumps to it at once (the peak); a lower one pulls
    the estimate down with weight ``1 - exp(-elapsed / tau_s)``, elapsed since the last
    observation. ``estimate`` further decays toward 0 with the same time constant while a target
    goes unobserved, so a target shunned for being slow is tried again after a while and its
    estimate corrected (Finagle's and tower's PeakEwma do the same). At most ``max_targets``
    targets are remembered; the least recently observed is forgotten first.
    """

    def __init__(self, *, tau_s: float = 10.0, max_targets: int = 1024) -> None:
        if not tau_s > 0.0 or max_targets < 1:
            raise ValueError("tau_s must be positive and max_targets at least 1")
        self._tau_s = tau_s
        self._max_targets = max_targets
        self._ewma: dict[Target, _Ewma] = {}

    def observe(self, target: Target, latency_s: float, now: float) -> None:
        """Record one latency of ``target`` measured at ``now``; negative counts as 0."""
        latency = max(0.0, latency_s)
        ewma = self._ewma.pop(target, None)
        if ewma is None:
            ewma = _Ewma(latency, now)
        elif latency > ewma.value:
            ewma.value = latency
        else:
            weight = self._decay(now - ewma.stamp)
            ewma.value = ewma.value * weight + latency * (1.0 - weight)
        ewma.stamp = max(ewma.stamp, now)
        self._ewma[target] = ewma  # re-inserted: dict order is recency order
        if len(self._ewma) > self._max_targets:
            del self._ewma[next(iter(self._ewma))]

    def estimate(self, target: Target, now: float) -> float | None:
        """The peak-EWMA of ``target`` at ``now``, ``None`` when never observed (or forgotten)."""
        ewma = self._ewma.get(target)
        if ewma is None:
            return None
        return ewma.value * self._decay(now - ewma.stamp)

    def _decay(self, elapsed: float) -> float:
        return math.exp(-max(0.0, elapsed) / self._tau_s)
