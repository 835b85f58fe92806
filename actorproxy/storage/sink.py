"""The dataset sink the logger actor writes through, from one worker thread at a time.

``write`` derives each row (``derive``: usage, stream assembly, redaction), builds the columns of
the batch and appends it to the open Arrow IPC segment (complete on disk once this returns). A
segment that rotation closed is compacted into Parquet on the sink's own compaction threads, so
zstd (which releases the GIL) overlaps with the next writes; ``Compaction.workers`` segments are
compacted at once. Compaction is background work, so its threads run at a lower CPU priority
(``Compaction.nice``, Linux): when the CPU is short, requests go first. ``tick`` rotates a segment
that aged while no record came. ``close`` waits for pending compactions and compacts the open
segment. ``recover`` compacts leftovers of a crash before the first write. Retention runs at
start and then at most once a day.

On a crash, every batch ``write`` returned from is in a segment; the next start's ``recover``
turns it into Parquet.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from actorproxy.config import DatasetConfig
from actorproxy.schema.records import Exchange, RequestRecord
from actorproxy.storage import compact, retention
from actorproxy.storage.derive import Redactor, derive_all
from actorproxy.storage.schema import to_record_batch
from actorproxy.storage.segments import SegmentWriter

log = logging.getLogger("actorproxy.dataset")

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Compaction:
    """How closed segments become Parquet in the background.

    ``workers``: segments compacted at the same time, one thread each (zstd releases the GIL, so
    two keep up with a writer at full speed on two cores). ``nice``: added to those threads'
    nice value (Linux), so that requests get the CPU first when it is short.
    """

    workers: int = 2
    nice: int = 10


DEFAULT_COMPACTION = Compaction()


@dataclass(frozen=True, slots=True)
class SinkStats:
    """What the sink has written: IPC bytes and closed segments, and the Parquet they became."""

    segment_bytes: int = 0
    segments_closed: int = 0
    parquet_files: int = 0
    parquet_bytes: int = 0


class DatasetSink:
    def __init__(
        self,
        directory: Path,
        *,
        replica: str,
        redactor: Redactor | None,
        config: DatasetConfig,
        clock: Callable[[], float] = time.time,
        compaction: Compaction = DEFAULT_COMPACTION,
    ) -> None:
        """``config`` sets rotation and retention; its ``dir`` arrives resolved as ``directory``."""
        self._dir = directory
        self._replica = replica
        self._redactor = redactor
        self._retention_days = config.retention_days
        self._clock = clock
        self._last_purge = -DAY_S
        self._compactor = ThreadPoolExecutor(
            max_workers=compaction.workers,
            thread_name_prefix="compact",
            initializer=_lower_priority,
            initargs=(compaction.nice,),
        )
        self._pending: list[Future[list[Path]]] = []
        self._parquet_files = self._parquet_bytes = 0
        self._segments = SegmentWriter(
            directory,
            replica=replica,
            max_bytes=config.segment_max_bytes,
            max_age_s=config.segment_max_age_s,
        )

    def recover(self) -> list[Path]:
        """Compact leftover segments (a crash's) and apply retention; before the first write."""
        parts = compact.recover(self._dir, self._replica)
        if parts:
            log.warning("recovered leftover segments", extra={"parquet_files": len(parts)})
        self._purge_if_due(self._clock())
        return parts

    def write(self, records: list[Exchange], dropped: int) -> None:
        """Derive the rows of ``records`` and append them as one batch to the open segment."""
        self.write_rows(derive_all(records, self._redactor), dropped)

    def write_rows(self, rows: list[RequestRecord], dropped: int) -> None:
        """Append already derived rows as one batch; ``dropped`` goes into its metadata."""
        now = self._clock()
        self._compact_later(self._segments.append(to_record_batch(rows, dropped=dropped), now))
        self._purge_if_due(now)

    def tick(self) -> None:
        """Called when no record came for a while: rotate an aged segment, apply retention."""
        now = self._clock()
        self._compact_later(self._segments.rotate_if_due(now))
        self._purge_if_due(now)

    def close(self) -> None:
        self._compact_later(self._segments.close())
        self._compactor.shutdown(wait=True)
        self._reap()

    def _compact_later(self, segment: Path | None) -> None:
        self._reap()
        if segment is not None:
            self._pending.append(
                self._compactor.submit(compact.compact, segment, self._dir, replica=self._replica)
            )

    def _reap(self) -> None:
        """Forget finished compactions; a failed one is logged and its segment left for recover."""
        running = []
        for job in self._pending:
            if not job.done():
                running.append(job)
            elif (error := job.exception()) is not None:
                log.error("compaction failed; the segment stays for recovery", exc_info=error)
            else:
                self._count_parts(job.result())
        self._pending = running

    def _count_parts(self, parts: list[Path]) -> None:
        self._parquet_files += len(parts)
        for part in parts:
            with contextlib.suppress(OSError):  # already purged by retention: not our concern
                self._parquet_bytes += part.stat().st_size

    def statistics(self) -> SinkStats:
        """A snapshot; compactions still running are counted once they have finished."""
        return SinkStats(
            segment_bytes=self._segments.bytes_written,
            segments_closed=self._segments.closed,
            parquet_files=self._parquet_files,
            parquet_bytes=self._parquet_bytes,
        )

    def _purge_if_due(self, now: float) -> None:
        if self._retention_days is None or now - self._last_purge < DAY_S:
            return
        self._last_purge = now
        today = dt.datetime.fromtimestamp(now, dt.UTC).date()
        cutoff = retention.retention_cutoff(today, self._retention_days)
        removed = retention.purge(self._dir, cutoff)
        if removed:
            log.info("retention removed partitions", extra={"partitions": len(removed)})


def _lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority (Linux: a thread id is a process id here)."""
    if nice > 0:
        with contextlib.suppress(OSError):  # not permitted, or not Linux: run as we are
            current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), current + nice)
