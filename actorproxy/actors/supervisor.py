"""The supervisor: starts every actor, restarts those that raise, escalates when they keep failing.

An actor is anything with ``name``, ``state``, ``restarts`` and a restartable
``run(*, task_status)``. A crash (any ``Exception``) is logged and counted; the actor is started
again after an exponential backoff. More than ``max_restarts`` crashes of one actor within
``window_s`` seconds escalate: the supervisor raises ``SupervisorGaveUp`` and the runtime stops,
so an orchestrator sees the process fail instead of a gateway that silently serves errors.
``Cancelled`` and ``KeyboardInterrupt`` always propagate.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import trio

log = logging.getLogger("actorproxy.supervisor")


class Actor(Protocol):
    name: str
    state: Any
    restarts: int

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...


class SupervisorGaveUp(Exception):
    """An actor crashed more often than the restart intensity allows."""


class Supervisor:
    def __init__(
        self,
        actors: Sequence[Actor],
        *,
        max_restarts: int = 10,
        window_s: float = 60.0,
        backoff_s: tuple[float, float] = (0.01, 2.0),
    ) -> None:
        self.actors = list(actors)
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._backoff_min, self._backoff_max = backoff_s
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every actor (in order), report ready, then supervise until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for actor in self.actors:
                await nursery.start(self._supervise, actor)
            task_status.started()

    async def start(self, actor: Actor) -> None:
        """Start supervising one more actor (a config reload); returns once it runs."""
        if self._nursery is None:
            raise RuntimeError("the supervisor is not running")
        self.actors.append(actor)
        await self._nursery.start(self._supervise, actor)

    async def _supervise(
        self, actor: Actor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await _run_once(actor, task_status, first=True)  # a failure to start escalates at once
        crashes: deque[float] = deque()
        while actor.state != "stopped":
            now = trio.current_time()
            crashes.append(now)
            while crashes and now - crashes[0] > self._window_s:
                crashes.popleft()
            if len(crashes) > self._max_restarts:
                actor.state = "failed"
                log.error("actor gave up", extra={"actor": actor.name, "crashes": len(crashes)})
                raise SupervisorGaveUp(f"actor {actor.name!r} crashed {len(crashes)} times")
            actor.state = "restarting"
            delay = min(self._backoff_max, self._backoff_min * 2 ** (len(crashes) - 1))
            await trio.sleep(delay)
            actor.restarts += 1
            log.warning("actor restarted", extra={"actor": actor.name, "restarts": actor.restarts})
            await _run_once(actor, trio.TASK_STATUS_IGNORED, first=False)


class _Started:
    """Forwards ``started()`` and remembers that it happened."""

    def __init__(self, inner: trio.TaskStatus[None]) -> None:
        self._inner = inner
        self.done = False

    def started(self, value: None = None) -> None:
        self.done = True
        self._inner.started(value)


async def _run_once(actor: Actor, task_status: trio.TaskStatus[None], *, first: bool) -> None:
    """Run ``actor`` until it returns (stopped) or crashes (logged, state left for the caller).

    On the first run, a crash before ``started()`` propagates: the tree never came up.
    """
    status = _Started(task_status)
    try:
        await actor.run(task_status=status)
        actor.state = "stopped"
    except Exception:
        if first and not status.done:
            raise
        log.exception("actor crashed", extra={"actor": actor.name})
        actor.state = "restarting"
