"""What every adapter shares: the exchange a handler asks for, and the adapter protocol.

An adapter is a sans-IO translator between the OpenAI shape the proxy speaks and one upstream's
wire format. It never does I/O and never reads globals or the environment: what it needs (base
path, key, api version, capabilities) arrives through its constructor.

The provider actor drives it like this:

1. ``encode_request(exchange)`` -> the upstream request (``errors.CannotExpress`` -> 400).
2. Upstream status >= 400: ``decode_error(status, headers, body)`` -> the ``ProxyError`` to raise.
3. Not streaming: ``decode_response(exchange, body)`` -> the OpenAI JSON body for the client.
4. Streaming: ``open_stream(exchange)`` -> ``None`` when the upstream already speaks OpenAI's
   event stream (the bytes are passed through as they arrive, the fast path), else a
   ``StreamTranslator``: each upstream piece goes through ``feed()`` and the bytes it returns
   (OpenAI ``data: ...`` frames, possibly empty) go to the client; at the end of the upstream body
   ``end()`` returns the last frames, ending with ``data: [DONE]``. A translator raises a
   ``ProxyError`` for an error event or an unparseable stream; the handler turns it into an error
   frame, since the response has already started.

Translators raise ``errors.CannotUnderstand`` (502) for bytes they cannot parse, never a bare
``msgspec`` or ``KeyError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from actorproxy import errors
from actorproxy.net.base import Headers, UpstreamRequest

Endpoint = Literal["chat", "completions", "embeddings"]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One client request, as the handler hands it to a provider actor."""

    endpoint: Endpoint
    body: bytes
    model: str
    upstream_model: str
    stream: bool
    request_id: str
    headers: Headers
    created: int = 0  # when the proxy received the request (Unix seconds), for ``created`` fields
    key_id: str = ""  # the calling API key's id ("" for the master key / open mode): fair queueing
    tokens: int = 0  # the reservation estimate (``limits.rate.estimate_tokens``) for rpm/tpm


class StreamTranslator(Protocol):
    def feed(self, data: bytes) -> bytes:
        """OpenAI event-stream bytes for the upstream bytes ``data`` (split anywhere)."""
        ...

    def end(self) -> bytes:
        """The last OpenAI frames once the upstream body is complete, ending with ``[DONE]``."""
        ...

    def withheld(self) -> bytes:
        """Frames kept from the client but part of the record, asked for after ``end()``.

        A usage chunk the proxy asked the upstream for (``stream_options``) although the client
        did not goes here: the dataset gets the real usage, the client the stream it asked for.
        """
        ...


class Adapter(Protocol):
    def encode_request(self, exchange: Exchange) -> UpstreamRequest:
        """The upstream request for ``exchange``; ``errors.CannotExpress`` if there is none."""
        ...

    def decode_response(self, exchange: Exchange, body: bytes) -> bytes:
        """The OpenAI response body for the upstream's successful, non-streamed ``body``."""
        ...

    def open_stream(self, exchange: Exchange) -> StreamTranslator | None:
        """A translator for the upstream's event stream, or ``None`` to pass it through."""
        ...

    def decode_error(self, status: int, headers: Headers, body: bytes) -> errors.ProxyError:
        """The error for a non-2xx upstream answer, keeping the upstream's status."""
        ...

    def models_request(self) -> UpstreamRequest | None:
        """The request that lists the upstream's models; ``None`` when it has no such list."""
        ...

    def decode_models(self, body: bytes) -> list[str]:
        """The model ids in the answer to ``models_request()``."""
        ...
