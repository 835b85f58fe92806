"""The planner: live actor snapshots into strategy views, and per-model retry policies."""

from __future__ import annotations

import random

from actorproxy import config as cfg
from actorproxy import errors
from actorproxy.planner import Planner
from actorproxy.retry import NextTarget, Retry
from actorproxy.routing import Router, Target
from actorproxy.runtime import build_actor


def planner(max_queue: int = 8, **routing: object) -> Planner:
    providers = [
        cfg.ProviderConfig(name=name, kind="mock", max_concurrency=2, max_queue=max_queue)
        for name in ("a", "b")
    ]
    models = [
        cfg.ModelConfig(name="m", targets=["a/x", "b/x"], strategy="least_busy"),
        cfg.ModelConfig(name="r", targets=["a/x", "b/x"], max_retries=2),
    ]
    config = cfg.Config(providers=providers, models=models)
    actors = {p.name: build_actor(p, {}) for p in providers}
    settings = cfg.RoutingConfig(**routing)  # type: ignore[arg-type]
    return Planner(Router(config), actors, settings, random.Random(0))


async def test_views_come_from_the_actors_statistics() -> None:
    view = planner().view(Target("a", "x"), 0.0)
    assert (view.in_flight, view.capacity, view.queued) == (0, 2, 0)
    assert not view.skipped and view.latency_s is None


async def test_a_provider_without_a_queue_still_admits_while_a_slot_is_free() -> None:
    assert not planner(max_queue=0).view(Target("a", "x"), 0.0).skipped


async def test_observed_latency_reaches_the_view() -> None:
    plan = planner()
    plan.observe(Target("b", "x"), 0.25, 1.0)
    assert plan.view(Target("b", "x"), 1.0).latency_s == 0.25


async def test_a_single_target_route_is_not_ranked() -> None:
    plan = planner()
    assert plan.order(plan.resolve("a/direct"), 0.0) == [Target("a", "direct")]
    assert sorted(plan.order(plan.resolve("m"), 0.0), key=str) == [
        Target("a", "x"),
        Target("b", "x"),
    ]


def test_a_models_max_retries_overrides_the_default() -> None:
    plan = planner(max_retries=0, retry_base_s=0.0, retry_cap_s=0.0)
    failure = errors.UpstreamConnectFailed("refused")

    def decide(model: str, attempt: int) -> object:
        route = plan.resolve(model)
        return plan.decide(route, failure, attempt, streaming=False, deadline_left_s=10.0)

    assert decide("m", 0) == NextTarget("retries_exhausted")
    assert decide("r", 1) == Retry(0.0)
    assert decide("r", 2) == NextTarget("retries_exhausted")
