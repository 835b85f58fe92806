"""What the operator-facing routes read: live actors, the logger, request statistics, keys.

``Ops`` bundles the live objects the runtime built; ``snapshot`` turns them into the JSON the
admin API (``GET /admin/actors``) and the dashboard's websocket send. A snapshot holds cumulative
counters: a reader computes rates from two of them (the dashboard does), so the server keeps no
per-second state. No snapshot holds a body or a key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import trio

from actorproxy import config as cfg
from actorproxy.actors.logger import LoggerActor
from actorproxy.actors.provider import ProviderActor
from actorproxy.auth import Authenticator
from actorproxy.flight import Flight
from actorproxy.keys import KeyStore
from actorproxy.reload import Reloader
from actorproxy.telemetry import RequestStats


@dataclass(frozen=True, slots=True)
class Ops:
    actors: Mapping[str, ProviderActor]
    logger: LoggerActor
    stats: RequestStats
    auth: Authenticator
    reloader: Reloader | None = None
    keys_lock: trio.Lock = field(default_factory=trio.Lock)  # admin writes to the keys file

    def keys(self) -> KeyStore | None:
        path = self.auth.keys_file
        return None if path is None else KeyStore(path)

    def observe(self, flight: Flight) -> None:
        """Count a finished request (the proxy handler calls it after the response is sent)."""
        self.stats.observe(flight, trio.current_time(), time.time())


class SpanSink(Protocol):
    def observe(self, flight: Flight) -> None: ...

    def shutdown(self) -> None: ...


def span_export(config: cfg.Config) -> SpanSink | None:
    """The OTLP span exporter when ``[tracing] otlp_endpoint`` is set; imports OTel only then."""
    if config.tracing.otlp_endpoint is None:
        return None
    try:
        from actorproxy import otel
    except ImportError as exc:
        raise cfg.ConfigError(
            f"{config.source}: tracing.otlp_endpoint needs the otel extra "
            f"(pip install 'actorproxy[otel]'): {exc}"
        ) from None
    return otel.SpanExport(config.tracing, {p.name: p.kind for p in config.providers})


def snapshot(ops: Ops, *, recent: bool = True) -> dict[str, Any]:
    """Every actor's ``statistics()`` with its request totals, and the last requests."""
    providers = []
    for name, actor in ops.actors.items():
        entry = asdict(actor.statistics())
        entry.update(asdict(ops.stats.provider_view(name)))
        providers.append(entry)
    body: dict[str, Any] = {
        "ts": time.time(),
        "providers": providers,
        "logger": asdict(ops.logger.statistics()),
    }
    if recent:
        body["recent"] = [asdict(item) for item in reversed(ops.stats.recent)]
    return body
