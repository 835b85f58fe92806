"""The Arrow schema of the dataset (version 1) and the records -> columns conversion.

``to_record_batch`` builds one Python sequence per column and hands each to ``pa.array`` with an
explicit type: no row dicts, no type inference. It is pure (no I/O, no clock) and runs in the
logger's worker thread; a crash there loses nothing that was not already lost with the process.

Metadata: the schema carries ``actorproxy.schema_version``; each batch built here also carries
``actorproxy.dropped`` (records dropped before it because the logger's mailbox was full).
``segments.SegmentWriter`` stores that count as the IPC message's custom metadata and compaction
sums it into the Parquet file's key-value metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate, chain
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from actorproxy.schema.records import SCHEMA_VERSION, Attempt, RequestRecord, Sampling, Usage

VERSION_KEY = "actorproxy.schema_version"
DROPPED_KEY = "actorproxy.dropped"

TIMESTAMP = pa.timestamp("us", tz="UTC")
# List items are named "element", as Parquet's LIST spec names them, so the schema read back from
# a Parquet file equals this one exactly.

ATTEMPT = pa.struct(
    [
        ("provider", pa.string()),
        ("upstream_model", pa.string()),
        ("status_code", pa.int16()),
        ("error_type", pa.string()),
        ("start_offset_ms", pa.float64()),
        ("latency_ms", pa.float64()),
        ("ttft_ms", pa.float64()),
    ]
)

_FIELDS = [
    ("schema_version", pa.int16()),
    ("request_id", pa.string()),
    ("trace_id", pa.string()),
    ("ts_start", TIMESTAMP),
    ("ts_end", TIMESTAMP),
    ("replica", pa.string()),
    ("endpoint", pa.string()),
    ("api_key_id", pa.string()),
    ("model_requested", pa.string()),
    ("provider", pa.string()),
    ("upstream_model", pa.string()),
    ("stream", pa.bool_()),
    ("status_code", pa.int16()),
    ("error_type", pa.string()),
    ("finish_reason", pa.string()),
    ("latency_ms", pa.float64()),
    ("upstream_ms", pa.float64()),
    ("queue_ms", pa.float64()),
    ("ttft_ms", pa.float64()),
    ("chunk_offsets_ms", pa.list_(pa.field("element", pa.float32()))),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("total_tokens", pa.int64()),
    ("cached_tokens", pa.int64()),
    ("reasoning_tokens", pa.int64()),
    ("usage_estimated", pa.bool_()),
    ("temperature", pa.float64()),
    ("top_p", pa.float64()),
    ("max_tokens", pa.int64()),
    ("n", pa.int32()),
    ("seed", pa.int64()),
    ("tool_count", pa.int32()),
    ("response_format", pa.string()),
    ("request_body", pa.string()),
    ("response_body", pa.string()),
    ("redactions", pa.int32()),
    ("attempts", pa.list_(pa.field("element", ATTEMPT))),
]

SCHEMA = pa.schema(_FIELDS, metadata={VERSION_KEY: str(SCHEMA_VERSION)})


def to_record_batch(records: Sequence[RequestRecord], *, dropped: int = 0) -> pa.RecordBatch:
    """Columns for ``records``, in ``SCHEMA`` order; ``dropped`` goes into the batch metadata.

    Raises ``pa.ArrowInvalid``/``OverflowError``/``TypeError`` if a value does not fit its column
    (e.g. a status code outside int16); the caller decides whether to drop the batch.
    """
    values = _transpose(records, RequestRecord)
    usage = _transpose(values["usage"], Usage)
    values.update(_transpose(values["sampling"], Sampling))
    values.update({f"{name}_tokens": usage[f"{name}_tokens"] for name in _TOKENS})
    values["usage_estimated"] = usage["estimated"]
    columns = {name: pa.array(values[name], type=SCHEMA.field(name).type) for name in _PLAIN}
    columns["ts_start"] = _timestamps(values["ts_start"])
    columns["ts_end"] = _timestamps(values["ts_end"])
    columns["chunk_offsets_ms"] = _chunk_offsets(values["chunk_offsets_ms"])
    columns["attempts"] = _attempts(values["attempts"])
    metadata = {VERSION_KEY: str(SCHEMA_VERSION), DROPPED_KEY: str(dropped)}
    schema = SCHEMA.with_metadata(metadata)
    return pa.RecordBatch.from_arrays([columns[name] for name in SCHEMA.names], schema=schema)


def dropped_of(batch: pa.RecordBatch) -> int:
    """The ``actorproxy.dropped`` count a batch from ``to_record_batch`` carries (0 if none)."""
    metadata = batch.schema.metadata or {}
    return int(metadata.get(DROPPED_KEY.encode(), b"0"))


_TOKENS = ("prompt", "completion", "total", "cached", "reasoning")
_BUILT = {"ts_start", "ts_end", "chunk_offsets_ms", "attempts"}
_PLAIN = [name for name in SCHEMA.names if name not in _BUILT]


def _transpose(items: Sequence[Any], struct: type[msgspec.Struct]) -> dict[str, Sequence[Any]]:
    """One tuple of values per field of ``struct`` (the fastest transposition in CPython)."""
    names = struct.__struct_fields__
    if not items:
        return dict.fromkeys(names, ())
    rows = map(msgspec.structs.astuple, items)
    return dict(zip(names, zip(*rows, strict=True), strict=True))


# An Arrow scalar, not a Python int: converting a Python scalar for a compute call costs pyarrow
# a failed import attempt (dateutil) each time, about 0.2 ms, which dominated small batches.
_MICROS_PER_S = pa.scalar(1_000_000.0, type=pa.float64())


def _timestamps(seconds: Sequence[float]) -> pa.Array:
    # Round to the nearest microsecond (half to even, like round()): floats rarely hold exact µs.
    micros = pc.round(pc.multiply(pa.array(seconds, type=pa.float64()), _MICROS_PER_S))
    return micros.cast(pa.int64()).cast(TIMESTAMP)


def _offsets(lists: Sequence[Sequence[object]]) -> pa.Array:
    return pa.array([0, *accumulate(map(len, lists))], type=pa.int32())


def _chunk_offsets(lists: Sequence[list[float]]) -> pa.Array:
    values = pa.array(list(chain.from_iterable(lists)), type=pa.float32())
    list_type = SCHEMA.field("chunk_offsets_ms").type
    return pa.ListArray.from_arrays(_offsets(lists), values, type=list_type)


def _attempts(lists: Sequence[list[Attempt]]) -> pa.Array:
    flat = _transpose(list(chain.from_iterable(lists)), Attempt)
    children = [pa.array(flat[field.name], type=field.type) for field in ATTEMPT]
    structs = pa.StructArray.from_arrays(children, fields=list(ATTEMPT))
    list_type = SCHEMA.field("attempts").type
    return pa.ListArray.from_arrays(_offsets(lists), structs, type=list_type)
