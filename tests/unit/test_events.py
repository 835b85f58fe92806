"""Operational events from two snapshots (pure)."""

from __future__ import annotations

from actorproxy.events import Change, Seen, changes


def test_state_changes_become_events() -> None:
    before = {"a": Seen("running"), "b": Seen("running"), "logger": Seen("running")}
    after = {
        "a": Seen("restarting"),
        "b": Seen("running"),
        "logger": Seen("running"),
        "new": Seen("running"),
    }
    assert changes(before, after) == [Change("actor state changed", "a", "running", "restarting")]
    assert changes(after, after) == []
