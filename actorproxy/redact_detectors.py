"""Built-in PII and secret detectors for :mod:`actorproxy.redact`.

Every pattern runs on raw JSON text, so no character class admits ``"`` or ``\\``: a match can
never swallow a string's closing quote or the start of an escape. The left boundaries treat a
preceding JSON escape (``\\n``, ``\\t``, ``\\u003c``...) as a separator, so ``\\n555-123-4567`` is
found although an ``n`` stands right before the digits. Checks that a regex cannot express
(Luhn, digit counts, IPv6 grammar, "looks random") run on the few candidates only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

DetectorName = Literal["email", "phone", "credit_card", "ipv4", "ipv6", "bearer_token", "api_key"]

# A match may start after a non-word character or right after a JSON escape sequence.
_AFTER_ESCAPE = r"(?<=\\[nrtbf])|(?<=\\u[0-9A-Fa-f]{4})"


def _left(extra: str = "") -> str:
    return rf"(?:(?<![\w\\{extra}])|{_AFTER_ESCAPE})"


_EMAIL = (
    _left(r".%+\-")
    + r"[A-Za-z0-9._%+\-]{1,64}+@"
    + r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z0-9\-])"
)

_PHONE_FORMATS = (
    r"\+[1-9]\d{0,2}(?:[ .\-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}+",  # +CC, checked for 8-15 digits
    r"\(\d{3}\) ?\d{3}[ .\-]\d{4}",  # (555) 123-4567
    r"\d{3}-\d{3}-\d{4}",  # 555-123-4567
    r"\d{3}\.\d{3}\.\d{4}",  # 555.123.4567
    r"0\d{1,4}[ \-]\d{3,4}[ \-]\d{3,4}",  # 020 7946 0958
    r"0\d{4} \d{6}",  # 07700 900123
    r"0[1-9](?:[ .]\d{2}){4}",  # 06 12 34 56 78
)
_PHONE = _left(r"+.\-") + "(?:" + "|".join(_PHONE_FORMATS) + r")(?!\w|[.\-]\d)"

_CARD = (
    _left(r".\-")
    + r"(?:[2-6]\d{12,18}+"
    + r"|[2-6]\d{3}([ \-])\d{4}\1\d{4}\1\d{1,4}+(?:\1\d{1,3}+)?"  # 4-4-4-4(-3), 4-4-4-1
    + r"|3\d{3}([ \-])\d{6}\2\d{4,5}+"  # Amex 4-6-5, Diners 4-6-4
    + r")(?!\w|[.\-]\d)"
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = r"(?<!\d\.)" + _left() + _OCTET + r"(?:\." + _OCTET + r"){3}(?!\w|\.\d)"

# Loose on purpose; ipaddress decides. Times (12:30:45) and MACs fail that check.
_IPV6 = _left(r":.") + r"(?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,8}+(?:\.\d{1,3}){0,3}(?!\w)"

_BEARER = _left() + r"(?i:bearer) +[A-Za-z0-9\-._~+/]{8,}+=*"

_API_KEY = (
    _left()
    + r"(?:sk-[A-Za-z0-9_\-]{20,}+"  # OpenAI sk-/sk-proj-, Anthropic sk-ant-, ours sk-ap-
    + r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}+"
    + r"|A(?:KIA|SIA)[0-9A-Z]{16}"
    + r"|AIza[0-9A-Za-z_\-]{35}"
    + r"|gh[pousr]_[A-Za-z0-9]{36,}+"
    + r"|github_pat_[A-Za-z0-9_]{22,}+"
    + r"|xox[baprs]-[A-Za-z0-9\-]{10,}+"
    + r"|hf_[A-Za-z0-9]{30,}+"
    + r")(?![A-Za-z0-9_\-])"
)

_FIXED_FORMAT_KEYS = ("AKIA", "ASIA", "AIza")
_BEARER_PREFIX = re.compile(r"(?i:bearer) +")

# Anchors are cheap necessary conditions, each starting with a literal so that the regex engine
# skips ahead at memchr speed (a leading character class is ten times slower). The full pattern
# runs only in windows around their hits: (anchors, window before a hit, window after a hit).
_ANCHORS: dict[str, tuple[tuple[str, ...], int, int]] = {
    "email": (("@",), 66, 256),
    "phone": (
        (
            r"\+[0-9]",
            r"\([0-9]{3}\)",
            r"-[0-9]{3}-[0-9]{4}",
            r"\.[0-9]{3}\.[0-9]{4}",
            r"0(?<![0-9.]0)(?:[0-9]{1,4}[ \-][0-9]{3,4}[ \-]"
            r"|[0-9]{4} [0-9]{6}|[1-9][ .][0-9]{2}[ .])",
        ),
        8,
        56,
    ),
    "credit_card": (
        tuple(rf"{d}(?<![0-9.\-]{d})[0-9]{{3}}[ \-]?[0-9]{{4}}" for d in "23456"),  # not 0.41111...
        4,
        32,
    ),
    "ipv4": ((r"\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]",), 4, 16),
    "ipv6": ((r":[0-9A-Fa-f]{0,4}:",), 6, 48),
    "bearer_token": ((r"r (?<=[Bb][Ee][Aa][Rr][Ee]r )", r"R (?<=[Bb][Ee][Aa][Rr][Ee]R )"), 6, 96),
    "api_key": (
        (
            "sk-",
            r"_(?:(?<=[sr]k_)|(?<=gh[pousr]_)|(?<=github_pat_)|(?<=hf_))",
            r"xox[baprs]-",
            r"A(?:KIA|SIA|Iza)",
        ),
        12,
        96,
    ),
}

# Each anchor set again in RE2 syntax, for a prefilter that runs over a whole batch of raw bodies
# in Arrow memory (pyarrow.compute, Latin-1 over the bytes, no GIL): a gate matches a body exactly
# when one of the detector's anchors hits its decoded text, so a detector whose gate finds nothing
# can be skipped. RE2 has no lookbehind: a consumed "start or other character" replaces it.
_GATES: dict[str, str] = {
    "email": "@",
    "phone": (
        r"\+[0-9]|\([0-9]{3}\)|-[0-9]{3}-[0-9]{4}|\.[0-9]{3}\.[0-9]{4}"
        r"|(?:^|[^0-9.])0(?:[0-9]{1,4}[ \-][0-9]{3,4}[ \-]|[0-9]{4} [0-9]{6}|[1-9][ .][0-9]{2}[ .])"
    ),
    "credit_card": r"(?:^|[^0-9.\-])[2-6][0-9]{3}[ \-]?[0-9]{4}",
    "ipv4": r"\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]",
    "ipv6": ":[0-9A-Fa-f]{0,4}:",
    "bearer_token": "[Bb][Ee][Aa][Rr][Ee][Rr] ",
    "api_key": r"sk-|(?:[sr]k|gh[pousr]|github_pat|hf)_|xox[baprs]-|A(?:KIA|SIA|Iza)",
}


Accept = Callable[[str], int | None]
"""Given a candidate, return how many of its characters to redact, or None to reject it."""


@dataclass(frozen=True, slots=True)
class Detector:
    """One compiled detector: placeholder label, regex, acceptance check, hash normalisation.

    With ``anchors`` the pattern runs only in windows of ``before``/``after`` characters
    around their hits; every match of the pattern must contain a hit. ``gate`` is an RE2 pattern
    that matches a text exactly when some anchor hits it (None: no cheaper test than running).
    """

    label: str
    pattern: re.Pattern[str]
    accept: Accept
    normalize: Callable[[str], str]
    anchors: tuple[re.Pattern[str], ...] = ()
    before: int = 0
    after: int = 0
    gate: str | None = None

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        """The pattern's matches in ``text``; each contains an anchor hit, so windows suffice."""
        if not self.anchors:
            yield from self.pattern.finditer(text)
            return
        for low, high in self._windows(text):
            for match in self.pattern.finditer(text, low, high):
                if match.end() == high < len(text):  # cut short by the window: match again
                    match = self.pattern.match(text, match.start()) or match
                yield match

    def _windows(self, text: str) -> list[tuple[int, int]]:
        hits = sorted(hit.span() for anchor in self.anchors for hit in anchor.finditer(text))
        windows: list[tuple[int, int]] = []
        for start, end in hits:
            low, high = max(0, start - self.before), min(len(text), end + self.after)
            if windows and low <= windows[-1][1]:
                windows[-1] = (windows[-1][0], max(high, windows[-1][1]))
            else:
                windows.append((low, high))
        return windows


