"""An ``Upstream`` on top of ``httpx.AsyncClient``.

For deployments that need what ``H11Pool`` lacks (HTTP/2, proxies, custom transports), and for
unit tests of actors, which pass a client built on ``httpx.MockTransport``.

The body is handed over as it arrived on the wire (``aiter_raw``: de-chunked, not decompressed),
like ``H11Pool``. httpx's client asks for compressed bodies by default, so unless the caller sets
``accept-encoding`` itself, requests carry ``accept-encoding: identity``.

Timeouts belong to the caller's cancel scopes; build the client with ``timeout=None``. Should an
httpx timeout fire anyway, it is reported like any other transport failure.

Cancellation: cancelling a task inside ``send`` or ``receive_some`` closes the httpx response, so
its connection is dropped rather than reused.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator

import httpx
import trio

from actorproxy import errors
from actorproxy.net.base import Headers, UpstreamRequest, UpstreamResponse

_CLOSE_GRACE_S = 1.0


@contextlib.contextmanager
def _translate() -> Iterator[None]:
    """The one boundary where httpx exceptions become ``actorproxy.errors``."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise errors.UpstreamConnectFailed(
            f"cannot connect to the upstream ({type(exc).__name__})"
        ) from exc
    except httpx.TransportError as exc:
        raise errors.UpstreamProtocolError(
            f"upstream connection failed ({type(exc).__name__})"
        ) from exc


class HttpxUpstream:
    """Requests go to ``base_url`` + ``UpstreamRequest.target`` through ``client``.

    The client is borrowed: ``aclose`` leaves it open for its owner to close.
    """

    def __init__(self, client: httpx.AsyncClient, base_url: str) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send ``request`` and return once the response head arrived."""
        outgoing = self._client.build_request(
            request.method.decode("ascii"),
            self._base_url + request.target,
            headers=_with_identity_encoding(request.headers),
            content=request.body,
        )
        with _translate():
            response = await self._client.send(outgoing, stream=True)
        return _Response(response)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _with_identity_encoding(headers: Headers) -> Headers:
    if any(name.lower() == b"accept-encoding" for name, _ in headers):
        return headers
    return [*headers, (b"accept-encoding", b"identity")]


class _Response:
    """An httpx streaming response seen through ``UpstreamResponse``."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.headers: Headers = list(response.headers.raw)
        self._response = response
        # A MockTransport handler's ``Response(content=...)`` arrives already read.
        consumed = response.is_stream_consumed
        self._unread = response.content if consumed else b""
        self._chunks: AsyncIterator[bytes] | None = None if consumed else response.aiter_raw()
        self._complete = False
        self._closed = False

    async def receive_some(self) -> bytes:
        """Body data as it arrives, ``b""`` at the end. Cancelling closes the response."""
        if self._closed and not self._complete:
            raise errors.UpstreamProtocolError("the response was closed before its end")
        try:
            with _translate():
                data = await self._next_chunk()
        except BaseException:
            await self.aclose()
            raise
        self._complete = not data
        return data

    async def aclose(self) -> None:
        """Idempotent; httpx keeps the connection only if the body was read to its end.

        Closing early leaves httpx's inner async generators to trio's finalizer, which warns
        (``ResourceWarning``, httpx issue #3686); only the outer one is ours to close."""
        self._closed = True
        with trio.move_on_after(_CLOSE_GRACE_S, shield=True):
            await self._response.aclose()
            if isinstance(self._chunks, AsyncGenerator):
                await self._chunks.aclose()

    async def _next_chunk(self) -> bytes:
        if self._chunks is None:
            await trio.lowlevel.checkpoint()
            data, self._unread = self._unread, b""
            return data
        async for chunk in self._chunks:
            if chunk:
                return chunk
        return b""
