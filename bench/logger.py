"""Records per second from the logger's input to published zstd Parquet.

Three runs over the same unique 2 KB bodies, each from its first record to the last Parquet file
renamed into place (the compaction of the last segment included), with the CPU time of the whole
process (every thread) per record:

- ``records_per_s``: ``DatasetSink.write_rows`` as the logger's worker thread calls it, one slice
  of ``--slice`` pre-built ``RequestRecord``s at a time (columns, segment append), closed segments
  compacted on the sink's compaction threads. This is what the issue's target is about.
- ``derive_records_per_s``: ``DatasetSink.write`` from raw ``Exchange``s, so deriving the rows and
  redacting the bodies (default detectors, clean text) is included: the whole logger.
- ``writer_cpu_us_per_record``: the part of ``cpu_us_per_record`` spent in the writing thread
  (columns, segment append); the rest is the compaction threads'.
- ``serial_*``: every step one after the other on one thread, timed step by step.

Run: ``.venv/bin/python -m bench.logger [--records N] [--slice N] [--workers N]``; prints one JSON
object. ``--parquet-options`` instead compares Parquet writer settings on the same records
(thread CPU and bytes per record of one write each, and zstd by itself).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import msgspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from actorproxy.config import DatasetConfig
from actorproxy.redact import RedactionConfig, Redactor
from actorproxy.schema.records import (
    Attempt,
    Exchange,
    RequestFacts,
    RequestRecord,
    Sampling,
    Usage,
)
from actorproxy.storage.compact import compact, parquet_options
from actorproxy.storage.schema import to_record_batch
from actorproxy.storage.segments import SegmentWriter
from actorproxy.storage.sink import Compaction, DatasetSink

T = TypeVar("T")
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
POOL = 4096
_LETTERS = "etaoinshrdlucmfwypvbgkjqxz"


def _vocabulary(rng: random.Random, size: int = 5000) -> list[str]:
    weights = [1 / rank for rank in range(1, len(_LETTERS) + 1)]
    return ["".join(rng.choices(_LETTERS, weights, k=rng.randint(2, 9))) for _ in range(size)]


def _text(rng: random.Random, vocabulary: list[str], size: int) -> str:
    # Zipf-like word frequencies, like prose: compresses about as well as real chat bodies.
    words = rng.choices(vocabulary, cum_weights=_cumulative(len(vocabulary)), k=size // 5)
    return json.dumps({"role": "user", "content": " ".join(words)})[:size]


def _cumulative(size: int) -> list[float]:
    total, cumulative = 0.0, []
    for rank in range(1, size + 1):
        total += 1 / rank
        cumulative.append(total)
    return cumulative


def make_records(count: int, body_bytes: int, seed: int = 1) -> list[RequestRecord]:
    """``count`` records whose request and response bodies are ``body_bytes`` each, all unique."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    pool = [_text(rng, vocabulary, body_bytes) for _ in range(min(POOL, max(count // 8, 1)))]
    return [_record(rng, index, pool) for index in range(count)]


def _unique(rng: random.Random, pool: list[str], index: int) -> str:
    # Three pooled texts spliced at random points plus a serial: unique bodies (as in real
    # traffic: no dictionary-encoding shortcut) without generating gigabytes of words.
    first, second, third = rng.choice(pool), rng.choice(pool), rng.choice(pool)
    cut, end = sorted(rng.sample(range(len(first)), 2))
    return f"{index:08d}{first[:cut]}{second[cut:end]}{third[end:]}"[: len(first)]


def _record(rng: random.Random, index: int, pool: list[str]) -> RequestRecord:
    start = START + index * 0.001
    latency = rng.uniform(50, 2000)
    return RequestRecord(
        request_id=f"req_{index:024x}",
        trace_id=f"{rng.getrandbits(128):032x}",
        ts_start=start,
        ts_end=start + latency / 1000,
        replica="bench-1",
        endpoint="chat",
        api_key_id="key_0123456789",
        model_requested="gpt-4o-mini",
        provider="openai",
        upstream_model="gpt-4o-mini",
        stream=True,
        status_code=200,
        error_type=None,
        finish_reason="stop",
        latency_ms=latency,
        upstream_ms=latency - 1,
        queue_ms=0.2,
        ttft_ms=latency / 4,
        chunk_offsets_ms=[latency / 4 + step * 10 for step in range(20)],
        usage=Usage(prompt_tokens=512, completion_tokens=128, total_tokens=640),
        sampling=Sampling(temperature=0.7, max_tokens=1024),
        request_body=_unique(rng, pool, index),
        response_body=_unique(rng, pool, index),
        redactions=0,
        attempts=[Attempt("openai", "gpt-4o-mini", 200, None, 0.1, latency - 1, latency / 4)],
    )


