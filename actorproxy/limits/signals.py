"""Upstream rate-limit headers, read into a ``RateSignal``: pure, the wall-clock time passed in.

Headers are ``(name, value)`` byte pairs with lowercase names (as ``actorproxy.net`` gives them);
the first occurrence of a name counts. A value that cannot be read is ignored, never an error: a
quirky header must not fail a request.

Read:

* ``retry-after-ms`` (milliseconds, a decimal) and ``retry-after`` (seconds, a decimal, or an
  HTTP-date). ``retry-after-ms`` wins when both are present (it is the more precise one, as in the
  official SDKs). An HTTP-date needs ``now_wall`` (Unix seconds, ``time.time()`` at the boundary);
  without it the date is ignored.
* OpenAI (and Azure, Groq, ...): ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; the
  resets are Go durations (``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``; units ``h m s ms us
  µs ns``) or a bare number of seconds.
* Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,
  reset}``; the resets are RFC 3339 timestamps, turned into seconds from ``now_wall`` (ignored
  without it). Where both families are present, OpenAI's names win.

The pause rule (``RateSignal.pause_s``): pause for the longest of ``retry-after`` and the reset of
every budget whose ``remaining`` is 0; ``None`` when neither applies. A budget with ``remaining``
0 but no readable reset gives no pause. Waiting for a full reset is conservative for upstreams
that refill gradually (OpenAI's reset is "until back to the initial state"): the point is to stop
hammering a provider that said stop. The caller may cap the pause.

``format_duration`` writes durations the way OpenAI does, for the headers we send ourselves.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

_UNIT_S = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_UNIT = r"(?:ns|us|µs|μs|ms|h|m|s)"
_DURATION = re.compile(f"(?:{_NUMBER}{_UNIT})+", re.ASCII)
_PART = re.compile(f"({_NUMBER})({_UNIT})", re.ASCII)
_DECIMAL = re.compile(_NUMBER, re.ASCII)

#: budget -> the names of its (limit, remaining, reset) headers, per family.
_OPENAI = {
    budget: tuple(
        f"x-ratelimit-{part}-{budget}".encode() for part in ("limit", "remaining", "reset")
    )
    for budget in ("requests", "tokens")
}
_ANTHROPIC = {
    budget: tuple(
        f"anthropic-ratelimit-{budget.replace('_', '-')}-{part}".encode()
        for part in ("limit", "remaining", "reset")
    )
    for budget in ("requests", "tokens", "input_tokens", "output_tokens")
}


@dataclass(frozen=True, slots=True)
class Budget:
    """One of the upstream's limits as it reports it; ``reset_s`` is seconds from the response."""

    limit: int | None = None
    remaining: int | None = None
    reset_s: float | None = None


@dataclass(frozen=True, slots=True)
class RateSignal:
    """What an upstream's response said about its limits (all ``None`` when it said nothing)."""

    retry_after_s: float | None = None
    requests: Budget | None = None
    tokens: Budget | None = None
    input_tokens: Budget | None = None
    output_tokens: Budget | None = None

    @property
    def budgets(self) -> tuple[Budget, ...]:
        found = (self.requests, self.tokens, self.input_tokens, self.output_tokens)
        return tuple(budget for budget in found if budget is not None)

    @property
    def pause_s(self) -> float | None:
        """Seconds to admit nothing for, from the response (see the module doc), or ``None``."""
        waits = [b.reset_s for b in self.budgets if b.remaining == 0 and b.reset_s is not None]
        if self.retry_after_s is not None:
            waits.append(self.retry_after_s)
        return max(waits) if waits else None


def parse(headers: Iterable[tuple[bytes, bytes]], *, now_wall: float | None = None) -> RateSignal:
    """Read the rate-limit headers of one upstream response (see the module doc)."""
    found: dict[bytes, str] = {}
    for name, value in headers:
        if name not in found:
            found[name] = value.decode("utf-8", "replace").strip()
    return RateSignal(
        retry_after_s=_retry_after(found, now_wall),
        requests=_budget(found, "requests", now_wall),
        tokens=_budget(found, "tokens", now_wall),
        input_tokens=_budget(found, "input_tokens", now_wall),
        output_tokens=_budget(found, "output_tokens", now_wall),
    )


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration (``"6m0s"``, ``"1h2m3.5s"``, ``"20ms"``) or a bare number of
    seconds; ``None`` if it is neither, or too large for a float (signs are not accepted: a reset
    is never negative)."""
    text = text.strip()
    if _DECIMAL.fullmatch(text):
        seconds = float(text)
    elif _DURATION.fullmatch(text):
        seconds = sum(float(number) * _UNIT_S[unit] for number, unit in _PART.findall(text))
    else:
        return None
    return seconds if math.isfinite(seconds) else None


def format_duration(seconds: float) -> str:
    """Write ``seconds`` as OpenAI writes its reset headers (``"20ms"``, ``"6m0s"``,
    ``"1h2m3.5s"``), rounded up to the millisecond so a client that waits that long is never
    early. For the ``x-ratelimit-reset-*`` headers we send."""
    millis = max(0, math.ceil(seconds * 1000))
    if millis < 1000:
        return f"{millis}ms"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, part = divmod(millis, 1000)
    text = f"{whole}.{part:03d}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    return f"{hours}h{text}" if hours else text


def _retry_after(found: dict[bytes, str], now_wall: float | None) -> float | None:
    if (ms := _seconds(found.get(b"retry-after-ms"))) is not None:
        return ms / 1000
    value = found.get(b"retry-after")
    if (seconds := _seconds(value)) is not None:
        return seconds
    return None if value is None else _until(_http_date(value), now_wall)


def _budget(found: dict[bytes, str], budget: str, now_wall: float | None) -> Budget | None:
    openai = _OPENAI.get(budget)
    if openai is not None and any(name in found for name in openai):
        limit, remaining, reset = (found.get(name) for name in openai)
        return Budget(_count(limit), _count(remaining), _duration(reset))
    anthropic = _ANTHROPIC[budget]
    if not any(name in found for name in anthropic):
        return None
    limit, remaining, reset = (found.get(name) for name in anthropic)
    return Budget(_count(limit), _count(remaining), _until(_rfc3339(reset), now_wall))


def _duration(value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


def _seconds(value: str | None) -> float | None:
    """A finite non-negative decimal, as ``retry-after`` and ``retry-after-ms`` carry."""
    if value is None or not _DECIMAL.fullmatch(value):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) else None


def _count(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdecimal() and value.isascii() else None


def _until(when: float | None, now_wall: float | None) -> float | None:
    if when is None or now_wall is None:
        return None
    return max(0.0, when - now_wall)


def _http_date(value: str) -> float | None:
    """An HTTP-date is always GMT; one without a zone is read as UTC, never as local time."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return _timestamp(when if when.tzinfo is not None else when.replace(tzinfo=UTC))


def _rfc3339(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return _timestamp(when) if when.tzinfo is not None else None


def _timestamp(when: datetime) -> float | None:
    try:
        return when.timestamp()
    except (OverflowError, ValueError):
        return None
