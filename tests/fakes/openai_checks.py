"""Request checks of the fake OpenAI API: the rejections the real service makes, in its words.

Sans-IO: each check takes the decoded body (or headers) and raises `ApiError`, which carries the
HTTP status and renders the OpenAI error body ``{"error": {"message", "type", "param", "code"}}``.
Unknown fields are accepted, as the real API does.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

_JSON_HINT = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using"
    " your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was"
    " not valid JSON.)"
)
_ROLES = frozenset({"developer", "system", "user", "assistant", "tool", "function"})
_MAX_N = 128
_MAX_TEMPERATURE = 2

_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """An OpenAI-shaped error response: HTTP ``status`` plus the fields of the error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> bytes:
        return _encoder.encode(
            error_body(self.message, type=self.type, param=self.param, code=self.code)
        )


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """The JSON object OpenAI sends with an error status."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def check_auth(headers: Mapping[str, str], api_key: str) -> None:
    """401 ``invalid_api_key`` unless ``Authorization: Bearer <api_key>``."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization"
            " header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="invalid_api_key",
        )
    if token.strip() != api_key:
        raise ApiError(
            401,
            f"Incorrect API key provided: {_mask(token.strip())}. You can find your API key at"
            " https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )


def decode_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or 400."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise ApiError(400, _JSON_HINT) from None
    if not isinstance(decoded, dict):
        raise ApiError(400, _type_message("body", "an object", decoded), code="invalid_type")
    return decoded


def check_model(request: Mapping[str, Any], models: Collection[str]) -> str:
    """The requested model; 400 if absent or not a string, 404 if not served."""
    require(request, "model")
    check_type(request, "model", "string", nullable=False)
    model: str = request["model"]
    if model not in models:
        raise not_found(model)
    return model


def not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def check_chat(request: Mapping[str, Any]) -> None:
    require(request, "messages")
    check_type(request, "messages", "array", nullable=False)
    messages: list[object] = request["messages"]
    if not messages:
        raise ApiError(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(messages):
        _check_message(f"messages[{index}]", message)
    _check_tool_turns(messages)
    check_type(request, "max_completion_tokens", "integer")
    _check_sampling(request)


def _check_tool_turns(messages: list[Any]) -> None:
    """Tool messages answer the calls of the assistant turn right before them, every one of them."""
    pending: set[str] = set()
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            if message.get("tool_call_id") not in pending:
                raise ApiError(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"messages.[{index}].role",
                )
            pending.discard(message["tool_call_id"])
            continue
        if pending:
            raise ApiError(
                400,
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(sorted(pending))}",
                param=f"messages.[{index}].role",
            )
        if role == "assistant":
            pending = {call.get("id") for call in message.get("tool_calls") or []}


def check_completion(request: Mapping[str, Any]) -> None:
    require(request, "prompt")
    if not _is_text_or_tokens(request["prompt"], allow_empty=True):
        raise _invalid_value("prompt", "a string, an array of strings or of token arrays")
    _check_sampling(request)


def check_embedding(request: Mapping[str, Any]) -> None:
    require(request, "input")
    if not _is_text_or_tokens(request["input"], allow_empty=False):
        raise _invalid_value("input", "a non-empty string, an array of strings or of token arrays")
    check_type(request, "encoding_format", "string")
    if request.get("encoding_format") not in (None, "float", "base64"):
        raise _invalid_value("encoding_format", "one of 'float' or 'base64'")
    check_type(request, "dimensions", "integer")
    if request.get("dimensions") is not None and request["dimensions"] < 1:
        raise _invalid_value("dimensions", "an integer >= 1")


def require(request: Mapping[str, Any], name: str) -> None:
    if name not in request:
        raise ApiError(
            400,
            f"Missing required parameter: '{name}'.",
            param=name,
            code="missing_required_parameter",
        )


def check_type(
    request: Mapping[str, Any], name: str, expected: str, *, nullable: bool = True
) -> None:
    """400 ``invalid_type`` if ``request[name]`` is present and not a JSON ``expected``."""
    if name not in request or (nullable and request[name] is None):
        return
    if not _IS_TYPE[expected](request[name]):
        article = "an" if expected[0] in "aeiou" else "a"
        raise ApiError(
            400,
            _type_message(f"'{name}'", f"{article} {expected}", request[name]),
            param=name,
            code="invalid_type",
        )


def _check_sampling(request: Mapping[str, Any]) -> None:
    check_type(request, "stream", "boolean")
    check_type(request, "stream_options", "object")
    if request.get("stream_options") is not None and request.get("stream") is not True:
        raise ApiError(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
            code="invalid_value",
        )
    check_type(request.get("stream_options") or {}, "include_usage", "boolean")
    check_type(request, "n", "integer")
    if request.get("n") is not None and not 1 <= request["n"] <= _MAX_N:
        raise _invalid_value("n", f"an integer between 1 and {_MAX_N}")
    check_type(request, "max_tokens", "integer")
    check_type(request, "temperature", "number")
    if (
        request.get("temperature") is not None
        and not 0 <= request["temperature"] <= _MAX_TEMPERATURE
    ):
        raise _invalid_value("temperature", f"a number between 0 and {_MAX_TEMPERATURE}")


def _check_message(where: str, message: object) -> None:
    if not isinstance(message, dict):
        raise ApiError(
            400, _type_message(f"'{where}'", "an object", message), param=where, code="invalid_type"
        )
    role = message.get("role")
    if role not in _ROLES:
        raise _invalid_value(f"{where}.role", f"one of {', '.join(sorted(_ROLES))}")
    content = message.get("content")
    if content is not None and not isinstance(content, str | list):
        raise _invalid_value(f"{where}.content", "a string or an array of content parts")


def _is_text_or_tokens(value: object, *, allow_empty: bool) -> bool:
    if isinstance(value, str):
        return allow_empty or value != ""
    if not isinstance(value, list) or not value:
        return False
    kinds = (
        lambda item: isinstance(item, str) and (allow_empty or item != ""),
        _IS_TYPE["integer"],
        lambda item: isinstance(item, list) and bool(item) and all(map(_IS_TYPE["integer"], item)),
    )
    return any(all(map(kind, value)) for kind in kinds)


def _invalid_value(param: str, expected: str) -> ApiError:
    return ApiError(
        400, f"Invalid value for '{param}': expected {expected}.", param=param, code="invalid_value"
    )


def _type_message(what: str, expected: str, value: object) -> str:
    return f"Invalid type for {what}: expected {expected}, but got {_json_type(value)} instead."


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _mask(key: str) -> str:
    return key if len(key) <= 8 else f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_IS_TYPE: dict[str, Callable[[object], bool]] = {
    "string": lambda value: isinstance(value, str),
    "integer": _is_int,
    "number": lambda value: _is_int(value) or isinstance(value, float),
    "boolean": lambda value: isinstance(value, bool),
    "array": lambda value: isinstance(value, list),
    "object": lambda value: isinstance(value, dict),
}
