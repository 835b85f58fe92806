"""Upstream rate-limit headers read into a ``RateSignal``, and the pause rule."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actorproxy.limits.signals import Budget, RateSignal, format_duration, parse, parse_duration

NOW_WALL = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in values.items()]


# --- retry-after ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_headers", "expected"),
    [
        (headers(retry_after="7"), 7.0),
        (headers(retry_after="1.5"), 1.5),
        (headers(retry_after="0"), 0.0),
        (headers(retry_after_ms="6500"), 6.5),
        (headers(retry_after="7", retry_after_ms="6500"), 6.5),  # the precise one wins
        (headers(retry_after="soon", retry_after_ms="x"), None),
        (headers(retry_after="-3"), None),
        (headers(retry_after="9" * 400), None),  # not a finite float
        (headers(retry_after="Sat, 01 Mar 2025 12:00:30 GMT"), 30.0),
        (headers(retry_after="Sat, 01 Mar 2025 11:59:00 GMT"), 0.0),  # in the past: go now
        (headers(retry_after="Sat, 01 Mar 2025 12:00:30"), 30.0),  # no zone: GMT, never local
        ([], None),
    ],
)
def test_retry_after(given_headers: list[tuple[bytes, bytes]], expected: float | None) -> None:
    assert parse(given_headers, now_wall=NOW_WALL).retry_after_s == expected


def test_an_http_date_needs_the_wall_clock() -> None:
    assert parse(headers(retry_after="Sat, 01 Mar 2025 12:00:30 GMT")).retry_after_s is None


def test_the_first_occurrence_counts_and_junk_bytes_are_ignored() -> None:
    signal = parse([(b"retry-after", b"2"), (b"retry-after", b"9"), (b"x-other", b"\xff\xfe")])
    assert signal.retry_after_s == 2.0
    assert parse([(b"retry-after", b"\xff")]).retry_after_s is None


# --- OpenAI --------------------------------------------------------------------------------


def test_openai_budgets() -> None:
    signal = parse(
        headers(
            x_ratelimit_limit_requests="5000",
            x_ratelimit_remaining_requests="4999",
            x_ratelimit_reset_requests="12ms",
            x_ratelimit_limit_tokens="160000",
            x_ratelimit_remaining_tokens="0",
            x_ratelimit_reset_tokens="6m0s",
        )
    )
    assert signal == RateSignal(requests=Budget(5000, 4999, 0.012), tokens=Budget(160000, 0, 360.0))
    assert signal.pause_s == 360.0


def test_an_unreadable_openai_value_leaves_a_gap() -> None:
    signal = parse(headers(x_ratelimit_remaining_requests="lots", x_ratelimit_reset_requests="?"))
    assert signal.requests == Budget(None, None, None) and signal.pause_s is None
    assert parse(headers(x_ratelimit_remaining_requests="-1")).requests == Budget()


# --- Anthropic -----------------------------------------------------------------------------


def test_anthropic_budgets_with_rfc3339_resets() -> None:
    signal = parse(
        headers(
            anthropic_ratelimit_requests_limit="50",
            anthropic_ratelimit_requests_remaining="49",
            anthropic_ratelimit_requests_reset="2025-03-01T12:00:05Z",
            anthropic_ratelimit_tokens_remaining="1000",
            anthropic_ratelimit_tokens_reset="2025-03-01T12:00:30.5+00:00",
            anthropic_ratelimit_input_tokens_limit="40000",
            anthropic_ratelimit_input_tokens_remaining="0",
            anthropic_ratelimit_input_tokens_reset="2025-03-01T13:00:20+01:00",
            anthropic_ratelimit_output_tokens_remaining="8000",
            anthropic_ratelimit_output_tokens_reset="2025-03-01T11:00:00Z",
        ),
        now_wall=NOW_WALL,
    )
    assert signal == RateSignal(
        requests=Budget(50, 49, 5.0),
        tokens=Budget(None, 1000, 30.5),
        input_tokens=Budget(40000, 0, 20.0),
        output_tokens=Budget(None, 8000, 0.0),
    )
    assert signal.pause_s == 20.0  # the exhausted input tokens


def test_anthropic_resets_need_the_wall_clock_and_a_zone() -> None:
    exhausted = headers(
        anthropic_ratelimit_requests_remaining="0",
        anthropic_ratelimit_requests_reset="2025-03-01T12:00:05Z",
        anthropic_ratelimit_tokens_remaining="0",
        anthropic_ratelimit_tokens_reset="2025-03-01T12:00:05",  # no zone: unreadable
    )
    assert parse(exhausted).requests == Budget(None, 0, None)
    assert parse(exhausted).pause_s is None
    assert parse(exhausted, now_wall=NOW_WALL).tokens == Budget(None, 0, None)
    assert parse(exhausted, now_wall=NOW_WALL).pause_s == 5.0


def test_openai_names_win_over_anthropic_ones() -> None:
    both = headers(x_ratelimit_remaining_requests="3", anthropic_ratelimit_requests_remaining="0")
    assert parse(both, now_wall=NOW_WALL).requests == Budget(None, 3, None)


# --- the pause rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "pause"),
    [
        (RateSignal(), None),
        (RateSignal(retry_after_s=3.0), 3.0),
        (RateSignal(requests=Budget(10, 1, 30.0)), None),  # not exhausted
        (RateSignal(requests=Budget(10, 0, 30.0)), 30.0),
        (RateSignal(requests=Budget(10, 0, None)), None),  # exhausted, but no reset known
        (RateSignal(retry_after_s=3.0, tokens=Budget(10, 0, 30.0)), 30.0),  # the longest
        (RateSignal(retry_after_s=40.0, tokens=Budget(10, 0, 30.0)), 40.0),
        (RateSignal(requests=Budget(10, 0, 2.0), output_tokens=Budget(10, 0, 9.0)), 9.0),
    ],
)
def test_pause_for_retry_after_or_an_exhausted_budget(
    signal: RateSignal, pause: float | None
) -> None:
    assert signal.pause_s == pause


# --- Go durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("2µs", 2e-6),
        ("2μs", 2e-6),
        ("2us", 2e-6),
        ("100ns", 1e-7),
        (".5s", 0.5),
        ("5.s", 5.0),
        (" 7s ", 7.0),
        ("1m1m", 120.0),
        ("", None),
        ("s", None),
        ("1x", None),
        ("-1s", None),
        ("+1s", None),
        ("1h-2m", None),
        ("1 s", None),
        ("1e3s", None),
        ("\u0663s", None),  # an Arabic-Indic digit: only ASCII digits are numbers here
        ("inf", None),
        ("nan", None),
        ("9" * 400 + "h", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    result = parse_duration(text)
    if seconds is None:
        assert result is None
    else:
        assert result is not None and math.isclose(result, seconds)


def go_duration(nanoseconds: int) -> str:
    """Go's ``time.Duration.String()``, which OpenAI's reset headers are written with."""
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if nanoseconds >= size:
                return _fraction(nanoseconds, size) + unit
    hours, rest = divmod(nanoseconds, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _fraction(rest, 1_000_000_000) + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    return f"{hours}h" + text if hours else text


def _fraction(value: int, size: int) -> str:
    whole, part = divmod(value, size)
    digits = str(part).rjust(len(str(size)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def test_the_go_formatter_of_the_tests_writes_what_go_writes() -> None:
    cases = {0: "0s", 1: "1ns", 1_500: "1.5µs", 20_000_000: "20ms", 1_000_000_000: "1s"}
    cases |= {360_000_000_000: "6m0s", 3_723_500_000_000: "1h2m3.5s", 3_600_000_000_000: "1h0m0s"}
    assert {ns: go_duration(ns) for ns in cases} == cases


@given(st.integers(0, 10**15))
def test_every_go_duration_reads_back(nanoseconds: int) -> None:
    seconds = parse_duration(go_duration(nanoseconds))
    assert seconds is not None and math.isclose(seconds, nanoseconds / 1e9, rel_tol=1e-12)


units = st.sampled_from([("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3), ("us", 1e-6)])


@given(st.lists(st.tuples(st.decimals(0, 10**6, places=3), units), min_size=1, max_size=6))
def test_any_sequence_of_parts_reads_as_their_sum(
    parts: list[tuple[Decimal, tuple[str, float]]],
) -> None:
    text = "".join(f"{number}{unit}" for number, (unit, _) in parts)
    expected = sum(float(str(number)) * size for number, (_, size) in parts)
    seconds = parse_duration(text)
    assert seconds is not None and math.isclose(seconds, expected, rel_tol=1e-9, abs_tol=1e-12)


@given(st.text(max_size=30))
def test_no_text_breaks_the_parser(text: str) -> None:
    seconds = parse_duration(text)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=40)), max_size=8))
def test_no_headers_break_parse(pairs: list[tuple[bytes, bytes]]) -> None:
    signal = parse(pairs, now_wall=NOW_WALL)
    assert signal.pause_s is None or signal.pause_s >= 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (-1.0, "0ms"),
        (0.0121, "13ms"),
        (1.0, "1s"),
        (59.9991, "1m0s"),
        (360.0, "6m0s"),
        (3723.5, "1h2m3.5s"),
        (3600.0, "1h0m0s"),
        (1.25, "1.25s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(0, 10**7))
def test_a_formatted_duration_reads_back_never_early(seconds: float) -> None:
    read = parse_duration(format_duration(seconds))
    assert read is not None and seconds - 1e-9 <= read <= seconds + 0.001 + 1e-9
