"""The sliding-window limiter: exact rpm/tpm in every window, exact ``ready_at``, reconciliation.

The property tests drive the limiter like an actor would (admit, wait until ``ready_at``, settle)
and check the guarantees of ``actorproxy.limits.rate`` on the record of what was admitted, with
times on a 1/8 s grid so that every sum and comparison is exact in floating point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorproxy.limits.rate import (
    NeverAdmissible,
    RateLimiter,
    RateStats,
    Reservation,
    estimate_tokens,
)

W = 60.0


def admitted(limiter: RateLimiter, now: float, tokens: int = 0) -> Reservation:
    reservation = limiter.try_acquire(now, tokens)
    assert reservation is not None
    return reservation


# --- requests per minute -------------------------------------------------------------------


def test_admits_rpm_requests_then_waits_for_the_oldest_to_leave_the_window() -> None:
    limiter = RateLimiter(rpm=3, tpm=None)
    for now in (0.0, 10.0, 20.0):
        admitted(limiter, now)
    assert limiter.try_acquire(30.0, 0) is None
    assert limiter.ready_at(30.0, 0) == 60.0
    assert limiter.wait_time(30.0, 0) == 30.0
    assert limiter.try_acquire(math.nextafter(60.0, 0.0), 0) is None
    admitted(limiter, 60.0)
    assert limiter.ready_at(60.0, 0) == 70.0


def test_an_admission_counts_for_exactly_the_window_after_it() -> None:
    limiter = RateLimiter(rpm=1, tpm=None)
    admitted(limiter, 5.0)
    assert limiter.statistics(math.nextafter(65.0, 0.0)).requests == 1
    assert limiter.statistics(65.0).requests == 0
    admitted(limiter, 65.0)


def test_a_burst_at_a_window_edge_is_not_doubled() -> None:
    """A token bucket would let 2 * rpm through around t = 60; the sliding log lets rpm."""
    limiter = RateLimiter(rpm=10, tpm=None)
    times = [59.0 + i / 10 for i in range(10)]  # 59.0 .. 59.9
    for now in times:
        admitted(limiter, now)
    for now in (60.0, 61.0, 100.0, math.nextafter(119.0, 0.0)):
        assert limiter.try_acquire(now, 0) is None
    admitted(limiter, 119.0)


# --- tokens per minute ---------------------------------------------------------------------


def test_tokens_wait_until_enough_old_entries_leave() -> None:
    limiter = RateLimiter(rpm=None, tpm=100)
    admitted(limiter, 0.0, 40)
    admitted(limiter, 10.0, 30)
    admitted(limiter, 20.0, 30)
    assert limiter.try_acquire(30.0, 1) is None
    assert limiter.ready_at(30.0, 40) == 60.0  # the first 40 leave
    assert limiter.ready_at(30.0, 41) == 70.0  # 40 + 30 must leave
    assert limiter.ready_at(30.0, 100) == 80.0  # everything must leave


def test_more_tokens_than_tpm_is_never_admissible() -> None:
    limiter = RateLimiter(rpm=10, tpm=100)
    assert limiter.admissible(100) and not limiter.admissible(101)
    with pytest.raises(NeverAdmissible) as caught:
        limiter.try_acquire(0.0, 101)
    assert (caught.value.tokens, caught.value.tpm) == (101, 100)
    with pytest.raises(NeverAdmissible):
        limiter.wait_time(0.0, 101)
    assert RateLimiter(rpm=1, tpm=None).admissible(10**12)


def test_both_limits_apply_and_the_later_one_decides() -> None:
    limiter = RateLimiter(rpm=2, tpm=100)
    admitted(limiter, 0.0, 90)
    admitted(limiter, 30.0, 5)
    assert limiter.ready_at(40.0, 5) == 60.0  # rpm frees at 60, tokens fit already
    assert limiter.ready_at(40.0, 10) == 60.0  # both free at 60
    limiter.pause_until(75.0)
    assert limiter.ready_at(40.0, 10) == 75.0


def test_unlimited_dimensions_admit_everything() -> None:
    limiter = RateLimiter(rpm=None, tpm=None)
    for i in range(1000):
        admitted(limiter, i / 100, 10**9)
    stats = limiter.statistics(10.0)
    assert (stats.requests, stats.remaining_requests, stats.remaining_tokens) == (1000, None, None)


@pytest.mark.parametrize(
    ("rpm", "tpm", "window_s"), [(0, None, 60.0), (None, 0, 60.0), (1, 1, 0.0), (-1, None, 1.0)]
)
def test_limits_must_be_positive(rpm: int | None, tpm: int | None, window_s: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(rpm=rpm, tpm=tpm, window_s=window_s)


def test_time_must_not_go_backwards() -> None:
    limiter = RateLimiter(rpm=1, tpm=None)
    limiter.statistics(10.0)
    with pytest.raises(ValueError, match="backwards"):
        limiter.try_acquire(9.0, 0)


def test_negative_tokens_are_refused() -> None:
    limiter = RateLimiter(rpm=1, tpm=10)
    with pytest.raises(ValueError, match="negative"):
        limiter.try_acquire(0.0, -1)
    reservation = admitted(limiter, 0.0, 5)
    with pytest.raises(ValueError, match="negative"):
        limiter.reconcile(reservation, -1, 1.0)


# --- reconcile and release -----------------------------------------------------------------


def test_reconcile_below_the_reservation_frees_tokens_at_once() -> None:
    limiter = RateLimiter(rpm=None, tpm=100)
    reservation = admitted(limiter, 0.0, 80)
    assert limiter.try_acquire(5.0, 30) is None
    limiter.reconcile(reservation, 50, 10.0)
    assert limiter.statistics(10.0).tokens == 50
    admitted(limiter, 10.0, 50)
    # The 50 kept their admission time: they leave at 60, not at 70.
    assert limiter.ready_at(10.0, 10) == 60.0


def test_reconcile_above_the_reservation_charges_the_excess_at_reconcile_time() -> None:
    limiter = RateLimiter(rpm=None, tpm=100)
    reservation = admitted(limiter, 0.0, 60)
    limiter.reconcile(reservation, 130, 30.0)
    assert limiter.statistics(30.0).tokens == 130
    assert limiter.statistics(30.0).remaining_tokens == 0
    assert limiter.ready_at(30.0, 30) == 60.0  # the 60 charged at 0 leave: 70 + 30 fit
    assert limiter.ready_at(30.0, 31) == 90.0  # the 70 charged at 30 must leave too
    assert limiter.statistics(60.0).tokens == 70


def test_reconcile_after_the_window_passed_only_charges_an_excess() -> None:
    limiter = RateLimiter(rpm=1, tpm=100)
    long_stream = admitted(limiter, 0.0, 50)
    limiter.reconcile(long_stream, 40, 200.0)
    assert limiter.statistics(200.0) == stats_at(200.0, requests=0, tokens=0)
    other = admitted(limiter, 300.0, 50)
    limiter.reconcile(other, 80, 400.0)
    assert limiter.statistics(400.0) == stats_at(400.0, requests=0, tokens=30, reset_tokens=60.0)


def stats_at(
    now: float,
    *,
    requests: int,
    tokens: int,
    reset_requests: float = 0.0,
    reset_tokens: float = 0.0,
) -> RateStats:
    return RateStats(1, 100, requests, tokens, 1 - requests, 100 - tokens, reset_requests,
                     reset_tokens, None)  # fmt: skip


def test_release_gives_back_the_slot_and_the_tokens() -> None:
    limiter = RateLimiter(rpm=1, tpm=100)
    reservation = admitted(limiter, 0.0, 100)
    assert limiter.try_acquire(1.0, 0) is None
    limiter.release(reservation)
    assert limiter.statistics(1.0) == stats_at(1.0, requests=0, tokens=0)
    admitted(limiter, 1.0, 100)


def test_a_reservation_settles_once_and_only_with_its_limiter() -> None:
    limiter, other = RateLimiter(rpm=5, tpm=100), RateLimiter(rpm=5, tpm=100)
    reservation = admitted(limiter, 0.0, 10)
    with pytest.raises(ValueError, match="another limiter"):
        other.release(reservation)
    limiter.reconcile(reservation, 5, 1.0)
    with pytest.raises(RuntimeError, match="already"):
        limiter.release(reservation)
    with pytest.raises(RuntimeError, match="already"):
        limiter.reconcile(reservation, 5, 1.0)
    assert limiter.statistics(1.0).tokens == 5


def test_releasing_an_expired_reservation_changes_nothing() -> None:
    limiter = RateLimiter(rpm=2, tpm=100)
    old = admitted(limiter, 0.0, 50)
    admitted(limiter, 30.0, 50)
    assert limiter.statistics(70.0).tokens == 50
    limiter.release(old)
    assert limiter.statistics(70.0).tokens == 50


# --- pause, ahead, statistics, estimates ---------------------------------------------------


def test_nothing_is_admitted_while_paused_and_pauses_only_extend() -> None:
    limiter = RateLimiter(rpm=100, tpm=None)
    limiter.pause_until(30.0)
    limiter.pause_until(20.0)
    assert limiter.ready_at(10.0, 0) == 30.0
    assert limiter.statistics(10.0).paused_until == 30.0
    assert limiter.try_acquire(29.9, 0) is None
    admitted(limiter, 30.0)
    assert limiter.statistics(30.0).paused_until is None


def test_ready_at_with_requests_ahead() -> None:
    limiter = RateLimiter(rpm=3, tpm=100)
    admitted(limiter, 0.0, 50)
    admitted(limiter, 10.0, 10)
    assert limiter.ready_at(20.0, 10, ahead=1) == 60.0  # 2 + 1 + 1 > 3: the first must leave
    assert limiter.ready_at(20.0, 10, ahead=1, ahead_tokens=40) == 60.0  # 50 + 10 + 40 + 10
    assert limiter.ready_at(20.0, 10, ahead=1, ahead_tokens=81) == 70.0  # 151 - 50 > 100
    # They cannot all be in one window: the answer is the lower bound now + window.
    assert limiter.ready_at(20.0, 10, ahead=5) == 80.0
    # Exact when the ones ahead are admitted at once.
    admitted(limiter, 20.0, 10)
    assert limiter.ready_at(20.0, 10) == 60.0


def test_statistics_report_remaining_and_reset() -> None:
    limiter = RateLimiter(rpm=10, tpm=1000)
    admitted(limiter, 0.0, 100)
    admitted(limiter, 20.0, 200)
    released = admitted(limiter, 30.0, 300)
    limiter.release(released)
    assert limiter.statistics(40.0) == RateStats(
        rpm=10,
        tpm=1000,
        requests=2,
        tokens=300,
        remaining_requests=8,
        remaining_tokens=700,
        reset_requests_s=40.0,
        reset_tokens_s=40.0,
        paused_until=None,
    )


def test_wait_time_never_answers_a_moment_too_early() -> None:
    limiter = RateLimiter(rpm=1, tpm=None, window_s=0.3)
    admitted(limiter, 0.1)
    now = 0.2
    wait = limiter.wait_time(now, 0)
    assert now + wait >= limiter.ready_at(now, 0)
    admitted(limiter, now + wait)


@pytest.mark.parametrize(
    ("body_len", "max_output", "default", "choices", "expected"),
    [(400, 50, 1000, 1, 150), (401, None, 1000, 1, 1101), (0, 0, 10, 1, 0), (4, 10, 0, 3, 31)],
)
def test_estimate_tokens(
    body_len: int, max_output: int | None, default: int, choices: int, expected: int
) -> None:
    assert estimate_tokens(body_len, max_output, default, choices=choices) == expected


def test_estimate_tokens_with_a_safe_ratio() -> None:
    assert estimate_tokens(1000, 10, 0, bytes_per_token=1) == 1010
    with pytest.raises(ValueError, match="negative"):
        estimate_tokens(-1, None, 10)


# --- the guarantees, as properties ---------------------------------------------------------


@dataclass
class Admission:
    at: float
    seq: int
    reserved: int
    charge: int  # the final charge at the admission time; 0 when released
    released: bool = False


@dataclass
class Record:
    """What the upstream saw, kept by the test: admissions and excess charges, in order."""

    admissions: list[Admission] = field(default_factory=list)
    excesses: list[tuple[float, int, int]] = field(default_factory=list)  # (at, seq, tokens)
    seq: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


GRID = 8  # times are multiples of 1/8 s: exact in binary floating point

Step = tuple[str, int, int, int]  # (kind, gap before it in grid steps, a number, another)

gaps = st.one_of(st.integers(0, 2 * GRID), st.integers(0, 40 * GRID))  # bursts and lulls

arrival = st.tuples(
    st.just("arrive"),
    gaps,
    st.integers(0, 130),  # tokens (some above tpm)
    st.integers(0, 1),  # 1: wait in the queue until ready_at; 0: give up
)
settle = st.tuples(
    st.sampled_from(["reconcile", "release"]),
    gaps,
    st.integers(0, 10**6),  # which open reservation
    st.integers(0, 1000),  # actual usage, in thousandths of the reservation (times overshoot)
)


class Driver:
    """Plays the actor: admits, waits until ``ready_at`` when refused, settles reservations."""

    def __init__(self, limiter: RateLimiter, *, overshoot: float = 1.0) -> None:
        self.limiter = limiter
        self.overshoot = overshoot
        self.now = 0.0
        self.open: list[tuple[Reservation, Admission]] = []
        self.record = Record()

    def arrive(self, gap: int, tokens: int, *, patient: bool) -> None:
        self.now += gap / GRID
        if not self.limiter.admissible(tokens):
            with pytest.raises(NeverAdmissible):
                self.limiter.try_acquire(self.now, tokens)
            return
        reservation = self.limiter.try_acquire(self.now, tokens)
        if reservation is None:
            ready = self.limiter.ready_at(self.now, tokens)
            assert ready > self.now
            self.check_exact(ready, tokens)
            self.now = ready  # back on the grid (the probe went just before it)
            if not patient:
                return
            reservation = self.limiter.try_acquire(ready, tokens)
            assert reservation is not None, "refused at ready_at"
        assert (self.now * GRID).is_integer(), "off the grid: the checks would not be exact"
        admission = Admission(self.now, self.record.next_seq(), tokens, tokens)
        self.record.admissions.append(admission)
        self.open.append((reservation, admission))

    def check_exact(self, ready: float, tokens: int) -> None:
        """Refused a moment before ``ready``; ``wait_time`` lands on it (no state changes).

        The probe moves the limiter's clock just before ``ready``: the caller moves on to
        ``ready`` itself, so that every recorded time stays on the grid."""
        wait = self.limiter.wait_time(self.now, tokens)
        assert self.now + wait >= ready
        assert math.nextafter(self.now + wait, 0.0) < ready or self.now + wait == ready
        before = math.nextafter(ready, 0.0)
        if before > self.now:
            self.now = before
            assert self.limiter.try_acquire(before, tokens) is None, "admitted before ready_at"

    def settle(self, release: bool, gap: int, which: int, permille: int) -> None:
        self.now += gap / GRID
        if not self.open:
            return
        reservation, admission = self.open.pop(which % len(self.open))
        if release:
            self.limiter.release(reservation)
            admission.released, admission.charge = True, 0
            return
        actual = math.floor(permille * self.overshoot * reservation.tokens / 1000)
        self.limiter.reconcile(reservation, actual, self.now)
        admission.charge = min(actual, reservation.tokens)
        if actual > reservation.tokens:
            excess = (self.now, self.record.next_seq(), actual - reservation.tokens)
            self.record.excesses.append(excess)

    def check_statistics(self) -> None:
        """The snapshot agrees with the record, entry by entry."""
        live = [a for a in self.record.admissions if not a.released and self.now < a.at + W]
        excess = sum(t for at, _, t in self.record.excesses if self.now < at + W)
        stats = self.limiter.statistics(self.now)
        assert stats.requests == len(live)
        assert stats.tokens == sum(a.charge for a in live) + excess

    def run(self, steps: list[Step]) -> Record:
        for kind, gap, number, other in steps:
            if kind == "arrive":
                self.arrive(gap, number, patient=bool(other))
            else:
                self.settle(kind == "release", gap, number, other)
            self.check_statistics()
        return self.record


def windows(record: Record) -> list[list[Admission]]:
    """The admissions of every window [s, s + W) that starts at an admission: the maximum of
    any sliding window's count or sum is reached at one of these."""
    counted = [a for a in record.admissions if not a.released]
    return [[a for a in counted if s.at <= a.at < s.at + W] for s in counted]


