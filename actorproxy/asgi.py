"""Raw ASGI helpers for the ``/v1`` hot path: reading bodies, answering, watching for disconnects.

The hot path skips the web framework (it cost 0.2-0.4 ms a request, measured in the bench issue);
Quart serves the admin side.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from actorproxy import errors

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = b"application/json"


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def request_id(scope: Scope) -> str:
    """The client's ``x-request-id`` when it is sane, else a new one."""
    given = header(scope, b"x-request-id")
    if given and len(given) <= 128 and given.isascii():
        text = given.decode()
        if text.isprintable():
            return text
    return "req_" + os.urandom(12).hex()


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def read_body(receive: Receive, limit: int, declared: bytes | None) -> bytes:
    """The whole request body; ``BodyTooLarge`` past ``limit`` bytes (checked before reading)."""
    too_large = errors.BodyTooLarge(f"The request body is larger than {limit} bytes.")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


async def respond(
    send: Send, status: int, body: bytes, headers: Headers, content_type: bytes = JSON
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def respond_error(send: Send, error: errors.ProxyError, headers: Headers) -> None:
    await respond(send, error.status, errors.render(error), [*headers, *error.headers])
