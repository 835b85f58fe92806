"""Where a request goes, and what happens after an attempt fails: the proxy's routing brain.

``Planner`` joins the pure parts to the live system. It resolves a model to its route
(``routing.Router``), orders the route's targets with ``strategies.order`` from each provider
actor's ``load()`` (in flight, queued, capacity, breaker open, room to admit) and a
``LatencyTracker`` fed with the latency of each attempt, and answers the proxy's question after a
failed attempt with ``retry.RetryPolicy.decide`` (the route's ``max_retries``, else
``[routing]``'s). Randomness comes from one ``random.Random``, injectable for tests.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping

from actorproxy import errors, strategies
from actorproxy.actors.provider import ProviderActor
from actorproxy.config import RoutingConfig
from actorproxy.retry import Decision, RetryPolicy
from actorproxy.routing import Route, Router, Target


class Planner:
    """Routes, orders and retries for the proxy handler; holds the live latency estimates."""

    def __init__(
        self,
        router: Router,
        actors: Mapping[str, ProviderActor],
        routing: RoutingConfig,
        rng: random.Random | None = None,
    ) -> None:
        self.router = router
        self.actors = actors
        self.total_timeout_s = routing.total_timeout_s
        self._rng = rng or random.Random()
        self._latency = strategies.LatencyTracker(tau_s=routing.latency_tau_s)
        self._policy = RetryPolicy(
            max_retries=routing.max_retries,
            base_s=routing.retry_base_s,
            cap_s=routing.retry_cap_s,
            max_wait_s=routing.retry_max_wait_s,
        )
        self._policies: dict[int, RetryPolicy] = {}

    def resolve(self, model: str) -> Route:
        return self.router.resolve(model)

    def order(self, route: Route, now: float) -> list[Target]:
        """Every target of ``route`` once, best first (see ``strategies``)."""
        targets = route.targets
        if len(targets) == 1:
            return [targets[0]]
        views = [self.view(target, now) for target in targets]
        return strategies.order(route.strategy, targets, views, self._rng, route.weights)

    def view(self, target: Target, now: float) -> strategies.TargetView:
        """What the strategies may know of ``target`` now."""
        load = self.actors[target.provider].load(now)
        return strategies.TargetView(
            in_flight=load.in_flight,
            capacity=load.capacity,
            queued=load.queued,
            breaker_open=load.breaker_open,
            can_admit=load.can_admit,
            latency_s=self._latency.estimate(target, now),
        )

    def observe(self, target: Target, latency_s: float, now: float) -> None:
        """One measured upstream latency of ``target`` (time to the response head)."""
        self._latency.observe(target, latency_s, now)

    def decide(
        self,
        route: Route,
        error: errors.ProxyError,
        attempt: int,
        *,
        streaming: bool,
        deadline_left_s: float,
    ) -> Decision:
        """What to do after ``error`` ended ``attempt`` (0-based) of one target of ``route``."""
        return self._policy_for(route).decide(
            error, attempt, streaming=streaming, deadline_left_s=deadline_left_s, rng=self._rng
        )

    def _policy_for(self, route: Route) -> RetryPolicy:
        retries = route.max_retries
        if retries is None:
            return self._policy
        policy = self._policies.get(retries)
        if policy is None:
            policy = self._policies[retries] = dataclasses.replace(
                self._policy, max_retries=retries
            )
        return policy
