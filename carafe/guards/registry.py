"""Checks plug in by name, the way PEFT methods do: each ``checks/<name>.py``
registers a builder with :func:`register`, the pipeline builds whatever is
registered, and adding a check edits no shared file. A check from outside Carafe
is named in ``guards.plugins`` by its import path (``package.module:build``), as
LiteLLM names its guardrail hooks.

A builder takes a :class:`CheckContext` and returns the check, or ``None`` when
the check is not configured (``guardian`` without an endpoint): policies that list
it then record a *skipped* verdict.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from carafe.guards.checks import Check, EmbedderLike
    from carafe.guards.checks.leak import LeakIndex
    from carafe.guards.config import GuardsConfig

Stage = Literal["input", "output"]


@dataclass(frozen=True)
class CheckContext:
    """What a builder may use: the guards config, the shared embedder, the leak index
    and the check's own ``options`` (from ``guards.plugins.<name>.options``)."""

    config: GuardsConfig
    embedder: EmbedderLike
    leak_index: LeakIndex | None = None
    options: dict[str, Any] = field(default_factory=dict)


Builder = Callable[[CheckContext], "Check | None"]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    stages: tuple[Stage, ...]
    build: Builder


_REGISTRY: dict[str, CheckSpec] = {}


def register(name: str, *, stages: tuple[Stage, ...]) -> Callable[[Builder], Builder]:
    """Decorator: ``@register("pii", stages=("input", "output"))`` on a builder."""

    def decorate(build: Builder) -> Builder:
        _REGISTRY[name] = CheckSpec(name, stages, build)
        return build

    return decorate


def builtin_checks() -> dict[str, CheckSpec]:
    """Every check shipped in :mod:`carafe.guards.checks` (each module registers itself on import)."""
    from carafe.guards import checks

    for module in pkgutil.iter_modules(checks.__path__):
        importlib.import_module(f"{checks.__name__}.{module.name}")
    return dict(_REGISTRY)


def load_builder(path: str) -> Builder:
    """The builder at ``package.module:attribute`` (a ``guards.plugins`` entry)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"guard plugin {path!r} must be an import path 'package.module:build'")
    try:
        builder = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"guard plugin {path!r} cannot be imported: {exc}") from exc
    if not callable(builder):
        raise ValueError(f"guard plugin {path!r} is not callable")
    return builder  # type: ignore[no-any-return]


def available(config: GuardsConfig) -> dict[str, CheckSpec]:
    """The built-in checks plus the plugins ``config`` names (a plugin may replace a built-in)."""
    specs = builtin_checks()
    for name, plugin in config.plugins.items():
        specs[name] = CheckSpec(name, tuple(plugin.stages), load_builder(plugin.path))
    return specs
