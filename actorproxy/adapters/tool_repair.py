"""Tool calls that a local model wrote as text, recognised and turned into real calls.

Small models served by Ollama often answer a tool-enabled request with the call as JSON in the
message text instead of in ``tool_calls``. ``parse_tool_calls`` accepts exactly these shapes:

- an object ``{"name": <tool>, "arguments": {...}}`` (``parameters`` instead of ``arguments``,
  the arguments possibly a JSON string holding an object, ``"type": "function"`` and an ``id``
  allowed beside them), or a list of such objects;
- optionally inside one ```` ```json ```` (or bare ```` ``` ````) fence, or inside one or more
  ``<tool_call>...</tool_call>`` tags (the closing tag of the last one may be missing).

The text must be nothing but calls, and every call must name a tool the request offered; anything
else is left alone, so ordinary text and JSON answers are never changed. ``StreamHold`` applies
the same rule to a stream: it holds text back only while it could still become a call.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import msgspec

_FENCE = "```"
_OPEN_TAG = "<tool_call>"
_CLOSE_TAG = "</tool_call>"
_OPENERS = ("{", "[", _FENCE, _OPEN_TAG)
_KEYS = frozenset({"name", "arguments", "parameters", "type", "id"})
_FENCE_LANGUAGES = ("", "json")

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class RepairedCall:
    """A call found in text: the tool's name and its arguments as a JSON object text."""

    name: str
    arguments: str


def parse_tool_calls(text: str, tool_names: Collection[str]) -> list[RepairedCall] | None:
    """The calls ``text`` consists of, or ``None`` if it is anything else (see the module doc)."""
    body = text.strip()
    if not tool_names or not body.startswith(_OPENERS):
        return None
    payloads = _payloads(body)
    if payloads is None:
        return None
    calls: list[RepairedCall] = []
    for payload in payloads:
        found = _calls(payload, tool_names)
        if found is None:
            return None
        calls.extend(found)
    return calls or None


def could_be_call(text: str) -> bool:
    """False once ``text`` (the start of a message) can no longer become a tool call.

    A cheap look at the first characters only; ``parse_tool_calls`` decides at the end.
    """
    rest = text.lstrip()
    if not rest or any(opener.startswith(rest) for opener in (_FENCE, _OPEN_TAG)):
        return True
    if rest.startswith(_OPEN_TAG):
        return _json_start(rest.removeprefix(_OPEN_TAG))
    if rest.startswith(_FENCE):
        return _fence_start(rest.removeprefix(_FENCE))
    return _json_start(rest)


class StreamHold:
    """Text deltas in, text that is safe to show out; what might be a call waits for ``finish``.

    Leading whitespace is held too, so that released text is always the input, in order. The
    start is judged until it has ``DECIDED_AFTER`` non-blank characters (a call's first key fits
    well within them); after that the text is held to the end without looking again.
    """

    DECIDED_AFTER = 64

    def __init__(self, tool_names: Collection[str]) -> None:
        self._tool_names = tool_names
        self._held: list[str] = []
        self._holding = True
        self._decided = False

    def feed(self, text: str) -> str:
        """The text to send now: ``""`` while it could still be a call, then everything."""
        if not self._holding:
            return text
        self._held.append(text)
        if self._decided:
            return ""
        held = "".join(self._held)
        if could_be_call(held):
            self._held = [held]
            self._decided = len(held.lstrip()) >= self.DECIDED_AFTER
            return ""
        self._holding = False
        self._held = []
        return held

    def finish(self) -> tuple[str, list[RepairedCall]]:
        """At the end of the message: the held text, or the calls it turned out to be."""
        held = "".join(self._held)
        self._held = []
        self._holding = False
        calls = parse_tool_calls(held, self._tool_names)
        return ("", calls) if calls else (held, [])


def _payloads(body: str) -> list[str] | None:
    """The JSON texts inside the fence or tags, or ``body`` itself when it has neither."""
    if body.startswith(_OPEN_TAG):
        pieces = [piece.strip() for piece in body.split(_OPEN_TAG)[1:]]
        tagged = [piece.removesuffix(_CLOSE_TAG).rstrip() for piece in pieces]
        return tagged if all(tagged) else None
    if body.startswith(_FENCE):
        if not body.endswith(_FENCE) or len(body) < 2 * len(_FENCE):
            return None
        language, newline, inner = body[len(_FENCE) : -len(_FENCE)].partition("\n")
        ok = newline and language.strip().lower() in _FENCE_LANGUAGES
        return [inner.strip()] if ok else None
    return [body]


def _calls(payload: str, tool_names: Collection[str]) -> list[RepairedCall] | None:
    try:
        value = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_call(item, tool_names) for item in items]
    if not items or any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]


def _call(item: object, tool_names: Collection[str]) -> RepairedCall | None:
    if not isinstance(item, dict) or not item.keys() <= _KEYS:
        return None
    name = item.get("name")
    if not isinstance(name, str) or name not in tool_names:
        return None
    if item.get("type", "function") != "function" or not isinstance(item.get("id", ""), str):
        return None
    if "arguments" in item and "parameters" in item:
        return None
    arguments = _arguments(item.get("arguments", item.get("parameters", {})))
    return None if arguments is None else RepairedCall(name, arguments)


def _arguments(value: object) -> str | None:
    if isinstance(value, str):
        try:
            value = msgspec.json.decode(value)
        except msgspec.DecodeError:
            return None
    return _encoder.encode(value).decode() if isinstance(value, dict) else None


def _json_start(text: str) -> bool:
    """Whether ``text`` can begin a call object or a list of them."""
    rest = text.lstrip()
    if rest.startswith("["):
        rest = rest[1:].lstrip()
        if not rest:
            return True
    if not rest.startswith("{"):
        return not rest
    rest = rest[1:].lstrip()
    if not rest:
        return True
    if not rest.startswith('"'):
        return False
    key, quote, _ = rest[1:].partition('"')
    if "\\" in key:
        return True  # an escaped key: too rare to judge early
    if quote:
        return key in _KEYS
    return any(name.startswith(key) for name in _KEYS)


def _fence_start(text: str) -> bool:
    """Whether ``text``, what follows an opening fence, can still hold a call."""
    language, newline, rest = text.partition("\n")
    tag = language.strip().lower()
    if not newline:
        return any(name.startswith(tag) for name in _FENCE_LANGUAGES)
    return tag in _FENCE_LANGUAGES and _json_start(rest)
