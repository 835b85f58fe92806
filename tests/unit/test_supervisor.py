"""The supervisor, on trio's MockClock: restarts, backoff, escalation and cancellation."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from actorproxy.actors.supervisor import Supervisor, SupervisorGaveUp

Life = Callable[[int], Awaitable[None]]


class Boom(Exception):
    """A bug inside an actor."""


class Fatal(BaseException):
    """Not an ``Exception``: the supervisor must let it through, like ``KeyboardInterrupt``."""


class FakeActor:
    """Runs ``life(n)`` on its n-th start (1-based), after reporting ready like a real actor."""

    def __init__(self, name: str, life: Life, log: list[str] | None = None) -> None:
        self.name = name
        self.state = "starting"
        self.restarts = 0
        self.starts: list[float] = []
        self.cancelled = 0
        self._life = life
        self._log = log if log is not None else []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.starts.append(trio.current_time())
        self._log.append(self.name)
        self.state = "running"
        task_status.started()
        try:
            await self._life(len(self.starts))
        except trio.Cancelled:
            self.cancelled += 1
            raise


def crash_first(crashes: int, after_s: float = 0.0) -> Life:
    """Crash ``after_s`` into each of the first ``crashes`` runs, then run until cancelled."""

    async def life(n: int) -> None:
        await trio.sleep(after_s)
        if n <= crashes:
            raise Boom(f"run {n}")
        await trio.sleep_forever()

    return life


async def forever(n: int) -> None:
    await trio.sleep_forever()


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_starts_actors_in_order_then_reports_ready() -> None:
    log: list[str] = []
    actors = [FakeActor(name, forever, log) for name in ("a", "b", "c")]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(Supervisor(actors).run)
            assert log == ["a", "b", "c"]
            assert [actor.state for actor in actors] == ["running"] * 3
            nursery.cancel_scope.cancel()
    assert [actor.restarts for actor in actors] == [0, 0, 0]


async def test_restarts_with_exponential_backoff(autojump_clock: trio.testing.MockClock) -> None:
    actor = FakeActor("flaky", crash_first(12))
    supervisor = Supervisor([actor], max_restarts=20, backoff_s=(0.01, 2.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    expected = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.0, 2.0, 2.0, 2.0]
    assert gaps(actor.starts) == pytest.approx(expected)
    assert actor.restarts == 12
    assert actor.state == "running"


async def test_state_while_waiting_to_restart(autojump_clock: trio.testing.MockClock) -> None:
    actor = FakeActor("flaky", crash_first(1, after_s=10.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor([actor], backoff_s=(1.0, 8.0)).run)
        start = trio.current_time()
        await trio.sleep(10.5)
        assert (actor.state, actor.restarts) == ("restarting", 0)
        await trio.sleep(1.0)
        assert (actor.state, actor.restarts) == ("running", 1)
        assert actor.starts == [start, start + 11.0]
        nursery.cancel_scope.cancel()


async def test_escalates_after_more_than_max_restarts_in_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = FakeActor("flaky", crash_first(1000))
    steady = FakeActor("steady", forever)
    supervisor = Supervisor([steady, flaky], max_restarts=3, window_s=60.0)
    gave_up = pytest.RaisesExc(SupervisorGaveUp, match="^actor 'flaky' crashed 4 times$")
    with pytest.RaisesGroup(gave_up, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            await trio.sleep_forever()
    assert (flaky.state, flaky.restarts, len(flaky.starts)) == ("failed", 3, 4)
    assert (steady.restarts, steady.cancelled) == (0, 1)  # the rest of the tree is cancelled


async def test_max_restarts_crashes_in_window_do_not_escalate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = FakeActor("flaky", crash_first(3))
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor([actor], max_restarts=3, window_s=60.0).run)
        await trio.sleep(30)
        assert (actor.state, actor.restarts) == ("running", 3)
        nursery.cancel_scope.cancel()


async def test_crashes_spread_beyond_the_window_do_not_escalate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def life(n: int) -> None:
        await trio.sleep(11.0)
        if n <= 5:
            raise Boom(f"run {n}")

    actor = FakeActor("slowly-flaky", life)
    await Supervisor([actor], max_restarts=2, window_s=10.0, backoff_s=(0.01, 2.0)).run()
    assert (actor.state, actor.restarts) == ("stopped", 5)
    # Each crash is alone in its window, so the backoff stays at its minimum.
    assert gaps(actor.starts) == pytest.approx([11.01] * 5)


async def test_a_failure_before_the_first_start_propagates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Broken(FakeActor):
        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            self.starts.append(trio.current_time())
            raise Boom("cannot start")

    broken = Broken("broken", forever)
    after = FakeActor("after", forever)
    with pytest.RaisesGroup(Boom, allow_unwrapped=True, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(Supervisor([broken, after]).run)
    assert (broken.restarts, len(broken.starts)) == (0, 1)
    assert after.starts == []


async def test_a_failure_before_started_propagates_whatever_the_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class LateBroken(FakeActor):
        async def run(
            self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            self.starts.append(trio.current_time())
            self.state = "running"
            if len(self.starts) == 1:
                raise Boom("setup failed after the state was set")
            task_status.started()
            await trio.sleep_forever()

    actor = LateBroken("late", forever)
    with pytest.RaisesGroup(Boom, allow_unwrapped=True, flatten_subgroups=True):
        with trio.fail_after(
            100
        ):  # today: TooSlowError, start() waits for a ready that never comes
            async with trio.open_nursery() as nursery:
                await nursery.start(Supervisor([actor]).run)
                nursery.cancel_scope.cancel()


async def test_cancellation_stops_every_actor_without_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    steady = FakeActor("steady", forever)
    flaky = FakeActor("flaky", crash_first(1, after_s=5.0))
    supervisor = Supervisor([steady, flaky], backoff_s=(10.0, 10.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(6.0)  # flaky crashed at 5 s and waits to restart at 15 s
        assert flaky.state == "restarting"
        nursery.cancel_scope.cancel()
    assert (steady.cancelled, steady.restarts) == (1, 0)
    assert (flaky.cancelled, flaky.restarts, len(flaky.starts)) == (0, 0, 1)
    await trio.sleep(100)
    assert len(flaky.starts) == 1


async def test_cancelled_inside_an_actor_is_not_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = FakeActor("a", forever)
    with trio.move_on_after(5.0) as scope:
        await Supervisor([actor]).run()
    assert scope.cancelled_caught
    assert (actor.cancelled, actor.restarts, actor.state) == (1, 0, "running")


async def test_a_base_exception_is_not_caught(autojump_clock: trio.testing.MockClock) -> None:
    async def life(n: int) -> None:
        await trio.sleep(1.0)
        raise Fatal

    actor = FakeActor("fatal", life)
    with pytest.RaisesGroup(Fatal, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(Supervisor([actor]).run)
    assert (actor.restarts, len(actor.starts)) == (0, 1)


async def test_an_actor_that_returns_is_stopped_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def returns(n: int) -> None:
        await trio.sleep(1.0)

    done = FakeActor("done", returns)
    steady = FakeActor("steady", forever)
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor([done, steady]).run)
        await trio.sleep(1000)
        assert (done.state, done.restarts, len(done.starts)) == ("stopped", 0, 1)
        assert steady.state == "running"
        nursery.cancel_scope.cancel()


async def test_run_returns_once_every_actor_has_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def returns(n: int) -> None:
        await trio.sleep(float(n))

    actors = [FakeActor("a", returns), FakeActor("b", returns)]
    await Supervisor(actors).run()
    assert [actor.state for actor in actors] == ["stopped", "stopped"]
