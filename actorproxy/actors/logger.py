"""The logger actor: the single consumer of request records.

Handlers hand it one ``RequestRecord`` per request with ``submit()``; it never blocks a handler
for long (a bounded mailbox). This first version counts records and keeps the last ones for the
admin view; the dataset writer (Arrow IPC segments compacted to Parquet) plugs in behind ``run()``.
On cancellation it drains what is already in the mailbox before returning.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import trio

from actorproxy.schema.records import RequestRecord

ActorState = Literal["starting", "running", "restarting", "failed", "stopped"]


@dataclass(frozen=True, slots=True)
class LoggerStats:
    state: ActorState
    queued: int
    received: int
    dropped: int
    restarts: int


class LoggerActor:
    name = "logger"

    def __init__(self, *, queue_size: int, keep_last: int = 100) -> None:
        self._outbox, self._inbox = trio.open_memory_channel[RequestRecord](queue_size)
        self.state: ActorState = "starting"
        self.restarts = 0
        self._received = 0
        self._dropped = 0
        self.recent: deque[RequestRecord] = deque(maxlen=keep_last)

    def submit(self, record: RequestRecord) -> None:
        """Queue ``record``; counted as dropped if the mailbox is full."""
        try:
            self._outbox.send_nowait(record)
        except trio.WouldBlock:
            self._dropped += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.state = "running"
        task_status.started()
        async for record in self._inbox:
            self._take(record)

    def _take(self, record: RequestRecord) -> None:
        self._received += 1
        self.recent.append(record)

    def statistics(self) -> LoggerStats:
        queued = self._inbox.statistics().current_buffer_used
        return LoggerStats(self.state, queued, self._received, self._dropped, self.restarts)
