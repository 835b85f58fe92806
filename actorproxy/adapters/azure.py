"""The Azure OpenAI adapter: OpenAI's API under Azure's paths, key header and error shapes.

Two URL styles, relative to the resource endpoint (``https://<resource>.openai.azure.com``):

- ``deployments`` (classic): ``/openai/deployments/{deployment}/chat/completions?api-version=V``
  (and ``/completions``, ``/embeddings``); the deployment is ``deployments[upstream_model]``, or
  the upstream model itself when the map has no entry.
- ``v1`` (the GA v1 API): ``/openai/v1/chat/completions`` etc.; the body's ``model`` names the
  deployment. ``api-version`` is sent only when configured to something other than the classic
  default (e.g. ``preview``), since the v1 API takes no dated versions.

The key goes in ``api-key`` (never ``Authorization``). Bodies pass through as for
`openai.OpenAIAdapter`, our OpenAI-shape extensions stripped unless ``strip_extensions=False``;
replies too, ``content_filter_results`` and ``prompt_filter_results`` included. A stream starts
with chunks that carry ``"choices": []`` and only ``prompt_filter_results``: with
``empty_choices="drop"`` they are withheld from the client (and kept for the record) by an
`sse_filter.StreamFilter`. Errors are turned into OpenAI's shape, keeping the status,
``retry-after`` headers and Azure's ``innererror`` (content-filter details).
docs/providers/azure.md has every mapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from urllib.parse import quote

import msgspec
from msgspec import UNSET, UnsetType

from actorproxy import errors
from actorproxy.adapters.base import Exchange, StreamTranslator
from actorproxy.adapters.openai import (
    KEPT_ERROR_HEADERS,
    PATHS,
    STREAMING_ENDPOINTS,
    decode_model_ids,
    injects_usage,
    request_headers,
    rewrite,
)
from actorproxy.adapters.sse_filter import StreamFilter
from actorproxy.net.base import Headers, UpstreamRequest

Style = Literal["deployments", "v1"]
EmptyChoices = Literal["drop", "pass"]

DEFAULT_API_VERSION = "2024-10-21"
#: OpenAI ``code`` for Azure's bare numeric codes (``{"code": "401"}``); others are kept.
CODES_BY_STATUS: dict[int, str] = {
    401: "invalid_api_key",
    404: "not_found",
    429: "rate_limit_exceeded",
}


class AzureAdapter:
    """Translator to Azure OpenAI; stateless, so it is safe to share between calls.

    It does no I/O, so a cancelled call leaves nothing behind in it; a stream's `StreamFilter`
    is simply no longer fed.
    """

    def __init__(  # noqa: PLR0913 - keyword-only, one per config option
        self,
        *,
        api_key: str | None,
        api_version: str = DEFAULT_API_VERSION,
        style: Style = "deployments",
        deployments: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        empty_choices: EmptyChoices = "drop",
        stream_usage: bool = False,
        strip_extensions: bool = True,
    ) -> None:
        fixed: Headers = [(b"content-type", b"application/json"), (b"accept", b"*/*")]
        if api_key:
            fixed.append((b"api-key", api_key.encode()))
        fixed.extend(
            (name.lower().encode(), value.encode()) for name, value in (headers or {}).items()
        )
        self._headers = fixed
        self._style = style
        self._deployments = dict(deployments or {})
        self._query = _query(api_version, style)
        self._drop_empty = empty_choices == "drop"
        self._stream_usage = stream_usage
        self._strip = strip_extensions

    def encode_request(self, exchange: Exchange) -> UpstreamRequest:
        deployment = self._deployments.get(exchange.upstream_model, exchange.upstream_model)
        path = PATHS[exchange.endpoint]
        if self._style == "deployments":
            target = f"/openai/deployments/{quote(deployment, safe='')}{path}{self._query}"
            model = exchange.upstream_model
        else:
            target, model = f"/openai/v1{path}{self._query}", deployment
        inject = self._stream_usage and injects_usage(exchange)
        body = rewrite(exchange, model, include_usage=inject, strip=self._strip)
        return UpstreamRequest(b"POST", target, request_headers(self._headers, exchange), body)

    def decode_response(self, exchange: Exchange, body: bytes) -> bytes:
        del exchange
        return body

    def open_stream(self, exchange: Exchange) -> StreamTranslator | None:
        """A filter when chunks are withheld (Azure's filter chunks, injected usage), else None."""
        if not exchange.stream or exchange.endpoint not in STREAMING_ENDPOINTS:
            return None
        inject = self._stream_usage and injects_usage(exchange)
        if not (self._drop_empty or inject):
            return None
        return StreamFilter(withhold_empty=self._drop_empty, withhold_usage=inject)

    def decode_error(self, status: int, headers: Headers, body: bytes) -> errors.ProxyError:
        return decode_azure_error(status, headers, body)

    def models_request(self) -> UpstreamRequest | None:
        """``GET /openai/v1/models`` for the v1 style; None for deployments, which need no
        request: `decode_models` (of any body) lists the configured names."""
        if self._style == "deployments":
            return None
        return UpstreamRequest(b"GET", f"/openai/v1/models{self._query}", self._headers[1:], b"")

    def decode_models(self, body: bytes) -> list[str]:
        """The configured model names (deployments style), or the ids of a v1 model list."""
        if self._style == "deployments":
            return list(self._deployments)
        return decode_model_ids(body)


def _query(api_version: str, style: Style) -> str:
    if not api_version or (style == "v1" and api_version == DEFAULT_API_VERSION):
        return ""
    return "?api-version=" + quote(api_version, safe="")


# --- errors -----------------------------------------------------------------------------------


class _AzureError(msgspec.Struct):
    message: str | None = None
    code: str | int | None = None
    type: str | None = None
    param: str | None = None
    innererror: msgspec.Raw | UnsetType = UNSET


class _AzureEnvelope(msgspec.Struct):
    error: _AzureError | None = None
    message: str | None = None  # gateway errors: {"statusCode": 401, "message": "..."}


class ErrorBodyWithDetails(errors.ErrorBody):
    """OpenAI's error object plus Azure's ``innererror``, passed on as it came."""

    innererror: msgspec.Raw | UnsetType = UNSET


class AzureHTTPError(errors.UpstreamHTTPError):
    """An Azure error status in OpenAI's shape; ``innererror`` is rendered with the body."""

    def __init__(
        self,
        status: int,
        body: errors.ErrorBody,
        headers: list[tuple[bytes, bytes]],
        innererror: msgspec.Raw | UnsetType = UNSET,
    ) -> None:
        super().__init__(status, body, headers)
        self.innererror = innererror

    def body(self) -> errors.ErrorBody:
        return ErrorBodyWithDetails(
            message=self.message,
            type=self.type,
            param=self.param,
            code=self.code,
            innererror=self.innererror,
        )


_azure_envelope = msgspec.json.Decoder(_AzureEnvelope)


def decode_azure_error(status: int, headers: Headers, body: bytes) -> errors.ProxyError:
    """The OpenAI-shaped error for an Azure error answer; the status is kept.

    ``type`` comes from the status when Azure sends none; a numeric ``code`` (``"401"``) becomes
    OpenAI's (`CODES_BY_STATUS`, else null), a named one (``content_filter``,
    ``DeploymentNotFound``) is kept; Azure's ``status`` field is dropped (it repeats the HTTP
    status).
    """
    kept = [(name, value) for name, value in headers if name in KEPT_ERROR_HEADERS]
    try:
        envelope = _azure_envelope.decode(body)
    except msgspec.DecodeError:
        envelope = _AzureEnvelope()
    error = envelope.error or _AzureError(message=envelope.message)
    message = error.message or envelope.message
    if message is None:
        fallback = errors.ErrorBody(
            message=f"Azure OpenAI answered HTTP {status} without an error body.",
            type="upstream_error",
        )
        return errors.UpstreamHTTPError(status, fallback, kept)
    shaped = errors.ErrorBody(
        message=message,
        type=error.type or _type(status),
        param=error.param,
        code=_code(error.code, status),
    )
    return AzureHTTPError(status, shaped, kept, error.innererror)


def _type(status: int) -> str:
    if status == 429:
        return "requests"
    return "server_error" if status >= 500 else "invalid_request_error"


def _code(code: str | int | None, status: int) -> str | None:
    if code is None or str(code).isdigit():
        return CODES_BY_STATUS.get(status)
    return str(code)
