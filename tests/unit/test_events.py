"""Operational events from two snapshots (pure)."""

from __future__ import annotations

from actorproxy.events import Change, Seen, changes


def test_state_and_breaker_changes_become_events() -> None:
    before = {
        "a": Seen("running", "closed"),
        "b": Seen("running", "open"),
        "logger": Seen("running"),
    }
    after = {
        "a": Seen("restarting", "open"),
        "b": Seen("running", "half_open"),
        "logger": Seen("running"),
        "new": Seen("running", "closed"),
    }
    assert changes(before, after) == [
        Change("actor state changed", "a", "running", "restarting"),
        Change("breaker changed", "a", "closed", "open"),
        Change("breaker changed", "b", "open", "half_open"),
    ]
    assert changes(after, after) == []
