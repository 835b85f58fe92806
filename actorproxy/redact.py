"""Redaction of request and response bodies before they reach the research dataset.

Pure code: no I/O, no clock, no environment. The CLI reads ``[dataset.redaction]`` and, for hash
mode, the HMAC key from the environment variable the config names, and builds one
:class:`Redactor`; the dataset writer calls it from a worker thread for every body.

Detection runs on the raw JSON text. Each built-in detector hops between the hits of a few
literal anchors (``@``, ``sk-``, ``+<digit>``...) and runs its full regex only in a window around
them, which keeps typical chat JSON well above 20 MB/s on one core. For a body that is valid JSON a
match is kept only where replacing it keeps the document valid with the same shape: inside a
string value (never an object key, so keys stay unique), never starting or ending inside an
escape sequence. A payment card number written as a bare JSON number becomes a quoted
placeholder. A body that is not valid JSON is redacted everywhere: privacy over structure.

Overlapping matches: the longest wins, ties go to user patterns, then the built-in precedence
order; each character is redacted at most once and counted once.

Batches: :attr:`Redactor.gates` are RE2 patterns, one per detector, each matching a body exactly
when that detector's anchors hit it. A caller that ran them over many bodies at once (the dataset
writer does, in Arrow memory without the GIL) passes each body's result as ``candidates`` and the
other detectors are skipped: same output, and clean text costs no Python scan at all.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Literal

import msgspec

from actorproxy.redact_detectors import (
    BUILTIN_NAMES,
    PRECEDENCE,
    Detector,
    DetectorName,
    builtin,
    user_pattern,
)

__all__ = ["EVERY_DETECTOR", "RedactionConfig", "Redactor", "UserPattern"]

Mode = Literal["mask", "hash", "omit_bodies"]

_JSON_DOCUMENT = msgspec.json.Decoder(msgspec.Raw)
_KEY_COLON = re.compile(r"[ \t\r\n]*+:")
_ASCII_DIGITS = re.compile(r"[0-9]+")
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_HASH_HEX = 12
#: ``candidates`` with every bit set: run every detector.
EVERY_DETECTOR = -1


class UserPattern(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A deployment-specific regex; matches become ``<NAME>`` (the name upper-cased)."""

    name: str
    regex: str


class RedactionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[dataset.redaction]``.

    ``mask`` writes ``<EMAIL>``; ``hash`` writes ``<EMAIL:1a2b3c4d5e6f>``, the first 12 hex digits
    of HMAC-SHA256 over the normalised value, so equal values stay joinable; ``omit_bodies`` keeps
    no body at all. The hash key never lives in the file: the CLI reads the environment variable
    ``hash_key_env`` names and passes the bytes to :class:`Redactor`.
    """

    mode: Mode = "mask"
    detectors: list[DetectorName] = msgspec.field(default_factory=lambda: list(BUILTIN_NAMES))
    patterns: list[UserPattern] = []
    hash_key_env: str | None = None


@dataclass(frozen=True, slots=True)
class _Match:
    start: int
    end: int
    rank: int  # index into Redactor._detectors, which is in precedence order
    quoted: bool = False  # a bare JSON number: the placeholder needs quotes


class Redactor:
    """Compiled detectors plus the replacement policy of one :class:`RedactionConfig`.

    Immutable after construction, so one instance can serve any number of threads.
    """

    def __init__(self, config: RedactionConfig, *, hmac_key: bytes | None = None) -> None:
        if config.mode == "hash" and not hmac_key:
            raise ValueError("redaction mode 'hash' needs a non-empty hmac_key")
        self._mode: Mode = config.mode
        self._key = hmac_key or b""
        self._detectors = _compile(config)
        self._ungated = sum(1 << rank for rank, d in enumerate(self._detectors) if d.gate is None)

    @property
    def gates(self) -> tuple[str | None, ...]:
        """Per detector, an RE2 pattern matching a body exactly when it may find something there.

        None for user patterns, which always run. Bit ``i`` of ``candidates`` stands for
        ``gates[i]``.
        """
        return tuple(detector.gate for detector in self._detectors)

    def redact(self, text: str) -> tuple[str, int]:
        """Redact ``text`` anywhere; returns the new text and how many values were replaced.

        JSON escapes in ``text`` stay intact. In ``omit_bodies`` mode this masks.
        """
        chosen = _resolve(self._find(text))
        return self._render(text, chosen), len(chosen)

    def redact_json(self, body: bytes, candidates: int = EVERY_DETECTOR) -> tuple[str | None, int]:
        """Redact a request or response body; ``(None, 0)`` in ``omit_bodies`` mode.

        Invalid UTF-8 is decoded with replacement characters. Valid JSON stays valid JSON with
        the same keys and list lengths. ``candidates``: a bit mask over :attr:`gates` of the
        detectors whose gate matched ``body``; the others are skipped (user patterns never are).
        """
        if self._mode == "omit_bodies":
            return None, 0
        text = body.decode("utf-8", "replace")
        candidates |= self._ungated
        if not candidates:
            return text, 0
        found = self._find(text, candidates)
        if not found:
            return text, 0
        if _is_json(body):
            found = _json_safe(text, found)
        chosen = _resolve(found)
        return self._render(text, chosen), len(chosen)

    def _find(self, text: str, candidates: int = EVERY_DETECTOR) -> list[_Match]:
        found: list[_Match] = []
        for rank, detector in enumerate(self._detectors):
            if not candidates >> rank & 1:
                continue
            for match in detector.finditer(text):
                start, end = match.span()
                size = detector.accept(match.group()) if end > start else None
                if size and not _splits_escape(text, start, start + size):
                    found.append(_Match(start, start + size, rank))
        return found

    def _render(self, text: str, chosen: list[_Match]) -> str:
        if not chosen:
            return text
        pieces: list[str] = []
        done = 0
        for match in chosen:
            placeholder = self._placeholder(match.rank, text[match.start : match.end])
            pieces += (
                text[done : match.start],
                f'"{placeholder}"' if match.quoted else placeholder,
            )
            done = match.end
        pieces.append(text[done:])
        return "".join(pieces)

    def _placeholder(self, rank: int, value: str) -> str:
        detector = self._detectors[rank]
        if self._mode != "hash":
            return f"<{detector.label}>"
        data = detector.normalize(value).encode("utf-8", "surrogatepass")
        digest = hmac.new(self._key, data, hashlib.sha256).hexdigest()
        return f"<{detector.label}:{digest[:_HASH_HEX]}>"


def _compile(config: RedactionConfig) -> tuple[Detector, ...]:
    users = [user_pattern(p.name, p.regex) for p in config.patterns]
    wanted = set(config.detectors)
    if unknown := sorted(wanted - set(BUILTIN_NAMES)):
        raise ValueError(f"unknown redaction detectors {unknown}; known: {list(BUILTIN_NAMES)}")
    return (*users, *(builtin(name) for name in PRECEDENCE if name in wanted))


def _resolve(found: list[_Match]) -> list[_Match]:
    """Longest first, then precedence; drop whatever overlaps an already chosen match."""
    chosen: list[_Match] = []
    starts: list[int] = []
    for match in sorted(found, key=lambda m: (m.start - m.end, m.rank, m.start)):
        i = bisect.bisect_right(starts, match.start)
        if i and chosen[i - 1].end > match.start:
            continue
        if i < len(chosen) and chosen[i].start < match.end:
            continue
        starts.insert(i, match.start)
        chosen.insert(i, match)
    return chosen


def _splits_escape(text: str, start: int, end: int) -> bool:
    return _inside_escape(text, start) or _inside_escape(text, end)


def _inside_escape(text: str, pos: int) -> bool:
    """Whether ``pos`` falls strictly inside a JSON escape (``\\n``, ``\\\\``, ``\\u00e9``)."""
    slash = text.rfind("\\", max(0, pos - 5), pos)
    if slash < 0:
        return False
    if _backslashes_before(text, slash) % 2:
        return False  # this backslash closes a "\\" pair; nothing after it is escaped
    width = 6 if text.startswith("u", slash + 1) else 2
    return pos - slash < width


def _backslashes_before(text: str, pos: int) -> int:
    first = pos
    while first and text[first - 1] == "\\":
        first -= 1
    return pos - first


def _is_json(body: bytes) -> bool:
    try:
        _JSON_DOCUMENT.decode(body)
    except msgspec.DecodeError:
        return False
    return True


def _json_safe(text: str, found: list[_Match]) -> list[_Match]:
    """Keep matches inside string values; quote bare numbers; drop everything else."""
    strings = _string_spans(text, max(match.end for match in found))
    opens = [start for start, _ in strings]
    kept: list[_Match] = []
    for match in found:
        i = bisect.bisect_right(opens, match.start) - 1
        if i >= 0 and opens[i] < match.start and match.end < strings[i][1]:
            if not _KEY_COLON.match(text, strings[i][1]):
                kept.append(match)
        elif _bare_number(text, match.start, match.end):
            kept.append(_Match(match.start, match.end, match.rank, quoted=True))
    return kept


def _string_spans(text: str, stop: int) -> list[tuple[int, int]]:
    """(opening quote, just past closing quote) of the strings of valid JSON opened before stop.

    Quotes are sparse, so hopping between them with str.find beats a regex over every character.
    """
    spans: list[tuple[int, int]] = []
    opening = -1
    quote = text.find('"')
    while quote >= 0 and (opening >= 0 or quote < stop):
        if opening < 0:
            opening = quote
        elif not _backslashes_before(text, quote) % 2:
            spans.append((opening, quote + 1))
            opening = -1
        quote = text.find('"', quote + 1)
    return spans


def _bare_number(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start else " "
    after = text[end : end + 1] or " "
    return (
        before not in _NUMBER_CHARS
        and after not in _NUMBER_CHARS
        and _ASCII_DIGITS.fullmatch(text, start, end) is not None
    )
