"""Routing: a requested model name to the ordered targets that may serve it. Pure code.

A configured alias (``[[models]] name``) resolves to its targets in order. A name of the form
``provider/model`` addresses a provider directly when that provider allows it (``direct = true``);
the part after the first ``/`` is sent upstream as it is, so ``openrouter/openai/gpt-4o`` works.
"""

from __future__ import annotations

from dataclasses import dataclass

from actorproxy import errors
from actorproxy.config import Config, ModelConfig, Strategy


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str


@dataclass(frozen=True, slots=True)
class Route:
    alias: str
    targets: tuple[Target, ...]
    strategy: Strategy = "fallback"
    weights: tuple[float, ...] | None = None  # one per target, for ``weighted``
    max_retries: int | None = None  # per target; ``None``: the ``[routing]`` default


class Router:
    def __init__(self, config: Config) -> None:
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Route by ``config`` from now on (a config reload)."""
        self._aliases = {model.name: _route(model) for model in config.models}
        self._direct = {p.name for p in config.providers if p.direct}

    def resolve(self, model: str) -> Route:
        """The route for ``model``; ``ModelNotFound`` when nothing can serve it."""
        route = self._aliases.get(model)
        if route is not None:
            return route
        provider, slash, upstream = model.partition("/")
        if slash and upstream and provider in self._direct:
            return Route(model, (Target(provider, upstream),))
        raise errors.ModelNotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
        )

    def aliases(self) -> list[Route]:
        return list(self._aliases.values())


def _route(model: ModelConfig) -> Route:
    parsed = []
    for target in model.targets:
        provider, _, upstream = target.partition("/")
        parsed.append(Target(provider, upstream))
    weights = None if model.weights is None else tuple(model.weights)
    return Route(model.name, tuple(parsed), model.strategy, weights, model.max_retries)
