"""The profile summary of ``bench.profile``: py-spy's raw stacks grouped into parts (pure)."""

from __future__ import annotations

from bench import profile

SP = "/x/.venv/lib/python3.11/site-packages/"
RUN = "run (trio/_core/_run.py:1)"
HANDLE = "handle (/w/actorproxy/proxy.py:70)"
LINES = [
    f"{RUN};{HANDLE};respond (/w/actorproxy/asgi.py:60);send ({SP}hypercorn/protocol/h11.py:1) 3",
    f"{RUN};{HANDLE};_admit (/w/actorproxy/proxy.py:100) 2",
    f"{RUN};_serve (/w/actorproxy/actors/provider.py:1);send (/w/actorproxy/net/pool.py:1) 4",
    "_bootstrap (threading.py:1);Thread._bootstrap (threading.py:2);write (/w/sink.py:9) 1",
    f"{RUN};_read_data ({SP}hypercorn/trio/tcp_server.py:100) 5",
    f"{RUN};get_events ({SP}trio/_core/_io_epoll.py:9) 5",
    "not a sample line",
]
RAW = "\n".join(LINES)


def test_samples_are_grouped_by_part() -> None:
    summary = profile.summarise(profile.parse_raw(RAW))

    assert summary.startswith("20 samples")
    assert "| provider actor (adapter, H11 pool, upstream socket I/O) | 20.0% |" in summary
    assert "| hypercorn writing the response (called by the handler) | 15.0% |" in summary
    assert "| handler (auth, body, route view, relay, dataset record) | 10.0% |" in summary
    assert "| dataset worker threads (derive, redact, Arrow, Parquet) | 5.0% |" in summary
    assert "| hypercorn (HTTP parsing, per-connection tasks and timers) | 25.0% |" in summary
    assert "| trio scheduler and epoll | 25.0% |" in summary


def test_frames_are_shortened_and_project_functions_summed() -> None:
    summary = profile.summarise(profile.parse_raw(RAW))

    assert "| `send (hypercorn/protocol/h11.py)` | 15.0% |" in summary
    assert "| `handle (actorproxy/proxy.py)` | 25.0% |" in summary


def test_running_functions_are_summed_by_package() -> None:
    summary = profile.summarise(profile.parse_raw(RAW))

    assert "| trio | 25.0% |" in summary  # get_events
    assert "| hypercorn | 40.0% |" in summary  # send (3) and _read_data (5)
    assert "| actorproxy | 30.0% |" in summary  # _admit (2) and pool.send (4)