def _whole(value: str) -> int:
    return len(value)


def _same(value: str) -> str:
    return value


def _digits(value: str) -> str:
    return "".join(c for c in value if "0" <= c <= "9")


def _phone_digits(value: str) -> str:
    return ("+" if value.startswith("+") else "") + _digits(value)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum that every payment card number satisfies."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def looks_random(token: str) -> bool:
    """A crude entropy check: at least two of lower/upper/digit, and a digit or two capitals."""
    lower = any(c.islower() for c in token)
    upper = sum(c.isupper() for c in token)
    digit = any(c.isdigit() for c in token)
    return lower + (upper > 0) + digit >= 2 and (digit or upper >= 2)


def _accept_card(value: str) -> int | None:
    digits = _digits(value)
    return len(value) if 13 <= len(digits) <= 19 and luhn_ok(digits) else None


def _accept_phone(value: str) -> int | None:
    if value[0] != "+":
        return len(value)
    return len(value) if 8 <= len(_digits(value)) <= 15 else None


def _accept_ipv6(value: str) -> int | None:
    # A trailing colon may be prose ("fe80::1: up"); a candidate without a digit is more likely a
    # Rust or C++ path (Add::add) than an address.
    for candidate in (value, value[:-1]) if value.endswith(":") else (value,):
        if any(c.isdigit() for c in candidate) and _is_ipv6(candidate):
            return len(candidate)
    return None


