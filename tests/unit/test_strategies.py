"""Routing strategies and the peak-EWMA latency tracker: pure, driven by a seeded ``Random``."""

from __future__ import annotations

import ast
import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorproxy.config import Strategy
from actorproxy.routing import Target
from actorproxy.strategies import LatencyTracker, TargetView, order

K = TypeVar("K")
A, B, C, D = (Target(name, "m") for name in "abcd")
STRATEGIES: tuple[Strategy, ...] = ("fallback", "weighted", "least_busy", "latency")
OPEN = TargetView(breaker_open=True)
FULL = TargetView(can_admit=False)
IDLE = TargetView()
DRAWS = 30_000
# Chi-square critical values at p = 0.001: a seeded test, so this only guards against a real bias.
CHI2_CRITICAL = {1: 10.83, 2: 13.82, 3: 16.27, 5: 20.52}


def chi_square(counts: Mapping[K, int], expected: Mapping[K, float], draws: int) -> float:
    assert set(counts) <= set(expected), "an outcome that should be impossible happened"
    return sum((counts[k] - p * draws) ** 2 / (p * draws) for k, p in expected.items())


def first_counts(
    strategy: Strategy,
    targets: Sequence[Target],
    views: Sequence[TargetView],
    weights: Sequence[float] | None = None,
    draws: int = DRAWS,
) -> Counter[Target]:
    rng = random.Random(1234)
    return Counter(order(strategy, targets, views, rng, weights)[0] for _ in range(draws))


# -- every strategy -------------------------------------------------------------------------------


def test_fallback_keeps_config_order() -> None:
    assert order("fallback", [A, B, C], [IDLE] * 3, random.Random(0)) == [A, B, C]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_skipped_targets_come_last_in_config_order(strategy: Strategy) -> None:
    views = [OPEN, IDLE, FULL, IDLE]
    for seed in range(50):
        ordered = order(strategy, [A, B, C, D], views, random.Random(seed))
        assert set(ordered[:2]) == {B, D}
        assert ordered[2:] == [A, C]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_all_skipped_still_gives_every_target(strategy: Strategy) -> None:
    assert order(strategy, [A, B], [FULL, OPEN], random.Random(0)) == [A, B]


VIEWS = st.builds(
    TargetView,
    in_flight=st.integers(0, 20),
    capacity=st.integers(0, 8),
    queued=st.integers(0, 5),
    breaker_open=st.booleans(),
    can_admit=st.booleans(),
    latency_s=st.none() | st.floats(0.0, 100.0),
)


@given(
    strategy=st.sampled_from(STRATEGIES),
    views=st.lists(VIEWS, min_size=1, max_size=6),
    weights=st.none() | st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=6, max_size=6),
    seed=st.integers(0, 2**32),
)
def test_every_order_is_a_permutation_with_the_ready_first(
    strategy: Strategy,
    views: list[TargetView],
    weights: list[float] | None,
    seed: int,
) -> None:
    targets = [Target(str(i), "m") for i in range(len(views))]
    picked = weights[: len(views)] if weights is not None else None
    ordered = order(strategy, targets, views, random.Random(seed), picked)
    assert sorted(ordered, key=targets.index) == targets
    skipped = [views[targets.index(target)].skipped for target in ordered]
    assert skipped == sorted(skipped), "a skipped target came before a ready one"


def test_bad_input_is_refused() -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError, match="view"):
        order("fallback", [A, B], [IDLE], rng)
    with pytest.raises(ValueError, match="weight"):
        order("weighted", [A, B], [IDLE, IDLE], rng, [1.0])
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="weights"):
            order("weighted", [A, B], [IDLE, IDLE], rng, [1.0, bad])
    with pytest.raises(ValueError, match="strategy"):
        order("random", [A], [IDLE], rng)  # type: ignore[arg-type]


# -- weighted -------------------------------------------------------------------------------------


def test_weighted_first_choice_converges_to_the_weights() -> None:
    counts = first_counts("weighted", [A, B], [IDLE, IDLE], [3.0, 1.0])
    assert counts[A] / DRAWS == pytest.approx(0.75, abs=0.01)
    assert chi_square(counts, {A: 0.75, B: 0.25}, DRAWS) < CHI2_CRITICAL[1]


def test_weighted_whole_orders_follow_successive_sampling() -> None:
    """P(order) = w1/W * w2/(W - w1) * ...: the rest follow as weighted fallbacks."""
    weights = {A: 5.0, B: 3.0, C: 2.0}
    expected: dict[tuple[Target, ...], float] = {}
    for perm in itertools.permutations(weights):
        left, p = sum(weights.values()), 1.0
        for target in perm:
            p *= weights[target] / left
            left -= weights[target]
        expected[perm] = p
    rng = random.Random(99)
    counts = Counter(
        tuple(order("weighted", [A, B, C], [IDLE] * 3, rng, list(weights.values())))
        for _ in range(DRAWS)
    )
    assert chi_square(counts, expected, DRAWS) < CHI2_CRITICAL[5]


