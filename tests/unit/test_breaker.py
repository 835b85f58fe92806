"""The circuit breaker as a pure state machine: every transition driven by an injected ``now``.

Two behaviours changed with the failure-rate rule (see the module docstring): a late success no
longer closes an open breaker, and a late failure no longer extends its cool-down.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actorproxy.actors.breaker import (
    TRANSITIONS_KEPT,
    WINDOW_BUCKETS,
    Breaker,
    BreakerStats,
    RateRule,
    State,
    Transition,
    WindowStats,
)

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


# -- the failure-rate rule ------------------------------------------------------------------------

RATE = RateRule(failure_rate=0.5, window_s=30.0, min_calls=10)


def with_rate(*, failures: int = 100, rate: RateRule = RATE) -> Breaker:
    """A breaker whose consecutive rule is out of reach unless a test says otherwise."""
    return Breaker(failures=failures, cooldown_s=COOLDOWN, rate=rate)


def verdict(breaker: Breaker, now: float, *, failed: bool) -> None:
    if failed:
        breaker.failure(now)
    else:
        breaker.success(now)


def test_the_rate_rule_opens_without_consecutive_failures() -> None:
    breaker = with_rate(failures=3)
    for n in range(9):  # S F S F ...: never two failures in a row
        verdict(breaker, float(n), failed=n % 2 == 1)
    assert breaker.statistics(9.0) == BreakerStats("closed", 0, 0)
    assert breaker.window(9.0) == WindowStats(9, 4)
    breaker.failure(9.0)  # the 10th call, the 5th failure: 50 %
    assert breaker.statistics(9.0) == BreakerStats("open", 1, 1)
    assert breaker.transitions() == [Transition(9.0, "closed", "open", "failure_rate")]


def test_the_rate_rule_waits_for_min_calls() -> None:
    breaker = with_rate()
    for n in range(RATE.min_calls - 1):
        breaker.failure(float(n))
    assert breaker.state(9.0) == "closed"  # 100 % of 9 calls failed: too few to judge
    breaker.failure(9.0)
    assert breaker.state(9.0) == "open"


def test_a_rate_below_the_threshold_stays_closed() -> None:
    breaker = with_rate()
    for n in range(1000):
        verdict(breaker, float(n), failed=n % 5 >= 3)  # S S S F F: 40 % in any window
    assert breaker.statistics(1000.0).opened_total == 0


def test_outcomes_older_than_the_window_do_not_count() -> None:
    breaker = with_rate()
    for n in range(9):
        breaker.failure(float(n))
    now = 8.0 + RATE.window_s
    assert breaker.window(now) == WindowStats(0, 0)
    breaker.failure(now)  # with the old nine this would be 10/10
    assert breaker.state(now) == "closed"
    assert breaker.window(now) == WindowStats(1, 1)


@given(
    at=st.floats(0.0, 1e6, allow_nan=False),
    age=st.floats(0.0, 2 * RATE.window_s, allow_nan=False),
)
def test_the_window_holds_what_it_promises(at: float, age: float) -> None:
    """Older than ``window_s``: never counted; younger than ``window_s(1 - 1/B)``: always."""
    breaker = with_rate()
    breaker.failure(at)
    counted = breaker.window(at + age).calls
    if age >= RATE.window_s:
        assert counted == 0
    if age < RATE.window_s * (1 - 1 / WINDOW_BUCKETS) * (1 - 1e-9):  # float rounding
        assert counted == 1


def test_the_window_starts_empty_after_every_transition() -> None:
    breaker = with_rate()
    for n in range(10):
        breaker.failure(float(n))
    assert breaker.window(9.0) == WindowStats(0, 0)  # open: nothing is counted
    now = 9.0 + COOLDOWN
    assert breaker.allow(now)
    breaker.success(now)
    assert breaker.state(now) == "closed"
    for _ in range(9):
        breaker.failure(now)
    assert breaker.state(now) == "closed"  # 9 failures in the new closed spell: too few


def test_success_without_now_counts_at_the_latest_time_seen() -> None:
    breaker = with_rate()
    assert breaker.allow(50.0)
    breaker.success()  # actors/provider.py calls it like this
    assert breaker.window(50.0) == WindowStats(1, 0)
    assert breaker.window(50.0 + RATE.window_s) == WindowStats(0, 0)


def test_rate_rule_refuses_nonsense() -> None:
    for kwargs in ({"failure_rate": 0.0}, {"failure_rate": 1.5}, {"window_s": 0.0}):
        with pytest.raises(ValueError):
            RateRule(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RateRule(min_calls=0)


def test_without_a_rate_rule_the_window_is_empty() -> None:
    breaker = Breaker(failures=3, cooldown_s=COOLDOWN)
    breaker.failure(1.0)
    assert breaker.window(1.0) == WindowStats(0, 0)


# -- the cool-down is served in full --------------------------------------------------------------


def test_a_late_success_does_not_close_an_open_breaker() -> None:
    """Changed: a success used to close an open breaker, which undid the rate rule at once."""
    breaker = opened(at=100.0)
    breaker.success(101.0)  # a call admitted before the opening
    assert breaker.statistics(101.0) == BreakerStats("open", 0, 1)
    assert not breaker.allow(101.0)
    assert breaker.retry_after(101.0) == pytest.approx(COOLDOWN - 1.0)


def test_a_late_failure_does_not_extend_the_cooldown() -> None:
    """Changed: a late failure used to restart the cool-down; ``retry-after`` must hold."""
    breaker = opened(at=100.0)
    breaker.failure(105.0)
    assert breaker.retry_after(105.0) == pytest.approx(COOLDOWN - 5.0)
    assert breaker.state(100.0 + COOLDOWN) == "half_open"


def test_a_straggler_success_closes_a_half_open_breaker() -> None:
    breaker, now = half_open(probes=1)
    breaker.success(now)  # admitted before the opening, answered well just now
    assert breaker.state(now) == "closed"


def test_admits_peeks_without_taking_a_probe() -> None:
    breaker, now = half_open(probes=1)
    assert all(breaker.admits(now) for _ in range(5))
    assert breaker.allow(now)
    assert not breaker.admits(now)
    assert not opened().admits(100.0)
    assert Breaker(failures=1, cooldown_s=COOLDOWN).admits(0.0)


# -- transitions ----------------------------------------------------------------------------------


def test_transitions_report_a_whole_cycle_once_in_order() -> None:
    breaker = Breaker(failures=2, cooldown_s=COOLDOWN, probes=1)
    breaker.failure(1.0)
    breaker.failure(2.0)
    assert breaker.transitions() == [Transition(2.0, "closed", "open", "failures")]
    assert breaker.transitions() == []
    assert breaker.allow(50.0)  # half-opened at 12.0, noticed at 50.0
    breaker.failure(51.0)
    assert breaker.allow(61.0)
    breaker.success(62.0)
    assert breaker.transitions() == [
        Transition(2.0 + COOLDOWN, "open", "half_open", "cooldown"),
        Transition(51.0, "half_open", "open", "probe_failure"),
        Transition(51.0 + COOLDOWN, "open", "half_open", "cooldown"),
        Transition(62.0, "half_open", "closed", "probe_success"),
    ]
    assert breaker.statistics(62.0) == BreakerStats("closed", 0, 2)


def test_undrained_transitions_keep_the_latest() -> None:
    breaker = Breaker(failures=1, cooldown_s=1.0)
    now = 0.0
    for _ in range(TRANSITIONS_KEPT):  # two transitions per turn
        breaker.failure(now)
        now += 1.0
        assert breaker.state(now) == "half_open"
    kept = breaker.transitions()
    assert len(kept) == TRANSITIONS_KEPT
    assert kept[-1] == Transition(now, "open", "half_open", "cooldown")


# -- the state machine against a reference model --------------------------------------------------


@dataclass
class Admitted:
    probe: bool
    period: int


@dataclass
class Model:
    """What the module docstring promises, written out plainly."""

    threshold: int
    rate: RateRule | None
    state: State = "closed"
    consecutive: int = 0
    opened_at: float = 0.0
    opened_total: int = 0
    outcomes: list[tuple[float, bool]] = dataclasses.field(default_factory=list)

    def counted(self, now: float) -> list[bool]:
        """The outcomes the window holds at ``now``: the same bucket rule as the docstring."""
        if self.rate is None:
            return []
        width = self.rate.window_s / WINDOW_BUCKETS
        newest = math.floor(now / width)
        return [
            failed
            for at, failed in self.outcomes
            if math.floor(at / width) > newest - WINDOW_BUCKETS
        ]

    def tripped(self, now: float) -> bool:
        window = self.counted(now)
        if self.rate is None or len(window) < self.rate.min_calls:
            return False
        return sum(window) / len(window) >= self.rate.failure_rate

    def move(self, state: State) -> None:
        self.state = state
        self.outcomes.clear()

    def open(self, now: float) -> None:
        self.move("open")
        self.opened_at, self.opened_total = now, self.opened_total + 1

    def tick(self, now: float) -> None:
        if self.state == "open" and now - self.opened_at >= COOLDOWN:
            self.move("half_open")

    def success(self, now: float) -> None:
        self.tick(now)
        self.consecutive = 0
        if self.state == "half_open":
            self.move("closed")
        elif self.state == "closed":
            self.outcomes.append((now, False))

    def failure(self, now: float) -> None:
        self.tick(now)
        self.consecutive += 1
        if self.state == "half_open":
            self.open(now)
        elif self.state == "closed":
            self.outcomes.append((now, True))
            if self.consecutive >= self.threshold or self.tripped(now):
                self.open(now)


RATES = st.none() | st.builds(
    RateRule,
    failure_rate=st.sampled_from([0.25, 0.5, 1.0]),
    window_s=st.sampled_from([5.0, 30.0]),
    min_calls=st.integers(1, 6),
)


class BreakerMachine(RuleBasedStateMachine):
    """Random allow/success/failure/release/advance sequences against a reference model.

    Every verdict belongs to one admitted call. ``release_probe`` is called for any probe, also
    one from an earlier half-open period. After every step the drained transitions must chain
    from the state seen before to the state seen now.
    """

    def __init__(self) -> None:
        super().__init__()
        self.breaker = Breaker(failures=1, cooldown_s=COOLDOWN)
        self.model = Model(1, None)
        self.probes = 1
        self.now = 0.0
        self.seen: State = "closed"
        self.calls: list[Admitted] = []

    @initialize(threshold=st.integers(1, 4), probes=st.integers(1, 3), rate=RATES)
    def build(self, threshold: int, probes: int, rate: RateRule | None) -> None:
        self.breaker = Breaker(failures=threshold, cooldown_s=COOLDOWN, probes=probes, rate=rate)
        self.model = Model(threshold, rate)
        self.probes = probes

    def observe(self) -> State:
        state = self.breaker.state(self.now)
        self.model.tick(self.now)
        assert state == self.model.state
        return state

    @rule(dt=st.floats(0.0, 2 * COOLDOWN, allow_nan=False))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.observe()

    @rule()
    def allow(self) -> None:
        state = self.observe()
        admits = self.breaker.admits(self.now)
        admitted = self.breaker.allow(self.now)
        assert admits == admitted
        if state == "closed":
            assert admitted
        if state == "open":
            assert not admitted
        if admitted:
            self.calls.append(Admitted(state == "half_open", self.breaker.period))

    @precondition(lambda self: bool(self.calls))
    @rule(data=st.data(), with_now=st.booleans())
    def succeed(self, data: st.DataObject, with_now: bool) -> None:
        self.calls.remove(data.draw(st.sampled_from(self.calls)))
        self.breaker.success(self.now if with_now else None)
        self.model.success(self.now)
        self.observe()

    @precondition(lambda self: bool(self.calls))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        self.calls.remove(data.draw(st.sampled_from(self.calls)))
        self.breaker.failure(self.now)
        self.model.failure(self.now)
        self.observe()

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
        return call.probe and call.period == self.breaker.period and self.seen == "half_open"

    @invariant()
    def transitions_chain(self) -> None:
        state = self.observe()
        for transition in self.breaker.transitions():
            assert transition.before == self.seen
            assert transition.at <= self.now
            self.seen = transition.after
        assert self.seen == state

    @invariant()
    def probes_in_flight_within_budget(self) -> None:
        assert sum(self.current_probe(call) for call in self.calls) <= self.probes

    @invariant()
    def statistics_match_the_model(self) -> None:
        stats = self.breaker.statistics(self.now)
        model = self.model
        assert stats == BreakerStats(model.state, model.consecutive, model.opened_total)
        window = self.breaker.window(self.now)
        counted = model.counted(self.now)
        assert window == WindowStats(len(counted), sum(counted))

    @invariant()
    def retry_after_is_bounded(self) -> None:
        if self.seen == "open":
            assert 0.0 <= self.breaker.retry_after(self.now) <= COOLDOWN + 1e-9  # float rounding


BreakerMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, derandomize=True, deadline=None
)
TestBreakerMachine = BreakerMachine.TestCase
