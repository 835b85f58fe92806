"""Which redaction detectors can find anything in which bodies, for a whole batch at once.

Redaction in Python scans each body once per detector anchor, with the GIL held. Most bodies
contain nothing any detector looks for, so the dataset writer asks first: it puts the raw bodies
of a batch into one Arrow array and runs the redactor's gates over it with pyarrow.compute (RE2,
one DFA pass, the GIL released). Only bodies a gate matched go through the Python detectors, and
only through the detectors whose gate matched.

A gate matches exactly when its detector's anchors hit (``redact_detectors``), so skipping the
others changes nothing in the output. The bytes are matched as Latin-1: the gates are ASCII and
treat any other byte as "another character", as the anchors treat a decoded non-ASCII character.
Pure computation: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc


class Prefilter:
    """The gates of one redactor (``Redactor.gates``: an RE2 pattern or None per detector)."""

    def __init__(self, gates: Sequence[str | None]) -> None:
        self._gates = [(1 << rank, gate) for rank, gate in enumerate(gates) if gate is not None]
        self._any = "|".join(f"(?:{gate})" for _, gate in self._gates)

    def candidates(self, bodies: Sequence[bytes]) -> list[int]:
        """Per body, a bit mask of the gates that match it (bit ``i``: ``gates[i]``)."""
        masks = [0] * len(bodies)
        if not self._gates or not bodies:
            return masks
        array = pa.array(bodies, type=pa.binary())
        hit = pc.indices_nonzero(pc.match_substring_regex(array, self._any))
        if not len(hit):
            return masks
        positions: list[int] = hit.to_pylist()
        if len(self._gates) == 1:
            for position in positions:
                masks[position] = self._gates[0][0]
            return masks
        dirty = array.take(hit)
        for bit, gate in self._gates:
            for index in pc.indices_nonzero(pc.match_substring_regex(dirty, gate)).to_pylist():
                masks[positions[index]] |= bit
        return masks
