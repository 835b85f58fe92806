"""The proxy's side of per-key limits: estimates, prices and the key limiter, in one place.

``KeyGate`` turns a routed request into what ``keys.KeyLimiter`` needs (a token estimate from
``rate.estimate_tokens``, the route's highest price) and settles a request with the price of the
target that served it. Pure: the caller passes ``now`` (monotonic) and ``wall`` (Unix time).
"""

from __future__ import annotations

from collections.abc import Mapping

from actorproxy.config import KeyLimitsConfig, Price
from actorproxy.keys import Limits
from actorproxy.limits import rate
from actorproxy.limits.keys import KeyLimiter, KeyRequest, KeyTicket
from actorproxy.limits.usage import TokenUsage
from actorproxy.routing import Route, Target
from actorproxy.schema.views import RouteView


def price_for(prices: Mapping[str, Price], target: Target) -> Price | None:
    """``prices["<provider>/<model>"]``, else ``prices["<model>"]`` (the upstream model name)."""
    return prices.get(f"{target.provider}/{target.model}") or prices.get(target.model)


def highest_price(prices: Mapping[str, Price], route: Route) -> Price | None:
    """Each component's maximum over the route's targets; ``None`` if a target has no price."""
    found = [price_for(prices, target) for target in route.targets]
    known = [price for price in found if price is not None]
    if len(known) != len(found) or not known:
        return None
    return Price(
        input=max(p.input for p in known),
        output=max(p.output for p in known),
        cached_input=max(p.input if p.cached_input is None else p.cached_input for p in known),
    )


class KeyGate:
    """Per-key admission and settlement for the proxy handler (see ``limits.keys``)."""

    def __init__(self, prices: Mapping[str, Price], estimate: KeyLimitsConfig) -> None:
        self.limiter = KeyLimiter()
        self._prices = prices
        self._estimate = estimate

    def estimate(self, view: RouteView, body_len: int, *, embeds: bool, default_output: int) -> int:
        """The tokens to reserve for a request of ``body_len`` bytes: ``rate.estimate_tokens``
        with its ``max_completion_tokens`` (else ``max_tokens``, else ``default_output``: the
        first target's ``default_output_tokens``) and ``n``; embeddings have no output. The one
        estimate serves the key's limits and the provider actor's alike."""
        wanted = (
            view.max_tokens if view.max_completion_tokens is None else view.max_completion_tokens
        )
        return rate.estimate_tokens(
            body_len,
            0 if embeds else wanted,
            default_output,
            choices=max(1, view.n or 1),
            bytes_per_token=self._estimate.bytes_per_token,
        )

    def admit(
        self, key_id: str, limits: Limits, route: Route, *, tokens: int, at: tuple[float, float]
    ) -> KeyTicket:
        """Admit one request of the key or raise its refusal (``KeyLimiter.admit``).

        ``at`` is ``(now, wall)``: monotonic and Unix time."""
        price = highest_price(self._prices, route) if limits.budget_usd is not None else None
        return self.limiter.admit(key_id, limits, KeyRequest(*at, tokens, price))

    def settle(
        self, ticket: KeyTicket, now: float, target: Target | None, usage: TokenUsage | None
    ) -> None:
        """End the request: its real ``usage`` (``None``: unknown) at ``target``'s price."""
        price = None if target is None else price_for(self._prices, target)
        self.limiter.settle(ticket, now, usage, price)

    def headers(self, key_id: str, now: float) -> list[tuple[bytes, bytes]]:
        return self.limiter.headers(key_id, now)
