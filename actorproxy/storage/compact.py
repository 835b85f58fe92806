"""Compaction: a closed IPC segment becomes zstd Parquet files in hive date partitions.

Rows are split by the UTC date of ``ts_start`` into
``<dataset_dir>/date=YYYY-MM-DD/part-<replica>-<seq>.parquet``, ``seq`` being the segment's own.
The writer never reuses a ``(replica, seq)`` (see ``segments.next_seq``), so names never collide.

On a crash: each file is written under a hidden temporary name in its final directory, fsynced and
renamed with ``os.replace``, then the directory is fsynced; readers see whole files or nothing.
The segment is deleted only after every part is in place. Compacting the same segment again
(after a crash between the two) is idempotent: a part that exists and records this segment in its
``actorproxy.segment`` metadata is kept as it is, so rows are never written twice.
Compaction holds the segment's ``flock``: segments open in a live writer, or being compacted by
another process, are skipped.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from actorproxy.storage import segments
from actorproxy.storage.schema import DROPPED_KEY

SEGMENT_KEY = "actorproxy.segment"
COMPRESSION = "zstd"
# Unique per row: dictionary encoding would only be tried and abandoned, and min/max statistics
# of multi-kilobyte bodies help no query. Both cost time on the hot compaction path.
_UNIQUE = frozenset({"request_id", "trace_id", "request_body", "response_body"})
_NO_STATISTICS = frozenset({"request_body", "response_body", "chunk_offsets_ms", "attempts"})


def parquet_options(schema: pa.Schema) -> dict[str, object]:
    """Keyword arguments for ``pq.ParquetWriter``/``write_table`` for dataset files."""
    return {
        "compression": COMPRESSION,
        "use_dictionary": [name for name in schema.names if name not in _UNIQUE],
        "write_statistics": [name for name in schema.names if name not in _NO_STATISTICS],
    }


class PartConflictError(Exception):
    """A Parquet part with the target name exists but came from another segment."""


def compact(segment: Path, dataset_dir: Path, *, replica: str) -> list[Path]:
    """Move every complete batch of ``segment`` into Parquet; delete it; return the parts.

    Returns ``[]`` (and does nothing) when another process holds the segment or it is gone.
    A segment with no readable header is deleted if it is a torn v1 header (a crash at open),
    otherwise renamed to ``*.corrupt`` and kept for inspection.
    """
    parsed = segments.parse_name(segment.name)
    if parsed is None:
        raise ValueError(f"{segment}: not a segment name (seg-<replica>-<seq>.arrows)")
    name = f"part-{segments.sanitize(replica)}-{parsed[1]:08d}.parquet"
    with _locked(segment) as file:
        parts = [] if file is None else _compact_locked(file, segment, Path(dataset_dir), name)
    # The segment was read into Arrow's allocator, which would otherwise keep those pages (up to
    # segment_max_bytes per compaction thread) for reuse for as long as the process lives.
    pa.default_memory_pool().release_unused()
    return parts


def _compact_locked(file: BinaryIO, segment: Path, dataset_dir: Path, name: str) -> list[Path]:
    data = segments.read_file(file)
    contents = segments.read_segment(data)
    if contents.schema is None:
        _discard(segment, data)
        return []
    parts = _write_parts(contents, dataset_dir, name, segment, _mtime(file))
    segment.unlink()
    return parts


def recover(dataset_dir: Path, replica: str) -> list[Path]:
    """Compact every leftover segment of every replica (``replica``'s own first).

    Each keeps its own replica name in its Parquet names, so a crashed replica's rows are not
    orphaned. Segments held by a live writer are skipped; safe to call at any time.
    """
    own = segments.sanitize(replica)
    found = sorted(segments.segments_dir(dataset_dir).glob(f"seg-*{segments.SUFFIX}"))
    named = [(path, parsed) for path in found if (parsed := segments.parse_name(path.name))]
    named.sort(key=lambda item: (item[1][0] != own, item[1]))
    parts: list[Path] = []
    for path, (owner, _seq) in named:
        parts += compact(path, Path(dataset_dir), replica=owner)
    return parts


@contextmanager
def _locked(segment: Path) -> Iterator[BinaryIO | None]:
    try:
        file = open(segment, "rb")  # noqa: SIM115 - closed below, which releases the lock
    except FileNotFoundError:
        yield None
        return
    with file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        # Another process may have compacted and unlinked it between our open and our lock.
        yield file if os.fstat(file.fileno()).st_nlink > 0 else None


def _discard(segment: Path, data: pa.Buffer) -> None:
    if segments.is_torn_header(data.to_pybytes()):
        segment.unlink()
    else:
        os.replace(segment, segment.with_name(segment.name + segments.QUARANTINE_SUFFIX))


def _mtime(file: BinaryIO) -> dt.date:
    stamp = os.fstat(file.fileno()).st_mtime
    return dt.datetime.fromtimestamp(stamp, dt.UTC).date()


def _write_parts(
    contents: segments.SegmentContents,
    dataset_dir: Path,
    name: str,
    segment: Path,
    fallback_day: dt.date,
) -> list[Path]:
    assert contents.schema is not None
    table = pa.Table.from_batches(contents.batches, schema=contents.schema)
    days = split_days(table)
    dropped = sum(contents.dropped)
    if not days and dropped:  # only drop counts: keep them in an empty file
        days = {fallback_day: table}
    parts = []
    for index, (day, rows) in enumerate(sorted(days.items())):
        metadata = {
            **(contents.schema.metadata or {}),
            SEGMENT_KEY.encode(): segment.name.encode(),
            DROPPED_KEY.encode(): str(dropped if index == 0 else 0).encode(),
        }
        target = dataset_dir / f"date={day.isoformat()}" / name
        _publish(rows.replace_schema_metadata(metadata), target, segment.name)
        parts.append(target)
    return parts


def split_days(table: pa.Table) -> dict[dt.date, pa.Table]:
    """Rows grouped by the UTC date of ``ts_start`` (null timestamps count as 1970-01-01)."""
    if table.num_rows == 0:
        return {}
    days = pc.fill_null(pc.cast(table["ts_start"], pa.date32()), dt.date(1970, 1, 1))
    unique = pc.unique(days).to_pylist()
    if len(unique) == 1:
        return {unique[0]: table}
    return {day: table.filter(pc.equal(days, day)) for day in unique}


def _publish(table: pa.Table, target: Path, source: str) -> None:
    if target.exists():
        if _source_of(target) == source:
            return  # written before a crash that kept the segment: already done
        raise PartConflictError(f"{target} exists and did not come from {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        # A path, not a Python file: the writer then runs without holding the GIL.
        pq.write_table(table, str(temporary), **parquet_options(table.schema))
        segments.fsync_path(temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    segments.fsync_path(target.parent)  # the rename is durable before the segment's unlink


def _source_of(part: Path) -> str | None:
    metadata = pq.read_schema(part).metadata or {}
    source = metadata.get(SEGMENT_KEY.encode())
    return source.decode() if source is not None else None
