"""The dataset record: one per request, built once when the response ends.

Records are plain msgspec Structs on the hot path; columns (pyarrow) are built per batch by the
logger actor, in a worker thread (``actorproxy.storage``). ``docs/dataset.md`` documents every
column; ``SCHEMA_VERSION`` is written into the Arrow/Parquet schema metadata.
"""

from __future__ import annotations

import msgspec

SCHEMA_VERSION = 1


class Attempt(msgspec.Struct, frozen=True):
    """One try at one upstream target."""

    provider: str
    upstream_model: str
    status_code: int
    error_type: str | None
    start_offset_ms: float
    latency_ms: float
    ttft_ms: float | None


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    estimated: bool = False


class Sampling(msgspec.Struct, frozen=True):
    """The common sampling parameters of the request, as typed columns."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    n: int | None = None
    seed: int | None = None
    tool_count: int | None = None
    response_format: str | None = None


class RequestFacts(msgspec.Struct, kw_only=True):
    """What the hot path and the dataset row share: identity, routing, outcome and timings.

    Times are seconds since the epoch (UTC); durations milliseconds.
    """

    request_id: str
    trace_id: str | None
    ts_start: float
    ts_end: float
    replica: str
    endpoint: str
    api_key_id: str
    model_requested: str | None
    provider: str | None
    upstream_model: str | None
    stream: bool
    status_code: int
    error_type: str | None
    latency_ms: float
    upstream_ms: float | None
    queue_ms: float | None
    ttft_ms: float | None
    attempts: list[Attempt]


class RequestRecord(RequestFacts, kw_only=True):
    """One row of the dataset: the facts plus what ``storage.derive`` read from the bodies."""

    finish_reason: str | None
    chunk_offsets_ms: list[float]
    usage: Usage
    sampling: Sampling
    request_body: str | None
    response_body: str | None
    redactions: int
    schema_version: int = SCHEMA_VERSION


class Exchange(RequestFacts, kw_only=True):
    """What the hot path captured of one request: raw bytes and timings, nothing decoded.

    The logger actor's worker thread turns it into a ``RequestRecord`` (``storage.derive``): it
    parses the sampling parameters, the usage and finish reason, assembles a streamed completion
    and redacts the bodies, off the event loop.
    """

    log_bodies: bool
    request_body: bytes
    response_body: bytes
    chunks: list[bytes]
    chunk_offsets_ms: list[float]
