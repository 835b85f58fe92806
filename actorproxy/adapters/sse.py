"""A sans-IO decoder for ``text/event-stream`` (WHATWG HTML, "Server-sent events", 9.2.6).

``SSEDecoder.feed(bytes)`` returns the events completed by those bytes; ``flush()`` at the end of
the body returns what is left. Lines end with ``\\r\\n``, ``\\n`` or ``\\r``, also when a
``\\r\\n`` is split between two feeds. Lines are split in bulk with ``bytes.splitlines`` (which
splits on exactly those three) and decoded as UTF-8 only once a line is whole, so a character
split between feeds is never mangled.

Two choices where the spec leaves room or differs from what a proxy needs:

- ``flush()`` dispatches an event that the body ended without its blank line (the spec
  discards it); upstreams that omit the final blank line after ``data: [DONE]`` exist.
- ``id`` is the last event id seen so far, carried over to later events, as the spec says.
"""

from __future__ import annotations

import msgspec

_BOM = b"\xef\xbb\xbf"
_EOL = (b"\n", b"\r")


class ServerSentEvent(msgspec.Struct, frozen=True, gc=False):
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Incremental event-stream parser. Holds no I/O; a cancelled reader just stops feeding it."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # the start of a line whose end has not arrived
        self._skip_lf = False  # the last feed ended with "\r": a leading "\n" belongs to it
        self._bom_checked = False
        self._data: list[bytes] = []
        self._event = b""
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """The events that ``data`` completes, in order."""
        if self._skip_lf and data:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if not self._bom_checked:
            data = self._strip_bom(data)
        if not data:
            return []
        if b"\n" not in data and b"\r" not in data:
            self._pending.append(data)
            return []
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
        return self._lines(data)

    def flush(self) -> list[ServerSentEvent]:
        """At the end of the body: the unterminated last line, then any event it leaves pending."""
        if not self._bom_checked:
            self._bom_checked = True
            self._pending = [b"".join(self._pending).removeprefix(_BOM)]
        tail = b"".join(self._pending)
        self._pending.clear()
        events = self._lines(tail + b"\n") if tail else []
        last = self._dispatch()
        return [*events, last] if last is not None else events

    def _strip_bom(self, data: bytes) -> bytes:
        if self._pending:
            data = b"".join(self._pending) + data
            self._pending.clear()
        if len(data) < len(_BOM) and _BOM.startswith(data):
            self._pending.append(data)
            return b""
        self._bom_checked = True
        return data.removeprefix(_BOM)

    def _lines(self, data: bytes) -> list[ServerSentEvent]:
        lines = data.splitlines()
        if data[-1:] not in _EOL:
            self._pending.append(lines.pop())
        elif data[-1:] == b"\r":
            self._skip_lf = True
        events: list[ServerSentEvent] = []
        for line in lines:
            if line:
                self._field(line)
            elif (event := self._dispatch()) is not None:
                events.append(event)
        return events

    def _field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if not name and colon:
            return  # a comment, e.g. ": OPENROUTER PROCESSING"
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], b""
        if not data:
            return None
        return ServerSentEvent(
            data=b"\n".join(data).decode("utf-8", "replace"),
            event=event.decode("utf-8", "replace") if event else "message",
            id=self._id,
            retry=self._retry,
        )
