"""Records per second from ``RequestRecord`` to published Parquet, on one core.

Times what the logger's worker thread does: ``to_record_batch`` per batch of 1000, appending to
IPC segments (rotated by size), and compacting each closed segment to zstd Parquet. Building the
records is not timed. Run: ``.venv/bin/python -m bench.logger [--records N]``; prints one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pyarrow.dataset as ds

from actorproxy.schema.records import Attempt, RequestRecord, Sampling, Usage
from actorproxy.storage.compact import compact
from actorproxy.storage.schema import to_record_batch
from actorproxy.storage.segments import SegmentWriter

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
    return _report(len(records), directory, clock.seconds)


def run_pipelined(
    records: Sequence[RequestRecord],
    directory: Path,
    *,
    batch: int = 1000,
    max_bytes: int = 64 << 20,
) -> float:
    """Records/s when closed segments are compacted on a second thread, as the logger may do."""
    writer = SegmentWriter(directory, replica="bench", max_bytes=max_bytes, max_age_s=3600.0)
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as compactor:
        for offset in range(0, len(records), batch):
            closed = writer.append(to_record_batch(records[offset : offset + batch]), now=0.0)
            compactor.submit(_compact, closed, directory)
        compactor.submit(_compact, writer.close(), directory)
    return len(records) / (time.perf_counter() - began)


def _compact(segment: Path | None, directory: Path) -> None:
    if segment is not None:
        compact(segment, directory, replica="bench")


def _report(count: int, directory: Path, seconds: dict[str, float]) -> dict[str, float | int]:
    files = sorted(directory.glob("date=*/*.parquet"))
    return {
        "records": count,
        "rows_in_parquet": ds.dataset([str(f) for f in files], format="parquet").count_rows(),
        "parquet_bytes": sum(f.stat().st_size for f in files),
        "seconds": round(seconds["total"], 3),
        # The number to watch: everything on one core, one after the other.
        "records_per_s": round(count / seconds["total"]),
        # The logger's own thread (compaction can run on another worker thread, GIL released).
        "hot_path_records_per_s": round(count / (seconds["to_batch"] + seconds["append"])),
        "to_record_batch_records_per_s": round(count / seconds["to_batch"]),
        "compact_records_per_s": round(count / seconds["compact"]),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000, help="records to write")
    parser.add_argument("--body-bytes", type=int, default=2048, help="size of each body")
    args = parser.parse_args(argv)
    records = make_records(args.records, args.body_bytes)
    with tempfile.TemporaryDirectory(prefix="bench-logger-") as directory:
        result = run(records, Path(directory))
    with tempfile.TemporaryDirectory(prefix="bench-logger-") as directory:
        result["pipelined_records_per_s"] = round(run_pipelined(records, Path(directory)))
    print(json.dumps({"name": "logger", "body_bytes": args.body_bytes, **result}))


if __name__ == "__main__":
    main()
