"""Reading the compacted dataset: summary statistics and exports (pyarrow only, no DuckDB).

Readers only ever list ``date=*/part-*.parquet``; compaction publishes those by atomic rename, so a
reader never meets a partial file. Rows still in open IPC segments are not part of these views
(``tail`` reads them). An export is written under a temporary name beside ``--out`` and renamed
when complete: a crash or Ctrl-C leaves no partial output file.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from actorproxy.storage import retention, segments
from actorproxy.storage.compact import parquet_options
from actorproxy.storage.schema import DROPPED_KEY, SCHEMA

Format = Literal["parquet", "jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("parquet", "jsonl", "csv")
QUANTILES = (0.5, 0.9, 0.99)
BATCH_ROWS = 10_000

_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Stats:
    """A summary of the compacted dataset; ``pending_*`` describe segments not yet compacted."""

    rows: int
    files: int
    bytes: int
    first: dt.datetime | None
    last: dt.datetime | None
    models: dict[str, int]
    errors: int
    error_rate: float
    latency_ms: dict[str, float | None]
    dropped: int
    pending_segments: int
    pending_bytes: int


def parquet_files(
    dataset_dir: str | os.PathLike[str],
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> list[Path]:
    """Published Parquet parts, oldest partition first; ``since``/``until`` are inclusive."""
    files: list[Path] = []
    for day, partition in sorted(retention.partitions(dataset_dir).items()):
        if (since is None or day >= since) and (until is None or day <= until):
            files += sorted(partition.glob("part-*.parquet"))
    return files


def open_dataset(files: list[Path]) -> ds.Dataset:
    """The parts as one pyarrow dataset with the v1 schema (the date is in ``ts_start``)."""
    return ds.dataset([str(f) for f in files], schema=SCHEMA, format="parquet")


def stats(dataset_dir: str | os.PathLike[str]) -> Stats:
    """Counts, time range, per-model rows, error rate and latency quantiles.

    A row is an error when ``status_code >= 400`` or ``error_type`` is set. Quantiles are exact
    (linear interpolation); the scan streams batches and keeps only ``latency_ms`` (8 bytes a row).
    """
    files = parquet_files(dataset_dir)
    totals = _scan(files)
    pending = list(segments.segments_dir(dataset_dir).glob(f"seg-*{segments.SUFFIX}"))
    rows = sum(len(chunk) for chunk in totals.latencies)
    return Stats(
        rows=rows,
        files=len(files),
        bytes=sum(f.stat().st_size for f in files),
        first=min(totals.firsts, default=None),
        last=max(totals.lasts, default=None),
        models=dict(sorted(totals.models.items(), key=lambda pair: (-pair[1], pair[0]))),
        errors=totals.errors,
        error_rate=totals.errors / rows if rows else 0.0,
        latency_ms=_quantiles(pa.chunked_array(totals.latencies, type=pa.float64())),
        dropped=sum(_dropped(f) for f in files),
        pending_segments=len(pending),
        pending_bytes=sum(p.stat().st_size for p in pending),
    )


@dataclass
class _Totals:
    errors: int = 0
    firsts: list[dt.datetime] = field(default_factory=list)
    lasts: list[dt.datetime] = field(default_factory=list)
    models: Counter[str] = field(default_factory=Counter)
    latencies: list[pa.Array] = field(default_factory=list)


def _scan(files: list[Path]) -> _Totals:
    totals = _Totals()
    columns = ["ts_start", "model_requested", "status_code", "error_type", "latency_ms"]
    for batch in open_dataset(files).to_batches(columns=columns, batch_size=BATCH_ROWS * 10):
        if not batch.num_rows:
            continue
        failed = pc.or_(
            pc.greater_equal(batch["status_code"], 400), pc.is_valid(batch["error_type"])
        )
        totals.errors += pc.sum(pc.cast(pc.fill_null(failed, True), pa.int64())).as_py() or 0
        span = pc.min_max(batch["ts_start"]).as_py()
        totals.firsts.append(span["min"])
        totals.lasts.append(span["max"])
        for item in pc.value_counts(batch["model_requested"]).to_pylist():
            totals.models[item["values"] or "-"] += item["counts"]
        totals.latencies.append(batch["latency_ms"])
    return totals


def _quantiles(latency: pa.ChunkedArray) -> dict[str, float | None]:
    names = [f"p{round(q * 100)}" for q in QUANTILES]
    if latency.null_count == len(latency):
        return dict.fromkeys(names)
    values = pc.quantile(latency, q=list(QUANTILES)).to_pylist()
    return dict(zip(names, values, strict=True))


def _dropped(part: Path) -> int:
    metadata = pq.read_schema(part).metadata or {}
    return int(metadata.get(DROPPED_KEY.encode(), b"0"))


def export(
    dataset_dir: str | os.PathLike[str],
    out: str,
    fmt: Format,
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    progress: Callable[[int], None] = lambda rows: None,
) -> int:
    """Write the rows of partitions ``since``..``until`` (inclusive) to ``out``; return the count.

    ``out == "-"`` writes jsonl or csv to standard output. Nested columns (``attempts``,
    ``chunk_offsets_ms``) stay nested in parquet and jsonl and become JSON text in csv.
    ``progress`` is called with the running row count after every batch.
    """
    if out == "-" and fmt == "parquet":
        raise ValueError("parquet cannot be written to standard output; give a file")
    batches = open_dataset(parquet_files(dataset_dir, since=since, until=until)).to_batches(
        batch_size=BATCH_ROWS
    )
    with _output(out) as sink:
        return _WRITERS[fmt](batches, sink, progress)


@contextmanager
def _output(out: str) -> Iterator[BinaryIO]:
    if out == "-":
        sys.stdout.flush()
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(out)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        with open(temporary, "wb") as sink:
            yield sink
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _write_parquet(
    batches: Iterator[pa.RecordBatch], sink: BinaryIO, progress: Callable[[int], None]
) -> int:
    rows = 0
    with pq.ParquetWriter(sink, SCHEMA, **parquet_options(SCHEMA)) as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
            progress(rows)
    return rows


def _write_jsonl(
    batches: Iterator[pa.RecordBatch], sink: BinaryIO, progress: Callable[[int], None]
) -> int:
    rows = 0
    for batch in batches:
        sink.write(_json.encode_lines(batch.to_pylist()))
        rows += batch.num_rows
        progress(rows)
    return rows


def _write_csv(
    batches: Iterator[pa.RecordBatch], sink: BinaryIO, progress: Callable[[int], None]
) -> int:
    rows = 0
    with pcsv.CSVWriter(sink, flat_schema(SCHEMA)) as writer:
        for batch in batches:
            writer.write_batch(flatten(batch))
            rows += batch.num_rows
            progress(rows)
    return rows


_WRITERS = {"parquet": _write_parquet, "jsonl": _write_jsonl, "csv": _write_csv}


def _nested(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_nested(data_type))


def flat_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every nested column as a JSON string column."""
    fields = [pa.field(f.name, pa.string()) if _nested(f.type) else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def flatten(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with every nested column encoded as JSON text (nulls stay null)."""
    columns = [_as_json(column) if _nested(column.type) else column for column in batch.columns]
    return pa.RecordBatch.from_arrays(columns, schema=flat_schema(batch.schema))


def _as_json(column: pa.Array) -> pa.Array:
    texts = [None if v is None else _json.encode(v).decode() for v in column.to_pylist()]
    return pa.array(texts, type=pa.string())
