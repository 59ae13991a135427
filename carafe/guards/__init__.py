"""Guardrails on input and output: checks behind one protocol, named policies,
and a streaming-aware output guard.

The gateway builds one :class:`GuardPipeline` with :meth:`GuardPipeline.from_config`
and calls :meth:`~GuardPipeline.check_input` per request and
:meth:`~GuardPipeline.output_stream` per answer. Checks register themselves
(:mod:`carafe.guards.registry`); names are loaded on first use, so reading the
config imports no check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carafe._lazy import lazy_getattr
from carafe.guards.config import CheckSettings, GuardsConfig, PolicyConfig
from carafe.guards.errors import GuardError, UnknownPolicy
from carafe.guards.verdict import GuardVerdict

if TYPE_CHECKING:
    from carafe.guards.pipeline import GuardPipeline, InputResult
    from carafe.guards.stream import OutputStream, Release

_LAZY = {
    "GuardPipeline": "carafe.guards.pipeline",
    "InputResult": "carafe.guards.pipeline",
    "OutputStream": "carafe.guards.stream",
    "Release": "carafe.guards.stream",
}

__all__ = [
    "CheckSettings",
    "GuardError",
    "GuardPipeline",
    "GuardVerdict",
    "GuardsConfig",
    "InputResult",
    "OutputStream",
    "PolicyConfig",
    "Release",
    "UnknownPolicy",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
