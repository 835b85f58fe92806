"""``actorproxy``: serve the gateway, check a config file, manage API keys."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence

import msgspec
import trio

from actorproxy import __version__, keys, logs, runtime
from actorproxy import config as cfg
from actorproxy.storage import cli as dataset_cli

DESCRIPTION = """\
An OpenAI-compatible LLM gateway. Point any OpenAI SDK at http://HOST:PORT/v1 and change nothing
else: calls are forwarded to the configured providers under exact limits.

With no config file, `actorproxy serve` starts on 127.0.0.1:8000 with a built-in `mock` provider,
so `curl http://127.0.0.1:8000/v1/chat/completions -d '{"model":"mock","messages":[...]}'` works
with no keys.
"""


MASTER_KEY_ENV = "ACTORPROXY_MASTER_KEY"


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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"actorproxy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway until SIGTERM or SIGINT, then drain in-flight requests.",
    )
    serve.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get("ACTORPROXY_CONFIG"),
        help="TOML config file (default: $ACTORPROXY_CONFIG, else the embedded mock default)",
    )
    serve.add_argument("--host", help="override [server] host")
    serve.add_argument("--port", type=int, help="override [server] port (0 picks a free port)")
    serve.set_defaults(func=_serve)
    check = sub.add_parser(
        "check-config",
        help="validate a config file without serving",
        description="Decode and check PATH; print the providers and models it defines.",
    )
    check.add_argument("path", metavar="PATH")
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
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_wait_for_signal, signals, shutdown)
            await runtime.serve(config, environ=os.environ, shutdown=shutdown)
            nursery.cancel_scope.cancel()


async def _wait_for_signal(signals: AsyncIterator[int], shutdown: trio.Event) -> None:
    async for _ in signals:
        shutdown.set()
        return


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
