"""Operational events as structured log lines: actor state and breaker changes, failed requests.

Each actor's ``state`` is read every ``WATCH_INTERVAL_S`` (``watch``) and
each change becomes one JSON line on stderr (``logs.JsonFormatter``); the hot path pays nothing.
Breaker changes are not polled: the provider actor logs each transition as it happens, with its
reason (``breaker changed``), so none is missed between two looks. ``changes`` is the pure part:
two snapshots in, the events out. A log line never holds a body or a key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from actorproxy.flight import Flight
from actorproxy.ops import Ops

log = logging.getLogger("actorproxy.events")

WATCH_INTERVAL_S = 0.25


@dataclass(frozen=True, slots=True)
class Seen:
    """What ``watch`` compares between two looks at one actor."""

    state: str


@dataclass(frozen=True, slots=True)
class Change:
    event: str
    actor: str
    before: str
    after: str


def look(ops: Ops) -> dict[str, Seen]:
    seen = {name: Seen(actor.state) for name, actor in ops.actors.items()}
    seen["logger"] = Seen(ops.logger.state)
    return seen


def changes(before: Mapping[str, Seen], after: Mapping[str, Seen]) -> list[Change]:
    """The state changes from ``before`` to ``after`` (actors in both)."""
    found = []
    for name, now in after.items():
        then = before.get(name)
        if then is None:
            continue
        if then.state != now.state:
            found.append(Change("actor state changed", name, then.state, now.state))
    return found


async def watch(
    ops: Ops,
    interval_s: float = WATCH_INTERVAL_S,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Log each change of an actor's state until cancelled."""
    before = look(ops)
    task_status.started()
    while True:
        await trio.sleep(interval_s)
        after = look(ops)
        for change in changes(before, after):
            level = logging.WARNING if change.after in ("failed", "restarting") else logging.INFO
            log.log(
                level,
                change.event,
                extra={"actor": change.actor, "from": change.before, "to": change.after},
            )
        before = after


def log_failure(flight: Flight) -> None:
    """One line for a request that ended in a server-side error (5xx): ids and types only."""
    if flight.status < 500:
        return
    target = flight.target
    log.warning(
        "request failed",
        extra={
            "request_id": flight.request_id,
            "trace_id": flight.trace_id,
            "endpoint": flight.endpoint,
            "provider": target.provider if target is not None else None,
            "status": flight.status,
            "error_type": flight.error.type if flight.error is not None else None,
            "attempts": len(flight.attempts),
        },
    )