def test_a_skipped_targets_share_goes_to_the_others_in_proportion() -> None:
    counts = first_counts("weighted", [A, B, C], [OPEN, IDLE, IDLE], [6.0, 3.0, 1.0])
    assert chi_square(counts, {B: 0.75, C: 0.25}, DRAWS) < CHI2_CRITICAL[1]


def test_weight_zero_is_a_fallback_only() -> None:
    rng = random.Random(5)
    for _ in range(200):
        ordered = order("weighted", [A, B, C], [IDLE] * 3, rng, [0.0, 1.0, 1.0])
        assert ordered[2] == A
    assert order("weighted", [A, B, C], [IDLE, OPEN, OPEN], rng, [0.0, 1.0, 1.0])[0] == A
    assert order("weighted", [A, B], [IDLE, IDLE], rng, [0.0, 0.0]) == [A, B]


def test_weighted_without_weights_is_uniform() -> None:
    counts = first_counts("weighted", [A, B, C], [IDLE] * 3)
    assert chi_square(counts, dict.fromkeys([A, B, C], 1 / 3), DRAWS) < CHI2_CRITICAL[2]


# -- least_busy -----------------------------------------------------------------------------------


def test_least_busy_orders_by_load_relative_to_capacity() -> None:
    views = [
        TargetView(in_flight=8, capacity=16),  # 0.5
        TargetView(in_flight=3, capacity=4),  # 0.75
        TargetView(in_flight=1, capacity=8),  # 0.125
        TargetView(in_flight=4, capacity=4, queued=2),  # 1.5: the queue counts too
    ]
    assert order("least_busy", [A, B, C, D], views, random.Random(0)) == [C, A, B, D]


def test_least_busy_ties_keep_config_order() -> None:
    views = [TargetView(in_flight=2, capacity=4), TargetView(in_flight=1, capacity=2)]
    assert order("least_busy", [A, B], views, random.Random(0)) == [A, B]
    assert order("least_busy", [B, A], views, random.Random(0)) == [B, A]


@given(views=st.lists(VIEWS.map(lambda v: TargetView(v.in_flight, v.capacity)), min_size=1))
def test_least_busy_puts_the_least_loaded_first(views: list[TargetView]) -> None:
    targets = [Target(str(i), "m") for i in range(len(views))]
    ordered = order("least_busy", targets, views, random.Random(0))
    loads = [views[targets.index(target)].load for target in ordered]
    assert loads == sorted(loads)
    assert loads[0] == min(view.load for view in views)


# -- latency (power of two choices) ---------------------------------------------------------------


def test_p2c_first_choice_follows_cost_rank() -> None:
    """With n targets of distinct cost, rank r (0 = cheapest) wins first (n-1-r)/C(n,2) of draws."""
    views = [TargetView(latency_s=s) for s in (0.4, 0.1, 0.8, 0.2)]
    counts = first_counts("latency", [A, B, C, D], views)
    expected = {B: 3 / 6, D: 2 / 6, A: 1 / 6}
    assert C not in counts  # the slowest loses every pair it is drawn into
    assert chi_square(counts, expected, DRAWS) < CHI2_CRITICAL[2]


def test_p2c_cost_multiplies_latency_by_pending_plus_one() -> None:
    busy_fast = TargetView(latency_s=0.1, in_flight=2, queued=1)  # 0.4
    idle_slow = TargetView(latency_s=0.3)  # 0.3
    for seed in range(20):
        assert order("latency", [A, B], [busy_fast, idle_slow], random.Random(seed)) == [B, A]


def test_p2c_breaks_ties_at_random() -> None:
    counts = first_counts("latency", [A, B], [TargetView(latency_s=0.5)] * 2)
    assert chi_square(counts, {A: 0.5, B: 0.5}, DRAWS) < CHI2_CRITICAL[1]


def test_an_unmeasured_target_gets_the_mean_of_the_measured() -> None:
    views = [TargetView(latency_s=1.0), TargetView(), TargetView(latency_s=3.0)]  # B counts as 2.0
    counts = first_counts("latency", [A, B, C], views)
    assert C not in counts
    assert chi_square(counts, {A: 2 / 3, B: 1 / 3}, DRAWS) < CHI2_CRITICAL[1]
    unmeasured = first_counts("latency", [A, B], [TargetView(), TargetView()])
    assert chi_square(unmeasured, {A: 0.5, B: 0.5}, DRAWS) < CHI2_CRITICAL[1]


def test_with_nothing_measured_pending_work_decides() -> None:
    views = [TargetView(in_flight=2), TargetView(in_flight=0)]  # both cost NEUTRAL_LATENCY_S * n
    for seed in range(20):
        assert order("latency", [A, B], views, random.Random(seed)) == [B, A]


