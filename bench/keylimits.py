"""What per-key limits add to one request, on one core: estimate, admit, headers, settle.

The proxy runs exactly these ``KeyGate`` calls for every ``/v1`` request (``proxy.py``). Three
keys: one without limits (the master key, most deployments), one with ``rpm`` and ``tpm``
(a 60-second sliding window with a reservation reconciled to the real usage), and one with a
budget as well (a price lookup over a two-target route and the spend ledger).

Run: ``.venv/bin/python -m bench.keylimits`` (prints one JSON object: microseconds per request
for each key, the median of ``--rounds`` runs of ``--requests`` requests).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from actorproxy.config import KeyLimitsConfig, Price
from actorproxy.keys import Limits
from actorproxy.limits.gate import KeyGate
from actorproxy.limits.usage import TokenUsage
from actorproxy.routing import Route, Target
from actorproxy.schema.views import RouteView

KEYS = {
    "no_limits": Limits(),
    "rpm_tpm": Limits(rpm=10**9, tpm=10**12),
    "rpm_tpm_budget": Limits(rpm=10**9, tpm=10**12, budget_usd=10**9, budget_period="day"),
}
ROUTE = Route("m", (Target("a", "gpt-4o-mini"), Target("b", "gpt-4o-mini")))
PRICES = {"gpt-4o-mini": Price(input=0.15, output=0.6)}
USAGE = TokenUsage(prompt=500, completion=200)


def run(limits: Limits, key_id: str, requests: int) -> float:
    """Microseconds per request for ``requests`` requests of one key, 100 us apart."""
    gate = KeyGate(PRICES, KeyLimitsConfig())
    view = RouteView(model="m", max_tokens=256)
    started = time.perf_counter()
    for i in range(requests):
        now = i * 1e-4
        tokens = gate.estimate(view, 2048, embeds=False, default_output=1024)
        ticket = gate.admit(key_id, limits, ROUTE, tokens=tokens, at=(now, 1.7e9 + now))
        gate.headers(key_id, now)
        gate.settle(ticket, now, ROUTE.targets[0], USAGE if ticket.wants_usage else None)
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = {
        key_id: round(
            statistics.median(run(limits, key_id, args.requests) for _ in range(args.rounds)), 2
        )
        for key_id, limits in KEYS.items()
    }
    print(json.dumps({"us_per_request": result, "requests": args.requests, "rounds": args.rounds}))


if __name__ == "__main__":
    main()
