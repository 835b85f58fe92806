"""The storage path: records -> Arrow batch -> IPC segment -> Parquet, and what readers see."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import resource
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from actorproxy.config import DatasetConfig
from actorproxy.schema.records import Attempt, RequestRecord, Sampling, Usage
from actorproxy.storage import compact, retention, schema, segments
from actorproxy.storage.segments import SegmentWriter
from actorproxy.storage.sink import DatasetSink, SinkStats
from bench import logger as bench_logger

DAY = 1_767_225_600.0  # 2026-01-01T00:00:00Z
BIG = 1 << 40


def make_record(index: int, *, ts: float | None = None, **changes: Any) -> RequestRecord:
    """A record whose fields all depend on ``index``; odd indexes carry None wherever allowed."""
    start = DAY + 3600 + index * 1.25 if ts is None else ts
    odd = index % 2 == 1
    fields: dict[str, Any] = {
        "request_id": f"req-{index:06d}",
        "trace_id": None if odd else f"{index:032x}",
        "ts_start": start,
        "ts_end": start + 0.5,
        "replica": "host-1",
        "endpoint": "chat",
        "api_key_id": f"key_{index % 3}",
        "model_requested": None if odd else f"model-{index % 2}",
        "provider": None if odd else "openai",
        "upstream_model": None if odd else "gpt-4o",
        "stream": not odd,
        "status_code": 502 if odd else 200,
        "error_type": "upstream_error" if odd else None,
        "finish_reason": None if odd else "stop",
        "latency_ms": 10.0 + index,
        "upstream_ms": None if odd else 8.5,
        "queue_ms": None if odd else 0.25,
        "ttft_ms": None if odd else 3.0,
        "chunk_offsets_ms": [] if odd else [1.5, 2.25, 100.0][: index % 4],
        "usage": Usage() if odd else Usage(10, 20, 30, 4, 5, estimated=index % 4 == 0),
        "sampling": Sampling() if odd else Sampling(0.7, 0.9, 256, 1, 42, 2, "json_object"),
        "request_body": None if odd else json.dumps({"i": index, "text": "é ✓ " * (index % 7)}),
        "response_body": None if odd else '{"ok": true}',
        "redactions": index % 3,
        "attempts": _attempts(index),
    }
    fields.update(changes)
    return RequestRecord(**fields)


def _attempts(index: int) -> list[Attempt]:
    first = Attempt("openai", "gpt-4o", 503, "upstream_error", 0.0, 5.5, None)
    second = Attempt("azure", "gpt-4o", 200, None, 6.0, 9.0, 2.5)
    return [[], [first], [first, second]][index % 3]


def _f32(value: float) -> float:
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


def _utc(seconds: float) -> dt.datetime:
    micros = round(seconds * 1_000_000)
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)


def expected_row(record: RequestRecord) -> dict[str, Any]:
    """The row a reader must see for ``record``, by column name."""
    row: dict[str, Any] = {
        name: getattr(record, name)
        for name in schema.SCHEMA.names
        if hasattr(record, name) and name not in ("ts_start", "ts_end", "attempts")
    }
    row["ts_start"], row["ts_end"] = _utc(record.ts_start), _utc(record.ts_end)
    row["chunk_offsets_ms"] = [_f32(v) for v in record.chunk_offsets_ms]
    for name in ("prompt", "completion", "total", "cached", "reasoning"):
        row[f"{name}_tokens"] = getattr(record.usage, f"{name}_tokens")
    row["usage_estimated"] = record.usage.estimated
    for name in ("temperature", "top_p", "max_tokens", "n", "seed", "tool_count"):
        row[name] = getattr(record.sampling, name)
    row["response_format"] = record.sampling.response_format
    row["attempts"] = [{f: getattr(a, f) for f in a.__struct_fields__} for a in record.attempts]
    return row


def _by_id(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: str(row["request_id"]))


def write_dataset(
    directory: Path, batches: Sequence[Sequence[RequestRecord]], replica: str = "host-1"
) -> list[Path]:
    """Batches -> one segment -> compaction; the Parquet parts."""
    with SegmentWriter(directory, replica=replica, max_bytes=BIG, max_age_s=1e9) as writer:
        for index, records in enumerate(batches):
            writer.append(schema.to_record_batch(records, dropped=index), now=0.0)
        closed = writer.close()
    assert closed is not None
    return compact.compact(closed, directory, replica=replica)


def read_pyarrow(directory: Path) -> list[dict[str, Any]]:
    table = ds.dataset(directory, format="parquet", partitioning="hive").to_table()
    return table.to_pylist()  # type: ignore[no-any-return]


# --- schema ---------------------------------------------------------------------------------


def test_schema_columns_types_and_metadata() -> None:
    assert schema.SCHEMA.names[:4] == ["schema_version", "request_id", "trace_id", "ts_start"]
    assert schema.SCHEMA.names[-3:] == ["response_body", "redactions", "attempts"]
    assert len(schema.SCHEMA) == 37
    assert schema.SCHEMA.field("ts_start").type == pa.timestamp("us", tz="UTC")
    assert schema.SCHEMA.field("chunk_offsets_ms").type.value_type == pa.float32()
    assert schema.SCHEMA.field("attempts").type.value_type.field("status_code").type == pa.int16()
    assert schema.SCHEMA.metadata == {b"actorproxy.schema_version": b"1"}


def test_batch_holds_every_field() -> None:
    records = [make_record(i) for i in range(7)]
    batch = schema.to_record_batch(records, dropped=3)
    assert batch.schema.equals(schema.SCHEMA)
    assert schema.dropped_of(batch) == 3
    assert batch.to_pylist() == [expected_row(r) for r in records]


def test_timestamps_are_utc_microseconds() -> None:
    record = make_record(0, ts=1_767_225_600.123456)
    row = schema.to_record_batch([record]).to_pylist()[0]
    assert row["ts_start"] == dt.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=dt.UTC)


def test_empty_batch_carries_drops() -> None:
    batch = schema.to_record_batch([], dropped=5)
    assert batch.num_rows == 0
    assert schema.dropped_of(batch) == 5


def test_value_out_of_range_raises() -> None:
    with pytest.raises((pa.ArrowInvalid, OverflowError)):
        schema.to_record_batch([make_record(0, status_code=70_000)])


# --- round trip through readers ---------------------------------------------------------------


def test_round_trip_pyarrow_dataset(tmp_path: Path) -> None:
    records = [make_record(i) for i in range(25)]
    parts = write_dataset(tmp_path, [records[:10], records[10:]])
    assert [p.relative_to(tmp_path).as_posix() for p in parts] == [
        "date=2026-01-01/part-host-1-00000000.parquet"
    ]
    rows = read_pyarrow(tmp_path)
    assert {row.pop("date") for row in rows} == {"2026-01-01"}
    assert _by_id(rows) == [expected_row(r) for r in records]
    metadata = pq.read_schema(parts[0]).metadata
    assert metadata[b"actorproxy.schema_version"] == b"1"
    assert metadata[b"actorproxy.dropped"] == b"1"  # batch 0 carried 0, batch 1 carried 1


def test_round_trip_duckdb(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    records = [make_record(i) for i in range(12)]
    write_dataset(tmp_path, [records])
    # Timestamps come back as epoch microseconds: DuckDB needs pytz to build aware datetimes.
    relation = duckdb.connect().sql(
        "SELECT * REPLACE (epoch_us(ts_start) AS ts_start, epoch_us(ts_end) AS ts_end),"
        " typeof(ts_start) AS ts_type"
        f" FROM read_parquet('{tmp_path}/**/*.parquet', hive_partitioning = true)"
    )
    names = [column[0] for column in relation.description]
    rows = [dict(zip(names, values, strict=True)) for values in relation.fetchall()]
    assert {(row.pop("date"), row.pop("ts_type")) for row in rows} == {
        (dt.date(2026, 1, 1), "TIMESTAMP WITH TIME ZONE")
    }
    expected = [expected_row(r) for r in records]
    for row in expected:
        row["ts_start"], row["ts_end"] = (_epoch_us(row["ts_start"]), _epoch_us(row["ts_end"]))
    assert _by_id(rows) == expected


def _epoch_us(moment: dt.datetime) -> int:
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def test_round_trip_polars(tmp_path: Path) -> None:
    polars = pytest.importorskip("polars")
    records = [make_record(i) for i in range(12)]
    write_dataset(tmp_path, [records])
    frame = polars.read_parquet(f"{tmp_path}/**/*.parquet", hive_partitioning=True)
    rows = frame.drop("date").to_dicts()
    assert _by_id(rows) == [expected_row(r) for r in records]


def test_multi_date_split(tmp_path: Path) -> None:
    day = 86_400.0
    records = [
        make_record(0, ts=DAY - 0.000001),  # 2025-12-31T23:59:59.999999Z
        make_record(1, ts=DAY),
        make_record(2, ts=DAY + day - 0.5),
        make_record(3, ts=DAY + day),
        make_record(4, ts=DAY + 10),
    ]
    parts = write_dataset(tmp_path, [records[:2], records[2:]])
    names = sorted(p.relative_to(tmp_path).as_posix() for p in parts)
    assert names == [
        "date=2025-12-31/part-host-1-00000000.parquet",
        "date=2026-01-01/part-host-1-00000000.parquet",
        "date=2026-01-02/part-host-1-00000000.parquet",
    ]
    by_date: dict[str, list[str]] = {}
    for row in read_pyarrow(tmp_path):
        by_date.setdefault(row["date"], []).append(row["request_id"])
    assert by_date == {
        "2025-12-31": ["req-000000"],
        "2026-01-01": ["req-000001", "req-000002", "req-000004"],
        "2026-01-02": ["req-000003"],
    }
    dropped = [pq.read_schema(p).metadata[b"actorproxy.dropped"] for p in sorted(parts)]
    assert dropped == [b"1", b"0", b"0"]  # counted once, in the earliest partition


def test_no_temporary_or_segment_left_behind(tmp_path: Path) -> None:
    write_dataset(tmp_path, [[make_record(i) for i in range(5)]])
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".parquet"]
    assert leftovers == []
    assert not list(tmp_path.rglob("*.tmp"))


# --- segments: rotation, names ------------------------------------------------------------------


def test_rotation_by_size(tmp_path: Path) -> None:
    batch = schema.to_record_batch([make_record(i) for i in range(20)])
    probe = SegmentWriter(tmp_path / "probe", replica="a", max_bytes=BIG, max_age_s=1e9)
    sizes = []
    for _ in range(3):
        probe.append(batch, now=0.0)
        assert probe.path is not None
        sizes.append(probe.path.stat().st_size)
    probe.close()
    writer = SegmentWriter(tmp_path, replica="a", max_bytes=sizes[2], max_age_s=1e9)
    closed = [writer.append(batch, now=0.0) for _ in range(7)]
    assert [c.name if c else None for c in closed] == [
        None, None, "seg-a-00000000.arrows", None, None, "seg-a-00000001.arrows", None,
    ]  # fmt: skip
    assert writer.close() == tmp_path / "_segments" / "seg-a-00000002.arrows"
    counts = [_rows(tmp_path / "_segments" / f"seg-a-{n:08d}.arrows") for n in range(3)]
    assert counts == [60, 60, 20]


def test_rotation_by_age(tmp_path: Path) -> None:
    batch = schema.to_record_batch([make_record(0)])
    writer = SegmentWriter(tmp_path, replica="a", max_bytes=BIG, max_age_s=10.0)
    assert writer.append(batch, now=100.0) is None
    assert writer.append(batch, now=109.9) is None
    assert writer.rotate_if_due(now=109.95) is None
    first = writer.rotate_if_due(now=110.0)
    assert first is not None and first.name == "seg-a-00000000.arrows"
    assert writer.path is None and writer.rotate_if_due(now=500.0) is None
    assert writer.append(batch, now=500.0) is None  # a new segment, aged from 500
    second = writer.append(batch, now=510.0)
    assert second is not None and second.name == "seg-a-00000001.arrows"
    assert _rows(first) == 2 and _rows(second) == 2


def _rows(segment: Path) -> int:
    contents = segments.read_segment(segment.read_bytes())
    assert contents.complete
    return contents.num_rows


def test_replica_is_sanitized(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, replica="pod/7 é:x", max_bytes=BIG, max_age_s=1e9)
    writer.append(schema.to_record_batch([make_record(0)]), now=0.0)
    closed = writer.close()
    assert closed is not None and closed.name == "seg-pod_7___x-00000000.arrows"
    assert segments.parse_name(closed.name) == ("pod_7___x", 0)


def test_names_never_collide_across_restarts(tmp_path: Path) -> None:
    seen: set[str] = set()
    for restart in range(3):
        parts = write_dataset(tmp_path, [[make_record(restart * 10 + i) for i in range(3)]])
        seen.update(p.name for p in parts)
    # A segment left open by a crash also reserves its number.
    crashed = SegmentWriter(tmp_path, replica="host-1", max_bytes=BIG, max_age_s=1e9)
    crashed.append(schema.to_record_batch([make_record(99)]), now=0.0)
    assert crashed.path is not None and crashed.path.name == "seg-host-1-00000003.arrows"
    restarted = SegmentWriter(tmp_path, replica="host-1", max_bytes=BIG, max_age_s=1e9)
    restarted.append(schema.to_record_batch([make_record(98)]), now=0.0)
    assert restarted.path is not None and restarted.path.name == "seg-host-1-00000004.arrows"
    assert seen == {f"part-host-1-{n:08d}.parquet" for n in range(3)}
    assert len(read_pyarrow(tmp_path)) == 9
    crashed.close()
    restarted.close()


# --- crashes ------------------------------------------------------------------------------------


def _three_batch_segment(directory: Path) -> tuple[Path, list[int]]:
    """A closed segment of batches of 2, 3 and 4 rows, and the file size after each batch."""
    writer = SegmentWriter(directory, replica="a", max_bytes=BIG, max_age_s=1e9)
    sizes = []
    start = 0
    for size in (2, 3, 4):
        records = [make_record(i) for i in range(start, start + size)]
        writer.append(schema.to_record_batch(records, dropped=size), now=0.0)
        assert writer.path is not None
        sizes.append(writer.path.stat().st_size)
        start += size
    closed = writer.close()
    assert closed is not None
    return closed, sizes


def test_truncated_segment_keeps_complete_batches(tmp_path: Path) -> None:
    segment, sizes = _three_batch_segment(tmp_path / "source")
    data = segment.read_bytes()
    assert len(data) > sizes[-1]  # the end-of-stream marker follows the last batch
    before, after = sizes[1], sizes[2]
    cuts = sorted({before, before + 1, before + 4, before + 8, (before + after) // 2, after - 1})
    cuts += [after, len(data) - 1]  # complete last batch, without (part of) the end marker
    for cut in cuts:
        contents = segments.read_segment(data[:cut])
        assert not contents.complete
        expected = 9 if cut >= after else 5
        assert contents.num_rows == expected, cut
        target = tmp_path / f"cut-{cut}"
        victim = segments.segments_dir(target) / segment.name
        victim.parent.mkdir(parents=True)
        victim.write_bytes(data[:cut])
        parts = compact.recover(target, "other")
        rows = read_pyarrow(target)
        assert {row.pop("date") for row in rows} == {"2026-01-01"}
        assert len(rows) == expected and not victim.exists()
        assert _by_id(rows) == [expected_row(make_record(i)) for i in range(expected)]
        assert [pq.read_schema(p).metadata[b"actorproxy.dropped"] for p in parts] == [
            b"9" if cut >= after else b"5"
        ]


def test_read_file_reads_the_whole_segment_into_an_arrow_buffer(tmp_path: Path) -> None:
    segment, _ = _three_batch_segment(tmp_path)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with segment.open("rb") as file, empty.open("rb") as nothing:
        file.read(5)  # the file's position does not matter
        buffer = segments.read_file(file)
        assert segments.read_file(nothing).size == 0
    assert buffer.to_pybytes() == segment.read_bytes()
    contents = segments.read_segment(buffer)
    assert contents.complete and contents.num_rows == 9


def test_torn_header_and_empty_segments_are_deleted(tmp_path: Path) -> None:
    segment, _ = _three_batch_segment(tmp_path)
    data = segment.read_bytes()
    segment.unlink()
    directory = segments.segments_dir(tmp_path)
    for name, content in [("seg-a-00000007.arrows", b""), ("seg-a-00000008.arrows", data[:40])]:
        (directory / name).write_bytes(content)
    assert compact.recover(tmp_path, "a") == []
    assert list(directory.iterdir()) == []


def test_garbage_segment_is_quarantined(tmp_path: Path) -> None:
    directory = segments.segments_dir(tmp_path)
    directory.mkdir(parents=True)
    (directory / "seg-b-00000003.arrows").write_bytes(b"not an arrow stream" * 50)
    (directory / "notes.txt").write_text("not ours")
    assert compact.recover(tmp_path, "a") == []
    write_dataset(tmp_path, [[make_record(0)]], replica="b")
    assert sorted(p.name for p in directory.iterdir()) == [
        "notes.txt",
        "seg-b-00000003.arrows.corrupt",
    ]
    # The quarantined file keeps its number: the next segment of "b" was 4.
    assert [p.name for p in tmp_path.glob("date=*/*")] == ["part-b-00000004.parquet"]


def test_recover_compacts_other_replicas_and_skips_open_segments(tmp_path: Path) -> None:
    crashed = SegmentWriter(tmp_path, replica="dead", max_bytes=BIG, max_age_s=1e9)
    crashed.append(schema.to_record_batch([make_record(0), make_record(1)]), now=0.0)
    assert crashed.path is not None
    leftover = crashed.path.read_bytes()  # a crash: the file stays, no end-of-stream marker
    crashed.close()
    crashed_path = segments.segments_dir(tmp_path) / "seg-dead-00000000.arrows"
    crashed_path.write_bytes(leftover)
    live = SegmentWriter(tmp_path, replica="live", max_bytes=BIG, max_age_s=1e9)
    live.append(schema.to_record_batch([make_record(2)]), now=0.0)

    parts = compact.recover(tmp_path, "live")

    assert [p.name for p in parts] == ["part-dead-00000000.parquet"]
    assert live.path is not None and live.path.exists()  # held by a live writer
    assert sorted(r["request_id"] for r in read_pyarrow(tmp_path)) == ["req-000000", "req-000001"]
    closed = live.close()
    assert closed is not None
    assert [p.name for p in compact.recover(tmp_path, "live")] == ["part-live-00000000.parquet"]


def test_compact_skips_a_segment_locked_elsewhere(tmp_path: Path) -> None:
    segment, _ = _three_batch_segment(tmp_path)
    with open(segment, "rb") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert compact.compact(segment, tmp_path, replica="a") == []
    assert len(compact.compact(segment, tmp_path, replica="a")) == 1
    assert compact.compact(segment, tmp_path, replica="a") == []  # gone: nothing to do


def test_compaction_is_idempotent_after_a_crash_before_unlink(tmp_path: Path) -> None:
    segment, _ = _three_batch_segment(tmp_path)
    data = segment.read_bytes()
    first = compact.compact(segment, tmp_path, replica="a")
    segment.write_bytes(data)  # as if the process died between os.replace and unlink
    stamp = first[0].stat().st_mtime_ns
    assert compact.compact(segment, tmp_path, replica="a") == first
    assert first[0].stat().st_mtime_ns == stamp and not segment.exists()
    assert len(read_pyarrow(tmp_path)) == 9


def test_compaction_refuses_to_overwrite_a_foreign_part(tmp_path: Path) -> None:
    segment, _ = _three_batch_segment(tmp_path)
    foreign = tmp_path / "date=2026-01-01" / "part-a-00000000.parquet"
    foreign.parent.mkdir()
    pq.write_table(pa.table({"x": [1]}), foreign)
    with pytest.raises(compact.PartConflictError):
        compact.compact(segment, tmp_path, replica="a")
    assert segment.exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_batch_of_another_schema_is_refused(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, replica="a", max_bytes=BIG, max_age_s=1e9)
    writer.append(schema.to_record_batch([make_record(0)]), now=0.0)
    with pytest.raises(ValueError, match="schema"):
        writer.append(pa.record_batch([pa.array([1])], names=["x"]), now=0.0)
    writer.append(schema.to_record_batch([make_record(1)]), now=0.0)
    closed = writer.close()
    assert closed is not None and _rows(closed) == 2


def test_a_failed_write_abandons_the_segment(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, replica="a", max_bytes=BIG, max_age_s=1e9)
    writer.append(schema.to_record_batch([make_record(0)]), now=0.0)
    assert writer.path is not None
    big = schema.to_record_batch([make_record(i, request_body="x" * 50_000) for i in range(1, 4)])
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    # The file-size limit makes the write fail like a full disk (Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (writer.path.stat().st_size + 20_000, limits[1]))
    try:
        with pytest.raises(OSError):
            writer.append(big, now=0.0)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert writer.path is None
    writer.append(schema.to_record_batch([make_record(5)]), now=0.0)
    assert writer.path is not None and writer.path.name == "seg-a-00000001.arrows"
    writer.close()
    compact.recover(tmp_path, "a")
    assert sorted(r["request_id"] for r in read_pyarrow(tmp_path)) == ["req-000000", "req-000005"]


def test_segment_with_only_drops_keeps_the_count(tmp_path: Path) -> None:
    parts = write_dataset(tmp_path, [[], []])  # dropped=0 then dropped=1
    assert len(parts) == 1
    assert pq.read_metadata(parts[0]).num_rows == 0
    assert pq.read_schema(parts[0]).metadata[b"actorproxy.dropped"] == b"1"


def test_fsync_flag_writes_the_same_data(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, replica="a", max_bytes=BIG, max_age_s=1e9, fsync=True)
    writer.append(schema.to_record_batch([make_record(0)]), now=0.0)
    closed = writer.close()
    assert closed is not None and _rows(closed) == 1


# --- retention ----------------------------------------------------------------------------------


def test_purge_removes_only_old_date_partitions(tmp_path: Path) -> None:
    for day in ("2025-12-30", "2025-12-31", "2026-01-01"):
        (tmp_path / f"date={day}").mkdir()
        (tmp_path / f"date={day}" / "part-a-00000000.parquet").write_bytes(b"x")
    (tmp_path / "date=2025-12-31" / "README").write_text("someone else's")
    for other in ("date=20251201", "date=2025-02-30", "_segments", "notes"):
        (tmp_path / other).mkdir()

    removed = retention.purge(tmp_path, dt.date(2026, 1, 1))

    assert [p.name for p in removed] == ["date=2025-12-30", "date=2025-12-31"]
    assert {p.name for p in tmp_path.iterdir()} == {
        "_segments", "date=2025-02-30", "date=2025-12-31", "date=2026-01-01", "date=20251201",
        "notes",
    }  # fmt: skip
    assert [p.name for p in (tmp_path / "date=2025-12-31").iterdir()] == ["README"]
    assert retention.purge(tmp_path / "missing", dt.date(2026, 1, 1)) == []


def test_retention_cutoff() -> None:
    today = dt.date(2026, 3, 1)
    assert retention.retention_cutoff(today, 30) == dt.date(2026, 1, 30)
    assert retention.retention_cutoff(today, 0) == today
    with pytest.raises(ValueError):
        retention.retention_cutoff(today, -1)


# --- benchmark script ---------------------------------------------------------------------------


def test_bench_logger_writes_every_record(tmp_path: Path) -> None:
    records = bench_logger.make_records(2_500, 2048)
    assert {len(r.request_body or "") for r in records} == {2048}
    assert len({r.request_body for r in records}) == len(records)
    result = bench_logger.run(records, tmp_path, batch=1000, max_bytes=2 << 20)
    assert result["records"] == result["rows_in_parquet"] == 2_500
    assert result["records_per_s"] > 0
    assert not list(segments.segments_dir(tmp_path).iterdir())


def test_bench_logger_main_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    bench_logger.main(["--records", "1500"])
    result = json.loads(capsys.readouterr().out)
    assert result["name"] == "logger" and result["rows_in_parquet"] == 1500
    assert result["records_per_s"] > 0 and result["cpu_us_per_record"] > 0
    assert result["derive_records_per_s"] > 0 and result["serial_records_per_s"] > 0
    assert 0 < result["writer_cpu_us_per_record"] < result["cpu_us_per_record"]


def test_bench_logger_compares_parquet_options(capsys: pytest.CaptureFixture[str]) -> None:
    bench_logger.main(["--records", "300", "--parquet-options"])
    result = json.loads(capsys.readouterr().out)
    assert result["name"] == "logger-parquet-options"
    # Uncompressed Parquet holds at least both 2 KB bodies per record; zstd shrinks the text.
    assert result["no_compression"]["bytes"] > 4096 > result["shipped"]["bytes"]
    assert result["shipped"]["cpu_us_per_record"] > 0 < result["zstd_alone"]["cpu_us_per_record"]


def test_storage_core_reads_no_clock_or_trio() -> None:
    root = Path(schema.__file__).parent
    for module in ("schema.py", "segments.py", "compact.py", "retention.py"):
        source = (root / module).read_text()
        for banned in ("import trio", "time.time(", "time.monotonic(", ".now(", ".today("):
            assert banned not in source, (module, banned)
    assert os.sep not in segments.sanitize("../../etc")


def test_sink_statistics_count_what_reached_the_disk(tmp_path: Path) -> None:
    config = DatasetConfig(dir=str(tmp_path), segment_max_bytes=1)  # every batch rotates
    sink = DatasetSink(tmp_path, replica="r1", redactor=None, config=config)
    assert sink.statistics() == SinkStats()
    for start in (0, 3):
        sink.write_rows([make_record(index) for index in range(start, start + 3)], 0)
    sink.close()
    stats = sink.statistics()
    segment_files = list(segments.segments_dir(tmp_path).glob("*"))
    parts = sorted(tmp_path.glob("date=*/*.parquet"))
    assert segment_files == []  # all compacted
    assert (stats.segments_closed, stats.parquet_files) == (2, len(parts)) and parts
    assert stats.parquet_bytes == sum(part.stat().st_size for part in parts)
    assert stats.segment_bytes > stats.parquet_bytes / 10  # counted, and of a plausible size
    assert len(read_pyarrow(tmp_path)) == 6
