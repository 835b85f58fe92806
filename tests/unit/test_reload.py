"""What a config reload does, provider by provider (pure)."""

from __future__ import annotations

import msgspec

from actorproxy import config as cfg
from actorproxy.reload import Plan, model_labels, plan


def _config(*providers: cfg.ProviderConfig, **fields: object) -> cfg.Config:
    return msgspec.structs.replace(cfg.Config(providers=list(providers)), **fields)


def test_plan_compares_providers_by_value() -> None:
    kept = cfg.ProviderConfig(name="kept", kind="mock")
    changed = cfg.ProviderConfig(name="changed", kind="mock")
    gone = cfg.ProviderConfig(name="gone", kind="mock")
    new = cfg.ProviderConfig(name="new", kind="mock")
    old = _config(kept, changed, gone)
    after = _config(
        kept,
        msgspec.structs.replace(changed, max_concurrency=2),
        new,
        server=cfg.ServerConfig(port=9),
    )
    assert plan(old, after) == Plan(
        added=["new"],
        changed=["changed"],
        removed=["gone"],
        unchanged=["kept"],
        needs_restart=["server"],
    )
    assert plan(old, old) == Plan([], [], [], ["kept", "changed", "gone"], [])


def test_model_labels_are_aliases_and_targets() -> None:
    config = _config(models=[cfg.ModelConfig(name="fast", targets=["a/x", "b/y"])])
    assert model_labels(config) == ["fast", "a/x", "b/y"]
