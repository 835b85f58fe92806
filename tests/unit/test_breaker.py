"""The circuit breaker as a pure state machine: every transition driven by an injected ``now``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actorproxy.actors.breaker import Breaker, BreakerStats, State

COOLDOWN = 10.0


def opened(*, failures: int = 3, probes: int = 1, at: float = 100.0) -> Breaker:
    """A breaker that opened at ``at`` after ``failures`` consecutive failures."""
    breaker = Breaker(failures=failures, cooldown_s=COOLDOWN, probes=probes)
    for _ in range(failures):
        breaker.failure(at)
    assert breaker.state(at) == "open"
    return breaker


def half_open(*, probes: int = 1) -> tuple[Breaker, float]:
    breaker = opened(probes=probes)
    now = 100.0 + COOLDOWN
    assert breaker.state(now) == "half_open"
    return breaker, now


def test_a_new_breaker_is_closed_and_admits_everything() -> None:
    breaker = Breaker(failures=3, cooldown_s=COOLDOWN)
    assert all(breaker.allow(float(now)) for now in range(100))
    assert breaker.statistics(0.0) == BreakerStats("closed", 0, 0)


def test_opens_after_n_consecutive_failures() -> None:
    breaker = Breaker(failures=3, cooldown_s=COOLDOWN)
    breaker.failure(1.0)
    breaker.failure(2.0)
    assert breaker.statistics(2.0) == BreakerStats("closed", 2, 0)
    assert breaker.allow(2.0)
    breaker.failure(3.0)
    assert breaker.statistics(3.0) == BreakerStats("open", 3, 1)
    assert not breaker.allow(3.0)


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = Breaker(failures=3, cooldown_s=COOLDOWN)
    for now in range(20):
        breaker.failure(float(now))
        breaker.failure(float(now))
        breaker.success()
    assert breaker.statistics(20.0) == BreakerStats("closed", 0, 0)


def test_open_rejects_until_the_cooldown_has_passed() -> None:
    breaker = opened(at=100.0)
    assert not breaker.allow(100.0 + COOLDOWN - 0.001)
    assert breaker.state(100.0 + COOLDOWN - 0.001) == "open"
    assert breaker.state(100.0 + COOLDOWN) == "half_open"


def test_half_open_admits_probes_calls_at_a_time() -> None:
    breaker, now = half_open(probes=2)
    assert [breaker.allow(now) for _ in range(4)] == [True, True, False, False]
    assert breaker.allow(now + 1000.0) is False  # time alone does not free a probe


def test_a_successful_probe_closes() -> None:
    breaker, now = half_open()
    assert breaker.allow(now)
    breaker.success()
    assert breaker.statistics(now) == BreakerStats("closed", 0, 1)
    assert all(breaker.allow(now) for _ in range(10))


def test_a_failed_probe_opens_again_for_a_full_cooldown() -> None:
    breaker, now = half_open()
    assert breaker.allow(now)
    breaker.failure(now + 2.0)
    assert breaker.statistics(now + 2.0).state == "open"
    assert breaker.statistics(now + 2.0).opened_total == 2
    assert breaker.retry_after(now + 2.0) == COOLDOWN
    assert not breaker.allow(now + 2.0 + COOLDOWN - 0.001)
    assert breaker.state(now + 2.0 + COOLDOWN) == "half_open"
    assert breaker.allow(now + 2.0 + COOLDOWN)  # a new half-open period, a new probe budget


def test_release_probe_lets_another_probe_through() -> None:
    breaker, now = half_open(probes=1)
    assert breaker.allow(now)
    assert not breaker.allow(now)
    breaker.release_probe(breaker.period)
    assert breaker.state(now) == "half_open"
    assert breaker.allow(now)
    assert not breaker.allow(now)


def test_release_probe_without_a_probe_changes_nothing() -> None:
    closed = Breaker(failures=1, cooldown_s=COOLDOWN)
    closed.release_probe(closed.period)
    assert closed.statistics(0.0) == BreakerStats("closed", 0, 0)
    breaker = opened(probes=1)
    breaker.release_probe(breaker.period)
    assert breaker.state(100.0) == "open"
    breaker, now = half_open(probes=1)
    breaker.release_probe(
        breaker.period
    )  # nothing borrowed: the budget must not grow beyond ``probes``
    assert [breaker.allow(now) for _ in range(3)] == [True, False, False]


def test_retry_after_counts_down_to_zero() -> None:
    breaker = opened(at=100.0)
    assert breaker.retry_after(100.0) == COOLDOWN
    assert breaker.retry_after(104.0) == pytest.approx(COOLDOWN - 4.0)
    assert breaker.retry_after(100.0 + COOLDOWN) == 0.0
    assert breaker.retry_after(1000.0) == 0.0


def test_statistics_is_a_frozen_snapshot() -> None:
    breaker = Breaker(failures=1, cooldown_s=COOLDOWN)
    before = breaker.statistics(0.0)
    breaker.failure(0.0)
    assert before == BreakerStats("closed", 0, 0)
    assert breaker.statistics(0.0) == BreakerStats("open", 1, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.state = "open"  # type: ignore[misc]


def test_opened_total_counts_openings_not_failures() -> None:
    breaker = opened(failures=2)
    breaker.failure(101.0)  # a late failure while already open is not a new opening
    assert breaker.statistics(101.0).opened_total == 1


def test_a_stale_probe_does_not_free_a_slot_of_a_later_half_open_period() -> None:
    breaker, now = half_open(probes=1)
    assert breaker.allow(now)  # probe A, still running
    stale = breaker.period
    breaker.failure(now)  # an older call fails: open again, A goes on running
    now += COOLDOWN
    assert breaker.allow(now)  # probe B of the new half-open period
    breaker.release_probe(stale)  # A ends without a verdict (its client left)
    assert not breaker.allow(now)  # B is still running: a second probe is one too many


@dataclass
class Admitted:
    probe: bool
    period: int


class BreakerMachine(RuleBasedStateMachine):
    """Random allow/success/failure/release/advance sequences against what a caller can observe.

    Every verdict belongs to one admitted call. ``release_probe`` is called for any probe, also
    one from an earlier half-open period.
    """

    def __init__(self) -> None:
        super().__init__()
        self.breaker = Breaker(failures=1, cooldown_s=COOLDOWN)
        self.threshold = 1
        self.probes = 1
        self.now = 0.0
        self.observed: State = "closed"
        self.period = 0  # counts open -> half_open transitions
        self.consecutive = 0
        self.calls: list[Admitted] = []

    @initialize(threshold=st.integers(1, 4), probes=st.integers(1, 3))
    def build(self, threshold: int, probes: int) -> None:
        self.breaker = Breaker(failures=threshold, cooldown_s=COOLDOWN, probes=probes)
        self.threshold = threshold
        self.probes = probes

    def observe(self) -> State:
        state = self.breaker.state(self.now)
        if self.observed == "open" and state == "half_open":
            self.period += 1
        self.observed = state
        return state

    @rule(dt=st.floats(0.0, 2 * COOLDOWN, allow_nan=False))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.observe()

    @rule()
    def allow(self) -> None:
        state = self.observe()
        admitted = self.breaker.allow(self.now)
        if state == "closed":
            assert admitted
        if state == "open":
            assert not admitted
        if admitted:
            self.calls.append(Admitted(state == "half_open", self.breaker.period))

    @precondition(lambda self: bool(self.calls))
    @rule(data=st.data())
    def succeed(self, data: st.DataObject) -> None:
        self.calls.remove(data.draw(st.sampled_from(self.calls)))
        self.breaker.success()
        self.consecutive = 0
        assert self.observe() == "closed"

    @precondition(lambda self: bool(self.calls))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        self.calls.remove(data.draw(st.sampled_from(self.calls)))
        before = self.observe()
        self.breaker.failure(self.now)
        self.consecutive += 1
        after = self.observe()
        if before == "closed" and after == "open":
            assert self.consecutive >= self.threshold
        if before == "half_open" or self.consecutive >= self.threshold:
            assert after == "open"

    @precondition(lambda self: any(call.probe for call in self.calls))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        """Any probe may end without a verdict, also a straggler from an earlier period."""
        call = data.draw(st.sampled_from([call for call in self.calls if call.probe]))
        self.calls.remove(call)
        before = self.observe()
        self.breaker.release_probe(call.period)
        assert self.observe() == before

    def current_probe(self, call: Admitted) -> bool:
        return call.probe and call.period == self.breaker.period and self.observed == "half_open"

    @invariant()
    def probes_in_flight_within_budget(self) -> None:
        assert sum(self.current_probe(call) for call in self.calls) <= self.probes

    @invariant()
    def never_open_before_threshold(self) -> None:
        stats = self.breaker.statistics(self.now)
        assert stats.consecutive_failures == self.consecutive
        if stats.state != "closed":
            assert stats.opened_total >= 1
            assert self.consecutive >= self.threshold

    @invariant()
    def retry_after_is_bounded(self) -> None:
        if self.observed == "open":
            assert 0.0 <= self.breaker.retry_after(self.now) <= COOLDOWN + 1e-9  # float rounding


BreakerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, derandomize=True, deadline=None
)
TestBreakerMachine = BreakerMachine.TestCase
