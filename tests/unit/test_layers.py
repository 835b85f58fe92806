"""The dependency rule of STYLE.md, read from the source with ``ast``.

Pure logic (routing, breaker, adapters, schema) imports no trio, no httpx, no clock, no
environment, and dependencies point one way: ``schema <- adapters <- actors <- app/runtime``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "actorproxy"
FORBIDDEN = frozenset({"trio", "httpx", "time", "os", "hypercorn", "quart", "quart_trio"})
# What each pure layer may import from actorproxy itself (a module or a package prefix).
SCHEMA_MAY_USE = ("actorproxy.schema",)
ADAPTERS_MAY_USE = (
    *SCHEMA_MAY_USE,
    "actorproxy.adapters",
    "actorproxy.errors",
    "actorproxy.config",
    "actorproxy.net.base",  # a pure protocol module
)
PURE: dict[str, tuple[str, ...]] = {
    "routing.py": ("actorproxy.errors", "actorproxy.config"),
    "actors/breaker.py": (),
    "actors/admission.py": ("actorproxy.errors", "actorproxy.limits"),
    **{f"limits/{p.name}": ("actorproxy.limits",) for p in sorted(PACKAGE.glob("limits/*.py"))},
    "limits/keys.py": (
        "actorproxy.errors",
        "actorproxy.config",
        "actorproxy.keys",
        "actorproxy.limits",
    ),
    "limits/usage.py": ("actorproxy.limits",),
    "limits/gate.py": (
        "actorproxy.config",
        "actorproxy.keys",
        "actorproxy.limits",
        "actorproxy.routing",
        "actorproxy.schema",
    ),
    "telemetry.py": (
        "actorproxy.errors",
        "actorproxy.routing",
        "actorproxy.limits",
        "actorproxy.config",
    ),
    "tracing.py": (),
    **{f"adapters/{p.name}": ADAPTERS_MAY_USE for p in sorted(PACKAGE.glob("adapters/*.py"))},
    **{f"schema/{p.name}": SCHEMA_MAY_USE for p in sorted(PACKAGE.glob("schema/*.py"))},
}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports; ``from a import b`` is ``a.b`` when ``b`` is our module."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None, f"{path}: relative import"
            modules.update(_from_import(node.module, alias.name) for alias in node.names)
    return modules


def _from_import(module: str, name: str) -> str:
    candidate = f"{module}.{name}"
    where = PACKAGE.parent.joinpath(*candidate.split("."))
    return candidate if where.with_suffix(".py").is_file() or where.is_dir() else module


def allowed(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_pure_modules_are_all_found() -> None:
    assert {"routing.py", "actors/breaker.py", "adapters/openai.py", "schema/openai.py"} <= set(
        PURE
    )


@pytest.mark.parametrize("relative", sorted(PURE))
def test_pure_module_imports_no_io_clock_or_environment(relative: str) -> None:
    modules = imported_modules(PACKAGE / relative)
    assert sorted(m for m in modules if m.partition(".")[0] in FORBIDDEN) == []


@pytest.mark.parametrize("relative", sorted(PURE))
def test_pure_module_depends_only_on_lower_layers(relative: str) -> None:
    internal = {m for m in imported_modules(PACKAGE / relative) if m.startswith("actorproxy")}
    assert sorted(m for m in internal if not allowed(m, PURE[relative])) == []


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_no_module_imports_the_tests(path: Path) -> None:
    modules = imported_modules(path)
    assert sorted(m for m in modules if m.partition(".")[0] == "tests") == []
