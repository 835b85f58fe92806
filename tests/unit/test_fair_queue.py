"""The fair queue: round-robin across keys, FIFO within a key, bounded, deadlines.

A stateful test compares it with a plain-list model after every operation; property tests check
the fair share among contending keys and the ``ahead`` count against what ``pop`` really does.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actorproxy.limits.fair_queue import FairQueue, QueueStats

INF = math.inf


class Item:
    """A queued envelope: hashable by identity, like the actor's ``Call``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def drain(queue: FairQueue[str, Item]) -> list[str]:
    names = []
    while (popped := queue.pop()) is not None:
        names.append(popped[1].name)
    return names


def filled(pushes: list[tuple[str, str]], capacity: int = 100) -> FairQueue[str, Item]:
    queue: FairQueue[str, Item] = FairQueue(capacity)
    for key, name in pushes:
        assert queue.push(key, Item(name), INF)
    return queue


def test_round_robin_across_keys_and_fifo_within_a_key() -> None:
    queue = filled([("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1"), ("c", "c1"), ("b", "b2")])
    assert drain(queue) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_a_key_that_becomes_active_joins_at_the_back() -> None:
    queue = filled([("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")])
    popped = queue.pop()
    assert popped is not None and popped[1].name == "a1"
    assert queue.push("c", Item("c1"), INF)
    assert drain(queue) == ["b1", "a2", "c1", "b2"]


def test_peek_shows_what_pop_takes() -> None:
    queue = filled([("a", "a1"), ("b", "b1")])
    first = queue.peek()
    assert first is not None and first == queue.pop()
    assert queue.peek() == queue.pop()
    assert queue.peek() is None and queue.pop() is None


def test_a_full_queue_refuses_and_capacity_zero_is_no_queue() -> None:
    queue = filled([("a", "a1"), ("b", "b1")], capacity=2)
    assert not queue.push("c", Item("c1"), INF)
    assert len(queue) == 2 and queue.statistics() == QueueStats(2, 2, 2, INF)
    queue.pop()
    assert queue.push("c", Item("c1"), INF)
    empty: FairQueue[str, Item] = FairQueue(0)
    assert not empty.push("a", Item("a1"), INF)
    with pytest.raises(ValueError, match="negative"):
        FairQueue[str, Item](-1)


def test_an_item_is_queued_once() -> None:
    queue: FairQueue[str, Item] = FairQueue(10)
    item = Item("x")
    assert queue.push("a", item, INF)
    with pytest.raises(ValueError, match="already queued"):
        queue.push("b", item, INF)


def test_removed_items_are_never_popped() -> None:
    items = {name: Item(name) for name in ("a1", "a2", "a3", "b1")}
    queue: FairQueue[str, Item] = FairQueue(10)
    for name, item in items.items():
        queue.push(name[0], item, INF)
    assert queue.remove(items["a2"]) and items["a2"] not in queue
    assert not queue.remove(items["a2"])
    assert queue.remove(items["b1"])  # b leaves the rotation
    assert queue.statistics().keys == 1 and len(queue) == 2
    assert drain(queue) == ["a1", "a3"]


def test_a_removed_head_key_rejoins_at_the_back() -> None:
    a1, b1 = Item("a1"), Item("b1")
    queue: FairQueue[str, Item] = FairQueue(10)
    queue.push("a", a1, INF)
    queue.push("b", b1, INF)
    queue.remove(a1)
    queue.push("a", Item("a2"), INF)
    assert drain(queue) == ["b1", "a2"]


def test_entries_expire_at_their_deadline_in_deadline_order() -> None:
    queue: FairQueue[str, Item] = FairQueue(10)
    queue.push("a", Item("a1"), 30.0)
    queue.push("b", Item("b1"), 10.0)
    queue.push("a", Item("a2"), 20.0)
    queue.push("c", Item("c1"), INF)
    assert queue.next_deadline() == 10.0
    assert queue.expire(9.9) == []
    assert [(k, i.name) for k, i in queue.expire(20.0)] == [("b", "b1"), ("a", "a2")]
    assert queue.next_deadline() == 30.0
    assert drain(queue) == ["a1", "c1"]
    assert queue.expire(100.0) == [] and queue.next_deadline() is None