class _Stopwatch:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - began


def make_exchanges(records: Sequence[RequestRecord]) -> list[Exchange]:
    """What the hot path would have handed the logger for ``records``: JSON bodies as bytes."""
    return [_exchange(record) for record in records]


def _exchange(record: RequestRecord) -> Exchange:
    facts = {name: getattr(record, name) for name in RequestFacts.__struct_fields__}
    usage = {"prompt_tokens": 512, "completion_tokens": 128, "total_tokens": 640}
    request = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": record.request_body}],
    }
    choice = {"index": 0, "message": {"role": "assistant", "content": record.response_body}}
    response = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{**choice, "finish_reason": "stop"}],
        "usage": usage,
    }
    return Exchange(
        **facts | {"stream": False, "ttft_ms": None},
        log_bodies=True,
        request_body=msgspec.json.encode(request),
        response_body=msgspec.json.encode(response),
        chunks=[],
        chunk_offsets_ms=[],
    )


def run(
    records: Sequence[RequestRecord],
    directory: Path,
    *,
    batch: int = 1000,
    max_bytes: int = 64 << 20,
) -> dict[str, float | int]:
    """Write ``records`` through batches, segments and compaction, serially on one thread."""
    clock = _Stopwatch()
    writer = SegmentWriter(directory, replica="bench", max_bytes=max_bytes, max_age_s=3600.0)
    began = time.process_time()
    with clock("total"):
        for offset in range(0, len(records), batch):
            with clock("to_batch"):
                columns = to_record_batch(records[offset : offset + batch])
            with clock("append"):
                closed = writer.append(columns, now=0.0)
            with clock("compact"):
                _compact(closed, directory)
        with clock("append"):
            closed = writer.close()
        with clock("compact"):
            _compact(closed, directory)
    cpu = time.process_time() - began
    return _report(len(records), directory, clock.seconds, cpu)


def run_sink(
    write: Callable[[DatasetSink, list[T], int], None],
    items: Sequence[T],
    directory: Path,
    *,
    slice_size: int = 128,
    workers: int = 2,
) -> dict[str, float]:
    """Records/s and CPU us/record through ``DatasetSink``, fed as the logger actor feeds it.

    ``write`` is ``DatasetSink.write_rows`` for ``RequestRecord``s, ``DatasetSink.write`` for
    ``Exchange``s (rows derived and redacted with the default detectors).
    """
    config = DatasetConfig(segment_max_age_s=3600.0)
    sink = DatasetSink(
        directory,
        replica="bench",
        redactor=Redactor(RedactionConfig()),
        config=config,
        clock=lambda: 0.0,
        compaction=Compaction(workers=workers),
    )
    began, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
    for offset in range(0, len(items), slice_size):
        write(sink, list(items[offset : offset + slice_size]), 0)
    own = time.thread_time() - own  # the writer's share; the rest is compaction's
    sink.close()
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {
        "records_per_s": len(items) / seconds,
        "cpu_us_per_record": cpu / len(items) * 1e6,
        "writer_cpu_us_per_record": own / len(items) * 1e6,
    }


def _compact(segment: Path | None, directory: Path) -> None:
    if segment is not None:
        compact(segment, directory, replica="bench")


def _report(
    count: int, directory: Path, seconds: dict[str, float], cpu: float
) -> dict[str, float | int]:
    files = sorted(directory.glob("date=*/*.parquet"))
    return {
        "records": count,
        "rows_in_parquet": ds.dataset([str(f) for f in files], format="parquet").count_rows(),
        "parquet_bytes": sum(f.stat().st_size for f in files),
        "seconds": round(seconds["total"], 3),
        "records_per_s": round(count / seconds["total"]),
        "cpu_us_per_record": round(cpu / count * 1e6, 2),
        "to_record_batch_records_per_s": round(count / seconds["to_batch"]),
        "append_records_per_s": round(count / seconds["append"]),
        "compact_records_per_s": round(count / seconds["compact"]),
    }