def _is_ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def _ipv6_canonical(value: str) -> str:
    return ipaddress.IPv6Address(value).compressed


def _accept_bearer(value: str) -> int | None:
    token = _BEARER_PREFIX.sub("", value, count=1)
    return len(value) if looks_random(token) else None


def _bearer_token(value: str) -> str:
    return _BEARER_PREFIX.sub("", value, count=1)


def _accept_key(value: str) -> int | None:
    if value.startswith(_FIXED_FORMAT_KEYS):
        return len(value)
    return len(value) if looks_random(value[3:]) else None  # prefixes add only lower case


_BUILTINS: dict[str, tuple[str, str, Accept, Callable[[str], str]]] = {
    "email": ("EMAIL", _EMAIL, _whole, str.lower),
    "phone": ("PHONE", _PHONE, _accept_phone, _phone_digits),
    "credit_card": ("CREDIT_CARD", _CARD, _accept_card, _digits),
    "ipv4": ("IPV4", _IPV4, _whole, _same),
    "ipv6": ("IPV6", _IPV6, _accept_ipv6, _ipv6_canonical),
    "bearer_token": ("BEARER_TOKEN", _BEARER, _accept_bearer, _bearer_token),
    "api_key": ("API_KEY", _API_KEY, _accept_key, _same),
}

BUILTIN_NAMES: tuple[DetectorName, ...] = (
    "email",
    "phone",
    "credit_card",
    "ipv4",
    "ipv6",
    "bearer_token",
    "api_key",
)

# Ties between equally long overlapping matches go to the detector listed first.
PRECEDENCE: tuple[DetectorName, ...] = (
    "api_key",
    "bearer_token",
    "email",
    "credit_card",
    "ipv6",
    "ipv4",
    "phone",
)

_USER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def builtin(name: str) -> Detector:
    """Compile the built-in detector ``name``; ValueError if there is none."""
    try:
        label, source, accept, normalize = _BUILTINS[name]
    except KeyError:
        known = ", ".join(BUILTIN_NAMES)
        raise ValueError(f"unknown redaction detector {name!r} (known: {known})") from None
    anchors, before, after = _ANCHORS[name]
    pattern = re.compile(source, re.ASCII)
    compiled = tuple(re.compile(anchor) for anchor in anchors)
    return Detector(label, pattern, accept, normalize, compiled, before, after, _GATES[name])


def user_pattern(name: str, regex: str) -> Detector:
    """Compile a user pattern; ValueError naming the pattern if its name or regex is unusable."""
    if not _USER_NAME.fullmatch(name):
        raise ValueError(f"redaction pattern name {name!r} must match [A-Za-z][A-Za-z0-9_]*")
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"redaction pattern {name!r} has a bad regex: {exc}") from None
    return Detector(name.upper(), pattern, _whole, _same)
