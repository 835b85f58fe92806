"""The retry policy: full-jitter backoff that honours Retry-After, and the retry/fall-over rules."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorproxy import errors
from actorproxy.retry import (
    Decision,
    GiveUp,
    NextTarget,
    Retry,
    RetryPolicy,
    parse_retry_after,
    retry_after_s,
)

POLICY = RetryPolicy(max_retries=2, base_s=0.25, cap_s=4.0, max_wait_s=10.0)
RNG = random.Random(0)


def http_error(status: int, *headers: tuple[bytes, bytes]) -> errors.UpstreamHTTPError:
    body = errors.ErrorBody(message="upstream says no", type="upstream")
    return errors.UpstreamHTTPError(status, body, list(headers))


RETRYABLE: list[errors.ProxyError] = [
    *(http_error(status) for status in (408, 409, 429, 500, 502, 503, 504, 529)),
    errors.UpstreamTimeout("slow"),
    errors.UpstreamConnectFailed("refused"),
    errors.UpstreamProtocolError("reset"),
]
NOT_RETRYABLE: list[errors.ProxyError] = [
    *(http_error(status) for status in (400, 401, 403, 404, 413, 422, 501)),
    errors.InvalidRequest("bad"),
    errors.CannotUnderstand("garbage"),
]
REFUSALS: list[errors.ProxyError] = [
    errors.Unavailable("breaker open"),
    errors.RateLimited("queue full", retry_after_s=2.0),
    errors.ActorFailed("crashed"),
    errors.CannotExpress("no such parameter there"),
]
ANY_ERROR = st.sampled_from([*RETRYABLE, *NOT_RETRYABLE, *REFUSALS])


def decide(
    error: errors.ProxyError,
    attempt: int = 0,
    *,
    streaming: bool = False,
    deadline_left_s: float = math.inf,
    policy: RetryPolicy = POLICY,
) -> Decision:
    return policy.decide(
        error, attempt, streaming=streaming, deadline_left_s=deadline_left_s, rng=RNG
    )


# -- backoff --------------------------------------------------------------------------------------


def test_the_ceiling_doubles_up_to_the_cap() -> None:
    assert [POLICY.ceiling(n) for n in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert POLICY.ceiling(10**9) == 4.0  # no overflow however long it goes on


@given(
    attempt=st.integers(0, 1000),
    retry_after=st.none() | st.floats(0.0, 1e4),
    seed=st.integers(0, 2**32),
)
def test_full_jitter_stays_in_its_range_and_never_below_retry_after(
    attempt: int, retry_after: float | None, seed: int
) -> None:
    policy = RetryPolicy(max_retries=1000)
    delay = policy.next_delay(attempt, retry_after, random.Random(seed))
    if attempt >= policy.max_retries:
        assert delay is None
        return
    assert delay is not None
    ceiling = policy.ceiling(attempt)
    assert ceiling == min(policy.cap_s, policy.base_s * 2**attempt)
    if retry_after is None:
        assert 0.0 <= delay <= ceiling
    else:
        assert retry_after <= delay <= max(ceiling, retry_after)


def test_full_jitter_is_uniform_over_its_range() -> None:
    rng, draws = random.Random(42), 20_000
    delays = [POLICY.next_delay(1, None, rng) or 0.0 for _ in range(draws)]
    quarters = Counter(min(3, int(delay / POLICY.ceiling(1) * 4)) for delay in delays)
    chi2 = sum((quarters[q] - draws / 4) ** 2 / (draws / 4) for q in range(4))
    assert chi2 < 16.27  # df=3, p=0.001


def test_no_delay_once_retries_are_spent() -> None:
    assert POLICY.next_delay(2, None, RNG) is None
    assert RetryPolicy(max_retries=0).next_delay(0, None, RNG) is None


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    for kwargs in ({"base_s": -1.0}, {"cap_s": math.nan}, {"max_wait_s": -0.1}):
        with pytest.raises(ValueError):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]


# -- decide ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", RETRYABLE, ids=repr)
def test_retryable_errors_retry_then_move_on(error: errors.ProxyError) -> None:
    first, second, third = (decide(error, attempt) for attempt in range(3))
    assert isinstance(first, Retry) and 0.0 <= first.delay_s <= POLICY.ceiling(0)
    assert isinstance(second, Retry) and 0.0 <= second.delay_s <= POLICY.ceiling(1)
    assert third == NextTarget("retries_exhausted")


@pytest.mark.parametrize("error", NOT_RETRYABLE, ids=repr)
def test_non_retryable_errors_give_up(error: errors.ProxyError) -> None:
    assert decide(error) == GiveUp("not_retryable")


@pytest.mark.parametrize("error", REFUSALS, ids=repr)
def test_a_target_that_refused_is_left_at_once(error: errors.ProxyError) -> None:
    assert decide(error) == NextTarget("refused")


@given(error=ANY_ERROR, attempt=st.integers(0, 5), deadline=st.floats(-1.0, 100.0))
def test_never_anything_but_give_up_once_streaming(
    error: errors.ProxyError, attempt: int, deadline: float
) -> None:
    assert decide(error, attempt, streaming=True, deadline_left_s=deadline) == GiveUp(
        "streaming_started"
    )


@pytest.mark.parametrize("deadline", [0.0, -1.0])
def test_past_the_deadline_gives_up(deadline: float) -> None:
    assert decide(errors.UpstreamTimeout("slow"), deadline_left_s=deadline) == GiveUp("deadline")


def test_retry_after_sets_the_least_delay() -> None:
    for headers in [(b"retry-after", b"3"), (b"retry-after-ms", b"3000")]:
        decision = decide(http_error(429, headers))
        assert isinstance(decision, Retry)
        assert decision.delay_s == 3.0  # above the jitter ceiling: exactly what was asked


def test_a_retry_after_longer_than_max_wait_moves_on() -> None:
    assert decide(http_error(429, (b"retry-after", b"30"))) == NextTarget("wait_too_long")


def test_a_retry_after_beyond_the_deadline_moves_on() -> None:
    error = http_error(503, (b"retry-after", b"3"))
    assert decide(error, deadline_left_s=2.0) == NextTarget("wait_too_long")
    assert isinstance(decide(error, deadline_left_s=3.5), Retry)


@given(
    error=ANY_ERROR,
    attempt=st.integers(0, 4),
    streaming=st.booleans(),
    deadline=st.floats(-1.0, 20.0),
    retry_after=st.none() | st.integers(0, 15),
    max_retries=st.integers(0, 3),
    seed=st.integers(0, 2**32),
)
def test_decide_retries_only_when_every_rule_allows(  # noqa: PLR0913 -- hypothesis inputs
    error: errors.ProxyError,
    attempt: int,
    streaming: bool,
    deadline: float,
    retry_after: int | None,
    max_retries: int,
    seed: int,
) -> None:
    if retry_after is not None and isinstance(error, errors.UpstreamHTTPError):
        error = http_error(error.status, (b"retry-after", str(retry_after).encode()))
    policy = RetryPolicy(max_retries=max_retries)
    decision = policy.decide(
        error, attempt, streaming=streaming, deadline_left_s=deadline, rng=random.Random(seed)
    )
    if not isinstance(decision, Retry):
        return
    assert not streaming and error.retryable and attempt < max_retries
    assert not isinstance(error, (errors.Unavailable, errors.ActorFailed))
    assert decision.delay_s <= min(policy.max_wait_s, deadline)
    assert decision.delay_s >= (retry_after_s(error) or 0.0)


def run(
    policy: RetryPolicy, faults: dict[str, list[errors.ProxyError | None]]
) -> tuple[list[str], float, errors.ProxyError | None]:
    """Drive ``decide`` like the proxy will: targets in order, each with a script of outcomes
    (``None`` succeeds). Returns the attempts made, the time slept, and the error answered."""
    attempts: list[str] = []
    slept, rng = 0.0, random.Random(3)
    last: errors.ProxyError | None = None
    for target, script in faults.items():
        for attempt, outcome in enumerate(script):
            attempts.append(target)
            if outcome is None:
                return attempts, slept, None
            last = outcome
            decision = policy.decide(outcome, attempt, streaming=False, deadline_left_s=60, rng=rng)
            if isinstance(decision, GiveUp):
                return attempts, slept, last
            if isinstance(decision, NextTarget):
                break
            slept += decision.delay_s
    return attempts, slept, last


def test_a_healthy_fallback_serves_after_the_first_target_spends_its_retries() -> None:
    down = errors.UpstreamConnectFailed("refused")
    attempts, slept, error = run(POLICY, {"a": [down] * 10, "b": [None]})
    assert (attempts, error) == (["a", "a", "a", "b"], None)
    assert slept <= POLICY.ceiling(0) + POLICY.ceiling(1)


def test_a_client_error_is_not_tried_elsewhere() -> None:
    bad = http_error(400)
    assert run(POLICY, {"a": [bad], "b": [None]}) == (["a"], 0.0, bad)


def test_retry_after_is_slept_before_the_same_target_is_tried_again() -> None:
    busy = http_error(429, (b"retry-after", b"5"))
    attempts, slept, error = run(POLICY, {"a": [busy, None]})
    assert (attempts, error) == (["a", "a"], None)
    assert slept >= 5.0


# -- Retry-After ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ([], None),
        ([(b"retry-after", b"3")], 3.0),
        ([(b"Retry-After", b" 1.5 ")], 1.5),
        ([(b"retry-after-ms", b"250")], 0.25),
        ([(b"retry-after", b"3"), (b"retry-after-ms", b"250")], 0.25),
        ([(b"retry-after-ms", b"soon"), (b"retry-after", b"2")], 2.0),
        ([(b"retry-after", b"Wed, 21 Oct 2015 07:28:00 GMT")], None),
        ([(b"retry-after", b"-1")], None),
        ([(b"retry-after", b"nan")], None),
        ([(b"retry-after", b"inf")], None),
        ([(b"retry-after", b"\xff")], None),
        ([(b"retry-after", b"4"), (b"retry-after", b"9")], 4.0),
        ([(b"x-ratelimit-reset-requests", b"1s")], None),
    ],
)
def test_parse_retry_after(headers: list[tuple[bytes, bytes]], seconds: float | None) -> None:
    assert parse_retry_after(headers) == seconds


def test_our_own_429_carries_its_retry_after() -> None:
    assert retry_after_s(errors.RateLimited("full", retry_after_s=2.5)) == 2.5
    assert retry_after_s(errors.UpstreamTimeout("slow")) is None
