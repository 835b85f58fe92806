"""A bounded fair queue: round-robin across keys, FIFO within a key, a deadline per entry.

Pure: no clock; ``expire(now)`` takes the time. Keys are API key ids; items are the caller's
envelopes (hashable by identity, e.g. ``eq=False`` dataclasses), each queued at most once.

Order. ``pop`` serves the active keys (those with entries) in a rotation: it takes the oldest
entry of the key at the head of the rotation and moves that key to the back. A key that becomes
active joins at the back. So among keys that stay backlogged each gets every k-th pop (k active
keys), whatever their arrival rates; within a key, entries leave in push order.

Bounds. At most ``capacity`` entries are queued: ``push`` answers ``False`` when full (the caller
answers 429). An entry whose deadline has come (``now >= deadline``) is returned by
``expire(now)`` and never popped afterwards.

Cost: ``push`` O(log n), ``pop`` and ``peek`` O(1) amortised, ``expire`` O(log n) per entry it
returns, ``remove`` O(1) amortised (O(active keys) when it empties a key), ``ahead`` O(active
keys). Removed and expired entries are dropped lazily and compacted once they outnumber the live
ones, so memory stays O(capacity).

Admitting within a deadline: ``ahead(key)`` counts the pops a new entry of ``key`` would wait
for; ``RateLimiter.ready_at(now, tokens, ahead=queue.ahead(key))`` is then a lower bound on its
admission time, so if it is at or past the deadline the request can be refused at once (429
with ``retry-after``) instead of waiting to expire.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T", bound=Hashable)

_COMPACT_SLACK = 64


@dataclass(eq=False, slots=True)
class _Entry(Generic[K, T]):
    key: K
    item: T
    deadline: float
    live: bool = True


@dataclass(order=True, frozen=True, slots=True)
class _Timer(Generic[K, T]):
    deadline: float
    seq: int
    entry: _Entry[K, T] = field(compare=False)


@dataclass(frozen=True, slots=True)
class QueueStats:
    capacity: int
    queued: int
    keys: int  # keys with at least one queued entry
    next_deadline: float | None


class FairQueue(Generic[K, T]):
    """Round-robin across keys, FIFO within a key, at most ``capacity`` entries (0: no queue)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("FairQueue: capacity must not be negative")
        self.capacity = capacity
        self._queues: dict[K, deque[_Entry[K, T]]] = {}  # the active keys only
        self._live: dict[K, int] = {}  # live entries per active key
        self._rotation: deque[K] = deque()  # the active keys, next to serve first
        self._entries: dict[T, _Entry[K, T]] = {}  # the live entries by item
        self._timers: list[_Timer[K, T]] = []
        self._seq = itertools.count()
        self._dead = 0  # dead entries still in the per-key deques

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item: T) -> bool:
        return item in self._entries

    def push(self, key: K, item: T, deadline: float) -> bool:
        """Queue ``item`` for ``key`` until ``deadline``; ``False`` (nothing queued) when full."""
        if item in self._entries:
            raise ValueError("the item is already queued")
        if len(self._entries) >= self.capacity:
            return False
        entry = _Entry(key, item, deadline)
        self._entries[item] = entry
        heapq.heappush(self._timers, _Timer(deadline, next(self._seq), entry))
        if key not in self._queues:
            self._queues[key] = deque()
            self._live[key] = 0
            self._rotation.append(key)
        self._queues[key].append(entry)
        self._live[key] += 1
        return True

    def peek(self) -> tuple[K, T] | None:
        """What ``pop`` would return, without taking it (to check the limiter first)."""
        entry = self._head()
        return None if entry is None else (entry.key, entry.item)

    def pop(self) -> tuple[K, T] | None:
        """Take the next entry in round-robin order, or ``None`` when empty."""
        entry = self._head()
        if entry is None:
            return None
        key = entry.key
        self._queues[key].popleft()
        self._kill(entry, queued=False)
        if key in self._queues:
            self._rotation.rotate(-1)  # served: to the back
        self._compact()  # its timer stays in the heap until then
        return key, entry.item

    def remove(self, item: T) -> bool:
        """Drop ``item`` (its client left); ``False`` if it is not queued (any more)."""
        entry = self._entries.get(item)
        if entry is None:
            return False
        self._kill(entry, queued=True)
        self._compact()
        return True

    def expire(self, now: float) -> list[tuple[K, T]]:
        """Drop and return the entries whose deadline has come (``deadline <= now``), oldest
        deadline first."""
        expired: list[tuple[K, T]] = []
        while self._timers and self._timers[0].deadline <= now:
            entry = heapq.heappop(self._timers).entry
            if entry.live:
                self._kill(entry, queued=True)
                expired.append((entry.key, entry.item))
        self._compact()
        return expired

    def next_deadline(self) -> float | None:
        """The earliest deadline of a queued entry (when to call ``expire`` next)."""
        while self._timers and not self._timers[0].entry.live:
            heapq.heappop(self._timers)
        return self._timers[0].deadline if self._timers else None

    def queued(self, key: K) -> int:
        return self._live.get(key, 0)

    def ahead(self, key: K) -> int:
        """How many pops come before an entry pushed now for ``key``, if no other arrives.

        The new entry is ``key``'s (p+1)-th, p = its entries queued; it is served in the
        (p+1)-th round. A key before ``key`` in the rotation is served up to p+1 times before
        it, a key after it up to p times. Later arrivals of other keys can only add to this.
        """
        mine = self._live.get(key, 0)
        total, before = mine, True
        for other in self._rotation:
            if other == key:
                before = False
            else:
                total += min(self._live[other], mine + 1 if before else mine)
        return total

    def statistics(self) -> QueueStats:
        return QueueStats(self.capacity, len(self), len(self._rotation), self.next_deadline())

    def _head(self) -> _Entry[K, T] | None:
        if not self._rotation:
            return None
        queue = self._queues[self._rotation[0]]
        while not queue[0].live:  # an active key has a live entry: this stops
            queue.popleft()
            self._dead -= 1
        return queue[0]

    def _kill(self, entry: _Entry[K, T], *, queued: bool) -> None:
        """Take a live entry out of the counts; a key left without entries leaves the rotation.

        ``queued``: the entry stays in its key's deque, dead, until dropped or compacted.
        """
        entry.live = False
        del self._entries[entry.item]
        self._dead += queued
        key = entry.key
        self._live[key] -= 1
        if self._live[key] == 0:
            self._dead -= len(self._queues.pop(key))  # whatever it still holds is dead
            del self._live[key]
            self._rotation.remove(key)

    def _compact(self) -> None:
        if len(self._timers) > 2 * len(self._entries) + _COMPACT_SLACK:
            self._timers = [timer for timer in self._timers if timer.entry.live]
            heapq.heapify(self._timers)
        if self._dead > len(self._entries) + _COMPACT_SLACK:
            for key, queue in self._queues.items():
                self._queues[key] = deque(entry for entry in queue if entry.live)
            self._dead = 0
