"""Config reload without a restart: ``POST /admin/reload`` and ``SIGHUP``.

The config file is read again (in a worker thread) and checked; a bad file changes nothing.
``plan`` (pure) compares the providers of the two configs by value:

- an added provider gets a new actor, started under the supervisor before any route names it;
- a changed provider gets a new actor, swapped into the live ``actors`` mapping, then the old
  one is stopped: it takes no new calls, finishes what it queued and holds, and its upstream pool
  is closed after that; no request in flight is cancelled;
- a removed provider's actor is stopped the same way;
- unchanged providers keep their actors, limiters, breakers and pools.

Models (routes) and metric labels follow the new config at once. What a reload cannot change
(``[server]``, ``[auth]``, ``[routing]``, ``[prices]``, ``[key_limits]``, ``[dataset]``,
``[logging]``, ``[tracing]``) is reported as needing a
restart and keeps its old value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

import trio

from actorproxy import config as cfg
from actorproxy.actors.provider import ProviderActor
from actorproxy.actors.supervisor import Supervisor
from actorproxy.routing import Router
from actorproxy.telemetry import RequestStats

log = logging.getLogger("actorproxy.reload")

FIXED = ("server", "auth", "routing", "prices", "key_limits", "dataset", "logging", "tracing")


@dataclass(frozen=True, slots=True)
class Plan:
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: list[str]
    needs_restart: list[str]


def plan(old: cfg.Config, new: cfg.Config) -> Plan:
    """What a reload from ``old`` to ``new`` does, provider by provider."""
    before = {p.name: p for p in old.providers}
    after = {p.name: p for p in new.providers}
    return Plan(
        added=[name for name in after if name not in before],
        changed=[name for name in after if name in before and before[name] != after[name]],
        removed=[name for name in before if name not in after],
        unchanged=[name for name in after if name in before and before[name] == after[name]],
        needs_restart=[key for key in FIXED if getattr(old, key) != getattr(new, key)],
    )


class Reloader:
    """Applies a new config to the live actor tree (see the module doc)."""

    def __init__(
        self,
        config: cfg.Config,
        *,
        actors: MutableMapping[str, ProviderActor],
        build: Callable[[cfg.ProviderConfig], ProviderActor],
        supervisor: Supervisor,
        router: Router,
        stats: RequestStats,
    ) -> None:
        self.config = config
        self._actors = actors
        self._build = build
        self._supervisor = supervisor
        self._router = router
        self._stats = stats
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the tasks that drain replaced actors; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def reload(self) -> Plan:
        """Read the config file again and apply it; ``cfg.ConfigError`` leaves everything as is."""
        source = self.config.source
        if source.startswith("<"):
            raise cfg.ConfigError(f"{source}: this config was not read from a file")
        async with self._lock:
            new = await trio.to_thread.run_sync(cfg.load, source)
            done = plan(self.config, new)
            await self._apply(new, done)
            self.config = new
        log.info(
            "config reloaded",
            extra={
                "source": source,
                "added": done.added,
                "changed": done.changed,
                "removed": done.removed,
                "needs_restart": done.needs_restart,
            },
        )
        return done

    async def _apply(self, new: cfg.Config, done: Plan) -> None:
        providers = {p.name: p for p in new.providers}
        replaced = [self._actors[name] for name in (*done.changed, *done.removed)]
        started = {}
        for name in (*done.added, *done.changed):
            actor = self._build(providers[name])
            await self._supervisor.start(actor)
            started[name] = actor
        self._actors.update(started)
        for name in done.removed:
            del self._actors[name]
        self._router.reconfigure(new)
        self._stats.reconfigure(model_labels(new), list(providers))
        for actor in replaced:
            actor.stop()
            if self._nursery is not None:
                self._nursery.start_soon(_close_when_drained, actor)


def model_labels(config: cfg.Config) -> list[str]:
    """The names ``/metrics`` may use as a ``model`` label: aliases and their targets."""
    return [name for model in config.models for name in (model.name, *model.targets)]


async def _close_when_drained(actor: ProviderActor) -> None:
    await actor.wait_drained()
    await actor.aclose()
    log.info("replaced actor drained", extra={"actor": actor.name})
