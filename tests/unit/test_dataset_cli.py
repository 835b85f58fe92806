"""``actorproxy dataset stats|tail|export|purge``, checked against the rows that went in."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from actorproxy.schema.records import RequestRecord
from actorproxy.storage import compact, schema, tail
from actorproxy.storage.cli import register
from actorproxy.storage.segments import SegmentWriter
from tests.unit.test_storage import BIG, DAY, expected_row, make_record, write_dataset

HOUR = 3600.0


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="actorproxy")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def three_days(directory: Path) -> list[RequestRecord]:
    """30 records over 2026-01-01..03 (10 a day), compacted from two replicas' segments."""
    records = [
        make_record(i, ts=DAY + (i // 10) * 86_400 + (i % 10) * HOUR, latency_ms=float(i + 1))
        for i in range(30)
    ]
    write_dataset(directory, [records[:12]], replica="a")
    write_dataset(directory, [records[12:20], records[20:]], replica="b")
    return records


def _json_row(record: RequestRecord) -> dict[str, Any]:
    """``expected_row`` as it reads back from JSON: timestamps as RFC 3339 text."""
    row = expected_row(record)
    for name in ("ts_start", "ts_end"):
        row[name] = row[name].isoformat().replace("+00:00", "Z")
    return row


def _by_id(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: str(row["request_id"]))


# --- stats --------------------------------------------------------------------------------------


def test_stats_json_matches_the_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = three_days(tmp_path)
    with SegmentWriter(tmp_path, replica="c", max_bytes=BIG, max_age_s=1e9) as pending:
        pending.append(schema.to_record_batch([make_record(99)]), now=0.0)
        assert run("dataset", "stats", "--dir", str(tmp_path), "--json") == 0
    result = json.loads(capsys.readouterr().out)

    files = sorted(tmp_path.glob("date=*/*.parquet"))
    assert result["rows"] == 30 and result["files"] == len(files) == 4
    assert result["bytes"] == sum(f.stat().st_size for f in files)
    assert result["first"] == "2026-01-01T00:00:00Z"
    assert result["last"] == "2026-01-03T09:00:00Z"
    assert result["models"] == {"-": 15, "model-0": 15}  # odd records have no model
    assert result["errors"] == 15 and result["error_rate"] == 0.5
    # latency_ms is 1..30: linear interpolation at q * (n - 1)
    assert result["latency_ms"] == {"p50": 15.5, "p90": pytest.approx(27.1), "p99": 29.71}
    assert result["dropped"] == 1  # write_dataset gives batch i the drop count i
    assert result["pending_segments"] == 1 and result["pending_bytes"] > 0
    assert len(records) == 30


def test_stats_text_and_empty_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("dataset", "stats", "--dir", str(tmp_path / "nothing")) == 0
    text = capsys.readouterr().out
    assert "rows        0 in 0 files, 0 bytes" in text
    assert "p50 -" in text
    three_days(tmp_path)
    assert run("dataset", "stats", "--dir", str(tmp_path)) == 0
    text = capsys.readouterr().out
    assert "errors      15 (50.00%)" in text
    assert "p50 15.5 ms" in text and "model-0" in text


def test_config_names_the_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    three_days(tmp_path / "data")
    config = tmp_path / "proxy.toml"
    config.write_text(f'[dataset]\ndir = "{tmp_path / "data"}"\n')
    assert run("dataset", "stats", "--config", str(config), "--json") == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 30
    (tmp_path / "etc").mkdir()
    relative = tmp_path / "etc" / "proxy.toml"
    relative.write_text('[dataset]\ndir = "../data"\n')  # relative to the file, not the cwd
    assert run("dataset", "stats", "--config", str(relative), "--json") == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 30
    bare = tmp_path / "bare.toml"
    bare.write_text("[server]\nport = 8001\n")
    assert run("dataset", "stats", "--config", str(bare)) == 2
    assert "[dataset] dir is not set" in capsys.readouterr().err
    assert run("dataset", "stats", "--config", str(tmp_path / "missing.toml")) == 2


def test_dir_or_config_is_required() -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("dataset", "stats")
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        run("dataset", "purge", "--dir", "x", "--before", "01/02/2026")


# --- export -------------------------------------------------------------------------------------


def test_export_jsonl_keeps_nested_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = three_days(tmp_path / "data")
    out = tmp_path / "out.jsonl"
    argv = ["--format", "jsonl", "--out", str(out), "--since", "2026-01-02"]
    assert run("dataset", "export", "--dir", str(tmp_path / "data"), *argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert _by_id(rows) == [_json_row(r) for r in records[10:]]
    assert any(row["attempts"] and row["chunk_offsets_ms"] for row in rows)
    assert "exported 20 rows" in capsys.readouterr().err


def test_export_csv_encodes_lists_as_json(tmp_path: Path) -> None:
    records = three_days(tmp_path / "data")
    out = tmp_path / "out.csv"
    argv = ["--format", "csv", "--out", str(out), "--until", "2026-01-01"]
    assert run("dataset", "export", "--dir", str(tmp_path / "data"), *argv) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == schema.SCHEMA.names
    assert sorted(r["request_id"] for r in rows) == [r.request_id for r in records[:10]]
    for row in rows:
        record = next(r for r in records if r.request_id == row["request_id"])
        expected = expected_row(record)
        assert json.loads(row["attempts"]) == expected["attempts"]
        assert json.loads(row["chunk_offsets_ms"]) == expected["chunk_offsets_ms"]
        assert float(row["latency_ms"]) == expected["latency_ms"]
        assert row["trace_id"] == (expected["trace_id"] or "")
        assert dt.datetime.fromisoformat(row["ts_start"]) == expected["ts_start"]


def test_export_parquet_round_trips(tmp_path: Path) -> None:
    records = three_days(tmp_path / "data")
    out = tmp_path / "out.parquet"
    argv = ["--format", "parquet", "--out", str(out)]
    assert run("dataset", "export", "--dir", str(tmp_path / "data"), *argv) == 0
    table = pq.read_table(out)
    assert table.schema.equals(schema.SCHEMA, check_metadata=True)
    assert _by_id(table.to_pylist()) == [expected_row(r) for r in records]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = three_days(tmp_path)
    argv = ["--format", "jsonl", "--out", "-", "--since", "2026-01-03", "--until", "2026-01-03"]
    assert run("dataset", "export", "--dir", str(tmp_path), *argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert _by_id(rows) == [_json_row(r) for r in records[20:]]
    assert (
        run("dataset", "export", "--dir", str(tmp_path), "--format", "parquet", "--out", "-") == 2
    )


def test_export_reports_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    with SegmentWriter(data, replica="a", max_bytes=BIG, max_age_s=1e9) as writer:
        for start in range(0, 100_001, 20_000):
            stop = min(start + 20_000, 100_001)
            batch = [make_record(i, ts=DAY + i / 10, request_body="{}") for i in range(start, stop)]
            writer.append(schema.to_record_batch(batch), now=0.0)
        closed = writer.close()
    assert closed is not None
    compact.compact(closed, data, replica="a")
    out = tmp_path / "all.csv"
    assert run("dataset", "export", "--dir", str(data), "--format", "csv", "--out", str(out)) == 0
    assert capsys.readouterr().err.splitlines() == [
        "exported 100,000 rows",
        f"exported 100,001 rows to {out}",
    ]
    assert len(out.read_text().splitlines()) == 100_002


# --- tail ---------------------------------------------------------------------------------------


def test_tail_includes_rows_of_an_open_segment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = three_days(tmp_path)
    newest = [make_record(100 + i, ts=DAY + 3 * 86_400 + i) for i in range(2)]
    with SegmentWriter(tmp_path, replica="live", max_bytes=BIG, max_age_s=1e9) as writer:
        writer.append(schema.to_record_batch(newest), now=0.0)
        assert writer.path is not None
        with open(writer.path, "ab") as segment:  # a batch being written right now
            segment.write(b"\xff\xff\xff\xff\x10\x00")
        assert run("dataset", "tail", "--dir", str(tmp_path), "-n", "4") == 0

    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [_json_row(r) for r in [*records[28:], *newest]]


def test_follower_prints_each_row_once(tmp_path: Path) -> None:
    first = [make_record(i) for i in range(3)]
    write_dataset(tmp_path, [first])
    # Two newer partitions: the followed segment's rows land in an older one.
    write_dataset(
        tmp_path, [[make_record(90, ts=DAY + 86_400), make_record(91, ts=DAY + 2 * 86_400)]]
    )
    writer = SegmentWriter(tmp_path, replica="live", max_bytes=BIG, max_age_s=1e9)
    writer.append(schema.to_record_batch([make_record(10)]), now=0.0)
    follower = tail.Follower(tmp_path)

    primed = follower.prime(2)

    assert [row["request_id"] for row in primed] == ["req-000090", "req-000091"]
    assert follower.poll() == []
    writer.append(schema.to_record_batch([make_record(11), make_record(12)]), now=0.0)
    assert [row["request_id"] for row in follower.poll()] == ["req-000011", "req-000012"]
    writer.append(schema.to_record_batch([make_record(13)]), now=0.0)
    closed = writer.close()
    assert closed is not None
    compact.compact(closed, tmp_path, replica="live")  # 13 was never polled from the segment
    assert [row["request_id"] for row in follower.poll()] == ["req-000013"]
    assert follower.poll() == []
    # A segment written and compacted between two polls is read from its (current) Parquet part.
    today = DAY + 2 * 86_400
    write_dataset(tmp_path, [[make_record(20, ts=today), make_record(21, ts=today)]], "fast")
    assert sorted(row["request_id"] for row in follower.poll()) == ["req-000020", "req-000021"]
    assert follower.poll() == []


# --- purge --------------------------------------------------------------------------------------


def test_purge_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    three_days(tmp_path)
    argv = ["dataset", "purge", "--dir", str(tmp_path), "--before", "2026-01-03"]
    assert run(*argv, "--dry-run") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"would remove {tmp_path / 'date=2026-01-01'}",
        f"would remove {tmp_path / 'date=2026-01-02'}",
    ]
    assert len(list(tmp_path.glob("date=*"))) == 3
    assert run(*argv) == 0
    assert "removed 2 partitions before 2026-01-03" in capsys.readouterr().err
    assert [p.name for p in tmp_path.glob("date=*")] == ["date=2026-01-03"]
    assert run("dataset", "stats", "--dir", str(tmp_path), "--json") == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 10


def test_help_reads_like_a_manual(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run("dataset", "export", "--help")
    text = capsys.readouterr().out
    assert "--since DATE" in text and "jsonl keeps nested columns nested" in text
    assert run("dataset") == 2
    assert "hive_partitioning=true" in capsys.readouterr().err
