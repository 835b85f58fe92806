"""The newest rows of a dataset, including rows still in open IPC segments.

Segments are read without their lock: a writer only appends, so a read sees a prefix and
``read_segment`` keeps its complete batches. Nothing here writes; a crash of the writer or of the
compactor while tailing at most delays rows until the next poll.

``Follower`` prints each row once: rows are taken from segments as they grow; when a segment is
compacted, its Parquet parts (identified by their ``actorproxy.segment`` metadata) only contribute
rows not already seen in the segment. A segment written and compacted entirely between two polls
is found through the new parts of the newest two date partitions.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from actorproxy.storage import retention, segments
from actorproxy.storage.compact import SEGMENT_KEY

Row = dict[str, Any]

RECENT_PARTITIONS = 2


def latest(dataset_dir: str | os.PathLike[str], n: int) -> list[Row]:
    """Up to ``n`` rows with the largest ``ts_start``, oldest first.

    Reads every open segment plus the newest Parquet parts (last row groups first) until ``n``
    rows are gathered; good enough for a console, not a query engine.
    """
    return _latest(dataset_dir, _segment_tables(dataset_dir), n)


def _latest(
    dataset_dir: str | os.PathLike[str], open_tables: dict[str, pa.Table], n: int
) -> list[Row]:
    tables = [table for table in open_tables.values() if table.num_rows]
    tables += _newest_part_rows(dataset_dir, n)
    if not tables or n <= 0:
        return []
    table = pa.concat_tables(tables, promote_options="permissive")
    order = pc.sort_indices(table, sort_keys=[("ts_start", "ascending")])
    rows: list[Row] = table.take(order).slice(max(table.num_rows - n, 0)).to_pylist()
    return rows


def _segment_tables(dataset_dir: str | os.PathLike[str]) -> dict[str, pa.Table]:
    tables: dict[str, pa.Table] = {}
    for path in sorted(segments.segments_dir(dataset_dir).glob(f"seg-*{segments.SUFFIX}")):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # compacted since we listed it
            continue
        contents = segments.read_segment(data)
        if contents.schema is not None:
            tables[path.name] = pa.Table.from_batches(contents.batches, schema=contents.schema)
    return tables


def _newest_part_rows(dataset_dir: str | os.PathLike[str], n: int) -> list[pa.Table]:
    files = _recent_parts(dataset_dir)
    files.sort(key=lambda f: f.stat().st_mtime, reverse=True)
    tables: list[pa.Table] = []
    for file in files:
        if sum(t.num_rows for t in tables) >= n:
            break
        tables += _last_row_groups(file, n)
    return tables


def _last_row_groups(file: Path, n: int) -> list[pa.Table]:
    with pq.ParquetFile(file) as parquet:
        groups: list[int] = []
        rows = 0
        for index in reversed(range(parquet.num_row_groups)):
            if rows >= n:
                break
            groups.append(index)
            rows += parquet.metadata.row_group(index).num_rows
        return [parquet.read_row_groups(sorted(groups))] if groups else []


def _recent_parts(dataset_dir: str | os.PathLike[str]) -> list[Path]:
    days = sorted(retention.partitions(dataset_dir).items())[-RECENT_PARTITIONS:]
    return [file for _, partition in days for file in partition.glob("part-*.parquet")]


@dataclass
class _Seen:
    rows: int = 0
    ids: set[str] = field(default_factory=set)


class Follower:
    """Yields rows that appeared in the dataset since the previous ``poll()``."""

    def __init__(self, dataset_dir: str | os.PathLike[str]) -> None:
        self._dir = dataset_dir
        self._segments: dict[str, _Seen] = {}
        self._parts: set[Path] = set()

    def prime(self, n: int) -> list[Row]:
        """Treat everything present now as seen; return its newest ``n`` rows (``latest``)."""
        tables = _segment_tables(self._dir)
        self._parts = set(_recent_parts(self._dir))
        for name, table in tables.items():
            self._from_segment(name, table)
        return _latest(self._dir, tables, n)

    def poll(self) -> list[Row]:
        """New rows, in the order they were written."""
        tables = _segment_tables(self._dir)
        parts = set(_recent_parts(self._dir))
        for name in set(self._segments) - set(tables):  # compacted: where did its rows go?
            parts.update(self._parts_of(name))
        rows: list[Row] = []
        for name, table in tables.items():
            rows += self._from_segment(name, table).to_pylist()
        for part in sorted(parts - self._parts):
            rows += self._from_part(part)
        self._parts = parts
        for name in set(self._segments) - set(tables):
            del self._segments[name]
        return rows

    def _parts_of(self, segment: str) -> list[Path]:
        parsed = segments.parse_name(segment)
        if parsed is None:
            return []
        name = f"part-{glob.escape(parsed[0])}-{parsed[1]:08d}.parquet"
        return list(Path(self._dir).glob(f"date=*/{name}"))

    def _from_segment(self, name: str, table: pa.Table) -> pa.Table:
        seen = self._segments.setdefault(name, _Seen())
        fresh = table.slice(seen.rows)
        seen.rows = table.num_rows
        seen.ids.update(fresh["request_id"].to_pylist())
        return fresh

    def _from_part(self, part: Path) -> list[Row]:
        try:
            table = pq.read_table(part)
        except FileNotFoundError:  # purged since we listed it
            return []
        metadata = table.schema.metadata or {}
        source = metadata.get(SEGMENT_KEY.encode(), b"").decode()
        seen = self._segments.get(source, _Seen())
        rows: list[Row] = table.to_pylist()
        return [row for row in rows if row["request_id"] not in seen.ids]
