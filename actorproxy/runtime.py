"""The runtime: builds the actor tree from a ``Config`` and serves it.

    root nursery
    ├── supervisor ── provider actors ..., logger actor
    └── hypercorn.trio.serve(Gateway)

``serve()`` reports a ``Server`` (bound URLs and the live objects) through ``task_status`` once
every actor runs and the socket listens. Setting ``shutdown`` stops accepting connections, lets
in-flight requests finish within ``graceful_timeout_s``, then stops the actors and closes the
upstream pools.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from actorproxy import config as cfg
from actorproxy import events
from actorproxy.actors.logger import Batching, LoggerActor
from actorproxy.actors.provider import ProviderActor
from actorproxy.actors.supervisor import Supervisor
from actorproxy.adapters.anthropic import AnthropicAdapter
from actorproxy.adapters.azure import AzureAdapter
from actorproxy.adapters.base import Adapter
from actorproxy.adapters.ollama import OllamaAdapter
from actorproxy.adapters.openai import OpenAIAdapter
from actorproxy.app import Gateway
from actorproxy.auth import Authenticator
from actorproxy.limits.gate import KeyGate
from actorproxy.net.base import Upstream
from actorproxy.net.mock import MockUpstream
from actorproxy.net.pool import H11Pool
from actorproxy.ops import Ops, span_export
from actorproxy.planner import Planner
from actorproxy.proxy import ProxyHandler
from actorproxy.redact import Redactor
from actorproxy.reload import Reloader, model_labels
from actorproxy.routing import Router
from actorproxy.storage.sink import DatasetSink
from actorproxy.telemetry import RequestStats

log = logging.getLogger("actorproxy.runtime")


@dataclass(frozen=True, slots=True)
class Server:
    urls: list[str]
    gateway: Gateway
    actors: Mapping[str, ProviderActor]
    logger: LoggerActor
    supervisor: Supervisor
    reloader: Reloader


def build_actor(
    provider: cfg.ProviderConfig,
    environ: Mapping[str, str],
    upstream: Upstream | None = None,
) -> ProviderActor:
    """The actor for ``provider``; ``upstream`` replaces the network seam (tests, embedding)."""
    key = environ.get(provider.api_key_env) if provider.api_key_env else None
    if provider.api_key_env and not key:
        log.warning(
            "provider key variable is not set",
            extra={"provider": provider.name, "variable": provider.api_key_env},
        )
    adapter = build_adapter(provider, key)
    if upstream is None:
        upstream = _upstream(provider)
    return ProviderActor(provider, upstream, adapter)


def build_adapter(provider: cfg.ProviderConfig, key: str | None) -> Adapter:
    """The sans-IO adapter for ``provider``'s kind, with its options from the config."""
    if provider.kind == "anthropic":
        options = provider.anthropic
        return AnthropicAdapter(
            api_key=key,
            version=options.version,
            default_max_tokens=options.default_max_tokens,
            unsupported=options.unsupported,
            beta=options.beta,
            headers=provider.headers,
        )
    if provider.kind == "azure":
        azure = provider.azure
        return AzureAdapter(
            api_key=key,
            api_version=azure.api_version or ("2024-10-21" if azure.style == "deployments" else ""),
            style=azure.style,
            deployments=azure.deployments,
            headers=provider.headers,
            empty_choices=azure.empty_choices,
            stream_usage=provider.stream_usage,
            strip_extensions=provider.strip_extensions,
        )
    if provider.kind == "ollama":
        bearer = {"Authorization": f"Bearer {key}"} if key else {}  # for Ollama behind a proxy
        return OllamaAdapter(
            headers={**provider.headers, **bearer},
            keep_alive=provider.ollama.keep_alive,
            repair_tool_calls=provider.ollama.repair_tool_calls,
        )
    return OpenAIAdapter(
        api_key=key,
        headers=provider.headers,
        stream_usage=provider.stream_usage,
        strip_extensions=provider.strip_extensions,
    )


def _upstream(provider: cfg.ProviderConfig) -> Upstream:
    if provider.kind == "mock":
        return MockUpstream(provider.mock)
    return H11Pool(
        provider.url,
        max_connections=provider.max_concurrency,
        connect_timeout_s=provider.connect_timeout_s,
    )


def hypercorn_config(server: cfg.ServerConfig) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [
        f"[{server.host}]:{server.port}" if ":" in server.host else f"{server.host}:{server.port}"
    ]
    hc.backlog = server.backlog
    hc.graceful_timeout = server.graceful_timeout_s
    hc.keep_alive_timeout = server.keep_alive_timeout_s
    hc.keep_alive_max_requests = server.keep_alive_max_requests
    hc.accesslog = None
    hc.errorlog = logging.getLogger("actorproxy.hypercorn")
    if server.tls_cert and server.tls_key:
        hc.certfile, hc.keyfile = server.tls_cert, server.tls_key
    return hc


