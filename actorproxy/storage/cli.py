"""``actorproxy dataset ...``: inspect, follow, export and purge the request dataset.

Every command only reads, except ``purge``; none takes a lock, so all are safe beside a running
gateway. ``register`` adds the commands to the main parser; each sets ``func`` to a handler that
returns the exit status: 0 done, 1 the dataset could not be read or written, 2 bad arguments or
config. Interrupted (Ctrl-C, a crash), ``export`` leaves no output file and ``purge`` may leave
a partition half removed: run it again to finish.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import pyarrow as pa

from actorproxy import config as cfg
from actorproxy.storage import query, retention, tail

POLL_S = 0.5
PROGRESS_EVERY = 100_000

_json = msgspec.json.Encoder()

DATASET_HELP = """\
The dataset is a directory of hive partitions, date=YYYY-MM-DD/part-<replica>-<seq>.parquet
(zstd), one row per request, partitioned by the UTC date of ts_start. Rows first land in Arrow IPC
segments under _segments/ and are compacted into Parquet when a segment is rotated.

Read it directly with pyarrow.dataset.dataset(DIR, partitioning="hive"), DuckDB
(read_parquet('DIR/**/*.parquet', hive_partitioning=true)), Polars or Spark.
"""


class UsageError(Exception):
    """The command line or the config file cannot be used (exit status 2)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dataset`` and its subcommands to the main parser's ``subparsers``."""
    dataset = subparsers.add_parser(
        "dataset",
        help="inspect, follow, export and purge the request dataset",
        description=DATASET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dataset.set_defaults(func=lambda args: _usage(dataset))
    commands = dataset.add_subparsers(dest="dataset_command", metavar="COMMAND")
    _add_stats(commands)
    _add_tail(commands)
    _add_export(commands)
    _add_purge(commands)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=description)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", metavar="DIR", help="the dataset directory")
    where.add_argument(
        "--config",
        metavar="PATH",
        help="a gateway config file: use its [dataset] dir (relative to the file)",
    )
    return parser


def _add_stats(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(
        commands,
        "stats",
        "summarize the compacted dataset",
        "Print the row count, files and bytes on disk, the time range of ts_start, rows per "
        "requested model, the error rate (status_code >= 400 or error_type set) and latency_ms "
        "p50/p90/p99. Rows in segments not yet compacted are counted under 'pending' only.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.set_defaults(func=_run(_stats))


def _add_tail(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(
        commands,
        "tail",
        "print the newest rows as JSON lines",
        "Print the N rows with the latest ts_start, oldest first, one JSON object per line, "
        "including rows still in open segments. With --follow, keep polling every "
        f"{POLL_S} s and print each new row once, until Ctrl-C.",
    )
    parser.add_argument("-n", type=int, default=10, metavar="N", help="rows to print (10)")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new rows")
    parser.set_defaults(func=_run(_tail))


def _add_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(
        commands,
        "export",
        "copy rows to one parquet, jsonl or csv file",
        "Write the compacted rows of the partitions from --since to --until (inclusive, UTC dates"
        " of ts_start) to one file. jsonl keeps nested columns nested; csv writes attempts and "
        "chunk_offsets_ms as JSON text. The file appears only when complete; progress goes to "
        "stderr.",
    )
    parser.add_argument("--format", required=True, choices=query.FORMATS, help="output format")
    parser.add_argument("--out", required=True, metavar="PATH", help="output file ('-': stdout)")
    parser.add_argument("--since", type=_date, metavar="DATE", help="first date, YYYY-MM-DD")
    parser.add_argument("--until", type=_date, metavar="DATE", help="last date, YYYY-MM-DD")
    parser.set_defaults(func=_run(_export))


def _add_purge(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _command(
        commands,
        "purge",
        "delete date partitions older than a date",
        "Delete every date=YYYY-MM-DD partition dated strictly before --before. Segments and "
        "files the gateway did not write are left alone.",
    )
    parser.add_argument("--before", required=True, type=_date, metavar="DATE", help="YYYY-MM-DD")
    parser.add_argument("--dry-run", action="store_true", help="only list what would go")
    parser.set_defaults(func=_run(_purge))


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


Handler = Callable[[argparse.Namespace, Path], int]


def _run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args, _dataset_dir(args))
        except BrokenPipeError:  # `... | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except (UsageError, cfg.ConfigError, ValueError) as exc:
            print(f"actorproxy dataset: {exc}", file=sys.stderr)
            return 2
        except (OSError, pa.ArrowException) as exc:
            print(f"actorproxy dataset: {exc}", file=sys.stderr)
            return 1

    return run


def _dataset_dir(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return Path(args.dir)
    directory = cfg.load(args.config).dataset.dir
    if directory is None:
        raise UsageError(f"{args.config}: [dataset] dir is not set")
    # As the gateway reads it: a relative dir is relative to the config file.
    return Path(args.config).resolve().parent / directory


def _stats(args: argparse.Namespace, directory: Path) -> int:
    summary = query.stats(directory)
    if args.json:
        print(_json.encode(summary).decode())
        return 0
    print(f"rows        {summary.rows:,} in {summary.files:,} files, {summary.bytes:,} bytes")
    print(f"time range  {_when(summary.first)} .. {_when(summary.last)}")
    print(f"errors      {summary.errors:,} ({summary.error_rate:.2%})")
    quantiles = "  ".join(f"{k} {_ms(v)}" for k, v in summary.latency_ms.items())
    print(f"latency     {quantiles}")
    print(f"dropped     {summary.dropped:,} records (logger queue full)")
    print(f"pending     {summary.pending_segments} segments, {summary.pending_bytes:,} bytes")
    print("models")
    for model, count in summary.models.items():
        print(f"  {count:>12,}  {model}")
    return 0


def _when(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.isoformat()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _tail(args: argparse.Namespace, directory: Path) -> int:
    if not args.follow:
        _print_rows(tail.latest(directory, args.n))
        return 0
    follower = tail.Follower(directory)
    _print_rows(follower.prime(args.n))
    try:
        while True:
            time.sleep(POLL_S)
            _print_rows(follower.poll())
    except KeyboardInterrupt:
        return 0


def _print_rows(rows: list[tail.Row]) -> None:
    if rows:
        sys.stdout.flush()  # text written with print() goes first
        sys.stdout.buffer.write(_json.encode_lines(rows))
        sys.stdout.buffer.flush()


def _export(args: argparse.Namespace, directory: Path) -> int:
    reported = [0]

    def progress(rows: int) -> None:
        if rows // PROGRESS_EVERY > reported[0] // PROGRESS_EVERY:
            print(f"exported {rows:,} rows", file=sys.stderr, flush=True)
        reported[0] = rows

    fmt: query.Format = args.format
    rows = query.export(
        directory, args.out, fmt, since=args.since, until=args.until, progress=progress
    )
    print(f"exported {rows:,} rows to {args.out}", file=sys.stderr)
    return 0


def _purge(args: argparse.Namespace, directory: Path) -> int:
    if args.dry_run:
        gone = retention.expired(directory, args.before)
    else:
        gone = retention.purge(directory, args.before)
    verb = "would remove" if args.dry_run else "removed"
    for partition in gone:
        print(f"{verb} {partition}")
    print(f"{verb} {len(gone)} partitions before {args.before.isoformat()}", file=sys.stderr)
    return 0
