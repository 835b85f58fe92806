"""The OpenAI-compatible adapter: OpenAI, OpenRouter, vLLM, LM Studio, llama.cpp, Ollama's /v1.

The body goes out as the client sent it. Only when the upstream model differs from the requested
one is the top-level ``model`` replaced; the other top-level values are kept as raw bytes
(``msgspec.Raw``), so unknown and nested fields pass through untouched.

With ``stream_usage=True`` (the upstream understands ``stream_options``) a streamed chat or
legacy completion whose client did not ask for ``stream_options.include_usage`` gets it anyway,
so the dataset records the upstream's own token counts; the usage chunk is then withheld from
the client by an `sse_filter.StreamFilter`. Every other stream passes through untouched.

With ``strip_extensions=True`` (the default) our OpenAI-shape extensions, which OpenAI and Azure
refuse as unknown parameters, are taken out of chat bodies: the top-level ``thinking``, the
messages' ``thinking_blocks`` and ``reasoning_content``, and ``cache_control`` on content parts.
A body that does not contain these names at all is not parsed (a substring check); otherwise only
the messages that hold them are re-encoded, every other value is copied as raw bytes.
"""

from __future__ import annotations

import msgspec

from actorproxy import errors
from actorproxy.adapters.base import Endpoint, Exchange, StreamTranslator
from actorproxy.adapters.sse_filter import StreamFilter
from actorproxy.net.base import Headers, UpstreamRequest

PATHS: dict[Endpoint, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
FORWARDED_REQUEST_HEADERS = frozenset({b"traceparent", b"tracestate", b"openai-beta"})
KEPT_ERROR_HEADERS = frozenset({b"retry-after", b"retry-after-ms"})
STREAMING_ENDPOINTS: frozenset[Endpoint] = frozenset({"chat", "completions"})
# Our extensions of OpenAI's chat request, by depth: the names removed from the body, from each
# of its messages, from each of their content parts; and the array member leading one deeper
# ("" at the last depth).
EXTENSIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("thinking",), "messages"),
    (("thinking_blocks", "reasoning_content"), "content"),
    (("cache_control",), ""),
)
# What a JSON object holds somewhere when it holds an extension of its depth or deeper;
# ``"thinking`` also finds ``"thinking_blocks"``.
MARKERS = (
    (b'"thinking', b'"reasoning_content"', b'"cache_control"'),
    (b'"thinking_blocks"', b'"reasoning_content"', b'"cache_control"'),
    (b'"cache_control"',),
)

_TRUE = msgspec.Raw(b"true")


_NULL = msgspec.Raw(b"null")


class _StreamOptionsView(msgspec.Struct):
    stream_options: msgspec.Raw = _NULL  # a Raw field takes any JSON value, null included


class _ModelItem(msgspec.Struct):
    id: str


class _ModelList(msgspec.Struct):
    data: list[_ModelItem]


_raw_object = msgspec.json.Decoder(dict[str, msgspec.Raw])
_raw_array = msgspec.json.Decoder(list[msgspec.Raw])
_stream_options_view = msgspec.json.Decoder(_StreamOptionsView)
_model_list = msgspec.json.Decoder(_ModelList)
_error_envelope = msgspec.json.Decoder(errors.ErrorEnvelope)
_encoder = msgspec.json.Encoder()


class OpenAIAdapter:
    """Pass-through to an upstream that speaks OpenAI's API; stateless, safe to share.

    It does no I/O, so a cancelled call leaves nothing behind in it.
    """

    def __init__(
        self,
        *,
        api_key: str | None,
        headers: dict[str, str] | None = None,
        stream_usage: bool = False,
        strip_extensions: bool = True,
    ) -> None:
        fixed: Headers = [(b"content-type", b"application/json"), (b"accept", b"*/*")]
        if api_key:
            fixed.append((b"authorization", b"Bearer " + api_key.encode()))
        for name, value in (headers or {}).items():
            fixed.append((name.lower().encode(), value.encode()))
        self._headers = fixed
        self._stream_usage = stream_usage
        self._strip = strip_extensions

    def encode_request(self, exchange: Exchange) -> UpstreamRequest:
        inject = self._stream_usage and injects_usage(exchange)
        body = rewrite(exchange, exchange.upstream_model, include_usage=inject, strip=self._strip)
        return UpstreamRequest(
            b"POST", PATHS[exchange.endpoint], request_headers(self._headers, exchange), body
        )

    def decode_response(self, exchange: Exchange, body: bytes) -> bytes:
        del exchange
        return body

    def open_stream(self, exchange: Exchange) -> StreamTranslator | None:
        """``None`` (bytes pass through) unless usage was injected: then a filter withholds it."""
        if self._stream_usage and injects_usage(exchange):
            return StreamFilter(withhold_usage=True)
        return None

    def decode_error(self, status: int, headers: Headers, body: bytes) -> errors.ProxyError:
        return decode_openai_error(status, headers, body)

    def models_request(self) -> UpstreamRequest:
        """``GET /models``, with the upstream's key."""
        return UpstreamRequest(b"GET", "/models", self._headers[1:], b"")

    def decode_models(self, body: bytes) -> list[str]:
        """The model ids of an OpenAI list (``{"object": "list", "data": [{"id": ...}]}``)."""
        return decode_model_ids(body)


