"""The errors the proxy produces, and the one function that renders them.

Map (class -> HTTP status, OpenAI ``type``, default ``code``):

    ProxyError                 500  server_error            internal_error
    ├── InvalidRequest         400  invalid_request_error   (none)
    │   ├── CannotExpress      400  invalid_request_error   unsupported_parameter
    │   └── BodyTooLarge       413  invalid_request_error   request_too_large
    ├── AuthenticationFailed   401  invalid_request_error   invalid_api_key
    ├── PermissionDenied       403  invalid_request_error   model_not_allowed
    ├── NotFound               404  invalid_request_error   not_found
    │   └── ModelNotFound      404  invalid_request_error   model_not_found
    ├── MethodNotAllowed       405  invalid_request_error   method_not_allowed
    ├── RateLimited            429  requests                rate_limit_exceeded
    │   └── QuotaExceeded      429  insufficient_quota      insufficient_quota
    ├── UpstreamFailed         502  upstream_error          bad_gateway
    │   ├── UpstreamConnectFailed   502                     upstream_connect_error
    │   ├── UpstreamProtocolError   502                     upstream_protocol_error
    │   ├── CannotUnderstand        502                     upstream_unparseable
    │   └── ActorFailed             503 service_unavailable provider_actor_failed
    ├── Unavailable            503  service_unavailable     no_healthy_provider
    ├── UpstreamTimeout        504  timeout                 upstream_timeout
    └── UpstreamHTTPError      <upstream status>, the upstream's own error object

Low-level exceptions (h11, trio sockets, httpx) are translated into this tree at one boundary,
``actorproxy.net``; msgspec validation errors by ``invalid_body``. Handlers never branch on an
exception's message text: they branch on the class and on ``retryable``.
"""

from __future__ import annotations

import math
import re
from typing import TypeVar

import msgspec

T = TypeVar("T")


class ErrorBody(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


_encoder = msgspec.json.Encoder()


class ProxyError(Exception):
    """Base of every error the proxy answers with."""

    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers: list[tuple[bytes, bytes]] = []

    def body(self) -> ErrorBody:
        return ErrorBody(message=self.message, type=self.type, param=self.param, code=self.code)


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"
    code: str | None = None


class CannotExpress(InvalidRequest):
    """The request is valid OpenAI, but the chosen upstream cannot express it."""

    code = "unsupported_parameter"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class AuthenticationFailed(ProxyError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(ProxyError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(ProxyError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RateLimited(ProxyError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float, reason: str = "rate") -> None:
        """``reason``: which limit refused (a bounded label for ``/metrics``, never the message)."""
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.reason = reason
        self.headers = retry_after_headers(retry_after_s)


class QuotaExceeded(RateLimited):
    """A key spent its budget for the period: OpenAI's own answer to an exhausted quota."""

    type = "insufficient_quota"
    code = "insufficient_quota"


def retry_after_headers(seconds: float) -> list[tuple[bytes, bytes]]:
    """``retry-after`` in whole seconds (rounded up, at least 1) and ``retry-after-ms``."""
    whole = max(1, math.ceil(seconds))
    millis = max(1, math.ceil(seconds * 1000))
    return [(b"retry-after", str(whole).encode()), (b"retry-after-ms", str(millis).encode())]


class UpstreamFailed(ProxyError):
    status = 502
    type = "upstream_error"
    code = "bad_gateway"
    retryable = True


class UpstreamConnectFailed(UpstreamFailed):
    code = "upstream_connect_error"


class UpstreamProtocolError(UpstreamFailed):
    code = "upstream_protocol_error"


class CannotUnderstand(UpstreamFailed):
    """The upstream answered with something the adapter cannot parse."""

    code = "upstream_unparseable"
    retryable = False


class ActorFailed(UpstreamFailed):
    """The provider actor crashed while holding the call; the supervisor restarts it."""

    status = 503
    type = "service_unavailable"
    code = "provider_actor_failed"


class Unavailable(ProxyError):
    status = 503
    type = "service_unavailable"
    code = "no_healthy_provider"
    retryable = True
    reason = "unavailable"


class CircuitOpen(Unavailable):
    """A provider's breaker refuses calls until its cool-down ends."""

    reason = "breaker_open"


class UpstreamTimeout(ProxyError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"
    retryable = True


RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class UpstreamHTTPError(ProxyError):
    """The upstream answered with an error status; its error object is kept as it was."""

    def __init__(self, status: int, body: ErrorBody, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(body.message, param=body.param)
        self.status = status
        self.type = body.type
        self.code = body.code if isinstance(body.code, str) or body.code is None else str(body.code)
        self.retryable = status in RETRYABLE_STATUS
        self.headers = headers


def render(error: ProxyError) -> bytes:
    """The OpenAI error body for ``error``."""
    return _encoder.encode(ErrorEnvelope(error=error.body()))


_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>.*)`)?$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(?P<field>.+)`$", re.DOTALL)


NOT_JSON = "We could not parse the JSON body of your request. The body must be a JSON object."


def decode_json(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """A client's JSON body as ``decoder``'s type, else the 400 that says what is wrong with it."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise invalid_body(exc) from None
    except msgspec.DecodeError:
        raise InvalidRequest(NOT_JSON) from None


def invalid_body(error: msgspec.ValidationError) -> InvalidRequest:
    """The OpenAI-style 400 for a msgspec validation error; ``$.a[0].b`` becomes ``a[0].b``.

    msgspec gives the failing path only inside its message, so this is the one place that reads
    that text.
    """
    match = _AT.match(str(error))
    reason, path = (match["reason"], match["path"] or "") if match else (str(error), "")
    missing = _MISSING.match(reason)
    if missing:
        field = f"{path}.{missing['field']}".lstrip(".")
        message = f"Missing required parameter: '{field}'."
        return InvalidRequest(message, param=field, code="missing_required_parameter")
    param = path.lstrip(".") or None
    where = f"'{param}'" if param else "the request body"
    return InvalidRequest(f"{reason} for {where}.", param=param, code="invalid_value")


def internal(exc: BaseException) -> ProxyError:
    """What a client sees for a bug: no traceback, no exception text."""
    del exc
    return ProxyError("The proxy hit an internal error; it has been logged.")
