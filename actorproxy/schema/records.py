"""The dataset record: one per request, built once when the response ends."""

from __future__ import annotations

import msgspec


class Attempt(msgspec.Struct, frozen=True):
    provider: str
    upstream_model: str
    status_code: int
    error_type: str | None
    start_offset_ms: float
    latency_ms: float
    ttft_ms: float | None


class RequestRecord(msgspec.Struct):
    request_id: str
    ts_start: float
    ts_end: float
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
    ttft_ms: float | None
    attempts: list[Attempt]