def request_headers(fixed: Headers, exchange: Exchange) -> Headers:
    """``fixed``, the proxy's request id, and the client's tracing headers."""
    headers = [*fixed, (b"x-request-id", exchange.request_id.encode())]
    headers.extend(h for h in exchange.headers if h[0] in FORWARDED_REQUEST_HEADERS)
    return headers


def injects_usage(exchange: Exchange) -> bool:
    """Whether a streamed ``exchange`` lacks ``stream_options.include_usage: true``.

    False for bodies that are not JSON objects or whose ``stream_options`` is neither an object
    nor null: the upstream answers those as it would have.
    """
    if not exchange.stream or exchange.endpoint not in STREAMING_ENDPOINTS:
        return False
    try:
        options = _options(_stream_options_view.decode(exchange.body).stream_options)
    except msgspec.DecodeError:
        return False
    return options.get("include_usage") != _TRUE


def rewrite(
    exchange: Exchange, model: str, *, include_usage: bool = False, strip: bool = False
) -> bytes:
    """The client's body with ``model``, if asked ``stream_options.include_usage: true``, and
    with ``strip`` a chat body without our extensions.

    The body is returned as it is when nothing changes (the fast path).
    """
    renamed = model != exchange.model
    strip = strip and exchange.endpoint == "chat" and _marked(exchange.body, 0)
    if not (renamed or include_usage or strip):
        return exchange.body
    fields = _raw_object.decode(exchange.body)
    stripped = strip and strip_extensions(fields)
    if not (stripped or renamed or include_usage):
        return exchange.body  # the names were only inside strings
    if renamed:
        fields["model"] = msgspec.Raw(_encoder.encode(model))
    if include_usage:
        kept = _options(fields.get("stream_options"))
        kept["include_usage"] = _TRUE
        fields["stream_options"] = msgspec.Raw(_encoder.encode(kept))
    return _encoder.encode(fields)


def strip_extensions(fields: dict[str, msgspec.Raw]) -> bool:
    """Take our extensions out of a chat body's top-level ``fields``; whether there were any.

    Values that are not what the OpenAI shape says (``messages`` not an array, a message or
    part not an object) are left as they are, for the upstream to answer.
    """
    return _strip(fields, 0)


def _strip(fields: dict[str, msgspec.Raw], depth: int) -> bool:
    names, inner = EXTENSIONS[depth]
    found = bool([fields.pop(name) for name in names if name in fields])
    array = fields.get(inner) if inner else None
    edited = None if array is None else _strip_items(array, depth + 1)
    if edited is not None:
        fields[inner] = edited
    return found or edited is not None


def _strip_items(array: msgspec.Raw, depth: int) -> msgspec.Raw | None:
    """``array`` with the objects in it stripped at ``depth``; only the objects that changed
    are re-encoded. None when nothing changed."""
    if not _marked(array, depth):
        return None
    try:
        items = _raw_array.decode(array)
    except msgspec.DecodeError:  # not an array (content as a string, say)
        return None
    changed = False
    for index, item in enumerate(items):
        if not _marked(item, depth):
            continue
        try:
            fields = _raw_object.decode(item)
        except msgspec.DecodeError:
            continue
        if _strip(fields, depth):
            items[index], changed = msgspec.Raw(_encoder.encode(fields)), True
    return msgspec.Raw(_encoder.encode(items)) if changed else None


def _marked(data: bytes | msgspec.Raw, depth: int) -> bool:
    view = bytes(data) if isinstance(data, msgspec.Raw) else data
    return any(marker in view for marker in MARKERS[depth])


def _options(raw: msgspec.Raw | None) -> dict[str, msgspec.Raw]:
    """``stream_options`` as an object, ``{}`` when absent or null (``DecodeError`` otherwise)."""
    if raw is None or raw == _NULL:
        return {}
    return _raw_object.decode(raw)


def replace_model(body: bytes, model: str) -> bytes:
    """``body`` with its top-level ``model`` set to ``model``; everything else byte for byte."""
    fields = _raw_object.decode(body)
    fields["model"] = msgspec.Raw(_encoder.encode(model))
    return _encoder.encode(fields)


def decode_model_ids(body: bytes) -> list[str]:
    """The ids of an OpenAI model list; ``errors.CannotUnderstand`` for anything else."""
    try:
        return [model.id for model in _model_list.decode(body).data]
    except msgspec.DecodeError as exc:
        raise errors.CannotUnderstand(f"The upstream sent an invalid model list: {exc}") from None


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
