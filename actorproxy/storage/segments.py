"""Append-only Arrow IPC stream segments: where record batches land first.

Layout: ``<dataset_dir>/_segments/seg-<replica>-<seq>.arrows``. The leading underscore hides the
directory from pyarrow.dataset, Spark and Hive discovery, so ``<dataset_dir>`` stays a clean hive
dataset of ``date=YYYY-MM-DD`` partitions (see ``compact``).

On a crash: every batch is flushed to the OS after it is written, so a killed process loses at
most the batch being written; with ``fsync=True`` a power loss loses at most that batch too. A
segment cut short (partial last batch, no end-of-stream marker) still yields every complete batch
through ``read_segment``. The writer holds an exclusive ``flock`` on its open segment, so
``compact.recover`` run by any process skips it until it is closed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

from actorproxy.storage.schema import DROPPED_KEY, SCHEMA, dropped_of

SEGMENTS_DIR = "_segments"
SUFFIX = ".arrows"
QUARANTINE_SUFFIX = ".corrupt"
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_END_OF_STREAM = pa.py_buffer(END_OF_STREAM)

_SEGMENT_NAME = re.compile(r"^seg-(?P<replica>.+)-(?P<seq>\d+)\.arrows(?:\.corrupt)?$")
_PART_NAME = re.compile(r"^part-(?P<replica>.+)-(?P<seq>\d+)\.parquet$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def sanitize(replica: str) -> str:
    """``replica`` as a file-name fragment: only ``[A-Za-z0-9_.-]``, never empty."""
    return _UNSAFE.sub("_", replica) or "_"


def segments_dir(dataset_dir: str | os.PathLike[str]) -> Path:
    return Path(dataset_dir) / SEGMENTS_DIR


def parse_name(name: str) -> tuple[str, int] | None:
    """``(replica, seq)`` of a segment or Parquet part file name; None for anything else."""
    match = _SEGMENT_NAME.match(name) or _PART_NAME.match(name)
    return (match["replica"], int(match["seq"])) if match else None


def next_seq(dataset_dir: str | os.PathLike[str], replica: str) -> int:
    """One past the highest sequence number ``replica`` used in segments or Parquet parts."""
    root = Path(dataset_dir)
    names = [p.name for p in segments_dir(root).glob("seg-*")]
    names += [p.name for p in root.glob("date=*/part-*.parquet")]
    used = [parsed[1] for parsed in map(parse_name, names) if parsed and parsed[0] == replica]
    return max(used, default=-1) + 1


@dataclass(frozen=True, slots=True)
class SegmentContents:
    """What a segment holds: its schema (None if even that is unreadable) and complete batches.

    ``complete`` is true when the stream ends with its end-of-stream marker (a closed segment).
    """

    schema: pa.Schema | None
    batches: list[pa.RecordBatch]
    dropped: list[int]
    complete: bool

    @property
    def num_rows(self) -> int:
        return sum(batch.num_rows for batch in self.batches)


def read_file(file: BinaryIO) -> pa.Buffer:
    """The whole of ``file`` in one Arrow buffer; an I/O error raises ``OSError``.

    Arrow's allocator reuses its memory, where a Python ``bytes`` of a 64 MiB segment is a fresh
    mapping each time: page faults and zeroing cost compaction about 2 us per 4 KB record.
    """
    fd = file.fileno()
    buffer = pa.allocate_buffer(os.fstat(fd).st_size)
    view = memoryview(buffer)
    filled = 0
    while filled < len(view) and (count := os.preadv(fd, [view[filled:]], filled)):
        filled += count
    return buffer[:filled]


def read_segment(data: bytes | pa.Buffer) -> SegmentContents:
    """Every complete batch of an IPC stream; reading stops quietly at the first damaged one.

    Takes the bytes (read by the caller, e.g. with ``read_file``) so that a real I/O error
    surfaces as ``OSError`` there instead of being mistaken for a truncated file here.
    """
    if isinstance(data, bytes):
        data = pa.py_buffer(data)
    try:
        reader = pa.ipc.open_stream(data)
    except (pa.ArrowException, OSError):
        return SegmentContents(None, [], [], complete=False)
    batches: list[pa.RecordBatch] = []
    dropped: list[int] = []
    while True:
        try:
            batch, metadata = reader.read_next_batch_with_custom_metadata()
            batch.validate()
        except StopIteration:  # also at a batch boundary of a file cut short
            ended = data[-len(END_OF_STREAM) :] == _END_OF_STREAM
            return SegmentContents(reader.schema, batches, dropped, complete=ended)
        except (pa.ArrowException, OSError):
            return SegmentContents(reader.schema, batches, dropped, complete=False)
        batches.append(batch)
        dropped.append(int((metadata or {}).get(DROPPED_KEY.encode(), b"0")))


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file, or a directory's entries) to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_torn_header(data: bytes) -> bool:
    """True if ``data`` is a prefix of a v1 segment's schema header: a crash right at open."""
    return bool(SCHEMA.serialize().to_pybytes().startswith(data))


