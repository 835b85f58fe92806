"""The logger actor: batching, backpressure modes, failing sinks and draining on stop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio
import trio.testing

from actorproxy.actors.logger import Batching, LoggerActor
from actorproxy.schema.records import Exchange
from actorproxy.storage.sink import SinkStats


def record(n: int) -> Exchange:
    return Exchange(
        request_id=f"r{n}",
        trace_id=None,
        ts_start=0.0,
        ts_end=0.0,
        replica="t",
        endpoint="chat",
        api_key_id="k",
        log_bodies=True,
        model_requested="m",
        provider="p",
        upstream_model="m",
        stream=False,
        status_code=200,
        error_type=None,
        latency_ms=1.0,
        upstream_ms=1.0,
        queue_ms=0.0,
        ttft_ms=None,
        request_body=b"{}",
        response_body=b"{}",
        chunks=[],
        chunk_offsets_ms=[],
        attempts=[],
    )


class Sink:
    def __init__(self) -> None:
        self.batches: list[tuple[list[str], int]] = []
        self.gate = trio.Event()
        self.gate.set()
        self.fail_next = 0
        self.ticks = 0
        self.closed = False

    def write(self, records: list[Exchange], dropped: int) -> None:
        trio.from_thread.run(self.gate.wait)
        if self.fail_next:
            self.fail_next -= 1
            raise OSError(28, "No space left on device")
        self.batches.append(([r.request_id for r in records], dropped))

    def tick(self) -> None:
        self.ticks += 1

    def close(self) -> None:
        self.closed = True

    def statistics(self) -> SinkStats:
        return SinkStats(segment_bytes=len(self.ids()))

    def ids(self) -> list[str]:
        return [i for ids, _ in self.batches for i in ids]


@asynccontextmanager
async def running(actor: LoggerActor) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        yield
        nursery.cancel_scope.cancel()


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.005)


async def test_batches_by_count_and_time() -> None:
    sink = Sink()
    actor = LoggerActor(
        sink=sink, queue_size=100, batching=Batching(batch_size=3, flush_interval_s=0.05)
    )
    with trio.fail_after(10):
        async with running(actor):
            for n in range(4):
                await actor.submit(record(n))
            await until(lambda: len(sink.ids()) == 4)
    assert [ids for ids, _ in sink.batches] == [["r0", "r1", "r2"], ["r3"]]
    assert actor.statistics().written == 4


async def test_a_batch_goes_to_the_sink_in_slices_in_order() -> None:
    sink = Sink()
    actor = LoggerActor(
        sink=sink,
        queue_size=100,
        batching=Batching(batch_size=7, flush_interval_s=60, slice_size=3),
    )
    with trio.fail_after(10):
        async with running(actor):
            for n in range(7):
                await actor.submit(record(n))
            await until(lambda: len(sink.ids()) == 7)
    assert [ids for ids, _ in sink.batches] == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]
    stats = actor.statistics()
    assert (stats.written, stats.batches) == (7, 3)


async def test_block_mode_waits_and_loses_nothing() -> None:
    sink = Sink()
    sink.gate = trio.Event()  # the disk stalls
    actor = LoggerActor(
        sink=sink, queue_size=2, batching=Batching(batch_size=1, flush_interval_s=0.01)
    )
    with trio.fail_after(10):
        async with running(actor):
            async with trio.open_nursery() as producers:
                for n in range(6):
                    producers.start_soon(actor.submit, record(n))
                await trio.testing.wait_all_tasks_blocked(0.05)
                assert actor.statistics().queued == 2  # and the rest wait in submit()
                sink.gate.set()
            await actor.stop()
    assert sorted(sink.ids()) == [f"r{n}" for n in range(6)]
    assert actor.statistics().dropped == 0 and sink.closed


async def test_drop_mode_counts_and_reports_drops_with_the_next_batch() -> None:
    sink = Sink()
    sink.gate = trio.Event()
    actor = LoggerActor(
        sink=sink,
        queue_size=2,
        on_full="drop",
        batching=Batching(batch_size=1, flush_interval_s=0.01),
    )
    with trio.fail_after(10):
        async with running(actor):
            await actor.submit(record(0))
            await trio.testing.wait_all_tasks_blocked(0.05)  # r0 is being written (stalled)
            for n in range(1, 6):
                await actor.submit(record(n))  # r1, r2 fit; r3..r5 are dropped
            sink.gate.set()
            await actor.stop()
    assert actor.statistics().dropped == 3
    assert sink.batches[0] == (["r0"], 0)
    assert sum(dropped for _, dropped in sink.batches) == 3
    assert sink.ids() == ["r0", "r1", "r2"]


async def test_a_failing_disk_is_retried_with_the_batch_kept() -> None:
    sink = Sink()
    sink.fail_next = 3
    actor = LoggerActor(
        sink=sink, queue_size=10, batching=Batching(batch_size=10, flush_interval_s=0.01)
    )
    with trio.fail_after(10):
        async with running(actor):
            await actor.submit(record(0))
            await until(lambda: bool(sink.ids()))
    assert sink.ids() == ["r0"]
    assert actor.statistics().write_errors == 3


async def test_idle_logger_ticks_the_sink() -> None:
    sink = Sink()
    actor = LoggerActor(sink=sink, queue_size=10, batching=Batching(idle_tick_s=0.02))
    with trio.fail_after(10):
        async with running(actor):
            await until(lambda: sink.ticks >= 3)
            await actor.submit(record(0))
            await until(lambda: bool(sink.ids()))
    assert sink.ticks >= 3


async def test_stop_drains_the_mailbox() -> None:
    sink = Sink()
    actor = LoggerActor(
        sink=sink, queue_size=100, batching=Batching(batch_size=1000, flush_interval_s=60)
    )
    with trio.fail_after(10):
        async with running(actor):
            for n in range(50):
                await actor.submit(record(n))
            await actor.stop()
            await actor.submit(record(99))  # after shutdown: logged, not written
    assert len(sink.ids()) == 50 and sink.closed