async def serve(
    config: cfg.Config,
    *,
    environ: Mapping[str, str],
    shutdown: trio.Event,
    upstreams: Mapping[str, Upstream] | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway until ``shutdown`` is set (see the module docstring)."""
    auth = Authenticator.from_config(config.auth, environ, _base_dir(config))
    if auth.is_open and not cfg.is_loopback(config.server.host):
        raise cfg.ConfigError(
            f"{config.source}: no API keys are configured, so the proxy only serves on a "
            f"loopback address, not {config.server.host!r}; set auth.master_key_env or "
            "auth.keys_file"
        )
    given = upstreams or {}
    actors = {p.name: build_actor(p, environ, given.get(p.name)) for p in config.providers}
    dataset = config.dataset
    replica = f"{socket.gethostname()}-{os.getpid()}"
    sink = _dataset_sink(config, environ, replica)
    if sink is not None:
        await trio.to_thread.run_sync(sink.recover)
    logger = LoggerActor(
        sink=sink,
        queue_size=dataset.queue_size,
        on_full=dataset.on_full,
        batching=Batching(
            batch_size=dataset.batch_size, flush_interval_s=dataset.flush_interval_ms / 1000
        ),
    )
    supervisor = Supervisor([*actors.values(), logger])
    router = Router(config)
    proxy = ProxyHandler(
        planner=Planner(router, actors, config.routing),
        keys=KeyGate(config.prices, config.key_limits),
        auth=auth,
        logger=logger,
        max_body_bytes=config.server.max_body_bytes,
        replica=replica,
    )
    stats = RequestStats(model_labels(config), actors, config.prices)
    # A reload builds actors on the network seam the config names: ``upstreams`` (tests, embedding)
    # serve the first build only, since a replaced actor closes its upstream when it has drained.
    reloader = Reloader(
        config,
        actors=actors,
        build=lambda provider: build_actor(provider, environ),
        supervisor=supervisor,
        router=router,
        stats=stats,
    )
    ops = Ops(actors, logger, stats, auth, reloader)
    proxy.observers += [ops.observe, events.log_failure]
    spans = span_export(config)
    if spans is not None:
        proxy.observers.append(spans.observe)
    gateway = Gateway(proxy=proxy, router=router, ops=ops, created=int(time.time()))
    try:
        async with trio.open_nursery() as root:
            await root.start(supervisor.run)
            await root.start(events.watch, ops)
            await root.start(reloader.run)
            http_done = trio.Event()
            urls = await root.start(_serve_http, gateway, config.server, shutdown, http_done)
            if auth.is_open:
                log.warning("no API keys configured: open access, loopback only")
            log.info("config", extra=_config_summary(config))
            log.info("listening", extra={"urls": urls, "config": config.source})
            task_status.started(Server(urls, gateway, actors, logger, supervisor, reloader))
            await http_done.wait()
            with trio.move_on_after(config.server.graceful_timeout_s):
                await logger.stop()
            root.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            for actor in actors.values():
                await actor.aclose()
            if spans is not None:
                await trio.to_thread.run_sync(spans.shutdown, abandon_on_cancel=True)


async def _serve_http(
    gateway: Gateway,
    server: cfg.ServerConfig,
    shutdown: trio.Event,
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        await hypercorn_serve(
            cast(Any, gateway),  # hypercorn's TypedDict scopes vs. our plain mappings
            hypercorn_config(server),
            shutdown_trigger=shutdown.wait,
            task_status=task_status,
        )
    finally:
        done.set()


def _dataset_sink(
    config: cfg.Config, environ: Mapping[str, str], replica: str
) -> DatasetSink | None:
    dataset = config.dataset
    if dataset.dir is None:
        return None
    redaction = dataset.redaction
    key: bytes | None = None
    if redaction.hash_key_env is not None:
        value = environ.get(redaction.hash_key_env)
        if not value:
            raise cfg.ConfigError(
                f"{config.source}: dataset.redaction.hash_key_env: "
                f"the variable {redaction.hash_key_env} is not set"
            )
        key = value.encode()
    try:
        redactor = Redactor(redaction, hmac_key=key)
    except ValueError as exc:
        raise cfg.ConfigError(f"{config.source}: dataset.redaction: {exc}") from None
    directory = Path(dataset.dir)
    if not directory.is_absolute():
        directory = _base_dir(config) / directory
    return DatasetSink(
        directory,
        replica=replica,
        redactor=redactor,
        config=dataset,
    )


def _config_summary(config: cfg.Config) -> dict[str, object]:
    """What the start-up log line says about the config: names and kinds, never secrets."""
    return {
        "source": config.source,
        "providers": [f"{p.name} ({p.kind})" for p in config.providers],
        "models": [m.name for m in config.models],
        "dataset": config.dataset.dir,
        "tracing": config.tracing.otlp_endpoint is not None,
        "log_level": config.logging.level,
    }


def _base_dir(config: cfg.Config) -> Path:
    if config.source.startswith("<"):
        return Path.cwd()
    return Path(config.source).resolve().parent
