"""Small views of client requests: only the fields routing needs, decoded once.

The original body bytes are forwarded; these Structs never get re-encoded. msgspec ignores the
fields they do not name, so an unknown or new OpenAI field costs nothing and passes through.
"""

from __future__ import annotations

import msgspec


class StreamOptions(msgspec.Struct):
    include_usage: bool | None = None


class RouteView(msgspec.Struct):
    """What the hot path reads of a chat, completion or embeddings request."""

    model: str
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None  # these three size the token reservation (limits.rate)
    max_completion_tokens: int | None = None
    n: int | None = None


route_view = msgspec.json.Decoder(RouteView)