class SegmentWriter:
    """Appends record batches to the current segment; rotates it by size or age.

    Segments are created lazily by the first ``append``. Sequence numbers continue after every
    segment and Parquet part of this replica already on disk, so a restart never reuses a name.
    ``append``/``close`` return the path of a segment they closed: hand it to ``compact``.
    If a write fails (disk full), the segment is abandoned as it is (complete batches stay
    readable), the error propagates, and the next ``append`` starts a new segment;
    ``compact.recover`` picks the abandoned one up.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        replica: str,
        max_bytes: int,
        max_age_s: float,
        fsync: bool = False,
    ) -> None:
        self.replica = sanitize(replica)
        self._dir = segments_dir(directory)
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._fsync = fsync
        self._dir.mkdir(parents=True, exist_ok=True)
        self._seq = next_seq(directory, self.replica)
        self._file: BinaryIO | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self.bytes_written = 0  # IPC bytes appended to segments, over the writer's life
        self.closed = 0  # segments closed (rotated, or by ``close``)

    @property
    def path(self) -> Path | None:
        """The open segment, if any."""
        return self._path

    def append(self, batch: pa.RecordBatch, now: float) -> Path | None:
        """Write ``batch`` and flush it to the OS; return the segment closed by rotation, if any.

        A batch of another schema raises ``ValueError`` and leaves the segment as it was.
        """
        if not batch.schema.equals(SCHEMA):
            raise ValueError(f"batch schema differs from the dataset schema v1:\n{batch.schema}")
        if self._writer is None:
            self._open(now)
        assert self._writer is not None and self._file is not None
        try:
            before = self._file.tell()
            metadata = {DROPPED_KEY: str(dropped_of(batch))}
            self._writer.write_batch(batch, custom_metadata=metadata)
            self._sync()
            self.bytes_written += self._file.tell() - before
        except BaseException:
            self._abandon()
            raise
        return self.rotate_if_due(now)

    def rotate_if_due(self, now: float) -> Path | None:
        """Close the open segment if it reached ``max_bytes`` or ``max_age_s``; else None."""
        if self._file is None:
            return None
        too_big = self._file.tell() >= self._max_bytes
        if too_big or now - self._opened_at >= self._max_age_s:
            return self.close()
        return None

    def close(self) -> Path | None:
        """Write the end-of-stream marker and close; return the closed segment, if one was open."""
        path, writer, file = self._path, self._writer, self._file
        if writer is None or file is None:
            return None
        try:
            writer.close()
            self._sync()
        finally:
            self._abandon()
        self.closed += 1
        return path

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self, now: float) -> None:
        file, path = self._create()
        try:
            self._writer = pa.ipc.new_stream(file, SCHEMA)
        except BaseException:
            file.close()
            raise
        self._file, self._path, self._opened_at = file, path, now

    def _create(self) -> tuple[BinaryIO, Path]:
        # Lock before the name becomes visible: `recover` must never see an unlocked empty file.
        while True:
            staging = self._dir / f".seg-{self.replica}-{self._seq:08d}.new"
            try:
                file = open(staging, "xb")  # noqa: SIM115 - owned by the writer until close()
            except FileExistsError:  # left by a crash; possibly a hard link to a real segment
                staging.unlink()
                continue
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = self._dir / f"seg-{self.replica}-{self._seq:08d}{SUFFIX}"
            self._seq += 1
            try:
                os.link(staging, path)
            except FileExistsError:
                file.close()
                continue
            finally:
                staging.unlink()
            if self._fsync:
                fsync_path(self._dir)
            return file, path

    def _sync(self) -> None:
        assert self._file is not None
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    def _abandon(self) -> None:
        file = self._file
        self._file = self._writer = self._path = None
        if file is not None:
            # After a failed write the buffer holds part of a batch; readers skip it anyway.
            with contextlib.suppress(OSError):
                file.close()
