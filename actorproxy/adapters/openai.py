"""The OpenAI-compatible adapter: OpenAI, OpenRouter, vLLM, LM Studio, llama.cpp, Ollama's /v1.

The body goes out as the client sent it. Only when the upstream model differs from the requested
one is the top-level ``model`` replaced; the other top-level values are kept as raw bytes
(``msgspec.Raw``), so unknown and nested fields pass through untouched.
"""

from __future__ import annotations

import msgspec

from actorproxy import errors
from actorproxy.adapters.base import Endpoint, Exchange, StreamTranslator
from actorproxy.net.base import Headers, UpstreamRequest

PATHS: dict[Endpoint, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
FORWARDED_REQUEST_HEADERS = frozenset({b"traceparent", b"tracestate", b"openai-beta"})
KEPT_ERROR_HEADERS = frozenset({b"retry-after", b"retry-after-ms"})

_raw_object = msgspec.json.Decoder(dict[str, msgspec.Raw])
_error_envelope = msgspec.json.Decoder(errors.ErrorEnvelope)
_encoder = msgspec.json.Encoder()


class OpenAIAdapter:
    """Pass-through to an upstream that speaks OpenAI's API."""

    def __init__(self, *, api_key: str | None, headers: dict[str, str] | None = None) -> None:
        fixed: Headers = [(b"content-type", b"application/json"), (b"accept", b"*/*")]
        if api_key:
            fixed.append((b"authorization", b"Bearer " + api_key.encode()))
        for name, value in (headers or {}).items():
            fixed.append((name.lower().encode(), value.encode()))
        self._headers = fixed

    def encode_request(self, exchange: Exchange) -> UpstreamRequest:
        body = exchange.body
        if exchange.upstream_model != exchange.model:
            body = replace_model(body, exchange.upstream_model)
        headers = [*self._headers, (b"x-request-id", exchange.request_id.encode())]
        headers.extend(h for h in exchange.headers if h[0] in FORWARDED_REQUEST_HEADERS)
        return UpstreamRequest(b"POST", PATHS[exchange.endpoint], headers, body)

    def decode_response(self, exchange: Exchange, body: bytes) -> bytes:
        del exchange
        return body

    def open_stream(self, exchange: Exchange) -> StreamTranslator | None:
        del exchange
        return None

    def decode_error(self, status: int, headers: Headers, body: bytes) -> errors.ProxyError:
        return decode_openai_error(status, headers, body)


def replace_model(body: bytes, model: str) -> bytes:
    """``body`` with its top-level ``model`` set to ``model``; everything else byte for byte."""
    fields = _raw_object.decode(body)
    fields["model"] = msgspec.Raw(_encoder.encode(model))
    return _encoder.encode(fields)


def decode_openai_error(status: int, headers: Headers, body: bytes) -> errors.ProxyError:
    kept = [(name, value) for name, value in headers if name in KEPT_ERROR_HEADERS]
    try:
        error = _error_envelope.decode(body).error
    except msgspec.DecodeError:
        error = errors.ErrorBody(
            message=f"The upstream answered HTTP {status} without an OpenAI error body.",
            type="upstream_error",
        )
    return errors.UpstreamHTTPError(status, error, kept)
