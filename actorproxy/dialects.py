"""What a client speaks: OpenAI's API (the native dialect), Anthropic's Messages API, Azure's paths.

Inside the proxy every call is an OpenAI call: routing, provider actors, adapters and the dataset
see OpenAI bodies and OpenAI event streams. A ``Dialect`` translates at the edge, once on the way
in (``request``) and once on the way out (``response``, ``stream``, ``error``). The OpenAI dialect
is the identity and keeps the hot path free of copies: its ``stream`` is ``None``, so stream bytes
go to the client as they came.
"""

from __future__ import annotations

import re
from typing import Protocol

import msgspec

from actorproxy import asgi, errors
from actorproxy.adapters import messages_inbound, messages_stream
from actorproxy.adapters.base import Endpoint
from actorproxy.adapters.openai import replace_model


class StreamEncoder(Protocol):
    def feed(self, data: bytes) -> bytes:
        """The client's bytes for OpenAI event-stream bytes ``data``."""
        ...

    def end(self) -> bytes:
        """The last bytes once the OpenAI stream is complete."""
        ...


class Dialect(Protocol):
    name: str

    def request(self, body: bytes) -> bytes:
        """The OpenAI request body for the client's ``body``; a ``ProxyError`` if there is none."""
        ...

    def response(self, body: bytes, model: str) -> bytes:
        """The client's body for an OpenAI response ``body`` to a request for ``model``."""
        ...

    def stream(self, model: str) -> StreamEncoder | None:
        """An encoder for the client's event stream; ``None`` passes OpenAI's through."""
        ...

    def error(self, error: errors.ProxyError) -> tuple[int, bytes, asgi.Headers]:
        """The status, body and extra headers that tell the client about ``error``."""
        ...

    def stream_error(self, error: errors.ProxyError) -> bytes:
        """The last bytes of a stream that failed after it started."""
        ...


class OpenAIDialect:
    """The native dialect: bodies and streams pass through untouched."""

    name = "openai"

    def request(self, body: bytes) -> bytes:
        return body

    def response(self, body: bytes, model: str) -> bytes:
        del model
        return body

    def stream(self, model: str) -> StreamEncoder | None:
        del model
        return None

    def error(self, error: errors.ProxyError) -> tuple[int, bytes, asgi.Headers]:
        return error.status, errors.render(error), error.headers

    def stream_error(self, error: errors.ProxyError) -> bytes:
        return b"\n\ndata: " + errors.render(error) + b"\n\n"


class AzureDialect(OpenAIDialect):
    """Azure OpenAI's paths (``/openai/deployments/{deployment}/...``): the deployment is the model.

    ``AzureOpenAI`` clients then work unchanged; the body's ``model`` is set to the deployment,
    which names a model alias here.
    """

    name = "azure"

    def __init__(self, deployment: str | None) -> None:
        self._deployment = deployment

    def request(self, body: bytes) -> bytes:
        if self._deployment is None:
            return body
        try:
            return replace_model(body, self._deployment)
        except msgspec.DecodeError:  # the view decoder explains what is wrong with the body
            return body


class MessagesDialect:
    """Anthropic's Messages API (``POST /v1/messages``), for clients built on Anthropic's SDK."""

    name = "anthropic"

    def request(self, body: bytes) -> bytes:
        return messages_inbound.decode_request(body).openai_body

    def response(self, body: bytes, model: str) -> bytes:
        return messages_inbound.encode_response(body, model=model)

    def stream(self, model: str) -> StreamEncoder | None:
        return messages_stream.MessagesStreamEncoder(model)

    def error(self, error: errors.ProxyError) -> tuple[int, bytes, asgi.Headers]:
        # Anthropic's SDK obeys x-should-retry; without it, it retries every 5xx, even ours that
        # another attempt cannot fix (a body we cannot translate, an upstream we cannot parse).
        status, body = messages_inbound.encode_error(error)
        should_retry = b"true" if error.retryable or status == 429 else b"false"
        return status, body, [*error.headers, (b"x-should-retry", should_retry)]

    def stream_error(self, error: errors.ProxyError) -> bytes:
        return messages_inbound.error_event(error)


OPENAI = OpenAIDialect()
MESSAGES = MessagesDialect()

_AZURE_PATH = re.compile(
    r"^/openai/(?:deployments/(?P<deployment>[^/]+)/|v1/)"
    r"(?P<operation>chat/completions|completions|embeddings)$"
)
_OPERATIONS: dict[str, Endpoint] = {
    "chat/completions": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
}


def azure_route(path: str) -> tuple[Endpoint, AzureDialect] | None:
    """The endpoint and dialect for an Azure-style path, else ``None``."""
    match = _AZURE_PATH.match(path)
    if match is None:
        return None
    return _OPERATIONS[match["operation"]], AzureDialect(match["deployment"])
