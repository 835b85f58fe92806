"""Start the real proxy on 127.0.0.1 port 0 inside the test's trio run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial

import trio

from actorproxy import config as cfg
from actorproxy import runtime
from actorproxy.net.base import Upstream

MASTER_KEY = "sk-master-test-0123456789"
UPSTREAM_KEY_ENV = "FAKE_OPENAI_KEY"


def proxy_config(
    *providers: cfg.ProviderConfig,
    models: list[cfg.ModelConfig] | None = None,
    server: cfg.ServerConfig | None = None,
    master_key: bool = True,
) -> cfg.Config:
    config = cfg.Config(
        server=server or cfg.ServerConfig(port=0, graceful_timeout_s=2.0),
        auth=cfg.AuthConfig(master_key_env="ACTORPROXY_MASTER_KEY" if master_key else None),
        providers=list(providers),
        models=models or [],
        source="<test>",
    )
    cfg.check(config)
    return config


def openai_provider(base_url: str, name: str = "openai", **overrides: object) -> cfg.ProviderConfig:
    fields: dict[str, object] = {
        "name": name,
        "kind": "openai",
        "base_url": base_url,
        "api_key_env": UPSTREAM_KEY_ENV,
    }
    fields.update(overrides)
    return cfg.ProviderConfig(**fields)  # type: ignore[arg-type]


def environ(upstream_key: str) -> dict[str, str]:
    return {"ACTORPROXY_MASTER_KEY": MASTER_KEY, UPSTREAM_KEY_ENV: upstream_key}


@asynccontextmanager
async def open_proxy(
    config: cfg.Config,
    env: Mapping[str, str],
    upstreams: Mapping[str, Upstream] | None = None,
) -> AsyncIterator[runtime.Server]:
    """Serve ``config`` until the block exits, then shut down gracefully."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        server: runtime.Server = await nursery.start(
            partial(runtime.serve, config, environ=env, shutdown=shutdown, upstreams=upstreams)
        )
        try:
            yield server
        finally:
            shutdown.set()