def simulate(
    latencies: dict[Target, list[tuple[float, float]]], seconds: float, every_s: float = 0.05
) -> list[tuple[float, Target]]:
    """Requests arrive every ``every_s``; each goes to ``order()[0]`` and takes the latency its
    target has at that time (``(from_s, latency_s)`` steps). Returns (arrival, target) pairs."""
    tracker, rng = LatencyTracker(tau_s=2.0), random.Random(7)
    targets, in_flight = list(latencies), Counter[Target]()
    ends: list[tuple[float, int, Target, float]] = []
    log: list[tuple[float, Target]] = []
    now = 0.0
    while now < seconds:
        while ends and ends[0][0] <= now:
            end, _, target, took = heapq.heappop(ends)
            in_flight[target] -= 1
            tracker.observe(target, took, end)
        views = [TargetView(in_flight[t], 8, latency_s=tracker.estimate(t, now)) for t in targets]
        target = order("latency", targets, views, rng)[0]
        took = next(s for start, s in reversed(latencies[target]) if start <= now)
        in_flight[target] += 1
        heapq.heappush(ends, (now + took, len(log), target, took))
        log.append((now, target))
        now += every_s
    return log


def served(log: list[tuple[float, Target]], start: float, end: float) -> Counter[Target]:
    return Counter(target for at, target in log if start <= at < end)


def test_p2c_sends_most_work_to_the_fastest() -> None:
    counts = served(simulate({A: [(0.0, 0.4)], B: [(0.0, 0.1)], C: [(0.0, 0.2)]}, 60.0), 0, 60)
    assert counts[B] > counts[C] > counts[A] > 0


def test_p2c_moves_away_from_a_target_that_slows_and_back_when_it_recovers() -> None:
    """A serves in 0.1 s, then 2 s from t=30 (a peak), then 0.1 s again from t=60; B in 0.2 s."""
    log = simulate({A: [(0.0, 0.1), (30.0, 2.0), (60.0, 0.1)], B: [(0.0, 0.2)]}, 90.0)
    before, slowed, recovered = (served(log, t, t + 30.0) for t in (0.0, 30.0, 60.0))
    assert before[A] > before[B]
    assert slowed[A] < slowed[B] / 4
    assert recovered[A] > recovered[B]


# -- the tracker ----------------------------------------------------------------------------------


def test_an_unobserved_target_has_no_estimate() -> None:
    assert LatencyTracker().estimate(A, 0.0) is None


def test_a_peak_is_taken_at_once() -> None:
    tracker = LatencyTracker(tau_s=10.0)
    tracker.observe(A, 0.1, 0.0)
    assert tracker.estimate(A, 0.0) == 0.1
    tracker.observe(A, 5.0, 0.001)
    assert tracker.estimate(A, 0.001) == 5.0


def test_a_lower_latency_pulls_the_estimate_down_with_time_constant_tau() -> None:
    tracker = LatencyTracker(tau_s=10.0)
    tracker.observe(A, 1.0, 0.0)
    tracker.observe(A, 0.1, 10.0)
    assert tracker.estimate(A, 10.0) == pytest.approx(math.exp(-1) + 0.1 * (1 - math.exp(-1)))
    tracker.observe(A, 0.1, 10.0)  # no time passed: one sample does not overwrite the history
    assert tracker.estimate(A, 10.0) == pytest.approx(math.exp(-1) + 0.1 * (1 - math.exp(-1)))


def test_an_idle_estimate_decays_toward_zero() -> None:
    tracker = LatencyTracker(tau_s=10.0)
    tracker.observe(A, 2.0, 100.0)
    assert tracker.estimate(A, 120.0) == pytest.approx(2.0 * math.exp(-2))
    assert tracker.estimate(A, 90.0) == 2.0  # a caller's earlier ``now`` never inflates it
    tracker.observe(A, 0.5, 130.0)  # the measurement corrects the optimism
    assert tracker.estimate(A, 130.0) == pytest.approx(
        2.0 * math.exp(-3) + 0.5 * (1 - math.exp(-3))
    )


def test_negative_latency_counts_as_zero() -> None:
    tracker = LatencyTracker()
    tracker.observe(A, -1.0, 0.0)
    assert tracker.estimate(A, 0.0) == 0.0


def test_the_least_recently_observed_target_is_forgotten() -> None:
    tracker = LatencyTracker(max_targets=2)
    tracker.observe(A, 1.0, 0.0)
    tracker.observe(B, 1.0, 1.0)
    tracker.observe(A, 1.0, 2.0)
    tracker.observe(C, 1.0, 3.0)
    assert [tracker.estimate(t, 3.0) is None for t in (A, B, C)] == [False, True, False]


def test_tracker_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        LatencyTracker(tau_s=0.0)
    with pytest.raises(ValueError):
        LatencyTracker(max_targets=0)


# -- purity ---------------------------------------------------------------------------------------

PACKAGE = Path(__file__).parents[2] / "actorproxy"
IMPURE = {"trio", "httpx", "time", "os", "hypercorn", "quart", "quart_trio", "datetime"}


@pytest.mark.parametrize(
    ("module", "allowed"),
    [
        ("strategies.py", {"actorproxy.config", "actorproxy.routing"}),
        ("retry.py", {"actorproxy"}),
    ],
)
def test_the_policies_are_pure(module: str, allowed: set[str]) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    ours = {name for name in imported if name.startswith("actorproxy")}
    assert ours <= allowed
    assert not {name.partition(".")[0] for name in imported} & IMPURE
