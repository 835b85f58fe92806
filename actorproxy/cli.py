"""``actorproxy``: serve the gateway, check a config file, manage API keys."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from functools import partial

import msgspec
import trio

from actorproxy import __version__, keys, logs, runtime
from actorproxy import config as cfg
from actorproxy.storage import cli as dataset_cli

DESCRIPTION = """\
An OpenAI-compatible LLM gateway. Point any OpenAI SDK at http://HOST:PORT/v1 and change nothing
else: calls are forwarded to the configured providers under exact limits, and each one is
recorded in a Parquet dataset.

With no config file, `actorproxy serve` starts on 127.0.0.1:8000 with a built-in `mock` provider,
so `curl http://127.0.0.1:8000/v1/chat/completions -d '{"model":"mock","messages":[...]}'` works
with no keys.
"""

EPILOG = """\
examples:
  actorproxy serve --config proxy.toml               serve until SIGTERM; SIGHUP reloads
  actorproxy check-config proxy.toml                 validate a config, do not serve
  actorproxy keys create --config proxy.toml --name ci --rpm 60
  actorproxy dataset tail --config proxy.toml -n 5   the newest recorded requests

environment:
  ACTORPROXY_CONFIG      the config file when --config is not given
  ACTORPROXY_MASTER_KEY  with no config file: require this key (the embedded default behind a key)

while serving: /metrics (Prometheus), /admin/* (master key; see docs/observability.md),
/admin/ui (live dashboard), JSON log lines on stderr.
exit status: 0 after a clean shutdown, 1 on a runtime failure, 2 for a bad config or usage.
"""

SERVE = """\
Run the gateway until SIGTERM or SIGINT, then stop accepting connections and let in-flight
requests finish (up to server.graceful_timeout_s). SIGHUP (or POST /admin/reload) re-reads the
config file: added and changed providers get new actors, requests in flight on replaced ones
finish; [server], [auth], [dataset], [logging] and [tracing] changes need a restart.

Besides /v1, the server answers /health, /ready, /metrics and the admin API under /admin, with
its dashboard at /admin/ui. Operational events go to stderr as JSON lines, one an event, at
[logging] level; they never contain a request body or a key.
"""

CHECK = """\
Decode and check PATH as `serve` would (types, unknown keys, cross references between models and
providers) and print the providers and models it defines. Exit status 2 names the key at fault.
"""


MASTER_KEY_ENV = "ACTORPROXY_MASTER_KEY"

log = logging.getLogger("actorproxy.cli")


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    if given[:1] == ["bench"]:  # every later argument belongs to the bench's own parser
        return _bench(given[1:])
    parser = _parser()
    args = parser.parse_args(given)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    code: int = args.func(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actorproxy",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"actorproxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the gateway",
        description=SERVE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get("ACTORPROXY_CONFIG"),
        help="TOML config file (default: $ACTORPROXY_CONFIG, else the embedded mock default)",
    )
    serve.add_argument("--host", help="listen on HOST instead of [server] host")
    serve.add_argument(
        "--port", type=int, help="listen on PORT instead of [server] port (0 picks a free one)"
    )
    serve.set_defaults(func=_serve)
    check = sub.add_parser(
        "check-config",
        help="validate a config file without serving",
        description=CHECK,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("path", metavar="PATH", help="the TOML config file to check")
    check.set_defaults(func=_check_config)
    keys.register(sub)
    dataset_cli.register(sub)
    # Listed for --help only: main() hands `bench ...` to the bench's parser before this one.
    sub.add_parser("bench", help="run the bench suite (`actorproxy bench --help`)")
    return parser


def _load(path: str | None) -> cfg.Config:
    if path is not None:
        return cfg.load(path)
    if os.environ.get(MASTER_KEY_ENV):  # the embedded default behind a key, e.g. in a container
        return msgspec.structs.replace(
            cfg.EMBEDDED_DEFAULT, auth=cfg.AuthConfig(master_key_env=MASTER_KEY_ENV)
        )
    return cfg.EMBEDDED_DEFAULT


def _serve(args: argparse.Namespace) -> int:
    try:
        config = _load(args.config)
        server = config.server
        if args.host is not None or args.port is not None:
            server = msgspec.structs.replace(
                server,
                host=args.host if args.host is not None else server.host,
                port=args.port if args.port is not None else server.port,
            )
            config = msgspec.structs.replace(config, server=server)
            cfg.check(config)
    except cfg.ConfigError as exc:
        print(f"actorproxy: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.logging.level)
    code = 0
    try:
        trio.run(_serve_until_signal, config)
    except* cfg.ConfigError as group:
        for problem in group.exceptions:
            print(f"actorproxy: {problem}", file=sys.stderr)
        code = 2
    return code


async def _serve_until_signal(config: cfg.Config) -> None:
    shutdown = trio.Event()
    signals_wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    with trio.open_signal_receiver(*signals_wanted) as signals:
        async with trio.open_nursery() as nursery:
            serve = partial(runtime.serve, config, environ=os.environ, shutdown=shutdown)
            server: runtime.Server = await nursery.start(serve)
            await _handle_signals(signals, shutdown, server)


async def _handle_signals(
    signals: AsyncIterator[int], shutdown: trio.Event, server: runtime.Server
) -> None:
    """SIGHUP reloads the config file; SIGTERM or SIGINT start a graceful shutdown."""
    async for signum in signals:
        if signum != signal.SIGHUP:
            shutdown.set()
            return
        try:
            await server.reloader.reload()
        except cfg.ConfigError as exc:
            log.error("config reload failed; nothing changed", extra={"error": str(exc)})


def _bench(argv: list[str]) -> int:
    from bench import __main__ as bench  # the bench ships with the package but loads on demand

    return bench.main(argv)


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = cfg.load(args.path)
    except cfg.ConfigError as exc:
        print(f"actorproxy: {exc}", file=sys.stderr)
        return 2
    providers = ", ".join(f"{p.name} ({p.kind})" for p in config.providers) or "none"
    models = ", ".join(m.name for m in config.models) or "none"
    print(f"{args.path}: OK\n  providers: {providers}\n  models: {models}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
