"""The logger actor: the single writer of the research dataset.

Handlers hand it one ``Exchange`` per request with ``submit()``. It batches them (``batch_size``
records or ``flush_interval_s`` after the first one, whichever comes first) and hands each batch
to a ``Sink`` in a worker thread (``trio.to_thread``): the event loop never touches the disk.
A batch goes to the thread in slices of at most ``slice_size`` records, one ``Sink.write`` each:
the sink's Python work (parsing, redaction, building columns) holds the GIL, and between two
slices the event loop gets it back, so a large batch never stalls requests for long.

Backpressure: with ``on_full = "block"`` (the default) a full mailbox makes ``submit()`` wait, so
a stalled disk slows requests down and nothing is ever dropped. With ``"drop"`` a full mailbox
drops the record, counts it, and the count travels with the next batch (``Sink.write``).

A sink that fails (disk full, permission) is retried with backoff, keeping the batch in memory;
meanwhile the mailbox fills and backpressure applies. Cancellation: ``stop()`` closes the mailbox,
the actor drains it, writes the last batch and closes the sink (its open segment is compacted);
a plain cancel (crash of the process' root) loses at most the batch being collected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

import trio

from actorproxy.schema.records import Exchange
from actorproxy.storage.sink import SinkStats

log = logging.getLogger("actorproxy.logger")

#: A batch is written once its bodies reach this size, whatever its count (Arrow's string
#: columns hold at most 2 GiB).
MAX_BATCH_BYTES = 256 * 1024 * 1024

ActorState = Literal["starting", "running", "restarting", "failed", "stopped"]
OnFull = Literal["block", "drop"]


class Sink(Protocol):
    """Synchronous storage, called from one worker thread at a time."""

    def write(self, records: list[Exchange], dropped: int) -> None: ...

    def tick(self) -> None:
        """Nothing came for ``idle_tick_s``: time-based housekeeping (segment rotation)."""
        ...

    def close(self) -> None: ...

    def statistics(self) -> SinkStats:
        """Bytes and files written so far; read from the event loop between writes."""
        ...


@dataclass(frozen=True, slots=True)
class LoggerStats:
    state: ActorState
    queued: int
    received: int
    written: int
    dropped: int
    batches: int
    write_errors: int
    restarts: int
    sink: SinkStats  # what reached the disk (no dataset dir: all zero)


@dataclass(frozen=True, slots=True)
class Batching:
    """When a batch is written: ``batch_size`` records or ``flush_interval_s`` after its first.

    ``slice_size``: at most this many records per ``Sink.write`` (see the module doc).
    ``idle_tick_s``: how often a quiet logger lets the sink rotate an aged segment.
    """

    batch_size: int = 1000
    flush_interval_s: float = 0.2
    idle_tick_s: float = 10.0
    slice_size: int = 128


class LoggerActor:
    name = "logger"

    def __init__(
        self,
        *,
        sink: Sink | None,
        queue_size: int,
        on_full: OnFull = "block",
        batching: Batching = Batching(),
    ) -> None:
        self._sink = sink
        self._outbox, self._inbox = trio.open_memory_channel[Exchange](queue_size)
        self._on_full = on_full
        self._batch_size = batching.batch_size
        self._flush_interval_s = batching.flush_interval_s
        self.state: ActorState = "starting"
        self.restarts = 0
        self._received = self._written = self._dropped = self._unreported = 0
        self._batches = self._errors = 0
        self._pending: list[Exchange] = []
        self._stopped = trio.Event()
        self._idle_tick_s = batching.idle_tick_s
        self._pending_bytes = 0
        self._slice_size = batching.slice_size

    async def submit(self, record: Exchange) -> None:
        """Queue ``record``: waits when full in ``block`` mode, drops and counts in ``drop``."""
        try:
            self._outbox.send_nowait(record)
        except trio.WouldBlock:
            if self._on_full == "drop":
                self._dropped += 1
                self._unreported += 1
                return
            await self._outbox.send(record)
        except trio.ClosedResourceError:
            log.error("record after shutdown", extra={"request_id": record.request_id})

    async def stop(self) -> None:
        """No more records: ``run()`` drains the mailbox, writes, closes the sink and returns."""
        self._outbox.close()
        await self._stopped.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.state = "running"
        task_status.started()
        try:
            while await self._collect():
                await self._flush()
            await self._flush()
        finally:
            with trio.CancelScope(shield=True):
                await self._close_sink()
        self._stopped.set()

    async def _collect(self) -> bool:
        """Fill ``_pending`` with one batch; False once the mailbox is closed and drained."""
        while not self._pending:
            with trio.move_on_after(self._idle_tick_s) as idle:
                try:
                    self._take(await self._inbox.receive())
                except trio.EndOfChannel:
                    return False
            if idle.cancelled_caught and self._sink is not None:
                await trio.to_thread.run_sync(self._sink.tick)
        with trio.move_on_after(self._flush_interval_s):
            while len(self._pending) < self._batch_size and self._pending_bytes < MAX_BATCH_BYTES:
                try:
                    self._take(await self._inbox.receive())
                except trio.EndOfChannel:
                    return False
        return True

    def _take(self, record: Exchange) -> None:
        self._received += 1
        self._pending.append(record)
        self._pending_bytes += len(record.request_body) + len(record.response_body)
        self._pending_bytes += sum(map(len, record.chunks))

    async def _flush(self) -> None:
        """Write ``_pending`` slice by slice; the drop count travels with the first slice."""
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        for start in range(0, len(batch), self._slice_size):
            piece = batch[start : start + self._slice_size]
            dropped = self._unreported
            await self._write(piece, dropped)
            self._unreported -= dropped
            self._written += len(piece)
            self._batches += 1

    async def _write(self, piece: list[Exchange], dropped: int) -> None:
        """Hand ``piece`` to the sink; an ``OSError`` (disk full) is retried with backoff."""
        delay = 0.05
        while self._sink is not None:
            try:
                await trio.to_thread.run_sync(self._sink.write, piece, dropped)
                return
            except OSError:
                self._errors += 1
                log.exception("dataset write failed; retrying", extra={"records": len(piece)})
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _close_sink(self) -> None:
        if self._sink is not None:
            try:
                await trio.to_thread.run_sync(self._sink.close)
            except OSError:
                log.exception("closing the dataset failed")

    def statistics(self) -> LoggerStats:
        return LoggerStats(
            state=self.state,
            queued=self._inbox.statistics().current_buffer_used,
            received=self._received,
            written=self._written,
            dropped=self._dropped,
            batches=self._batches,
            write_errors=self._errors,
            restarts=self.restarts,
            sink=self._sink.statistics() if self._sink is not None else SinkStats(),
        )