def test_removed_entries_do_not_expire_or_hold_the_next_deadline() -> None:
    queue: FairQueue[str, Item] = FairQueue(10)
    early = Item("early")
    queue.push("a", early, 1.0)
    queue.push("a", Item("late"), 5.0)
    queue.remove(early)
    assert queue.next_deadline() == 5.0
    assert queue.expire(2.0) == []


def test_many_removals_behind_a_waiting_head_keep_memory_bounded() -> None:
    """A stalled head with short-lived entries churning behind it: the garbage is compacted."""
    queue: FairQueue[str, Item] = FairQueue(10)
    queue.push("a", Item("head"), INF)
    for i in range(5000):
        churn = Item(f"c{i}")
        queue.push("a", churn, float(i + 1))
        if i % 2:
            queue.remove(churn)
        else:
            assert [item for _, item in queue.expire(float(i + 1))] == [churn]
    assert len(queue) == 1
    assert len(queue._timers) < 200 and queue._dead < 200  # internals: the memory bound only
    assert drain(queue) == ["head"]


def test_pushing_and_popping_forever_keeps_memory_bounded() -> None:
    queue: FairQueue[str, Item] = FairQueue(10)
    for i in range(5000):
        queue.push("ab"[i % 2], Item(f"x{i}"), INF)
        assert queue.pop() is not None
    assert len(queue._timers) < 200  # internals: the memory bound only


# --- fairness ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(200, 2000), min_size=2, max_size=8), st.integers(0, 10**6))
def test_contending_keys_each_get_their_share(backlogs: list[int], seed: int) -> None:
    """Keys with backlogs of very different sizes, pushed in a random interleaving: while all are
    backlogged, each key's share of pops is 1/k (within one pop: the 10% bound with room)."""
    rng = random.Random(seed)
    pushes = [f"k{i}" for i, size in enumerate(backlogs) for _ in range(size)]
    rng.shuffle(pushes)
    queue: FairQueue[str, Item] = FairQueue(len(pushes))
    for n, key in enumerate(pushes):
        queue.push(key, Item(f"{key}-{n}"), INF)
    contended = len(backlogs) * min(backlogs)  # pops while every key still has entries
    served: Counter[str] = Counter()
    for _ in range(contended):
        popped = queue.pop()
        assert popped is not None
        served[popped[0]] += 1
    share = contended / len(backlogs)
    assert all(abs(served[f"k{i}"] - share) <= max(1, 0.1 * share) for i in range(len(backlogs)))


def test_a_flooding_key_does_not_starve_a_trickle() -> None:
    """One key fills most of the queue; two others keep one request waiting each. Every pop
    cycle serves each key once: the flood gets a third, not everything."""
    queue: FairQueue[str, Item] = FairQueue(1000)
    for i in range(900):
        queue.push("flood", Item(f"f{i}"), INF)
    queue.push("b", Item("b0"), INF)
    queue.push("c", Item("c0"), INF)
    served: Counter[str] = Counter()
    for i in range(600):
        popped = queue.pop()
        assert popped is not None
        served[popped[0]] += 1
        if popped[0] != "flood":
            queue.push(popped[0], Item(f"{popped[0]}{i}"), INF)  # the trickle refills at once
    assert all(abs(count - 200) <= 1 for count in served.values())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from("abcde"), max_size=40), st.integers(0, 20), st.sampled_from("abcdef")
)
def test_ahead_counts_the_pops_before_a_new_entry(
    keys: list[str], popped_first: int, key: str
) -> None:
    queue = filled([(k, f"{k}{n}") for n, k in enumerate(keys)])
    for _ in range(popped_first):
        queue.pop()
    ahead = queue.ahead(key)
    queue.push(key, Item("new"), INF)
    assert drain(queue).index("new") == ahead


# --- the model comparison ------------------------------------------------------------------


def pushed(item: Item) -> int:
    """The push count in a machine item's name (``"a17"``): ties between deadlines go by it."""
    return int(item.name[1:])