#: Parquet writer settings tried against the shipped ones (``--parquet-options``).
_VARIANTS: dict[str, dict[str, object]] = {
    "shipped": {},
    "no_compression": {"compression": "none"},
    "zstd_level_-1": {"compression_level": -1},
    "zstd_level_-3": {"compression_level": -3},
    "zstd_level_3": {"compression_level": 3},
    "lz4": {"compression": "lz4"},
    "no_statistics": {"write_statistics": False},
    "data_page_8mib": {"data_page_size": 8 << 20},
    "shipped_again": {},  # the spread between the two "shipped" runs is the noise
}


def parquet_variants(records: Sequence[RequestRecord], directory: Path) -> dict[str, object]:
    """Thread CPU per record and bytes per record of one Parquet write per writer setting.

    The records arrive as the sink writes them (batches of 128); best of three writes each.
    ``zstd_alone`` is the codec by itself over the bodies in 1 MiB pieces: the floor.
    """
    table = pa.Table.from_batches(
        [to_record_batch(records[i : i + 128]) for i in range(0, len(records), 128)]
    )
    target, count = str(directory / "variant.parquet"), len(records)
    result: dict[str, object] = {}
    for name, changes in _VARIANTS.items():
        options = parquet_options(table.schema) | changes
        cpu = _best_cpu(partial(pq.write_table, table, target, **options))
        size = Path(target).stat().st_size
        result[name] = {"cpu_us_per_record": round(cpu / count * 1e6, 2), "bytes": size // count}
    bodies = "".join(f"{r.request_body}{r.response_body}" for r in records).encode()
    pieces = [pa.py_buffer(bodies[i : i + (1 << 20)]) for i in range(0, len(bodies), 1 << 20)]
    codec = pa.Codec("zstd", 1)
    cpu = _best_cpu(lambda: [codec.compress(piece) for piece in pieces])
    result["zstd_alone"] = {"cpu_us_per_record": round(cpu / count * 1e6, 2)}
    return result


def _best_cpu(work: Callable[[], object], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.thread_time()
        work()
        best = min(best, time.thread_time() - began)
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000, help="records to write")
    parser.add_argument("--body-bytes", type=int, default=2048, help="size of each body")
    parser.add_argument("--slice", type=int, default=128, help="records per sink write")
    parser.add_argument("--workers", type=int, default=2, help="compaction threads")
    parser.add_argument(
        "--parquet-options", action="store_true", help="compare Parquet writer settings instead"
    )
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    records = make_records(args.records, args.body_bytes)
    if args.parquet_options:
        with tempfile.TemporaryDirectory(prefix="bench-logger-") as directory:
            variants = parquet_variants(records, Path(directory))
        print(json.dumps({"name": "logger-parquet-options", "records": args.records, **variants}))
        return
    options = {"slice_size": args.slice, "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="bench-logger-") as directory:
        sink = run_sink(DatasetSink.write_rows, records, Path(directory), **options)
        files = sorted(Path(directory).glob("date=*/*.parquet"))
        rows = ds.dataset([str(f) for f in files], format="parquet").count_rows()
        size = sum(f.stat().st_size for f in files)
    exchanges = make_exchanges(records)
    with tempfile.TemporaryDirectory(prefix="bench-logger-") as directory:
        derived = run_sink(DatasetSink.write, exchanges, Path(directory), **options)
    del exchanges
    with tempfile.TemporaryDirectory(prefix="bench-logger-") as directory:
        serial = run(records, Path(directory))
    result: dict[str, object] = {
        "name": "logger",
        "body_bytes": args.body_bytes,
        "records": args.records,
        **options,
        "rows_in_parquet": rows,
        "parquet_bytes": size,
        "records_per_s": round(sink["records_per_s"]),
        "cpu_us_per_record": round(sink["cpu_us_per_record"], 2),
        "writer_cpu_us_per_record": round(sink["writer_cpu_us_per_record"], 2),
        "derive_records_per_s": round(derived["records_per_s"]),
        "derive_cpu_us_per_record": round(derived["cpu_us_per_record"], 2),
        **{f"serial_{key}": value for key, value in serial.items() if key not in _SAME},
        # The machine is shared: runnable tasks at the start and end (1-minute load average).
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(result))


_SAME = ("records", "rows_in_parquet", "parquet_bytes", "seconds")


if __name__ == "__main__":
    main()
