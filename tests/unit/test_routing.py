"""Router: a requested model name to the ordered targets that may serve it."""

from __future__ import annotations

import pytest

from actorproxy import errors
from actorproxy.config import Config, ModelConfig, ProviderConfig
from actorproxy.routing import Route, Router, Target

PROVIDERS = [
    ProviderConfig(name="openai", kind="openai", base_url="https://api.openai.com/v1"),
    ProviderConfig(name="openrouter", kind="openai", base_url="https://openrouter.ai/api/v1"),
    ProviderConfig(name="local", kind="openai", base_url="http://127.0.0.1:1/v1", direct=False),
]
MODELS = [
    ModelConfig(name="gpt-4o-mini", targets=["openai/gpt-4o-mini", "local/llama3.1"]),
    ModelConfig(name="claude", targets=["openrouter/anthropic/claude-3.5-sonnet"]),
    ModelConfig(name="openai/gpt-4o", targets=["local/llama3.1"]),  # an alias shadows direct
    ModelConfig(name="fast", targets=["local/a", "openai/b"], strategy="least_busy"),
]


@pytest.fixture
def router() -> Router:
    return Router(Config(providers=PROVIDERS, models=MODELS))


def test_alias_resolves_to_its_targets_in_order(router: Router) -> None:
    assert router.resolve("gpt-4o-mini") == Route(
        "gpt-4o-mini", (Target("openai", "gpt-4o-mini"), Target("local", "llama3.1"))
    )


def test_alias_target_keeps_slashes_after_the_provider(router: Router) -> None:
    route = router.resolve("claude")
    assert route.targets == (Target("openrouter", "anthropic/claude-3.5-sonnet"),)


def test_alias_keeps_its_strategy(router: Router) -> None:
    assert router.resolve("fast").strategy == "least_busy"
    assert router.resolve("gpt-4o-mini").strategy == "fallback"


def test_alias_may_reach_a_provider_that_is_not_direct(router: Router) -> None:
    assert router.resolve("gpt-4o-mini").targets[1].provider == "local"


def test_an_alias_wins_over_direct_addressing(router: Router) -> None:
    assert router.resolve("openai/gpt-4o").targets == (Target("local", "llama3.1"),)


@pytest.mark.parametrize(
    ("model", "target"),
    [
        ("openai/gpt-4o-mini", Target("openai", "gpt-4o-mini")),
        ("openrouter/openai/gpt-4o", Target("openrouter", "openai/gpt-4o")),
        (
            "openrouter/meta-llama/llama-3.1-8b:free",
            Target("openrouter", "meta-llama/llama-3.1-8b:free"),
        ),
    ],
)
def test_direct_addressing_sends_everything_after_the_first_slash(
    router: Router, model: str, target: Target
) -> None:
    assert router.resolve(model) == Route(model, (target,))


def test_aliases_lists_every_configured_alias_in_order(router: Router) -> None:
    assert [route.alias for route in router.aliases()] == [model.name for model in MODELS]


@pytest.mark.parametrize(
    "model",
    [
        "gpt-5",  # neither alias nor provider/model
        "local/llama3.1",  # the provider does not allow direct addressing
        "nobody/gpt-4o",  # no such provider
        "openai/",  # no upstream model
        "/gpt-4o",  # no provider
        "",
        "GPT-4O-MINI",  # aliases are exact
    ],
)
def test_unknown_model_is_model_not_found(router: Router, model: str) -> None:
    with pytest.raises(errors.ModelNotFound) as caught:
        router.resolve(model)
    error = caught.value
    assert (error.status, error.param, error.code) == (404, "model", "model_not_found")
    assert f"`{model}`" in error.message


def test_no_providers_no_routes() -> None:
    router = Router(Config())
    assert router.aliases() == []
    with pytest.raises(errors.ModelNotFound):
        router.resolve("mock/mock")