class Model:
    """The specification in plain lists: O(n) everything, no laziness."""

    def __init__(self) -> None:
        self.rotation: list[str] = []
        self.queues: dict[str, list[tuple[Item, float]]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def push(self, key: str, item: Item, deadline: float) -> None:
        if key not in self.queues:
            self.queues[key] = []
            self.rotation.append(key)
        self.queues[key].append((item, deadline))

    def pop(self) -> tuple[str, Item] | None:
        if not self.rotation:
            return None
        key = self.rotation.pop(0)
        item, _ = self.queues[key].pop(0)
        self._after(key, served=True)
        return key, item

    def drop(self, keep: Callable[[Item, float], bool]) -> list[tuple[str, Item]]:
        """Remove the entries ``keep`` rejects, in deadline order, then push order."""
        dropped: list[tuple[float, int, str, Item]] = []
        for key in list(self.rotation):
            entries = self.queues[key]
            dropped += [(d, pushed(i), key, i) for i, d in entries if not keep(i, d)]
            self.queues[key] = [(i, d) for i, d in entries if keep(i, d)]
            self._after(key, served=False)
        return [(key, item) for _, _, key, item in sorted(dropped, key=lambda x: x[:2])]

    def _after(self, key: str, *, served: bool) -> None:
        if not self.queues[key]:
            del self.queues[key]
            if not served:
                self.rotation.remove(key)
        elif served:
            self.rotation.append(key)


def other_than(item: Item) -> Callable[[Item, float], bool]:
    return lambda i, _: i is not item


def alive_after(now: float) -> Callable[[Item, float], bool]:
    return lambda _, deadline: deadline > now


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.queue: FairQueue[str, Item] = FairQueue(12)
        self.model = Model()
        self.now = 0.0
        self.count = 0
        self.known: list[Item] = []

    @rule(key=st.sampled_from("abcd"), wait=st.integers(1, 30))
    def push(self, key: str, wait: int) -> None:
        self.count += 1
        item = Item(f"{key}{self.count}")
        accepted = self.queue.push(key, item, self.now + wait)
        assert accepted == (len(self.model) < 12)
        if accepted:
            self.model.push(key, item, self.now + wait)
            self.known.append(item)

    @rule()
    def pop(self) -> None:
        assert self.queue.pop() == self.model.pop()

    @precondition(lambda self: self.known)
    @rule(which=st.integers(0, 10**6))
    def remove(self, which: int) -> None:
        item = self.known[which % len(self.known)]
        queued = any(i is item for q in self.model.queues.values() for i, _ in q)
        assert self.queue.remove(item) == queued
        self.model.drop(other_than(item))

    @rule(step=st.integers(0, 10))
    def expire(self, step: int) -> None:
        self.now += step
        assert self.queue.expire(self.now) == self.model.drop(alive_after(self.now))

    @invariant()
    def same_contents_and_bounded(self) -> None:
        assert len(self.queue) == len(self.model) <= 12
        stats = self.queue.statistics()
        assert stats.keys == len(self.model.rotation)
        deadlines = [d for q in self.model.queues.values() for _, d in q]
        assert stats.next_deadline == (min(deadlines) if deadlines else None)
        for key in "abcd":
            assert self.queue.queued(key) == len(self.model.queues.get(key, []))


QueueMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
test_the_queue_behaves_like_its_model = QueueMachine.TestCase


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10**6))
def test_a_long_churning_run_behaves_like_the_model(seed: int) -> None:
    """Thousands of operations, removals and expiries dominating: the garbage compaction runs
    many times and never changes what the queue does."""
    rng = random.Random(seed)
    queue: FairQueue[str, Item] = FairQueue(60)
    model, known, now = Model(), list[Item](), 0.0
    for count in range(4000):
        action = rng.random()
        if action < 0.45:
            key, deadline = rng.choice("abc"), now + rng.randint(1, 400)
            item = Item(f"{key}{count}")
            assert queue.push(key, item, deadline) == (len(model) < 60)
            if len(model) < 60:
                model.push(key, item, deadline)
                known.append(item)
        elif action < 0.75 and known:
            item = known.pop(rng.randrange(len(known)))
            expected = any(i is item for q in model.queues.values() for i, _ in q)
            assert queue.remove(item) == expected
            model.drop(other_than(item))
        elif action < 0.97:
            now += rng.randint(0, 3)
            assert queue.expire(now) == model.drop(alive_after(now))
        else:
            assert queue.pop() == model.pop()
        assert len(queue) == len(model)
    assert drain(queue) == [item.name for _, item in iter(model.pop, None)]
