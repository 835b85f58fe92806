"""The floor under the proxy: hypercorn's trio worker serving a static JSON body, nothing else.

The same server settings as the proxy (``runtime.hypercorn_config``) and the same JSON answer as
the fake upstream, with no auth, routing, actors, upstream call or dataset. Its CPU time per
request is what the HTTP server alone costs; the proxy's figure minus this one is what actorproxy
adds. :mod:`bench.runner` measures it beside the ``fast`` sweep when the suite runs that scenario.

Run alone: ``.venv/bin/python -m bench.floor``; it prints ``{"port": N}`` and serves until killed.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from typing import Any, cast

import trio
from hypercorn.trio import serve

from actorproxy import asgi
from actorproxy.config import ServerConfig
from actorproxy.runtime import hypercorn_config
from bench.upstream import build_replies, raise_fd_limit


class StaticApp:
    """Answers every HTTP request with the fake upstream's JSON completion."""

    def __init__(self) -> None:
        whole = build_replies(1).json
        self._body = whole[whole.index(b"\r\n\r\n") + 4 :]

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await asgi.read_body(receive, 1 << 20, None)
        await asgi.respond(send, 200, self._body, [])


async def _lifespan(receive: asgi.Receive, send: asgi.Send) -> None:
    while True:
        kind = (await receive())["type"]  # lifespan.startup, then lifespan.shutdown
        await send({"type": kind + ".complete"})
        if kind == "lifespan.shutdown":
            return


async def _main() -> None:
    config = hypercorn_config(ServerConfig(port=0))
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, cast(Any, StaticApp()), config))
        print(json.dumps({"port": int(urls[0].rpartition(":")[2])}), flush=True)


def main() -> int:
    raise_fd_limit()
    try:
        trio.run(_main)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