limits = st.tuples(st.integers(1, 8), st.integers(100, 400))
steps = st.lists(st.one_of(arrival, arrival, settle), min_size=20, max_size=150)


@settings(max_examples=300, deadline=None)
@given(limits, steps)
def test_every_window_holds_at_most_rpm_requests_and_tpm_tokens(
    limit: tuple[int, int], script: list[Step]
) -> None:
    """Usage at most the reservation: exact in every sliding window, counted after the fact."""
    rpm, tpm = limit
    record = Driver(RateLimiter(rpm=rpm, tpm=tpm)).run(script)
    for window in windows(record):
        assert len(window) <= rpm
        assert sum(a.charge for a in window) <= tpm


@settings(max_examples=300, deadline=None)
@given(limits, steps)
def test_an_excess_is_paid_back_before_anything_more_is_admitted(
    limit: tuple[int, int], script: list[Step]
) -> None:
    """Usage up to 3x the reservation: at every admission, the final charges of the window
    before it (excess charges included) plus its own are within tpm."""
    rpm, tpm = limit
    record = Driver(RateLimiter(rpm=rpm, tpm=tpm), overshoot=3.0).run(script)
    charges = [(a.at, a.seq, a.charge) for a in record.admissions] + record.excesses
    for admission in record.admissions:
        if admission.released:
            continue
        before = [c for at, seq, c in charges if seq < admission.seq and admission.at - W < at]
        assert sum(before) + admission.charge <= tpm
    for window in windows(record):
        assert len(window) <= rpm


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 100), st.integers(0, 50)), max_size=60),
    st.floats(0.001, 1000),
)
def test_ready_at_is_exact_at_any_float_times(
    arrivals: list[tuple[float, int]], window_s: float
) -> None:
    limiter = RateLimiter(rpm=3, tpm=100, window_s=window_s)
    now = 0.0
    for gap, tokens in arrivals:
        now += gap
        if limiter.try_acquire(now, tokens) is not None:
            continue
        ready = limiter.ready_at(now, tokens)
        wait = limiter.wait_time(now, tokens)
        before = math.nextafter(ready, 0.0)
        if before > now:
            assert limiter.try_acquire(before, tokens) is None
        now = max(now + wait, before)
        assert limiter.try_acquire(now, tokens) is not None


overload = st.lists(
    st.tuples(
        st.sampled_from(["arrive", "arrive", "reconcile", "release"]),
        st.integers(0, GRID),  # arrivals every 0.5 s on average: 120 a minute, rpm <= 8
        st.integers(0, 100),
        st.just(1),  # everyone waits their turn
    ),
    min_size=100,
    max_size=300,
)


@settings(max_examples=100, deadline=None)
@given(limits, overload)
def test_under_a_tenfold_overload_no_window_exceeds_the_limits(
    limit: tuple[int, int], script: list[Step]
) -> None:
    """Everyone waits for ``ready_at`` and is admitted then: the limits are met, never passed."""
    rpm, tpm = limit
    record = Driver(RateLimiter(rpm=rpm, tpm=tpm)).run(script)
    counts = [len(window) for window in windows(record)]
    assert max(counts, default=0) <= rpm
    for window in windows(record):
        assert sum(a.charge for a in window) <= tpm
