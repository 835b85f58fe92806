"""From raw exchange to dataset row: sampling, usage, finish reason, stream assembly, redaction."""

from __future__ import annotations

import json

import msgspec

from actorproxy.redact import RedactionConfig, Redactor
from actorproxy.schema.records import Exchange
from actorproxy.storage import derive as d


def sse(*payloads: object) -> bytes:
    return b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads)


def chunk(delta: dict[str, object], finish: str | None = None, index: int = 0) -> dict[str, object]:
    return {
        "id": "c1",
        "created": 1,
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def exchange(**fields: object) -> Exchange:
    base: dict[str, object] = {
        "request_id": "r1",
        "trace_id": None,
        "ts_start": 1.0,
        "ts_end": 2.0,
        "replica": "h-1",
        "endpoint": "chat",
        "api_key_id": "master",
        "log_bodies": True,
        "model_requested": "m",
        "provider": "p",
        "upstream_model": "m",
        "stream": False,
        "status_code": 200,
        "error_type": None,
        "latency_ms": 10.0,
        "upstream_ms": 9.0,
        "queue_ms": 0.1,
        "ttft_ms": None,
        "request_body": b'{"model":"m","messages":[]}',
        "response_body": b"",
        "chunks": [],
        "chunk_offsets_ms": [],
        "attempts": [],
    }
    base.update(fields)
    return msgspec.convert(base, Exchange)


def test_non_stream_usage_and_sampling() -> None:
    request = {
        "model": "m",
        "messages": [],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 50,
        "max_tokens": 7,
        "n": 2,
        "seed": 42,
        "tools": [{"type": "function"}, {"type": "function"}],
        "response_format": {"type": "json_object"},
    }
    response = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": 2,
            "total_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }
    row = d.derive(
        exchange(
            request_body=json.dumps(request).encode(), response_body=json.dumps(response).encode()
        ),
        None,
    )
    assert row.finish_reason == "stop"
    assert (row.usage.prompt_tokens, row.usage.completion_tokens, row.usage.total_tokens) == (
        5,
        2,
        7,
    )
    assert (row.usage.cached_tokens, row.usage.reasoning_tokens, row.usage.estimated) == (
        3,
        1,
        False,
    )
    s = row.sampling
    assert (s.temperature, s.top_p, s.max_tokens, s.n, s.seed) == (0.2, 0.9, 50, 2, 42)
    assert (s.tool_count, s.response_format) == (2, "json_object")
    assert row.response_body is not None and json.loads(row.response_body) == response


def test_stream_is_assembled_with_tool_calls_split_across_deltas() -> None:
    body = (
        sse(
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Let me "}),
            chunk({"content": "check."}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "call_2", "function": {"name": "t2", "arguments": "{}"}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            chunk({}, "tool_calls"),
        )
        + b"data: [DONE]\n\n"
    )
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]  # split mid-event
    offsets = [float(i) for i in range(len(pieces))]
    row = d.derive(exchange(stream=True, chunks=pieces, chunk_offsets_ms=offsets), None)
    assert row.response_body is not None
    assembled = json.loads(row.response_body)
    message = assembled["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert message["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert message["tool_calls"][1]["id"] == "call_2"
    assert assembled["object"] == "chat.completion"
    assert row.finish_reason == "tool_calls"
    assert len(row.chunk_offsets_ms) == 8
    assert row.chunk_offsets_ms == sorted(row.chunk_offsets_ms)
    assert row.usage.estimated is True and (row.usage.completion_tokens or 0) > 0


def test_stream_usage_from_the_final_chunk_is_kept_not_estimated() -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    body = (
        sse(chunk({"content": "a b c"}, "stop"), {"id": "c1", "choices": [], "usage": usage})
        + b"data: [DONE]\n\n"
    )
    row = d.derive(exchange(stream=True, chunks=[body], chunk_offsets_ms=[5.0]), None)
    assert (row.usage.prompt_tokens, row.usage.total_tokens, row.usage.estimated) == (11, 14, False)


def test_legacy_completion_stream() -> None:
    body = sse(
        {"id": "x", "choices": [{"index": 0, "text": "Hel", "finish_reason": None}]},
        {"id": "x", "choices": [{"index": 0, "text": "lo", "finish_reason": "length"}]},
    )
    row = d.derive(
        exchange(endpoint="completions", stream=True, chunks=[body], chunk_offsets_ms=[1.0]), None
    )
    assert row.response_body is not None
    assert json.loads(row.response_body)["choices"][0]["text"] == "Hello"
    assert row.finish_reason == "length"


def test_errors_keep_their_body_and_estimate_nothing() -> None:
    error = b'{"error": {"message": "bad", "type": "invalid_request_error"}}'
    row = d.derive(exchange(status_code=400, response_body=error), None)
    assert row.response_body == error.decode()
    assert row.usage.estimated is False and row.usage.total_tokens is None


def test_garbage_never_raises() -> None:
    row = d.derive(exchange(request_body=b"\xff\xfe", response_body=b"{", stream=False), None)
    assert row.sampling.temperature is None and row.finish_reason is None
    junk = exchange(
        stream=True, chunks=[b"data: {not json}\n\ndata: [1]\n\n"], chunk_offsets_ms=[1.0]
    )
    assert d.derive(junk, None).finish_reason is None


class Upper:
    gates = (None,)

    def redact_json(self, body: bytes, candidates: int = -1) -> tuple[str | None, int]:
        return body.decode().upper(), 1


def test_redactor_runs_on_both_bodies_and_log_bodies_false_omits_them() -> None:
    row = d.derive(exchange(response_body=b'{"x": "secret"}'), Upper())
    assert row.response_body == '{"X": "SECRET"}' and row.redactions == 2
    hidden = d.derive(exchange(log_bodies=False, response_body=b'{"x": 1}'), Upper())
    assert (hidden.request_body, hidden.response_body, hidden.redactions) == (None, None, 0)


class Unfiltered:
    """The real redactor with the prefilter defeated: every detector runs on every body."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.gates = (None,)

    def redact_json(self, body: bytes, candidates: int = -1) -> tuple[str | None, int]:
        return self.redactor.redact_json(body)


def test_a_batch_is_redacted_as_each_record_alone_with_every_detector() -> None:
    pii = json.dumps({"messages": [{"role": "user", "content": "mail a@b.io, 555-123-4567"}]})
    batch = [
        exchange(request_body=pii.encode(), response_body=b'{"ip": "10.0.0.1"}'),
        exchange(log_bodies=False, request_body=pii.encode()),
        exchange(
            stream=True,
            chunks=[sse(chunk({"content": "call +1 212 555 0100"}, "stop"))],
            chunk_offsets_ms=[3.0],
        ),
        exchange(status_code=500, response_body=b"Bearer abcDEF123456 token"),
        exchange(request_body=b"plain text, nothing here", response_body=b""),
    ]
    redactor = Redactor(RedactionConfig())
    rows = d.derive_all(batch, redactor)
    assert rows == [d.derive(x, Unfiltered(redactor)) for x in batch]
    assert [row.redactions for row in rows] == [3, 0, 1, 1, 0]
