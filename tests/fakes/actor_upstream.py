"""An in-process ``Upstream`` a test steers with trio events and (mock) time.

It is the network seam of a provider actor faked at the seam, for unit tests that need to block,
hang, crash or take time at a chosen moment, and that run under trio's ``autojump_clock`` (never
with real sockets). It measures what the upstream sees: ``arrivals`` (time and request id of each
request as it arrives), ``in_flight`` and its ``peak``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import trio

from actorproxy.net.base import Headers, UpstreamRequest, UpstreamResponse

OK_BODY = b'{"id":"chatcmpl-1","object":"chat.completion"}'

#: A body step: bytes to return, an event to wait for, an exception to raise, or seconds to sleep.
Step = bytes | trio.Event | Exception | float


@dataclass
class Plan:
    """How the fake answers one request id: wait ``delay`` s and for ``gate``, raise ``error`` or
    answer with ``status``, ``headers`` and the ``body`` steps."""

    gate: trio.Event | None = None
    error: Exception | None = None
    status: int = 200
    body: Iterable[Step] = (OK_BODY,)
    delay: float = 0.0
    headers: Headers = field(default_factory=list)


@dataclass
class FakeUpstream:
    plans: dict[str, Plan] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    arrivals: list[tuple[float, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    responses: dict[str, FakeResponse] = field(default_factory=dict)
    in_flight: int = 0
    peak: int = 0
    closed: bool = False

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        await trio.lowlevel.checkpoint_if_cancelled()  # like H11Pool: nothing sent if cancelled
        rid = dict(request.headers)[b"x-request-id"].decode()
        plan = self.plans.get(rid, Plan())
        self.sent.append(rid)
        self.arrivals.append((trio.current_time(), rid))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await trio.sleep(plan.delay)
            if plan.gate is not None:
                await plan.gate.wait()
            if plan.error is not None:
                raise plan.error
        except BaseException as exc:
            self.in_flight -= 1
            if isinstance(exc, trio.Cancelled):
                self.cancelled.append(rid)
            raise
        response = self.responses[rid] = FakeResponse(self, rid, plan)
        return response

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


class FakeResponse:
    def __init__(self, upstream: FakeUpstream, rid: str, plan: Plan) -> None:
        self.status = plan.status
        self.headers: Headers = [
            (b"x-request-id", f"up-{rid}".encode()),
            (b"server", b"fake"),
            *plan.headers,
        ]
        self.reads = 0
        self.closed = False
        self._upstream = upstream
        self._rid = rid
        self._steps: Iterator[Step] = iter(plan.body)

    async def receive_some(self) -> bytes:
        self.reads += 1
        try:
            for step in self._steps:
                if isinstance(step, trio.Event):
                    await step.wait()
                elif isinstance(step, Exception):
                    raise step
                elif isinstance(step, float):
                    await trio.sleep(step)
                else:
                    await trio.lowlevel.checkpoint()
                    return step
        except trio.Cancelled:
            self._upstream.cancelled.append(self._rid)
            raise
        await trio.lowlevel.checkpoint()
        return b""

    async def aclose(self) -> None:
        # No checkpoint: like the real upstreams, closing works inside a cancelled scope.
        if not self.closed:
            self.closed = True
            self._upstream.in_flight -= 1
