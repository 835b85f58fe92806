"""What every adapter shares: the exchange a handler asks for, and the adapter protocol.

An adapter is a sans-IO translator between the OpenAI shape the proxy speaks and one upstream's
wire format. It never does I/O and never reads globals or the environment: what it needs (base
path, key, api version, capabilities) arrives through its constructor.
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


class Adapter(Protocol):
    def encode_request(self, exchange: Exchange) -> UpstreamRequest:
        """The upstream request for ``exchange``; ``errors.CannotExpress`` if there is none."""
        ...

    def decode_error(self, status: int, headers: Headers, body: bytes) -> errors.ProxyError:
        """The error for a non-2xx upstream answer, keeping the upstream's status."""
        ...
