"""The seam between a provider actor and the network.

A provider actor talks to its upstream only through an ``Upstream``: send one request, get the
status and headers, then pull the body with ``receive_some()`` until it returns ``b""``. The
implementations are ``H11Pool`` (keep-alive pool on trio + h11, the default, see ``pool.py``),
``HttpxUpstream`` (``httpx.AsyncClient``; unit tests pass an ``httpx.MockTransport``) and the
in-process ``MockUpstream`` of the ``mock`` provider kind.

Every implementation raises only ``actorproxy.errors`` classes: ``UpstreamConnectFailed`` when no
connection could be made, ``UpstreamProtocolError`` when the peer broke HTTP or the connection
mid-response. Cancellation is plain trio cancellation: cancelling the task that awaits ``send`` or
``receive_some`` abandons the request, and the connection is closed, never reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One HTTP request, its target relative to the upstream's base URL."""

    method: bytes
    target: str
    headers: Headers
    body: bytes


class UpstreamResponse(Protocol):
    """A response whose status and headers have arrived; the body is pulled on demand."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Headers: ...

    async def receive_some(self) -> bytes:
        """The next piece of the body as it arrives; ``b""`` once the body is complete."""
        ...

    async def aclose(self) -> None:
        """Release the connection: back to the pool if the body was read to the end, else closed."""
        ...


class Upstream(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send ``request`` and wait for the response head. The caller must ``aclose()`` it."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


async def read_all(response: UpstreamResponse) -> bytes:
    """The whole body, then the response is closed."""
    parts: list[bytes] = []
    try:
        while chunk := await response.receive_some():
            parts.append(chunk)
    finally:
        await response.aclose()
    return b"".join(parts)
