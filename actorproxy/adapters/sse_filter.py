"""Pass an OpenAI event stream through while withholding chosen chunks from the client.

`StreamFilter` is the ``StreamTranslator`` of upstreams that already speak OpenAI's event stream
but send a chunk the client must not see:

- ``withhold_empty``: a chunk with ``"choices": []`` and no ``usage`` object, such as Azure's
  first chunk that carries only ``prompt_filter_results``; clients that index ``choices[0]``
  crash on it.
- ``withhold_usage``: a chunk with ``"choices": []`` and a ``usage`` object, the usage chunk the
  proxy asked for with ``stream_options`` although the client did not.

Every other frame goes to the client as the exact upstream bytes (comments such as OpenRouter's
``: OPENROUTER PROCESSING``, ``id:``/``event:`` lines, ``\\r\\n`` line ends, ``data: [DONE]``),
so the client's stream is the upstream's minus the withheld frames. A withheld frame is kept for
the record as ``data: <payload>\\n\\n``, the payload's bytes as they came (`StreamFilter.withheld`).

The decision reads a tiny view of each ``data`` payload (are ``choices`` an empty array, is
``usage`` an object); nothing is re-encoded. A payload that is not JSON, or not shaped like a
chunk, is not the filter's to judge: it goes through, as it would on the pass-through path, so
the filter never raises. Frames are cut at their blank line as in the WHATWG event-stream parser;
a line end split between two feeds (``\\r`` | ``\\n``) is held until the next byte shows which it
is, so an upstream that ends lines with a bare ``\\r`` has each frame delayed until the next
byte (or the end of the body).
"""

from __future__ import annotations

import msgspec

_BOM = b"\xef\xbb\xbf"
_BLANK = frozenset({b"\n", b"\r\n", b"\r"})
_DONE = b"[DONE]"


class _Object(msgspec.Struct):
    """Any JSON object: its fields are skipped, only its presence counts."""


class _ChunkView(msgspec.Struct):
    choices: list[msgspec.Raw] | None = None
    usage: _Object | None = None


_chunk_view = msgspec.json.Decoder(_ChunkView)


class StreamFilter:
    """Forwards upstream frames untouched, withholding the chosen ones.

    Holds no I/O; a cancelled reader just stops feeding it, and what was withheld so far stays
    available from `withheld`.
    """

    def __init__(self, *, withhold_empty: bool = False, withhold_usage: bool = False) -> None:
        self._withhold_empty = withhold_empty
        self._withhold_usage = withhold_usage
        self._pending: list[bytes] = []  # the start of a line whose end has not arrived
        self._lines: list[bytes] = []  # the complete lines of the frame being read
        self._withheld: list[bytes] = []
        self._first = True

    def feed(self, data: bytes) -> bytes:
        """The frames completed by ``data`` that the client gets, as the upstream sent them."""
        if not data:
            return b""
        if b"\n" not in data and b"\r" not in data:
            self._pending.append(data)
            return b""
        if self._pending:
            self._pending.append(data)
            data = b"".join(self._pending)
            self._pending.clear()
        lines = data.splitlines(keepends=True)
        if lines[-1][-1:] != b"\n":
            # unterminated, or ending in "\r" that a "\n" in the next feed may complete
            self._pending.append(lines.pop())
        return self._frames(lines)

    def end(self) -> bytes:
        """What is left once the upstream body is complete: a last frame without its blank line.

        Nothing is added: a stream that ended without ``data: [DONE]`` reaches the client so.
        """
        tail = b"".join(self._pending)
        self._pending.clear()
        if tail:
            self._lines.extend(tail.splitlines(keepends=True))
        if not self._lines:
            return b""
        lines, self._lines = self._lines, []
        return self._route(lines)

    def withheld(self) -> bytes:
        """The withheld frames, in stream order, each as ``data: <payload>\\n\\n``."""
        return b"".join(self._withheld)

    def _frames(self, lines: list[bytes]) -> bytes:
        out: list[bytes] = []
        frame = self._lines
        for line in lines:
            frame.append(line)
            if line in _BLANK:
                out.append(self._route(frame))
                frame = []
        self._lines = frame
        return b"".join(out)

    def _route(self, lines: list[bytes]) -> bytes:
        """``lines`` for the client, or ``b""`` when the frame is withheld."""
        if self._first:
            self._first = False
            payload = _payload([lines[0].removeprefix(_BOM), *lines[1:]])
        else:
            payload = _payload(lines)
        if payload is None or not self._withholds(payload):
            return b"".join(lines)
        self._withheld.append(b"data: " + payload + b"\n\n")
        return b""

    def _withholds(self, payload: bytes) -> bool:
        if payload == _DONE:
            return False
        try:
            view = _chunk_view.decode(payload)
        except msgspec.DecodeError:
            return False
        if view.choices is None or view.choices:
            return False
        return self._withhold_usage if view.usage is not None else self._withhold_empty


def _payload(lines: list[bytes]) -> bytes | None:
    """The frame's data (lines joined by ``\\n``), or None if it has none or names an event."""
    data: list[bytes] = []
    for line in lines:
        name, _, value = line.rstrip(b"\r\n").partition(b":")
        if name == b"data":
            data.append(value[1:] if value[:1] == b" " else value)
        elif name == b"event" and value.strip() not in (b"", b"message"):
            return None  # not a chunk event: not ours to judge
    return b"\n".join(data) if data else None
